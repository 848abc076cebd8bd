"""The accelerated ops on plain arrays: one table of backends, one check of the arguments.

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
    gelu(x) -> (out, cdf)             the exact GELU x·Φ(x), any shape, and Φ(x) for the backward
    gelu_backward(x, cdf, grad_out) -> dx = grad_out·(Φ(x) + x·φ(x))
    lstm(gx, h0, c0, w_hh) -> (out, gates)
                                      one LSTM layer over all T steps: gx (T, B, 4H) the input projection,
                                      h0, c0 (B, H), w_hh (4H, H) -> out (2, T, B, H) = [every h_t, every c_t],
                                      gates (T, B, 4H) the activated i, f, g, o for the backward
    lstm_backward(h0, c0, w_hh, out, gates, grad_out) -> (dgx, dh0, dc0, dw_hh)
    im2col(x, kernel_size, stride, padding) -> cols (N·Ho·Wo, kh·kw·C), every receptive field of x (N, C, H, W)
    im2col_backward(grad_cols, x_shape, kernel_size, stride, padding) -> dx (N, C, H, W)   (col2im)
    max_pool2d(x, kernel_size, stride) -> (out, argmax)   (N, C, Ho, Wo) each; argmax = h·W + w of the max
    max_pool2d_backward(argmax, grad_out, x_shape) -> dx (N, C, H, W)

Each takes `backend=` "numpy" (the reference), "c", "cuda" or "cuda-sim";
None means this thread's choice (`mg.set_backend`, `mg.backend`, see
minigrad/backend.py). The Tensor ops call these functions for every backend,
the reference included.

How a call runs: this module checks every argument once (array type, dtype,
rank, shape agreement) and answers empty problems itself; then it looks the
function up in the backend's table `KERNELS = {function name: dtypes}`. A
backend that lacks the function, or the dtype, leaves the call to the
reference "numpy" (never an error, never a silent change of dtype). So a
backend module holds only its kernels and its hardware limits, and a new op
is: its reference in numpy_backend.py, its check and entry here, its name in
OPS, and a kernel plus a KERNELS line in whichever backend has one.
Backend modules are imported on first use: importing this compiles nothing.
"""
import importlib
import math

import numpy as np

from minigrad.backend import backend_for, check_backend
from minigrad.device import array_module
from minigrad.dtypes import HALF_FLOATS
from minigrad.kernels.halfconv import cast

__all__ = ["matmul", "matmul_backward", "attention", "attention_backward", "layer_norm", "layer_norm_backward",
           "cross_entropy", "cross_entropy_backward", "adamw_step", "gelu", "gelu_backward", "lstm", "lstm_backward",
           "im2col", "im2col_backward", "max_pool2d", "max_pool2d_backward"]

# The op families `mg.backend(name, ops=...)` can route; NAME_backward goes with NAME.
OPS = ("matmul", "attention", "layer_norm", "cross_entropy", "adamw_step", "gelu", "lstm", "im2col", "max_pool2d")
MODULES = {"numpy": "numpy_backend", "c": "c_backend", "cuda": "cuda_backend", "cuda-sim": "cuda_backend"}
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))

_loaded = {}


def backend_module(name):
    """The module of backend `name` (imported once)."""
    if name not in _loaded:
        _loaded[name] = importlib.import_module(f"{__name__}.{MODULES[check_backend(name)]}")
    return _loaded[name]


def family(op):
    """The op family a function belongs to: "attention_backward" goes with "attention"."""
    return op.removesuffix("_backward")


def chosen(op, backend):
    """The backend asked for: `backend` when given, else this thread's choice for op's family."""
    return backend_for(family(op)) if backend is None else check_backend(backend)


def resolve(op, backend, dtype):
    """The backend that runs function `op` on `dtype`: the one asked for if its table has both, else "numpy".
    16-bit floats run on the float32 kernels (see _through_float32), so their float32 entry decides."""
    name = chosen(op, backend)
    if dtype in HALF_FLOATS and op != "adamw_step":
        dtype = np.dtype(np.float32)
    if name != "numpy" and dtype not in backend_module(name).KERNELS.get(op, ()):
        return "numpy"
    return name


# Outputs that are statistics for the backward pass (row log-sum-exp, mean, 1/σ, Φ(x), the LSTM's gates): kept in
# float32 for 16-bit inputs, as PyTorch does, since rounding lse to bfloat16 would put a 2⁻⁸·|lse| error into
# exp(s − lse).
STATISTICS = {"attention": (1,), "layer_norm": (1, 2), "cross_entropy": (1,), "gelu": (1,), "lstm": (1,)}


def _call(op, backend, dtype, *args, **kwargs):
    if dtype in HALF_FLOATS and op != "adamw_step":
        return _through_float32(op, backend, dtype, *args, **kwargs)
    name = resolve(op, backend, dtype)
    if name in ("cuda", "cuda-sim"):
        kwargs["sim"] = name == "cuda-sim"
    module = backend_module(name)
    # a backend's DISPATCHED entries skip re-checking what this module has just checked
    kernel = getattr(module, "DISPATCHED", {}).get(op) or getattr(module, op)
    return kernel(*args, **kwargs)


def _through_float32(op, backend, dtype, *args, **kwargs):
    """A 16-bit op as PyTorch's CPU kernels run it: inputs widened to float32, the float32 kernel of the chosen
    backend (sums accumulate in float32), results rounded once to `dtype`, statistics kept in float32."""
    widened = [cast(x, np.float32) if getattr(x, "dtype", None) in HALF_FLOATS else x for x in args]
    result = _call(op, backend, np.dtype(np.float32), *widened, **kwargs)
    if not isinstance(result, tuple):
        return cast(result, dtype)
    keep = STATISTICS.get(op, ())  # and index results (max_pool2d's argmax) stay integers
    return tuple(r if r is None or i in keep or r.dtype.kind in "iu" else cast(r, dtype)
                 for i, r in enumerate(result))


def check_statistics(op, dtype, **arrays):
    """Saved statistics (lse, mean, rstd, cdf) have the inputs' dtype, or float32 for 16-bit inputs."""
    allowed = {dtype, np.dtype(np.float32)} if dtype in HALF_FLOATS else {dtype}
    for name, x in arrays.items():
        if x is not None and x.dtype not in allowed:
            raise TypeError(f"{op}: {name} must be {' or '.join(sorted(map(str, allowed)))} for {dtype} inputs, "
                            f"got {x.dtype}")


# ----------------------------------------------------------------- argument checks

def _describe(arrays):
    return ", ".join(f"{name} {x.dtype} {tuple(x.shape)}" for name, x in arrays.items())


def _is_number_dtype(dtype, floats_only):
    if dtype in FLOATS or dtype in HALF_FLOATS:  # the common cases first (HALF_FLOATS holds ml_dtypes' bfloat16,
        return True                              # whose dtype kind is "V")
    if not dtype.isnative:
        return False
    return dtype.kind == "f" if floats_only else dtype.kind in "biuf"


def check_arrays(op, backend, floats_only=True, **arrays):
    """Same-kind arrays (all NumPy or all CuPy) of one native-order dtype; returns that dtype."""
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
    dtype = dtypes.pop()
    if dtypes or not _is_number_dtype(dtype, floats_only):
        kinds = "floating-point" if floats_only else "numeric"
        raise TypeError(f"{op}: needs {kinds} arrays of one native-order dtype; got {_describe(arrays)}")
    if not host and chosen(op, backend) == "c":
        raise TypeError(f"{op}: backend 'c' runs on host (NumPy) arrays; got CuPy arrays. "
                        "Use backend 'cuda', or copy them to the host with .get()")
    return dtype


def _given(**arrays):
    """The arrays that are not None (an optional weight or bias)."""
    return {name: x for name, x in arrays.items() if x is not None}


def _check_flag(op, name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{op}: {name} must be True or False, got {value!r}")


def matmul_shape(op, a, b):
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


def check_attention(op, q, k, v, out=None, lse=None, grad_out=None):
    """Ranks and shapes of q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv) and of the saved out (B, Tq, dv),
    lse (B, Tq) and grad_out (B, Tq, dv) when given; Tk and d must be positive."""
    if q.ndim != 3 or k.ndim != 3 or v.ndim != 3:
        raise ValueError(f"{op}: q, k, v must be 3-D (B, T, d); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if not (q.shape[0] == k.shape[0] == v.shape[0] and k.shape[1] == v.shape[1] and q.shape[2] == k.shape[2]):
        raise ValueError(f"{op}: shapes must be q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv); "
                         f"got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] == 0 or q.shape[2] == 0:
        raise ValueError(f"{op}: softmax over no keys (Tk = 0) or scores from no features (d = 0) "
                         f"are undefined; got q {tuple(q.shape)}, k {tuple(k.shape)}")
    batch, tq, dv = q.shape[0], q.shape[1], v.shape[2]
    for name, x in (("out", out), ("grad_out", grad_out)):
        if x is not None and tuple(x.shape) != (batch, tq, dv):
            raise ValueError(f"{op}: out and grad_out must be (B, Tq, dv) = {(batch, tq, dv)}; "
                             f"got {name} {tuple(x.shape)}")
    if lse is not None and tuple(lse.shape) != (batch, tq):
        raise ValueError(f"{op}: lse must be (B, Tq) = {(batch, tq)}, got {tuple(lse.shape)}")


# ----------------------------------------------------------------- matmul

def matmul(a, b, backend=None):
    """out = a @ b for (..., m, k) and (..., k, n) arrays, batch dims broadcast like numpy.matmul."""
    dtype = check_arrays("matmul", backend, floats_only=False, a=a, b=b)
    shape = matmul_shape("matmul", a, b)
    if math.prod(shape) == 0 or a.shape[-1] == 0:
        return array_module(a).zeros(shape, dtype)  # an empty sum is 0
    return _call("matmul", backend, dtype, a, b)


def matmul_backward(a, b, grad_out, backend=None):
    """(grad_a, grad_b) = (grad_out @ b^T, a^T @ grad_out), each summed back to the shape of a / b."""
    dtype = check_arrays("matmul_backward", backend, floats_only=False, a=a, b=b, grad_out=grad_out)
    shape = matmul_shape("matmul_backward", a, b)
    if tuple(grad_out.shape) != shape:
        raise ValueError(f"matmul_backward: grad_out {tuple(grad_out.shape)} must have the shape of "
                         f"a @ b = {shape} (a {tuple(a.shape)}, b {tuple(b.shape)})")
    if math.prod(shape) == 0 or a.shape[-1] == 0:
        xp = array_module(a)
        return xp.zeros(a.shape, dtype), xp.zeros(b.shape, dtype)
    return _call("matmul_backward", backend, dtype, a, b, grad_out)


# ----------------------------------------------------------------- attention

def attention(q, k, v, is_causal=False, return_lse=False, backend=None):
    """out = softmax(q k^T / sqrt(d)) v, (B, Tq, dv); with return_lse also lse (B, Tq), the row
    log-sum-exp of the scaled scores. Causal: query i sees keys j <= i (top-left aligned)."""
    dtype = check_arrays("attention", backend, q=q, k=k, v=v)
    _check_flag("attention", "is_causal", is_causal)
    _check_flag("attention", "return_lse", return_lse)
    check_attention("attention", q, k, v)
    batch, tq, dv = q.shape[0], q.shape[1], v.shape[2]
    if batch == 0 or tq == 0 or dv == 0:
        out = array_module(q).zeros((batch, tq, dv), dtype)
        if not return_lse:
            return out
        # lse does not depend on v: the reference computes it without a kernel call.
        return out, _call("attention", "numpy", dtype, q, k, v, is_causal=bool(is_causal), return_lse=True)[1]
    return _call("attention", backend, dtype, q, k, v, is_causal=bool(is_causal), return_lse=bool(return_lse))


def attention_backward(q, k, v, out, lse, grad_out, is_causal=False, backend=None):
    """(dq, dk, dv) of attention, from the saved out and lse (B, Tq) and the gradient of out."""
    dtype = check_arrays("attention_backward", backend, q=q, k=k, v=v, out=out, grad_out=grad_out)
    check_statistics("attention_backward", dtype, lse=lse)
    _check_flag("attention_backward", "is_causal", is_causal)
    check_attention("attention_backward", q, k, v, out, lse, grad_out)
    if q.shape[0] == 0 or q.shape[1] == 0 or v.shape[2] == 0:
        # No query, or no output feature: nothing flows back.
        xp = array_module(q)
        return xp.zeros(q.shape, dtype), xp.zeros(k.shape, dtype), xp.zeros(v.shape, dtype)
    return _call("attention_backward", backend, dtype, q, k, v, out, lse, grad_out, is_causal=bool(is_causal))


# ----------------------------------------------------------------- the fused ops of kernels/*.c
# layernorm.c, cross_entropy.c, adamw.c and activation.c; their references in numpy_backend.py.

def check_shape(op, name, x, shape):
    if x is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{op}: {name} must have shape {tuple(shape)}, got {tuple(x.shape)}")


def check_layer_norm(op, x, weight, mean=None, rstd=None, grad_out=None, bias=None):
    """x (..., C) with C >= 1; weight, bias (C,) or None; the saved mean, rstd (...) and grad_out (..., C)."""
    if x.ndim < 1 or x.shape[-1] == 0:
        raise ValueError(f"{op}: x must have a non-empty last dim (..., C), got shape {tuple(x.shape)}")
    for name, y, shape in (("weight", weight, x.shape[-1:]), ("bias", bias, x.shape[-1:]),
                           ("mean", mean, x.shape[:-1]), ("rstd", rstd, x.shape[:-1]),
                           ("grad_out", grad_out, x.shape)):
        check_shape(op, name, y, shape)


def layer_norm(x, weight, bias, eps=1e-5, backend=None):
    """(out, mean, rstd): LayerNorm over the last dim of x (..., C), weight and bias (C,) or None."""
    dtype = check_arrays("layer_norm", backend, **_given(x=x, weight=weight, bias=bias))
    check_layer_norm("layer_norm", x, weight, bias=bias)
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps!r}")
    return _call("layer_norm", backend, dtype, x, weight, bias, eps)


def layer_norm_backward(x, weight, mean, rstd, grad_out, backend=None):
    """(dx, dweight, dbias) of layer_norm from its saved mean and rstd."""
    dtype = check_arrays("layer_norm_backward", backend, **_given(x=x, weight=weight, grad_out=grad_out))
    check_statistics("layer_norm_backward", dtype, mean=mean, rstd=rstd)
    check_layer_norm("layer_norm_backward", x, weight, mean, rstd, grad_out)
    return _call("layer_norm_backward", backend, dtype, x, weight, mean, rstd, grad_out)


def check_targets(op, logits, targets):
    """logits (N, V) with N, V >= 1 and targets (N,) of integer class indices in [0, V); returns the
    targets as C-contiguous int64."""
    if logits.ndim != 2 or logits.shape[1] == 0:
        raise ValueError(f"{op}: logits must be (N, V) with V >= 1 classes, got shape {tuple(logits.shape)}")
    if logits.shape[0] == 0:
        raise ValueError(f"{op}: the mean over no rows (N = 0) is undefined")
    if not isinstance(targets, np.ndarray) or targets.dtype.kind not in "iu":
        raise TypeError(f"{op}: targets must be a NumPy array of integer class indices, got "
                        f"{getattr(targets, 'dtype', type(targets).__name__)}")
    check_shape(op, "targets", targets, logits.shape[:1])
    if targets.min() < 0 or targets.max() >= logits.shape[1]:
        bad = targets.min() if targets.min() < 0 else targets.max()
        raise IndexError(f"{op}: target {bad} is out of range for {logits.shape[1]} classes "
                         f"(expected 0 <= target < {logits.shape[1]})")
    return np.ascontiguousarray(targets, dtype=np.int64)


def cross_entropy(logits, targets, backend=None):
    """(mean loss, lse (N,)): softmax cross-entropy of logits (N, V) against integer targets (N,)."""
    dtype = check_arrays("cross_entropy", backend, logits=logits)
    targets = check_targets("cross_entropy", logits, targets)
    return _call("cross_entropy", backend, dtype, logits, targets)


def cross_entropy_backward(logits, targets, lse, grad=1.0, backend=None):
    """dlogits = grad·(softmax(logits) − onehot(targets))/N, from the saved lse."""
    dtype = check_arrays("cross_entropy_backward", backend, logits=logits)
    check_statistics("cross_entropy_backward", dtype, lse=lse)
    targets = check_targets("cross_entropy_backward", logits, targets)
    check_shape("cross_entropy_backward", "lse", lse, logits.shape[:1])
    return _call("cross_entropy_backward", backend, dtype, logits, targets, lse, grad)


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, backend=None):
    """AdamW on every array of the lists, in place (steps[i] >= 1: tensor i's step count)."""
    lists = dict(params=params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs, steps=steps)
    if any(len(v) != len(params) for v in lists.values()):
        raise ValueError("adamw_step: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length; "
                         "got " + ", ".join(f"{name} {len(v)}" for name, v in lists.items()))
    if not params:
        return None
    dtype = check_arrays("adamw_step", backend, **{f"{name}[{i}]": x for name in lists if name != "steps"
                                                   for i, x in enumerate(lists[name])})
    for i, p in enumerate(params):
        for name in ("grads", "exp_avgs", "exp_avg_sqs"):
            check_shape("adamw_step", f"{name}[{i}]", lists[name][i], p.shape)
    if min(steps) < 1:
        raise ValueError(f"adamw_step: step counts must be >= 1 (this step included), got {min(steps)}")
    return _call("adamw_step", backend, dtype, params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps,
                 weight_decay)


def gelu(x, backend=None):
    """(GELU(x), Φ(x)): the exact GELU x·Φ(x) elementwise, any shape, and the normal CDF its backward reuses."""
    dtype = check_arrays("gelu", backend, x=x)
    if x.size == 0:
        xp = array_module(x)
        return xp.zeros(x.shape, dtype), xp.zeros(x.shape, np.float32 if dtype in HALF_FLOATS else dtype)
    return _call("gelu", backend, dtype, x)


def gelu_backward(x, cdf, grad_out, backend=None):
    """dx = grad_out·(Φ(x) + x·φ(x)), from x and the Φ(x) that gelu kept."""
    dtype = check_arrays("gelu_backward", backend, x=x, grad_out=grad_out)
    check_statistics("gelu_backward", dtype, cdf=cdf)
    check_shape("gelu_backward", "cdf", cdf, x.shape)
    check_shape("gelu_backward", "grad_out", grad_out, x.shape)
    if x.size == 0:
        return array_module(x).zeros(x.shape, dtype)
    return _call("gelu_backward", backend, dtype, x, cdf, grad_out)


# ----------------------------------------------------------------- the LSTM layer (kernels/lstm.c)

def check_lstm(op, h0, c0, w_hh, gx=None, out=None, gates=None, grad_out=None):
    """w_hh (4H, H), h0 and c0 (B, H), and gx (T, B, 4H) or the saved out (2, T, B, H), gates (T, B, 4H)
    and grad_out (2, T, B, H); returns (T, B, H)."""
    if w_hh.ndim != 2 or w_hh.shape[0] != 4 * w_hh.shape[1]:
        raise ValueError(f"{op}: w_hh must be (4·H, H), the gates i, f, g, o stacked along dim 0; "
                         f"got shape {tuple(w_hh.shape)}")
    if h0.ndim != 2:
        raise ValueError(f"{op}: h0 must be (B, H), got shape {tuple(h0.shape)}")
    steps_name, steps = ("gx", gx) if gx is not None else ("gates", gates)
    if steps.ndim != 3:
        raise ValueError(f"{op}: {steps_name} must be (T, B, 4·H), got shape {tuple(steps.shape)}")
    T, B, H = steps.shape[0], h0.shape[0], w_hh.shape[1]
    for name, x, shape in (("gx", gx, (T, B, 4 * H)), ("h0", h0, (B, H)), ("c0", c0, (B, H)),
                           ("out", out, (2, T, B, H)), ("gates", gates, (T, B, 4 * H)),
                           ("grad_out", grad_out, (2, T, B, H))):
        if x is not None and tuple(x.shape) != shape:
            raise ValueError(f"{op}: {name} must have shape {shape} (T={T} steps, B={B}, H={H} from "
                             f"{steps_name} {tuple(steps.shape)}, h0 {tuple(h0.shape)}, w_hh {tuple(w_hh.shape)}), "
                             f"got {tuple(x.shape)}")
    return T, B, H


def lstm(gx, h0, c0, w_hh, backend=None):
    """(out, gates): every step of c_t = f ⊙ c_{t−1} + i ⊙ g, h_t = o ⊙ tanh(c_t) with [i, f, g, o] = σ, σ, tanh, σ
    of (gx_t + h_{t−1} W_hhᵀ). out (2, T, B, H) holds every h_t then every c_t; gates (T, B, 4H) the activations."""
    dtype = check_arrays("lstm", backend, gx=gx, h0=h0, c0=c0, w_hh=w_hh)
    T, B, H = check_lstm("lstm", h0, c0, w_hh, gx=gx)
    if T * B * H == 0:
        xp = array_module(gx)
        return xp.zeros((2, T, B, H), dtype), xp.zeros(gx.shape, np.float32 if dtype in HALF_FLOATS else dtype)
    return _call("lstm", backend, dtype, gx, h0, c0, w_hh)


def lstm_backward(h0, c0, w_hh, out, gates, grad_out, backend=None):
    """(dgx, dh0, dc0, dw_hh) of lstm, back through time from grad_out (2, T, B, H), the gradient of out."""
    dtype = check_arrays("lstm_backward", backend, h0=h0, c0=c0, w_hh=w_hh, out=out, grad_out=grad_out)
    check_statistics("lstm_backward", dtype, gates=gates)
    T, B, H = check_lstm("lstm_backward", h0, c0, w_hh, out=out, gates=gates, grad_out=grad_out)
    if T * B * H == 0:  # no step, no sample or no unit: nothing flows back
        xp = array_module(h0)
        return (xp.zeros(gates.shape, dtype), xp.zeros(h0.shape, dtype), xp.zeros(c0.shape, dtype),
                xp.zeros(w_hh.shape, dtype))
    return _call("lstm_backward", backend, dtype, h0, c0, w_hh, out, gates, grad_out)


# ----------------------------------------------------------------- convolution and pooling
# kernels/conv.c; the references in numpy_backend.py (lesson 02_convolution).

def _is_int_at_least(v, least):
    return (type(v) is int or isinstance(v, np.integer)) and v >= least


def _check_pair(op, name, value, least):
    # written out, no generator: a conv or pooling call checks three pairs, on every call
    if not (type(value) is tuple and len(value) == 2
            and _is_int_at_least(value[0], least) and _is_int_at_least(value[1], least)):
        raise ValueError(f"{op}: {name} must be a pair of ints >= {least}, got {value!r}")


def check_window(op, shape, kernel_size, stride, padding=(0, 0)):
    """An image shape (N, C, H, W) and a kh×kw window moved by stride over it zero-padded by padding:
    returns the output size (Ho, Wo) after checking that the window fits."""
    if len(shape) != 4:
        raise ValueError(f"{op}: expected an image batch (N, C, H, W), got shape {tuple(shape)}")
    if not (type(kernel_size) is type(stride) is type(padding) is tuple  # the common case in one test: plain ints
            and len(kernel_size) == len(stride) == len(padding) == 2
            and type(kernel_size[0]) is type(kernel_size[1]) is type(stride[0]) is type(stride[1]) is int
            and type(padding[0]) is type(padding[1]) is int
            and min(kernel_size) >= 1 and min(stride) >= 1 and min(padding) >= 0):
        _check_pair(op, "kernel_size", kernel_size, 1)  # NumPy ints pass; anything else says what is wrong
        _check_pair(op, "stride", stride, 1)
        _check_pair(op, "padding", padding, 0)
    (kh, kw), (sh, sw), (ph, pw) = kernel_size, stride, padding
    Hp, Wp = shape[2] + 2 * ph, shape[3] + 2 * pw
    if Hp < kh or Wp < kw:
        raise ValueError(f"{op}: the {kh}x{kw} window is larger than the padded input {Hp}x{Wp} "
                         f"(input shape {tuple(shape)}, padding {padding})")
    return (Hp - kh) // sh + 1, (Wp - kw) // sw + 1


def check_image_shape(op, x_shape):
    if not (type(x_shape) is tuple and len(x_shape) == 4 and _is_int_at_least(x_shape[0], 0)
            and _is_int_at_least(x_shape[1], 0) and _is_int_at_least(x_shape[2], 0) and _is_int_at_least(x_shape[3], 0)):
        raise ValueError(f"{op}: x_shape must be (N, C, H, W), four ints >= 0, got {x_shape!r}")


def im2col(x, kernel_size, stride=(1, 1), padding=(0, 0), bias_column=False, backend=None):
    """cols (N·Ho·Wo, kh·kw·C): row (n, i, j), column (p, q, c) = x[n, c, i·sh + p − ph, j·sw + q − pw],
    0 in the zero padding; x (N, C, H, W) in any layout. Pairs (vertical, horizontal) for the rest.
    bias_column=True appends a column of ones (kh·kw·C + 1 columns): the input the bias multiplies."""
    dtype = check_arrays("im2col", backend, floats_only=False, x=x)
    Ho, Wo = check_window("im2col", x.shape, kernel_size, stride, padding)
    _check_flag("im2col", "bias_column", bias_column)
    N, C = x.shape[:2]
    if N == 0 or C == 0:
        cols = array_module(x).zeros((N * Ho * Wo, kernel_size[0] * kernel_size[1] * C + bias_column), dtype)
        cols[:, kernel_size[0] * kernel_size[1] * C:] = 1
        return cols
    return _call("im2col", backend, dtype, x, kernel_size, stride, padding, bool(bias_column))


def im2col_backward(grad_cols, x_shape, kernel_size, stride=(1, 1), padding=(0, 0), backend=None):
    """col2im, im2col's adjoint: dx (N, C, H, W) = every entry of grad_cols (N·Ho·Wo, kh·kw·C) added onto the
    pixel im2col read it from (none for the padding)."""
    dtype = check_arrays("im2col_backward", backend, floats_only=False, grad_cols=grad_cols)
    check_image_shape("im2col_backward", x_shape)
    Ho, Wo = check_window("im2col_backward", x_shape, kernel_size, stride, padding)
    N, C = x_shape[:2]
    check_shape("im2col_backward", "grad_cols", grad_cols, (N * Ho * Wo, kernel_size[0] * kernel_size[1] * C))
    if grad_cols.size == 0:
        return array_module(grad_cols).zeros(x_shape, dtype)
    return _call("im2col_backward", backend, dtype, grad_cols, tuple(x_shape), kernel_size, stride, padding)


def max_pool2d(x, kernel_size, stride, backend=None):
    """(out, argmax), each (N, C, Ho, Wo): the maximum of each kh×kw window of x (N, C, H, W) moved by stride,
    and argmax = h·W + w, the pixel it came from (the first on ties; a NaN is the maximum)."""
    dtype = check_arrays("max_pool2d", backend, floats_only=False, x=x)
    Ho, Wo = check_window("max_pool2d", x.shape, kernel_size, stride)
    if x.size == 0:
        xp = array_module(x)
        return xp.zeros(x.shape[:2] + (Ho, Wo), dtype), xp.zeros(x.shape[:2] + (Ho, Wo), np.int64)
    return _call("max_pool2d", backend, dtype, x, kernel_size, stride)


def max_pool2d_backward(argmax, grad_out, x_shape, backend=None):
    """dx (N, C, H, W): each window's gradient added onto its maximum's pixel argmax (from max_pool2d)."""
    dtype = check_arrays("max_pool2d_backward", backend, floats_only=False, grad_out=grad_out)
    check_image_shape("max_pool2d_backward", x_shape)
    if grad_out.ndim != 4 or tuple(grad_out.shape[:2]) != tuple(x_shape[:2]):
        raise ValueError(f"max_pool2d_backward: grad_out must be (N, C, Ho, Wo) = {tuple(x_shape[:2])} + (Ho, Wo), "
                         f"got {tuple(grad_out.shape)}")
    check_shape("max_pool2d_backward", "argmax", argmax, grad_out.shape)
    if not isinstance(argmax, type(grad_out)) or argmax.dtype != np.int64:
        raise TypeError(f"max_pool2d_backward: argmax must be an int64 array like grad_out, got "
                        f"{type(argmax).__name__} {getattr(argmax, 'dtype', '')}")
    if grad_out.size == 0:
        return array_module(grad_out).zeros(x_shape, dtype)
    # the values of argmax are checked where they are used (each backend), before anything is written there
    return _call("max_pool2d_backward", backend, dtype, argmax, grad_out, tuple(x_shape))


def raise_outside_image(op, argmax, pixels):
    """The IndexError for an argmax that names no pixel of an H·W image."""
    raise IndexError(f"{op}: argmax must lie in [0, H·W) = [0, {pixels}), got values in "
                     f"[{argmax.min()}, {argmax.max()}]")
