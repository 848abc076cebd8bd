"""Backend "numpy": the reference every other backend is tested against.

Each op is the plain composition of NumPy calls, written to be read: no
fusion, no tricks beyond the max-shift that keeps softmax finite. This is
also what the Tensor runs on backend "numpy", and what any backend falls
back to for an op or dtype it has no kernel for. Arguments arrive validated
by `minigrad.kernels`; every function takes any float dtype (and matmul any
numeric one) and returns that dtype.
"""
import math

import numpy as np

from minigrad.device import array_module
from minigrad.kernels import raise_outside_image
from minigrad.shapes import sum_to_shape
from minigrad.special import logsumexp, normal_cdf, normal_pdf


def matmul(a, b):
    """out = a @ b: (..., m, k) @ (..., k, n) -> (..., m, n), batch dims broadcast."""
    return a @ b


def matmul_backward(a, b, grad_out):
    """grad_a = grad_out @ b^T, grad_b = a^T @ grad_out, each summed back to the shape of a / b."""
    grad_a = grad_out @ b.swapaxes(-1, -2)  # (..., m, k)
    grad_b = a.swapaxes(-1, -2) @ grad_out  # (..., k, n)
    return sum_to_shape(grad_a, a.shape), sum_to_shape(grad_b, b.shape)


def causal_mask(tq, tk, xp=np, offset=0):
    """mask[i, j] = (j <= i + offset): query i sees keys up to its own position. offset 0 aligns the
    queries top-left (like PyTorch's is_causal); offset tk − tq bottom-right, for tq new queries at the
    end of tk positions (generation with a KV cache)."""
    return xp.tril(xp.ones((tq, tk), dtype=bool), k=offset)


def attention_scores(q, k, is_causal):
    """S = q k^T / sqrt(d), with masked-out entries set to -inf.  # (B, Tq, Tk)"""
    xp = array_module(q)
    scores = (q @ k.swapaxes(-1, -2)) * q.dtype.type(1 / math.sqrt(q.shape[-1]))  # (B, Tq, Tk)
    if is_causal:
        scores = xp.where(causal_mask(q.shape[1], k.shape[1], xp), scores, -xp.inf)
    return scores


def attention(q, k, v, is_causal=False, return_lse=False):
    """out = softmax(S) v with S = q k^T / sqrt(d), and lse = log sum_j exp(S_ij), the row log-sum-exp.

    softmax(S) = exp(S - lse), with the one log-sum-exp of minigrad/special.py.
    """
    scores = attention_scores(q, k, is_causal)  # (B, Tq, Tk)
    lse = logsumexp(scores, axis=-1)  # (B, Tq, 1); NumPy's functions run CuPy arrays on the GPU too
    out = np.exp(scores - lse) @ v  # (B, Tq, dv)
    return (out, lse[..., 0]) if return_lse else out


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


# ----------------------------------------------------------------- fused ops
# The reference for kernels/layernorm.c, cross_entropy.c, adamw.c, activation.c.

def layer_norm(x, weight, bias, eps=1e-5):
    """Normalise each row over the last dim, then scale and shift (lesson 05_transformer):

        mean = mean_j x_j,  rstd = 1/sqrt(mean_j (x_j − mean)² + ε),  x̂ = (x − mean)·rstd,
        out = x̂·weight + bias        (weight, bias (C,) or None)
    Returns (out (..., C), mean (...), rstd (...)): the backward needs mean and rstd only.
    """
    mean = x.mean(axis=-1, keepdims=True)  # (..., 1)
    centered = x - mean  # (..., C)
    rstd = 1 / np.sqrt((centered * centered).mean(axis=-1, keepdims=True) + eps)  # (..., 1)
    out = centered * rstd  # x̂ (..., C)
    if weight is not None:
        out *= weight
    if bias is not None:
        out += bias
    return out, mean[..., 0], rstd[..., 0]


def layer_norm_backward(x, weight, mean, rstd, grad_out):
    """With x̂ = (x − mean)·rstd, g = grad_out, ĝ = g·weight and means over the last dim:

        dx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)),  dweight = Σ g·x̂,  dbias = Σ g  (sums over all rows)
    Returns (dx (..., C), dweight (C,), dbias (C,)).
    """
    rstd = rstd[..., None]  # (..., 1)
    xhat = (x - mean[..., None]) * rstd  # (..., C)
    ghat = grad_out if weight is None else grad_out * weight  # (..., C)
    dx = rstd * (ghat - ghat.mean(axis=-1, keepdims=True) - xhat * (ghat * xhat).mean(axis=-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return dx, (grad_out * xhat).sum(axis=rows), grad_out.sum(axis=rows)


def cross_entropy(logits, targets):
    """Mean cross-entropy of integer targets under softmax(logits) (lesson 01_gradient_descent):

        lse_i = log Σ_c e^{z_ic}  (shifted by the row max),   L = (1/N) Σ_i (lse_i − z_{i,y_i})
    logits (N, V), targets (N,) → (L as a 0-d array of the logits' dtype, lse (N,)): the backward
    needs lse only, never an (N, V) array of probabilities.
    """
    lse = logsumexp(logits, axis=1, keepdims=False)  # (N,)
    picked = logits[np.arange(logits.shape[0]), targets]  # (N,) z_{i, y_i}
    return np.asarray((lse - picked).mean(), dtype=logits.dtype), lse


def cross_entropy_backward(logits, targets, lse, grad=1.0):
    """dz = grad·(softmax(z) − onehot(y))/N, with softmax(z) = e^{z − lse} recomputed from the saved lse."""
    dz = np.exp(logits - lse[:, None])  # (N, V) softmax
    dz[np.arange(logits.shape[0]), targets] -= 1
    dz *= logits.dtype.type(grad / logits.shape[0])
    return dz


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay):
    """AdamW on every tensor of the lists, in place: θ ← θ(1 − ηλ), then optim/adam.py's adam_step
    (m, v the moments, steps[i] ≥ 1 the step count of tensor i, this step included)."""
    from minigrad.optim.adam import adam_step, decoupled_weight_decay
    for p, g, m, v, t in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if weight_decay:
            decoupled_weight_decay(p, lr, weight_decay)
        adam_step(p, g, m, v, t, lr, beta1, beta2, eps)


def gelu(x):
    """GELU(x) = x·Φ(x), Φ(x) = ½ erfc(−x/√2) the normal CDF (PyTorch's exact form, lesson 05_transformer).
    Returns (out, Φ(x)): the backward reuses Φ. float16 is evaluated in float32 and returned as float16."""
    cdf = normal_cdf(x).astype(x.dtype, copy=False)
    return x * cdf, cdf


def gelu_backward(x, cdf, grad_out):
    """d GELU/dx = Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π):  dx = grad_out·(Φ(x) + x·φ(x))."""
    return grad_out * (cdf + x * normal_pdf(x))


# ----------------------------------------------------------------- the LSTM layer
# The reference for kernels/lstm.c: the steps of minigrad/nn/recurrent.py (lesson 03_rnn), one NumPy call per
# formula, their per-step products on the matmul family's backend (see recurrent.step_matmul).

def lstm(gx, h0, c0, w_hh):
    """All T steps of an LSTM layer, `lstm_step_forward` from t = 0 up (gates i, f, g, o):

        [i, f, g, o] = σ, σ, tanh, σ of (gx_t + h_{t−1} W_hhᵀ),   c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)
    gx (T, B, 4H), h0, c0 (B, H), w_hh (4H, H) → (out (2, T, B, H) = [every h_t, every c_t], gates (T, B, 4H)).
    """
    from minigrad.nn.recurrent import lstm_step_forward, step_matmul
    T, B, H = gx.shape[0], gx.shape[1], w_hh.shape[1]
    out = np.empty((2, T, B, H), dtype=gx.dtype)                       # [h_t for every t, c_t for every t]
    hs, cs = out
    gates, tanh_c = np.empty_like(gx), np.empty((B, H), gx.dtype)     # (T, B, 4H), (B, H)
    matmul, h, c = step_matmul(gx.dtype), h0, c0
    for t in range(T):
        lstm_step_forward(gx[t], h, c, w_hh, gates[t], cs[t], tanh_c, hs[t], matmul)
        h, c = hs[t], cs[t]
    return out, gates


def lstm_backward(h0, c0, w_hh, out, gates, grad_out):
    """Back through time, `lstm_step_backward` from t = T−1 down, then dW_hh = Σ_t dgates_tᵀ h_{t−1} in one matmul.
    Returns (dgx (T, B, 4H), dh0 (B, H), dc0 (B, H), dw_hh (4H, H)); dgx_t = dgates_t."""
    from minigrad.nn.recurrent import lstm_step_backward, step_matmul
    hs, cs = out                                                       # (T, B, H) each
    T, H = hs.shape[0], w_hh.shape[1]
    tanh_c = np.tanh(cs)                                               # (T, B, H)
    dgx = np.empty(gates.shape, h0.dtype)                              # (T, B, 4H)
    matmul, dh, dc = step_matmul(h0.dtype), np.zeros_like(h0), np.zeros_like(c0)
    for t in reversed(range(T)):
        c_prev = cs[t - 1] if t else c0
        dc += grad_out[1, t]
        dh, dc = lstm_step_backward(grad_out[0, t] + dh, dc, c_prev, gates[t], tanh_c[t], w_hh, dgx[t], matmul)
    h_prev = np.concatenate([h0[None], hs[:-1]])                       # (T, B, H)
    return dgx, dh, dc, dgx.reshape(-1, 4 * H).T @ h_prev.reshape(-1, H)


# ----------------------------------------------------------------- convolution and pooling
# The reference for kernels/conv.c (lesson 02_convolution). Images are (N, C, H, W); inside, channels-last
# (N, H, W, C), so that a window's row is one contiguous run of kw·C values. Results that are images
# are (N, C, H, W) views of channels-last memory, which the next layer reads without a copy.

def sliding_windows(xp, kernel_size, stride):
    """Strided view (N, Ho, Wo, kh, kw, C) of every kh×kw window of a channels-last image xp (N, Hp, Wp, C);
    no copy."""
    (kh, kw), (sh, sw) = kernel_size, stride
    N, Hp, Wp, C = xp.shape
    Ho, Wo = (Hp - kh) // sh + 1, (Wp - kw) // sw + 1
    sN, sH, sW, sC = xp.strides
    return np.lib.stride_tricks.as_strided(
        xp, (N, Ho, Wo, kh, kw, C), (sN, sH * sh, sW * sw, sH, sW, sC), writeable=False)


def im2col(x, kernel_size, stride, padding, bias_column=False):
    """cols[(n, i, j), (p, q, c)] = x[n, c, i·sh + p − ph, j·sw + q − pw], 0 in the padding: (N·Ho·Wo, kh·kw·C).

    Every receptive field becomes a row, so a convolution is the one product cols Wᵀ. The zero-padded
    channels-last copy of x, then the windows' strided view copied once. With bias_column, one more
    column of ones: the bias is the weight of that constant input, [cols 1][W b]ᵀ adds it inside the
    product, and [dW db] = dYᵀ[cols 1] gives both gradients from one product.
    """
    N, C, H, W = x.shape
    (kh, kw), (ph, pw) = kernel_size, padding
    xp = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=x.dtype)  # (N, Hp, Wp, C)
    xp[:, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 1)
    windows = sliding_windows(xp, kernel_size, stride)  # (N, Ho, Wo, kh, kw, C)
    cols = np.empty((windows.shape[0] * windows.shape[1] * windows.shape[2], kh * kw * C + bias_column), x.dtype)
    cols[:, :kh * kw * C].reshape(windows.shape)[...] = windows  # (N·Ho·Wo, kh·kw·C [+ 1])
    if bias_column:
        cols[:, -1] = 1
    return cols


def im2col_backward(grad_cols, x_shape, kernel_size, stride, padding):
    """col2im, the adjoint of im2col: each entry of grad_cols (N·Ho·Wo, kh·kw·C) added back onto the pixel
    it was read from; pixels under several windows sum their terms. Returns dx (N, C, H, W)."""
    N, C, H, W = x_shape
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    grad_cols = grad_cols.reshape(N, Ho, Wo, kh, kw, C)
    dxp = np.zeros((N, H + 2 * ph, W + 2 * pw, C), dtype=grad_cols.dtype)  # (N, Hp, Wp, C)
    # Only kh·kw slice-adds: each kernel offset (p, q) touches a strided grid of pixels exactly once.
    for p in range(kh):
        for q in range(kw):
            dxp[:, p:p + sh * Ho:sh, q:q + sw * Wo:sw] += grad_cols[:, :, :, p, q]
    return dxp[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2)  # (N, C, H, W)


def max_pool2d(x, kernel_size, stride):
    """out[n, c, i, j] = max_{p<kh, q<kw} x[n, c, i·sh + p, j·sw + q] and argmax = h·W + w, the pixel it came
    from: the first in row-major order on ties; a NaN is the maximum (as in np.maximum), the first one if
    several. Returns (out (N, C, Ho, Wo), argmax (N, C, Ho, Wo) int64)."""
    (kh, kw), (sh, sw) = kernel_size, stride
    N, C, H, W = x.shape
    Ho, Wo = (H - kh) // sh + 1, (W - kw) // sw + 1
    out = x[..., 0:sh * Ho:sh, 0:sw * Wo:sw].copy(order="K")  # (N, C, Ho, Wo), in x's memory order
    which = np.zeros_like(out, dtype=np.int64)  # p·kw + q of the maximum so far, laid out like out
    for p in range(kh):  # kh·kw strided slices, each element (p, q) of every window
        for q in range(kw):
            if p == q == 0:
                continue
            v = x[..., p:p + sh * Ho:sh, q:q + sw * Wo:sw]
            wins = (v > out) | ((v != v) & (out == out))  # strictly greater: ties keep the first; NaN wins once
            np.copyto(out, v, where=wins)
            np.copyto(which, p * kw + q, where=wins)
    corners = np.arange(Ho)[:, None] * sh * W + np.arange(Wo) * sw  # (Ho, Wo): h·W + w of each window's corner
    return out, corners + which // kw * W + which % kw


def max_pool2d_backward(argmax, grad_out, x_shape):
    """dx[n, c, argmax[n, c, i, j]] += grad_out[n, c, i, j] (the flattened H·W pixel): each window's gradient
    goes to its maximum; overlapping windows (stride < kernel) add up. Returns dx (N, C, H, W)."""
    N, C, H, W = x_shape
    if argmax.min() < 0 or argmax.max() >= H * W:  # add.at would wrap a negative index around silently
        raise_outside_image("max_pool2d_backward", argmax, H * W)
    dx = np.zeros((N * C, H * W), dtype=grad_out.dtype)  # (N·C, H·W)
    np.add.at(dx, (np.arange(N * C)[:, None], argmax.reshape(N * C, -1)), grad_out.reshape(N * C, -1))
    return dx.reshape(N, C, H, W)
