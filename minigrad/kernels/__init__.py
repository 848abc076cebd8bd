"""The accelerated ops on plain arrays: one narrow interface over every backend.

    matmul(a, b)                      (..., m, k) @ (..., k, n) -> (..., m, n), batch dims broadcast
    matmul_backward(a, b, grad_out)   -> (grad_a, grad_b) shaped like a and b
    attention(q, k, v, is_causal=False, return_lse=False)
                                      q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv) -> out (B, Tq, dv)
                                      [, lse (B, Tq)]
    attention_backward(q, k, v, out, lse, grad_out, is_causal=False) -> (dq, dk, dv)
    layer_norm(x, weight, bias, eps=1e-5) -> (out, mean, rstd)      over the last dim of x (..., C)
    layer_norm_backward(x, weight, mean, rstd, grad_out) -> (dx, dweight, dbias)
    cross_entropy(logits, targets) -> (mean loss, lse)              logits (N, V), integer targets (N,)
    cross_entropy_backward(logits, targets, lse, grad=1.0) -> dlogits
    adamw_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay)
                                      AdamW on lists of arrays, in place, in one call
    gelu(x) -> (out, cdf),  gelu_backward(x, cdf, grad_out) -> dx

Each takes `backend=` "numpy" (the reference), "c", "cuda" or "cuda-sim";
None means `minigrad.backend.get_backend()`. This module checks every
argument (array type, dtype, rank, shape agreement) and answers empty
problems itself, so a backend module only ever sees valid, non-empty input.
Backend modules are imported on first use: importing this compiles nothing.
"""
import importlib
import math

import numpy as np

from minigrad.backend import check_backend, get_backend
from minigrad.device import array_module

__all__ = ["matmul", "matmul_backward", "attention", "attention_backward", "layer_norm", "layer_norm_backward",
           "cross_entropy", "cross_entropy_backward", "adamw_step", "gelu", "gelu_backward"]

_MODULES = {"numpy": "numpy_backend", "c": "c_backend", "cuda": "cuda_backend", "cuda-sim": "cuda_backend"}
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _call(backend, op, *args, **kwargs):
    name = check_backend(get_backend() if backend is None else backend)
    module = importlib.import_module(f"{__name__}.{_MODULES[name]}")
    function = getattr(module, op, None)
    if function is None:
        raise NotImplementedError(f"{op}: backend {name!r} does not implement it yet; "
                                  "use backend='numpy'")
    if name in ("cuda", "cuda-sim"):
        kwargs["sim"] = name == "cuda-sim"
    return function(*args, **kwargs)


def _describe(arrays):
    return ", ".join(f"{name} {x.dtype} {tuple(x.shape)}" for name, x in arrays.items())


def _check_arrays(op, backend, **arrays):
    """Same-kind arrays (all NumPy or all CuPy) of one float dtype, float32 or float64."""
    host = all(type(x) is np.ndarray for x in arrays.values())  # the common case, checked fast
    if not host:
        for name, x in arrays.items():
            if not (isinstance(x, np.ndarray) or type(x).__module__.split(".")[0] == "cupy"):
                raise TypeError(f"{op}: {name} must be a NumPy or CuPy array, got {type(x).__name__}")
        modules = {array_module(x).__name__ for x in arrays.values()}
        if len(modules) > 1:
            raise TypeError(f"{op}: all arrays must live on the same device (all NumPy or all CuPy); "
                            f"got a mix of {' and '.join(sorted(modules))}")
        host = modules == {"numpy"}
    dtypes = {x.dtype for x in arrays.values()}
    if len(dtypes) > 1 or dtypes.pop() not in _FLOATS:
        raise TypeError(f"{op}: needs float32 or float64 arrays, all of the same dtype; "
                        f"got {_describe(arrays)}")
    if not host and check_backend(get_backend() if backend is None else backend) == "c":
        raise TypeError(f"{op}: backend 'c' runs on host (NumPy) arrays; got CuPy arrays. "
                        "Use backend 'cuda', or copy them to the host with .get()")


def _check_flag(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def _matmul_shape(op, a, b):
    """The shape of a @ b, after checking ranks, inner dims and batch broadcasting."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"{op}: a and b must have at least 2 dims (..., m, k) and (..., k, n); "
                         f"got a {tuple(a.shape)}, b {tuple(b.shape)}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"{op}: inner dims differ: a {tuple(a.shape)} has k = {a.shape[-1]}, "
                         f"b {tuple(b.shape)} has k = {b.shape[-2]}")
    try:
        batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) if a.ndim > 2 or b.ndim > 2 else ()
    except ValueError:
        raise ValueError(f"{op}: batch dims of a {tuple(a.shape)} and b {tuple(b.shape)} "
                         "do not broadcast") from None
    return batch + (a.shape[-2], b.shape[-1])


def matmul(a, b, backend=None):
    """out = a @ b for (..., m, k) and (..., k, n) float arrays, batch dims broadcast like numpy.matmul."""
    _check_arrays("matmul", backend, a=a, b=b)
    shape = _matmul_shape("matmul", a, b)
    if math.prod(shape) == 0 or a.shape[-1] == 0:
        return array_module(a).zeros(shape, a.dtype)  # an empty sum is 0
    return _call(backend, "matmul", a, b)


def matmul_backward(a, b, grad_out, backend=None):
    """(grad_a, grad_b) = (grad_out @ b^T, a^T @ grad_out), each summed back to the shape of a / b."""
    _check_arrays("matmul_backward", backend, a=a, b=b, grad_out=grad_out)
    shape = _matmul_shape("matmul_backward", a, b)
    if tuple(grad_out.shape) != shape:
        raise ValueError(f"matmul_backward: grad_out {tuple(grad_out.shape)} must have the shape of "
                         f"a @ b = {shape} (a {tuple(a.shape)}, b {tuple(b.shape)})")
    if math.prod(shape) == 0 or a.shape[-1] == 0:
        xp = array_module(a)
        return xp.zeros(a.shape, a.dtype), xp.zeros(b.shape, b.dtype)
    return _call(backend, "matmul_backward", a, b, grad_out)


def _check_attention(op, q, k, v):
    """Ranks and shapes of q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv); Tk and d must be positive."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"{op}: q, k, v must be 3-D (B, T, d); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.shape[0] == k.shape[0] == v.shape[0] and k.shape[1] == v.shape[1] and q.shape[2] == k.shape[2]):
        raise ValueError(f"{op}: shapes must be q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0 or q.shape[2] == 0:
        raise ValueError(f"{op}: softmax over no keys (Tk = 0) or scores from no features (d = 0) "
                         f"are undefined; got q {tuple(q.shape)}, k {tuple(k.shape)}")


def attention(q, k, v, is_causal=False, return_lse=False, backend=None):
    """out = softmax(q k^T / sqrt(d)) v, (B, Tq, dv); with return_lse also lse (B, Tq), the row
    log-sum-exp of the scaled scores. Causal: query i sees keys j <= i (top-left aligned)."""
    _check_arrays("attention", backend, q=q, k=k, v=v)
    _check_flag("attention", "is_causal", is_causal)
    _check_flag("attention", "return_lse", return_lse)
    _check_attention("attention", q, k, v)
    batch, tq, dv = q.shape[0], q.shape[1], v.shape[2]
    if batch == 0 or tq == 0 or dv == 0:
        xp = array_module(q)
        out = xp.zeros((batch, tq, dv), q.dtype)
        if not return_lse:
            return out
        # lse does not depend on v: the reference computes it without a kernel call.
        lse = _call("numpy", "attention", q, k, v, is_causal=bool(is_causal), return_lse=True)[1]
        return out, lse
    return _call(backend, "attention", q, k, v, is_causal=bool(is_causal), return_lse=bool(return_lse))


def attention_backward(q, k, v, out, lse, grad_out, is_causal=False, backend=None):
    """(dq, dk, dv) of attention, from the saved out and lse (B, Tq) and the gradient of out."""
    _check_arrays("attention_backward", backend, q=q, k=k, v=v, out=out, lse=lse, grad_out=grad_out)
    _check_flag("attention_backward", "is_causal", is_causal)
    _check_attention("attention_backward", q, k, v)
    batch, tq, dv = q.shape[0], q.shape[1], v.shape[2]
    if tuple(out.shape) != (batch, tq, dv) or tuple(grad_out.shape) != (batch, tq, dv):
        raise ValueError(f"attention_backward: out and grad_out must be (B, Tq, dv) = {(batch, tq, dv)}; "
                         f"got out {tuple(out.shape)}, grad_out {tuple(grad_out.shape)}")
    if tuple(lse.shape) != (batch, tq):
        raise ValueError(f"attention_backward: lse must be (B, Tq) = {(batch, tq)}, got {tuple(lse.shape)}")
    if batch == 0 or tq == 0 or dv == 0:
        # No query, or no output feature: nothing flows back.
        xp = array_module(q)
        return xp.zeros(q.shape, q.dtype), xp.zeros(k.shape, k.dtype), xp.zeros(v.shape, v.dtype)
    return _call(backend, "attention_backward", q, k, v, out, lse, grad_out, is_causal=bool(is_causal))


# The fused ops: the "c" backend checks its arguments itself (kernels/layernorm.c, cross_entropy.c, adamw.c,
# activation.c); numpy_backend holds the reference math.

def layer_norm(x, weight, bias, eps=1e-5, backend=None):
    """(out, mean, rstd): LayerNorm over the last dim of x (..., C), weight and bias (C,) or None."""
    return _call(backend, "layer_norm", x, weight, bias, eps)


def layer_norm_backward(x, weight, mean, rstd, grad_out, backend=None):
    """(dx, dweight, dbias) of layer_norm from its saved mean and rstd."""
    return _call(backend, "layer_norm_backward", x, weight, mean, rstd, grad_out)


def cross_entropy(logits, targets, backend=None):
    """(mean loss, lse (N,)): softmax cross-entropy of logits (N, V) against integer targets (N,)."""
    return _call(backend, "cross_entropy", logits, targets)


def cross_entropy_backward(logits, targets, lse, grad=1.0, backend=None):
    """dlogits = grad·(softmax(logits) − onehot(targets))/N, from the saved lse."""
    return _call(backend, "cross_entropy_backward", logits, targets, lse, grad)


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, backend=None):
    """AdamW on every array of the lists, in place (steps[i] >= 1: tensor i's step count)."""
    return _call(backend, "adamw_step", params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps,
                 weight_decay)


def gelu(x, backend=None):
    """(GELU(x), Φ(x)): the exact GELU x·Φ(x) and the normal CDF its backward reuses."""
    return _call(backend, "gelu", x)


def gelu_backward(x, cdf, grad_out, backend=None):
    """grad_out·(Φ(x) + x·φ(x))."""
    return _call(backend, "gelu_backward", x, cdf, grad_out)
