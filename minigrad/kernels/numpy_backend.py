"""Backend "numpy": the reference every other backend is tested against.

Each op is the plain composition of NumPy calls, written to be read: no
fusion, no tricks beyond the max-shift that keeps softmax finite. Arguments
arrive validated by `minigrad.kernels`.
"""
import math

import numpy as np

from minigrad.device import array_module


def sum_to_shape(x, shape):
    """Sum x over the dims that broadcasting added or stretched, so the result has `shape`.

    The gradient of a broadcast is the sum over the copies it made.
    """
    extra = x.ndim - len(shape)
    x = x.sum(axis=tuple(range(extra))) if extra else x
    stretched = tuple(i for i, size in enumerate(shape) if size == 1 and x.shape[i] != 1)
    return x.sum(axis=stretched, keepdims=True) if stretched else x


def matmul(a, b):
    """out = a @ b: (..., m, k) @ (..., k, n) -> (..., m, n), batch dims broadcast."""
    return a @ b


def matmul_backward(a, b, grad_out):
    """grad_a = grad_out @ b^T, grad_b = a^T @ grad_out, each summed back to the shape of a / b."""
    grad_a = grad_out @ b.swapaxes(-1, -2)  # (..., m, k)
    grad_b = a.swapaxes(-1, -2) @ grad_out  # (..., k, n)
    return sum_to_shape(grad_a, a.shape), sum_to_shape(grad_b, b.shape)


def causal_mask(tq, tk, xp=np):
    """mask[i, j] = (j <= i): query i sees keys up to its own position (top-left aligned, like PyTorch)."""
    return xp.tril(xp.ones((tq, tk), dtype=bool))


def attention_scores(q, k, is_causal):
    """S = q k^T / sqrt(d), with masked-out entries set to -inf.  # (B, Tq, Tk)"""
    xp = array_module(q)
    scores = (q @ k.swapaxes(-1, -2)) * q.dtype.type(1 / math.sqrt(q.shape[-1]))  # (B, Tq, Tk)
    if is_causal:
        scores = xp.where(causal_mask(q.shape[1], k.shape[1], xp), scores, -xp.inf)
    return scores


def attention(q, k, v, is_causal=False, return_lse=False):
    """out = softmax(q k^T / sqrt(d)) v, lse = log sum_j exp(S_ij) (the log-sum-exp of the scaled scores).

    Stable softmax: subtract the row max m before exp, so lse = m + log sum_j exp(S_ij - m).
    """
    xp = array_module(q)
    scores = attention_scores(q, k, is_causal)  # (B, Tq, Tk)
    row_max = scores.max(axis=-1, keepdims=True)  # (B, Tq, 1)
    weights = xp.exp(scores - row_max)  # (B, Tq, Tk)
    row_sum = weights.sum(axis=-1, keepdims=True)  # (B, Tq, 1)
    out = (weights / row_sum) @ v  # (B, Tq, dv)
    if not return_lse:
        return out
    lse = (row_max + xp.log(row_sum))[..., 0]  # (B, Tq)
    return out, lse


def attention_backward(q, k, v, out, lse, grad_out, is_causal=False):
    """Gradients of out = P v with P = softmax(S), S = q k^T / sqrt(d), P recomputed from lse:

        P = exp(S - lse),  dv = P^T dO,  dP = dO v^T,
        dS = P * (dP - rowsum(dO * out)),  dq = dS k / sqrt(d),  dk = dS^T q / sqrt(d).
    """
    xp = array_module(q)
    scale = q.dtype.type(1 / math.sqrt(q.shape[-1]))
    probs = xp.exp(attention_scores(q, k, is_causal) - lse[..., None])  # (B, Tq, Tk)
    grad_v = probs.swapaxes(-1, -2) @ grad_out  # (B, Tk, dv)
    grad_probs = grad_out @ v.swapaxes(-1, -2)  # (B, Tq, Tk)
    row_dot = (grad_out * out).sum(axis=-1, keepdims=True)  # (B, Tq, 1)
    grad_scores = probs * (grad_probs - row_dot)  # (B, Tq, Tk)
    grad_q = (grad_scores @ k) * scale  # (B, Tq, d)
    grad_k = (grad_scores.swapaxes(-1, -2) @ q) * scale  # (B, Tk, d)
    return grad_q, grad_k, grad_v
