"""Backend "c": the C kernels of kernels/*.c, compiled by build.py into `minigrad._ckernels`.

One loader of the compiled module, then one section per kernel family.
KERNELS lists what this backend runs, with the dtypes; `minigrad.kernels`
sends everything else to the reference, and has already checked dtypes,
ranks, shapes and emptiness. This module makes every array safe to hand to C: pointers only to aligned,
native-order data, row strides passed as leading dimensions when a view is
row-major (or column-major, as a transposed operand) with a unit inner
stride, and a copy otherwise. Outputs are fresh arrays, never inputs.
"""
import glob
import importlib
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np

from minigrad.kernels import (FLOATS, check_attention, check_image_shape, check_layer_norm, check_lstm, check_shape,
                              check_targets, check_window, numpy_backend, raise_outside_image)

KERNELS = {name: FLOATS for name in ("matmul", "matmul_backward", "attention", "attention_backward",
                                     "layer_norm", "layer_norm_backward", "cross_entropy", "cross_entropy_backward",
                                     "adamw_step", "gelu", "gelu_backward", "lstm", "lstm_backward", "im2col",
                                     "im2col_backward", "max_pool2d", "max_pool2d_backward")}

# ----------------------------------------------------------------- loader

_NOT_BUILT = ("backend 'c' needs the compiled C kernels (minigrad._ckernels), which are not built{detail}. "
              "Install a C compiler (Debian/Ubuntu: `sudo apt install build-essential`; Fedora: "
              "`sudo dnf install gcc`; macOS: `xcode-select --install`; Windows: the Visual Studio "
              "Build Tools), then run `python build.py` in the repository root (or `pip install -e .` "
              "again). Meanwhile backend 'numpy' computes the same results.")

_lib = None
_ffi = None


def _import_extension():
    """minigrad._ckernels, or the build in $MINIGRAD_CKERNELS_DIR/minigrad/ (the sanitizer test uses this)."""
    directory = os.environ.get("MINIGRAD_CKERNELS_DIR")
    if not directory:
        return importlib.import_module("minigrad._ckernels")
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        for path in glob.glob(os.path.join(directory, "minigrad", "_ckernels" + suffix)):
            spec = importlib.util.spec_from_file_location("minigrad._ckernels", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules["minigrad._ckernels"] = module
            return module
    raise ImportError(f"no minigrad/_ckernels extension in MINIGRAD_CKERNELS_DIR={directory}")


def load():
    """(ffi, lib) of the compiled kernels, imported once; a clear error when they were never built.

    Before the extension (and with it OpenMP's runtime, libgomp) loads, OMP_WAIT_POLICY defaults to
    PASSIVE: OpenMP threads that wait for work then sleep instead of spinning on a core, which on a
    busy machine another process needs (set OMP_WAIT_POLICY=ACTIVE yourself to spin). After it loads,
    MINIGRAD_ISA (portable | avx2 | avx512), when set, picks the instruction set the kernels run on.
    """
    global _lib, _ffi
    if _lib is None:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            module = _import_extension()
        except ImportError as exc:
            raise RuntimeError(_NOT_BUILT.format(detail=f" ({exc})")) from None
        if os.environ.get("MINIGRAD_ISA"):
            _select_isa(module.lib, os.environ["MINIGRAD_ISA"], "MINIGRAD_ISA")
        _ffi, _lib = module.ffi, module.lib
        _matmul_functions.clear()  # they belong to the extension loaded before, if any
    return _ffi, _lib


ISAS = ("portable", "avx2", "avx512")


def _select_isa(lib, name, source):
    if name not in ISAS:
        raise ValueError(f"{source}={name!r}: choose one of {', '.join(ISAS)}")
    if not hasattr(lib, "kernels_set_isa"):
        raise RuntimeError("the compiled C kernels predate kernels/isa.c: rebuild them with `python build.py`")
    if lib.kernels_set_isa(name.encode()) != 0:
        supported = [isa for isa in ISAS if lib.kernels_isa_supported(isa.encode())]
        raise RuntimeError(f"{source}={name!r}: this CPU (or this build) cannot run the {name} kernels; "
                           f"it runs {', '.join(supported)}")


def isa():
    """The instruction set the C kernels run on: "portable", "avx2" or "avx512" (see kernels/isa.c)."""
    ffi, lib = load()
    return ffi.string(lib.kernels_isa()).decode()


def supported_isas():
    """The instruction sets this build and this CPU can run, from "portable" up."""
    _, lib = load()
    return tuple(name for name in ISAS if lib.kernels_isa_supported(name.encode()))


def set_isa(name):
    """Run the C kernels on instruction set `name` from now on (tests compare the copies this way)."""
    _, lib = load()
    _select_isa(lib, name, "set_isa")


def available():
    """Whether the compiled kernels load here (the default backend is "c" exactly when they do)."""
    try:
        load()
    except RuntimeError:
        return False
    return True


_parsed_num_threads = {}  # $MINIGRAD_NUM_THREADS's text -> its count: every kernel call reads it


def num_threads():
    """Threads for the parallel kernels: $MINIGRAD_NUM_THREADS, else 0 (the kernels then use all cores)."""
    text = os.environ.get("MINIGRAD_NUM_THREADS", "")
    if text not in _parsed_num_threads:
        value = text.strip()
        if value and (not value.isdigit() or int(value) < 1):
            raise ValueError(f"MINIGRAD_NUM_THREADS must be a positive integer, got {value!r}")
        _parsed_num_threads[text] = int(value) if value else 0
    return _parsed_num_threads[text]


def _threads(requested):
    """The thread count a parallel kernel gets: `requested`, else $MINIGRAD_NUM_THREADS, else 0 (all cores);
    the kernels never start more threads than there are cores, nor more than the work repays."""
    threads = num_threads() if requested is None else requested
    if not isinstance(threads, int) or threads < 0:
        raise ValueError(f"num_threads must be a non-negative int (0 = all cores), got {threads!r}")
    return threads


_C_ARRAYS = {np.dtype(np.float32): "float[]", np.dtype(np.float64): "double[]"}
_C_POINTERS = {np.dtype(np.float32): "float *", np.dtype(np.float64): "double *"}


def _pointer(x):
    """A C pointer to x's first element (x stays alive as long as the caller holds it)."""
    ffi = _ffi or load()[0]
    if x.flags.c_contiguous:  # the fast way, where the buffer protocol allows it
        return ffi.from_buffer(_C_ARRAYS[x.dtype], x)
    return ffi.cast(_C_POINTERS[x.dtype], x.ctypes.data)


def _check_status(status, op):
    if status != 0:
        raise MemoryError(f"{op}: the C kernel could not allocate its packing buffers")


# ----------------------------------------------------------------- matmul

MATMUL_VERSIONS = ("naive", "blocked", "packed", "simd", "parallel")
DEFAULT_MATMUL_VERSION = "parallel"


def simd_kernel():
    """The instruction set of the micro-kernel of versions "simd" and "parallel": "avx512", "avx2" or
    "portable" (the same as isa(): every kernel runs on the copy chosen at load time)."""
    ffi, lib = load()
    return ffi.string(lib.matmul_simd_kernel()).decode()


def _operand(x, trans):
    """(array, trans, ld) that describe op(x) to C as a row-major matrix with row stride ld.

    A row-major view passes as is; a column-major view (e.g. x.T of a row-major
    array) passes as the transpose of its row-major storage; anything else
    (negative, zero or non-multiple strides, misaligned or byte-swapped data) is copied.
    """
    rows, cols = x.shape
    flags = x.flags
    if flags.c_contiguous and flags.aligned and x.dtype.isnative:  # the common cases first, checked fast
        return x, trans, max(cols, 1)
    if flags.f_contiguous and flags.aligned and x.dtype.isnative:
        return x.T, not trans, max(rows, 1)  # its row-major storage (x.T), which _pointer passes fastest
    row_step, col_step = (stride // x.itemsize if stride % x.itemsize == 0 else -1 for stride in x.strides)
    if x.flags.aligned and x.dtype.isnative:
        if (cols == 1 or col_step == 1) and (rows == 1 or row_step >= cols):
            return x, trans, (row_step if rows > 1 else max(cols, 1))
        if (rows == 1 or row_step == 1) and (cols == 1 or col_step >= rows):
            return x, not trans, (col_step if cols > 1 else max(rows, 1))
    return np.array(x, order="C"), trans, max(cols, 1)  # a fresh, aligned copy (ascontiguousarray may not copy)


_matmul_functions = {}  # (version, dtype) -> (version, C function): looked up once, used on every call


def _matmul_function(version, dtype):
    key = (version, dtype)
    if _lib is None or key not in _matmul_functions:
        name = DEFAULT_MATMUL_VERSION if version is None else version
        if name not in MATMUL_VERSIONS:
            raise ValueError(f"unknown C matmul version {name!r}: choose one of {', '.join(MATMUL_VERSIONS)}")
        _, lib = load()
        symbol = f"matmul_{name}_{'f32' if dtype == np.float32 else 'f64'}"
        try:
            _matmul_functions[key] = name, getattr(lib, symbol)
        except AttributeError:
            raise RuntimeError(f"the compiled C kernels have no {symbol}: they are older than kernels/matmul.h. "
                               "Rebuild them with `python build.py` in the repository root") from None
    return _matmul_functions[key]


def _gemm(a, b, c, alpha, beta, trans_a, trans_b, version, threads):
    """c = alpha op(a) op(b) + beta c on validated 2-D arrays; c row-major, writable and separate from a, b."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    a, trans_a, lda = _operand(a, trans_a)
    b, trans_b, ldb = _operand(b, trans_b)
    version, function = _matmul_function(version, c.dtype)
    args = (int(trans_a), int(trans_b), m, n, k, alpha, _pointer(a), lda, _pointer(b), ldb,
            beta, _pointer(c), c.strides[0] // c.itemsize if m > 1 else max(n, 1))
    if version == "parallel":
        args += (num_threads() if threads is None else threads,)
    _check_status(function(*args), "matmul")
    return c


def _is_row_major_output(c):
    return (c.flags.writeable and c.flags.aligned and c.dtype.isnative
            and (c.shape[1] <= 1 or c.strides[1] == c.itemsize)
            and (c.shape[0] <= 1 or (c.strides[0] % c.itemsize == 0 and c.strides[0] >= c.shape[1] * c.itemsize)))


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False, version=None, num_threads=None):
    """c = alpha * op(a) @ op(b) + beta * c, op(x) = x.T when trans_x, for 2-D float32/float64 arrays.

    The BLAS-style entry point the lessons and benchmarks call directly;
    returns c (a new array when c is None, with beta ignored). beta == 0 never
    reads c. c must not share memory with a or b.
    """
    for name, x in (("a", a), ("b", b)) + ((("c", c),) if c is not None else ()):
        if not isinstance(x, np.ndarray):
            raise TypeError(f"gemm: {name} must be a NumPy array, got {type(x).__name__}")
        if x.ndim != 2:
            raise ValueError(f"gemm: {name} must be 2-D, got shape {x.shape}")
    dtypes = {a.dtype, b.dtype} | ({c.dtype} if c is not None else set())
    if len(dtypes) > 1 or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"gemm: a, b{', c' if c is not None else ''} must all be float32 or all float64; got "
                        f"{', '.join(str(x.dtype) for x in (a, b, c) if x is not None)}")
    m, k = a.shape[::-1] if trans_a else a.shape
    k_b, n = b.shape[::-1] if trans_b else b.shape
    if k != k_b:
        raise ValueError(f"gemm: op(a) is ({m}, {k}) but op(b) is ({k_b}, {n}) "
                         f"(a {a.shape}, trans_a={trans_a}; b {b.shape}, trans_b={trans_b})")
    if c is None:
        c, beta = np.empty((m, n), a.dtype), 0.0
    elif c.shape != (m, n):
        raise ValueError(f"gemm: c must be op(a) @ op(b)'s shape ({m}, {n}), got {c.shape}")
    elif not c.flags.writeable:
        raise ValueError("gemm: c is read-only")
    elif np.may_share_memory(c, a) or np.may_share_memory(c, b):
        raise ValueError("gemm: c shares memory with a or b; the kernel would overwrite its own input. "
                         "Pass a separate output array")
    if m == 0 or n == 0:
        return c
    if k == 0:
        c[...] = 0 if beta == 0 else beta * c
        return c
    if _is_row_major_output(c):
        return _gemm(a, b, c, float(alpha), float(beta), trans_a, trans_b, version, num_threads)
    result = np.array(c, order="C") if beta != 0 else np.empty((m, n), c.dtype)
    c[...] = _gemm(a, b, result, float(alpha), float(beta), trans_a, trans_b, version, num_threads)
    return c


def _batched(x, batch):
    """x broadcast to batch + its matrix dims (a view)."""
    return np.broadcast_to(x, batch + x.shape[-2:])


def matmul(a, b, version=None, num_threads=None):
    """out = a @ b, (..., m, k) @ (..., k, n) -> (..., m, n): one C gemm per matrix of the batch.

    With a 2-D b (a Linear layer's weight), the batch of a folds into its rows: one gemm.
    """
    k, n = b.shape[-2:]
    if b.ndim == 2:
        a_rows = a.reshape(-1, k)  # (batch * m, k), a view when a allows it
        out = np.empty((a_rows.shape[0], n), a.dtype)
        return _gemm(a_rows, b, out, 1.0, 0.0, False, False, version, num_threads).reshape(a.shape[:-1] + (n,))
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_all, b_all = _batched(a, batch), _batched(b, batch)
    out = np.empty(batch + (a.shape[-2], n), a.dtype)  # (..., m, n)
    for index in np.ndindex(*batch):
        _gemm(a_all[index], b_all[index], out[index], 1.0, 0.0, False, False, version, num_threads)
    return out


def matmul_backward(a, b, grad_out, version=None, num_threads=None):
    """grad_a = grad_out @ b^T, grad_b = a^T @ grad_out through the kernel's transpose flags (no
    transposed copies); over broadcast batch dims the products accumulate (beta = 1) into one matrix."""
    k, n = b.shape[-2:]
    if b.ndim == 2:
        a_rows, grad_rows = a.reshape(-1, k), grad_out.reshape(-1, n)  # (batch * m, k), (batch * m, n)
        grad_a = _gemm(grad_rows, b, np.empty(a_rows.shape, a.dtype), 1.0, 0.0, False, True, version, num_threads)
        grad_b = _gemm(a_rows, grad_rows, np.empty((k, n), b.dtype), 1.0, 0.0, True, False, version, num_threads)
        return grad_a.reshape(a.shape), grad_b
    batch = grad_out.shape[:-2]
    # grad_a, grad_b with a's / b's batch dims padded on the left to len(batch).
    grad_a = np.zeros((1,) * (len(batch) + 2 - a.ndim) + a.shape, a.dtype)
    grad_b = np.zeros((1,) * (len(batch) + 2 - b.ndim) + b.shape, b.dtype)
    a_all, b_all = _batched(a, batch), _batched(b, batch)
    for index in np.ndindex(*batch):
        index_a = tuple(i if size > 1 else 0 for i, size in zip(index, grad_a.shape[:-2]))
        index_b = tuple(i if size > 1 else 0 for i, size in zip(index, grad_b.shape[:-2]))
        _gemm(grad_out[index], b_all[index], grad_a[index_a], 1.0, 1.0, False, True, version, num_threads)
        _gemm(a_all[index], grad_out[index], grad_b[index_b], 1.0, 1.0, True, False, version, num_threads)
    return grad_a.reshape(a.shape), grad_b.reshape(b.shape)


# ----------------------------------------------------------------- attention

ATTENTION_VERSIONS = ("naive", "flash")
DEFAULT_ATTENTION_VERSION = "flash"


def _c_array(x):
    """x as C-contiguous, aligned, native-order data: the only layout the attention kernels read."""
    if x.flags.c_contiguous and x.flags.aligned and x.dtype.isnative:
        return x
    return np.require(x, dtype=x.dtype.newbyteorder("="), requirements=("C_CONTIGUOUS", "ALIGNED"))


def _check_attention_arrays(op, q, k, v, **saved):
    """What the C kernels index by, checked again with the dispatcher's own check: this module's functions
    are also called directly (with `version=`), and a wrong shape would make C read outside the arrays."""
    arrays = dict(q=q, k=k, v=v, **saved)
    if not all(isinstance(x, np.ndarray) for x in arrays.values()):
        raise TypeError(f"{op}: backend 'c' takes NumPy arrays; got "
                        f"{', '.join(type(x).__name__ for x in arrays.values())}")
    if len({x.dtype.newbyteorder("=") for x in arrays.values()}) > 1 or q.dtype.kind != "f" or q.itemsize not in (4, 8):
        raise TypeError(f"{op}: needs float32 or float64 arrays, all of the same dtype; got "
                        f"{', '.join(f'{name} {x.dtype}' for name, x in arrays.items())}")
    check_attention(op, q, k, v, **saved)


def _attention_function(direction, version, dtype):
    version = DEFAULT_ATTENTION_VERSION if version is None else version
    if version not in ATTENTION_VERSIONS:
        raise ValueError(f"unknown C attention version {version!r}: choose one of {', '.join(ATTENTION_VERSIONS)}")
    _, lib = load()
    suffix = "f32" if dtype == np.float32 else "f64"
    return version, getattr(lib, f"attention_{direction}_{version}_{suffix}")


def _check_attention_status(status, op, q, k):
    if status == -2:
        raise ValueError(f"{op}: the kernel needs Tk >= 1 keys and d >= 1 features; "
                         f"got q {q.shape}, k {k.shape}")
    _check_status(status, op)


def attention(q, k, v, is_causal=False, return_lse=False, version=None, num_threads=None):
    """out = softmax(q k^T / sqrt(d)) v for q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv), in C.

    version "flash" (default: blocks of queries against streamed blocks of
    keys, online softmax, OpenMP threads) or "naive" (one row of scores at a
    time, one thread). Returns out (B, Tq, dv), or (out, lse) with lse (B, Tq)
    the log-sum-exp of each row of scaled scores.
    """
    _check_attention_arrays("attention", q, k, v)
    return _attention(q, k, v, is_causal, return_lse, version, num_threads)


def _attention(q, k, v, is_causal=False, return_lse=False, version=None, num_threads=None):
    q, k, v = _c_array(q), _c_array(k), _c_array(v)
    batch, tq, d = q.shape
    tk, dv = v.shape[1:]
    out = np.empty((batch, tq, dv), q.dtype)  # (B, Tq, dv)
    lse = np.empty((batch, tq), q.dtype)  # (B, Tq)
    version, function = _attention_function("forward", version, q.dtype)
    args = [_pointer(x) for x in (q, k, v, out, lse)] + [batch, tq, tk, d, dv, int(bool(is_causal))]
    if version == "flash":
        args.append(_threads(num_threads))
    _check_attention_status(function(*args), "attention", q, k)
    return (out, lse) if return_lse else out


def attention_backward(q, k, v, out, lse, grad_out, is_causal=False, version=None, num_threads=None):
    """(dq, dk, dv) of attention from the saved out and lse, in C, recomputing the probabilities
    P = exp(S - lse) block by block: dv = P^T dO, dS = P * (dO v^T - rowsum(dO * out)),
    dq = dS k / sqrt(d), dk = dS^T q / sqrt(d)."""
    _check_attention_arrays("attention_backward", q, k, v, out=out, lse=lse, grad_out=grad_out)
    return _attention_backward(q, k, v, out, lse, grad_out, is_causal, version, num_threads)


def _attention_backward(q, k, v, out, lse, grad_out, is_causal=False, version=None, num_threads=None):
    q, k, v, out, lse, grad_out = (_c_array(x) for x in (q, k, v, out, lse, grad_out))
    batch, tq, d = q.shape
    tk, dv = v.shape[1:]
    grads = np.empty_like(q), np.empty_like(k), np.empty_like(v)  # (B, Tq, d), (B, Tk, d), (B, Tk, dv)
    version, function = _attention_function("backward", version, q.dtype)
    args = ([_pointer(x) for x in (q, k, v, out, lse, grad_out) + grads]
            + [batch, tq, tk, d, dv, int(bool(is_causal))])
    if version == "flash":
        args.append(_threads(num_threads))
    _check_attention_status(function(*args), "attention_backward", q, k)
    return grads


# ----------------------------------------------------------------- fused ops
# kernels/layernorm.c, cross_entropy.c, adamw.c, activation.c. These functions are also called directly,
# so they run minigrad.kernels' own shape checks again before any pointer reaches C.

_NATIVE_FLOATS = {np.dtype(np.float32), np.dtype(np.float64)}


def _suffix(dtype):
    return "f32" if dtype == np.float32 else "f64"


def _check_floats(op, **arrays):
    """NumPy arrays (None allowed) of one float dtype, float32 or float64; returns that dtype."""
    given = {name: x for name, x in arrays.items() if x is not None}

    def described():  # only on error: formatting every dtype cost more than the AdamW kernel itself
        return ", ".join(f"{name} {getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
                         for name, x in given.items())

    if not all(isinstance(x, np.ndarray) for x in given.values()):
        raise TypeError(f"{op}: backend 'c' takes NumPy arrays; got {described()}")
    dtypes = {x.dtype for x in given.values()}
    if len(dtypes) > 1 or not dtypes <= _NATIVE_FLOATS:
        dtypes = {x.dtype.newbyteorder("=") for x in given.values()}  # byte-swapped data is copied later
        if len(dtypes) > 1 or not dtypes <= _NATIVE_FLOATS:
            raise TypeError(f"{op}: needs float32 or float64 arrays, all of the same dtype; got {described()}")
    return dtypes.pop()


def _optional_pointer(x):
    ffi, _ = load()
    return ffi.NULL if x is None else _pointer(x)


def layer_norm(x, weight, bias, eps=1e-5, num_threads=None):
    """(out, mean, rstd) of LayerNorm over the last dim of x (..., C), in C (kernels/layernorm.c);
    weight and bias (C,) or None. See numpy_backend.layer_norm for the formula."""
    dtype = _check_floats("layer_norm", x=x, weight=weight, bias=bias)
    check_layer_norm("layer_norm", x, weight, bias=bias)
    if not eps >= 0:
        raise ValueError(f"layer_norm: eps must be >= 0, got {eps!r}")
    return _layer_norm(x, weight, bias, eps, num_threads, dtype)


def _layer_norm(x, weight, bias, eps=1e-5, num_threads=None, dtype=None):
    dtype = x.dtype if dtype is None else dtype
    c = x.shape[-1]
    x, weight, bias = (None if a is None else _c_array(a) for a in (x, weight, bias))
    out = np.empty(x.shape, dtype)  # (..., C)
    mean, rstd = np.empty(x.shape[:-1], dtype), np.empty(x.shape[:-1], dtype)  # (...)
    _, lib = load()
    status = getattr(lib, f"layernorm_forward_{_suffix(dtype)}")(
        _pointer(x), _optional_pointer(weight), _optional_pointer(bias), _pointer(out), _pointer(mean),
        _pointer(rstd), x.size // c, c, float(eps), _threads(num_threads))
    _check_status(status, "layer_norm")
    return out, mean, rstd


def layer_norm_backward(x, weight, mean, rstd, grad_out, num_threads=None):
    """(dx, dweight, dbias) of LayerNorm from the saved mean and rstd, in C (kernels/layernorm.c)."""
    dtype = _check_floats("layer_norm_backward", x=x, weight=weight, mean=mean, rstd=rstd, grad_out=grad_out)
    check_layer_norm("layer_norm_backward", x, weight, mean, rstd, grad_out)
    return _layer_norm_backward(x, weight, mean, rstd, grad_out, num_threads, dtype)


def _layer_norm_backward(x, weight, mean, rstd, grad_out, num_threads=None, dtype=None):
    dtype = x.dtype if dtype is None else dtype
    c = x.shape[-1]
    x, weight, mean, rstd, grad_out = (None if a is None else _c_array(a) for a in (x, weight, mean, rstd, grad_out))
    dx, dweight, dbias = np.empty(x.shape, dtype), np.empty(c, dtype), np.empty(c, dtype)
    _, lib = load()
    status = getattr(lib, f"layernorm_backward_{_suffix(dtype)}")(
        _pointer(x), _optional_pointer(weight), _pointer(mean), _pointer(rstd), _pointer(grad_out),
        _pointer(dx), _pointer(dweight), _pointer(dbias), x.size // c, c, _threads(num_threads))
    _check_status(status, "layer_norm_backward")
    return dx, dweight, dbias


def _int64_pointer(x):
    ffi, _ = load()
    return ffi.from_buffer("int64_t[]", x)


def cross_entropy(logits, targets, num_threads=None):
    """(mean loss as a 0-d array, lse (N,)) of softmax cross-entropy, logits (N, V), targets (N,),
    in C (kernels/cross_entropy.c); keeps no (N, V) array. See numpy_backend.cross_entropy."""
    dtype = _check_floats("cross_entropy", logits=logits)
    targets = check_targets("cross_entropy", logits, targets)
    logits = _c_array(logits)
    lse = np.empty(logits.shape[0], dtype)  # (N,)
    _, lib = load()
    loss = getattr(lib, f"cross_entropy_forward_{_suffix(dtype)}")(
        _pointer(logits), _int64_pointer(targets), _pointer(lse), logits.shape[0], logits.shape[1],
        _threads(num_threads))
    return np.asarray(loss, dtype=dtype), lse


def cross_entropy_backward(logits, targets, lse, grad=1.0, num_threads=None):
    """dlogits = grad·(softmax(logits) − onehot(targets))/N from the saved lse, in C."""
    dtype = _check_floats("cross_entropy_backward", logits=logits, lse=lse)
    targets = check_targets("cross_entropy_backward", logits, targets)
    check_shape("cross_entropy_backward", "lse", lse, logits.shape[:1])
    logits, lse = _c_array(logits), _c_array(lse)
    dlogits = np.empty(logits.shape, dtype)  # (N, V)
    _, lib = load()
    getattr(lib, f"cross_entropy_backward_{_suffix(dtype)}")(
        _pointer(logits), _int64_pointer(targets), _pointer(lse), float(grad), _pointer(dlogits),
        logits.shape[0], logits.shape[1], _threads(num_threads))
    return dlogits


def adamw_step(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay,
               num_threads=None):
    """AdamW on every tensor of the lists in one C call (kernels/adamw.c), in place; steps[i] >= 1 is
    tensor i's step count. params, exp_avgs, exp_avg_sqs must be C-contiguous and writable (they are
    updated where they are); grads are copied when they are not contiguous."""
    op = "adamw_step"
    lists = dict(params=params, grads=grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs, steps=steps)
    count = len(params)
    if any(len(v) != count for v in lists.values()):
        raise ValueError(f"{op}: params, grads, exp_avgs, exp_avg_sqs and steps must have the same length; got "
                         + ", ".join(f"{name} {len(v)}" for name, v in lists.items()))
    if count == 0:
        return
    dtype = _check_floats(op, **{f"{name}[{i}]": x for name in ("params", "grads", "exp_avgs", "exp_avg_sqs")
                                 for i, x in enumerate(lists[name])})
    grads = list(grads)
    for i, (p, m, v) in enumerate(zip(params, exp_avgs, exp_avg_sqs)):
        for name, x in (("grads", grads[i]), ("exp_avgs", m), ("exp_avg_sqs", v)):
            check_shape(op, f"{name}[{i}]", x, p.shape)
        for name, x in (("params", p), ("exp_avgs", m), ("exp_avg_sqs", v)):
            if not (x.flags.c_contiguous and x.flags.writeable and x.flags.aligned and x.dtype.isnative):
                raise ValueError(f"{op}: {name}[{i}] must be a C-contiguous, writable, aligned native array "
                                 "(it is updated in place)")
        if np.may_share_memory(p, m) or np.may_share_memory(p, v) or np.may_share_memory(m, v):
            raise ValueError(f"{op}: params[{i}], exp_avgs[{i}] and exp_avg_sqs[{i}] must be separate arrays")
        grads[i] = _c_array(grads[i])
    steps = np.asarray(steps, dtype=np.int64)
    if steps.min() < 1:
        raise ValueError(f"{op}: step counts must be >= 1 (this step included), got {steps.min()}")
    if not (lr >= 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and eps >= 0 and weight_decay >= 0):
        raise ValueError(f"{op}: need lr >= 0, 0 <= beta1, beta2 < 1, eps >= 0, weight_decay >= 0; got lr={lr}, "
                         f"beta1={beta1}, beta2={beta2}, eps={eps}, weight_decay={weight_decay}")
    ffi, lib = load()
    real = "float" if dtype == np.float32 else "double"
    # (count,) tables of pointers: C reads them as `real **`; the buffers stay alive with `tables`
    tables = [ffi.new(f"{real} *[]", [ffi.from_buffer(f"{real}[]", a) for a in arrays])
              for arrays in (params, grads, exp_avgs, exp_avg_sqs)]
    sizes = np.fromiter((p.size for p in params), dtype=np.int64, count=count)
    getattr(lib, f"adamw_step_{_suffix(dtype)}")(
        count, *tables, _int64_pointer(sizes),
        _int64_pointer(steps), float(lr), float(beta1), float(beta2), float(eps), float(weight_decay),
        _threads(num_threads))


def gelu(x, num_threads=None):
    """(GELU(x), Φ(x)) in one pass, in C (kernels/activation.c). See numpy_backend.gelu."""
    return _gelu(x, num_threads, _check_floats("gelu", x=x))


def _gelu(x, num_threads=None, dtype=None):
    dtype = x.dtype if dtype is None else dtype
    x = _c_array(x)
    out, cdf = np.empty(x.shape, dtype), np.empty(x.shape, dtype)
    _, lib = load()
    getattr(lib, f"gelu_forward_{_suffix(dtype)}")(_pointer(x), _pointer(out), _pointer(cdf), x.size,
                                                    _threads(num_threads))
    return out, cdf


def gelu_backward(x, cdf, grad_out, num_threads=None):
    """grad_out·(Φ(x) + x·φ(x)) from the saved Φ, in C (kernels/activation.c)."""
    dtype = _check_floats("gelu_backward", x=x, cdf=cdf, grad_out=grad_out)
    check_shape("gelu_backward", "cdf", cdf, x.shape)
    check_shape("gelu_backward", "grad_out", grad_out, x.shape)
    return _gelu_backward(x, cdf, grad_out, num_threads, dtype)


def _gelu_backward(x, cdf, grad_out, num_threads=None, dtype=None):
    dtype = x.dtype if dtype is None else dtype
    x, cdf, grad_out = _c_array(x), _c_array(cdf), _c_array(grad_out)
    dx = np.empty(x.shape, dtype)
    _, lib = load()
    getattr(lib, f"gelu_backward_{_suffix(dtype)}")(_pointer(x), _pointer(cdf), _pointer(grad_out), _pointer(dx),
                                                     x.size, _threads(num_threads))
    return dx


# ----------------------------------------------------------------- the LSTM layer
# kernels/lstm.c: every time step forward, and back through time, in one call each.

def _lstm_function(direction, dtype):
    _, lib = load()
    name = f"lstm_{direction}_{_suffix(dtype)}"
    try:
        return getattr(lib, name)
    except AttributeError:
        raise RuntimeError(f"the compiled C kernels have no {name}: they are older than kernels/lstm.c. "
                           "Rebuild them with `python build.py` in the repository root") from None


def lstm(gx, h0, c0, w_hh):
    """(out (2, T, B, H), gates (T, B, 4H)) of one LSTM layer over all T steps of gx (T, B, 4H), in C
    (kernels/lstm.c). See numpy_backend.lstm for the formulas."""
    dtype = _check_floats("lstm", gx=gx, h0=h0, c0=c0, w_hh=w_hh)
    T, B, H = check_lstm("lstm", h0, c0, w_hh, gx=gx)
    gx, h0, c0, w_hh = (_c_array(x) for x in (gx, h0, c0, w_hh))
    out, gates = np.empty((2, T, B, H), dtype), np.empty((T, B, 4 * H), dtype)
    status = _lstm_function("forward", dtype)(*(_pointer(x) for x in (gx, h0, c0, w_hh, out, gates)), T, B, H)
    _check_status(status, "lstm")
    return out, gates


def lstm_backward(h0, c0, w_hh, out, gates, grad_out, num_threads=None):
    """(dgx, dh0, dc0, dw_hh) of lstm, back through time from grad_out (2, T, B, H), in C (kernels/lstm.c)."""
    dtype = _check_floats("lstm_backward", h0=h0, c0=c0, w_hh=w_hh, out=out, gates=gates, grad_out=grad_out)
    T, B, H = check_lstm("lstm_backward", h0, c0, w_hh, out=out, gates=gates, grad_out=grad_out)
    arrays = [_c_array(x) for x in (h0, c0, w_hh, out, gates, grad_out)]
    # dgx (T, B, 4H), dh0 (B, H), dc0 (B, H), dw_hh (4H, H)
    grads = tuple(np.empty(shape, dtype) for shape in ((T, B, 4 * H), (B, H), (B, H), (4 * H, H)))
    status = _lstm_function("backward", dtype)(*(_pointer(x) for x in arrays + list(grads)), T, B, H,
                                               _threads(num_threads))
    _check_status(status, "lstm_backward")
    return grads


# ----------------------------------------------------------------- convolution and pooling
# kernels/conv.c; see numpy_backend.im2col / max_pool2d for the formulas. Images come as (N, C, H, W) in any
# layout (C reads x through its strides); results are (N, C, H, W) views of channels-last memory, like the
# reference's. A build older than kernels/conv.c runs the reference until `python build.py`.

def _image_strides(x):
    """(x, its element strides (N, C, H, W)): x itself when C can index it (aligned, native order, strides
    >= 0 and whole elements), else a C-contiguous copy."""
    if x.flags.aligned and x.dtype.isnative:
        strides = []
        for step, size in zip(x.strides, x.shape):  # a plain loop: this runs on every conv and pooling call
            if size == 1:
                step = 0  # never moved along, whatever NumPy stored
            elif step < 0 or step % x.itemsize:
                break
            strides.append(step // x.itemsize)
        else:
            return x, tuple(strides)
    x = _c_array(x)
    return x, tuple(step // x.itemsize for step in x.strides)


_conv_functions = {}


def _conv_function(name, dtype):
    """lib's NAME_f32 / NAME_f64 (looked up once), or None for a build older than kernels/conv.c."""
    key = (name, dtype)
    if key not in _conv_functions:
        _, lib = load()
        _conv_functions[key] = getattr(lib, f"{name}_{_suffix(dtype)}", None)
    return _conv_functions[key]


def _channels_last(x):
    """x (N, C, H, W) as C-contiguous (N, H, W, C) memory (a view when it already is)."""
    return _c_array(x.transpose(0, 2, 3, 1))


def im2col(x, kernel_size, stride, padding, bias_column=False, num_threads=None):
    """cols (N·Ho·Wo, kh·kw·C [+ 1 column of ones]) of x (N, C, H, W), in C (kernels/conv.c)."""
    dtype = _check_floats("im2col", x=x)
    Ho, Wo = check_window("im2col", x.shape, kernel_size, stride, padding)
    function = _conv_function("im2col", dtype)
    if function is None:
        return numpy_backend.im2col(x, kernel_size, stride, padding, bias_column)
    x, strides = _image_strides(x)
    N, C, H, W = x.shape
    bias_column = bool(bias_column)
    cols = np.empty((N * Ho * Wo, kernel_size[0] * kernel_size[1] * C + bias_column), dtype)  # (N·Ho·Wo, kh·kw·C [+ 1])
    function(_pointer(x), N, C, H, W, *strides, *kernel_size, *stride, *padding, int(bias_column), _pointer(cols),
             _threads(num_threads))
    return cols


def im2col_backward(grad_cols, x_shape, kernel_size, stride, padding, num_threads=None):
    """col2im: dx (N, C, H, W) from grad_cols (N·Ho·Wo, kh·kw·C), in C (kernels/conv.c)."""
    dtype = _check_floats("im2col_backward", grad_cols=grad_cols)
    check_image_shape("im2col_backward", x_shape)
    Ho, Wo = check_window("im2col_backward", x_shape, kernel_size, stride, padding)
    N, C, H, W = x_shape
    check_shape("im2col_backward", "grad_cols", grad_cols, (N * Ho * Wo, kernel_size[0] * kernel_size[1] * C))
    function = _conv_function("col2im", dtype)
    if function is None:
        return numpy_backend.im2col_backward(grad_cols, x_shape, kernel_size, stride, padding)
    grad_cols = _c_array(grad_cols)
    dx = np.empty((N, H, W, C), dtype)  # (N, H, W, C)
    function(_pointer(grad_cols), N, C, H, W, *kernel_size, *stride, *padding, _pointer(dx), _threads(num_threads))
    return dx.transpose(0, 3, 1, 2)


def max_pool2d(x, kernel_size, stride, num_threads=None):
    """(out, argmax) of max pooling over x (N, C, H, W), in C (kernels/conv.c)."""
    dtype = _check_floats("max_pool2d", x=x)
    Ho, Wo = check_window("max_pool2d", x.shape, kernel_size, stride)
    function = _conv_function("max_pool2d_forward", dtype)
    if function is None:
        return numpy_backend.max_pool2d(x, kernel_size, stride)
    x, strides = _image_strides(x)
    N, C, H, W = x.shape
    out, argmax = np.empty((N, Ho, Wo, C), dtype), np.empty((N, Ho, Wo, C), np.int64)  # (N, Ho, Wo, C)
    function(_pointer(x), N, C, H, W, *strides, *kernel_size, *stride, _pointer(out), _int64_pointer(argmax),
             _threads(num_threads))
    return out.transpose(0, 3, 1, 2), argmax.transpose(0, 3, 1, 2)


def max_pool2d_backward(argmax, grad_out, x_shape, num_threads=None):
    """dx (N, C, H, W): grad_out (N, C, Ho, Wo) added onto the pixels argmax names, in C (kernels/conv.c)."""
    dtype = _check_floats("max_pool2d_backward", grad_out=grad_out)
    check_image_shape("max_pool2d_backward", x_shape)
    N, C, H, W = x_shape
    if grad_out.ndim != 4 or tuple(grad_out.shape[:2]) != (N, C):
        raise ValueError(f"max_pool2d_backward: grad_out must be (N, C, Ho, Wo) = {(N, C)} + (Ho, Wo), "
                         f"got {tuple(grad_out.shape)}")
    check_shape("max_pool2d_backward", "argmax", argmax, grad_out.shape)
    if not isinstance(argmax, np.ndarray) or argmax.dtype != np.int64:
        raise TypeError(f"max_pool2d_backward: argmax must be an int64 NumPy array, got "
                        f"{type(argmax).__name__} {getattr(argmax, 'dtype', '')}")
    function = _conv_function("max_pool2d_backward", dtype)
    if function is None:
        return numpy_backend.max_pool2d_backward(argmax, grad_out, x_shape)
    Ho, Wo = grad_out.shape[2:]
    argmax, grad_out = _channels_last(argmax), _channels_last(grad_out)  # (N, Ho, Wo, C)
    dx = np.empty((N, H, W, C), dtype)  # (N, H, W, C)
    # The kernel checks each index before it writes there (one pass instead of min and max here)
    if function(_pointer(grad_out), _int64_pointer(argmax), N, C, H, W, Ho, Wo, _pointer(dx), _threads(num_threads)):
        raise_outside_image("max_pool2d_backward", argmax, H * W)
    return dx.transpose(0, 3, 1, 2)


# What minigrad.kernels calls once it has checked the arguments (dtypes, ranks, shapes): these functions
# without their own second check, which is there for direct calls (lessons, tests, benchmarks).
DISPATCHED = dict(attention=_attention, attention_backward=_attention_backward, layer_norm=_layer_norm,
                  layer_norm_backward=_layer_norm_backward, gelu=_gelu, gelu_backward=_gelu_backward)
