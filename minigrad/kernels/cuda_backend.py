"""The CUDA backend: the kernels in kernels/*.cu, on a GPU through CuPy or on the CPU through the simulator.

Each .cu source is compiled with kernels/cuda_common.cuh prepended, by
`cupy.RawModule` on a GPU (sim=False) or by `minigrad.cuda.SimModule` on the CPU
(sim=True); both are compiled once per process and cached. This module only
chooses launch configurations (grid, block, shared memory) and passes each
scalar as the exact NumPy type of its kernel parameter: CuPy sends a Python int
as 64 bits, which an `int` parameter would misread.

Inputs are validated by `minigrad.kernels` before they get here. The kernels are
float32, so KERNELS lists float32 only and `minigrad.kernels` runs every other
dtype on the reference. Called directly, the functions here take float64 too:
they compute in float32 and return float64 with float32's precision. On a GPU,
NumPy inputs are copied to the device and the results copied back; CuPy inputs
stay on the device.
"""
import numpy as np

from minigrad.resources import kernel_dir
from minigrad.shapes import sum_to_shape

# float32 kernels only (see above); GELU has no CUDA kernel, so it runs on the reference.
KERNELS = {name: (np.dtype(np.float32),) for name in ("matmul", "matmul_backward", "attention", "attention_backward")}

KERNEL_DIR = kernel_dir()  # kernels/ of the checkout, or the copy a wheel carries

MATMUL_VERSIONS = ("v1", "v2", "v3")
ATTENTION_FORWARD_VERSIONS = ("v1", "v2")
COMPILE_OPTIONS = ("-std=c++11",)  # NVRTC's; the simulator accepts and ignores them
HEAD_DIM_MAX = 128          # D_MAX in attention.cu
MAX_GRID_YZ = 65535         # CUDA's limit on gridDim.y and gridDim.z

_V12_BLOCK = 16             # v1's block side and V2_TILE in matmul.cu
_V3_TILE, _V3_THREADS = 128, 256
_F1_BR, _F1_BC, _F1_THREADS = 32, 16, 128      # attention_forward_v1
_F2_BR, _F2_BC, _F2_THREADS = 32, 32, 128         # attention_forward_v2
_BWD_BR, _BWD_BC, _BWD_THREADS = 16, 16, 128
_ROWDOT_THREADS = 128

_modules = {}


def kernel_source(name):
    """The text the compilers see for kernels/<name>.cu: the common header, then the file."""
    return (KERNEL_DIR / "cuda_common.cuh").read_text() + "\n" + (KERNEL_DIR / f"{name}.cu").read_text()


def load_module(name, sim):
    """The compiled module of kernels/<name>.cu, for the simulator or for the GPU (cached)."""
    if (name, sim) not in _modules:
        if sim:
            from minigrad.cuda import SimModule
            _modules[name, sim] = SimModule(code=kernel_source(name), options=COMPILE_OPTIONS)
        else:
            from minigrad.device import require_cupy
            _modules[name, sim] = require_cupy().RawModule(code=kernel_source(name), options=COMPILE_OPTIONS)
    return _modules[name, sim]


def _kernel(module, name, sim):
    return load_module(module, sim).get_function(name)


def _array_module(fn, sim, *arrays):
    """numpy for the simulator, cupy for the GPU (after checking that one is usable)."""
    if sim:
        if any(not isinstance(x, np.ndarray) for x in arrays):
            raise TypeError(f"{fn}: backend 'cuda-sim' runs on host (NumPy) arrays, got "
                            f"{', '.join(type(x).__name__ for x in arrays)}; use backend 'cuda' for "
                            "device arrays, or copy them to the host with .get()")
        return np
    from minigrad.device import require_cupy
    return require_cupy()


def _to_kernel(x, xp):
    """x as a C-contiguous float32 array where the kernel runs (a copy only when needed)."""
    return xp.ascontiguousarray(xp.asarray(x, dtype=xp.float32))


def _output(xp, shape, sim):
    # the simulator's outputs start as NaN, so an element a kernel forgets to write shows in the tests
    return np.full(shape, np.nan, np.float32) if sim else xp.empty(shape, xp.float32)


def _from_kernel(x, like):
    """x in the dtype of `like`, and on the host if `like` was a NumPy array."""
    x = x.astype(like.dtype, copy=False)
    if isinstance(like, np.ndarray) and not isinstance(x, np.ndarray):
        x = x.get()
    return x


def _ceil_div(a, b):
    return -(-a // b)


def _chunks(n):
    """Slices of a batch of n that each fit in one launch (gridDim.y/z <= 65535)."""
    return [slice(start, min(start + MAX_GRID_YZ, n)) for start in range(0, n, MAX_GRID_YZ)]


def _check_int32_indexing(fn, **counts):
    """The kernels index within a matrix (and rows of a batch) with 32-bit ints: refuse what would overflow."""
    for what, count in counts.items():
        if count >= 2 ** 31:
            raise ValueError(f"{fn}: the cuda kernels index with 32-bit ints, but {what} has {count} "
                             f"elements (limit 2**31 - 1); split the problem or use backend 'numpy' or 'c'")


# ---------------------------------------------------------------- matmul

def _check_version(fn, version, versions):
    if version not in versions:
        raise ValueError(f"cuda {fn}: unknown version {version!r}; choose one of {', '.join(versions)}")


def _stack_batch(x, batch, xp):
    """x (..., r, c) as (n, r, c) over the broadcast batch shape, and the stride between its matrices.

    One matrix shared by the whole batch is passed once with stride 0; any other
    broadcast is materialised.
    """
    rows, cols = x.shape[-2:]
    if int(np.prod(x.shape[:-2], dtype=np.int64)) == 1:
        return x.reshape(1, rows, cols), 0
    if x.shape[:-2] != batch:
        x = xp.ascontiguousarray(xp.broadcast_to(x, batch + (rows, cols)))
    return x.reshape(-1, rows, cols), rows * cols


def _launch_matmul(A, B, C, M, N, K, trans_a, trans_b, stride_a, stride_b, version, sim):
    """C[z] = op(A[z]) op(B[z]) for every z of C (n, M, N); A and B are (n or 1, ...) float32 stacks."""
    kernel = _kernel("matmul", f"matmul_{version}", sim)
    if version == "v3":
        block, tiles = (_V3_THREADS, 1, 1), (_ceil_div(M, _V3_TILE), _ceil_div(N, _V3_TILE))
    else:
        block, tiles = (_V12_BLOCK, _V12_BLOCK, 1), (_ceil_div(M, _V12_BLOCK), _ceil_div(N, _V12_BLOCK))
    if tiles[1] > MAX_GRID_YZ:
        raise ValueError(f"cuda matmul {version}: {N} output columns need {tiles[1]} blocks along gridDim.y, "
                         f"more than CUDA's {MAX_GRID_YZ}; use backend 'numpy' or 'c'")
    for z in _chunks(C.shape[0]):
        a = A[z] if stride_a else A
        b = B[z] if stride_b else B
        kernel(tiles + (z.stop - z.start,), block,
               (a, b, C[z], np.int32(M), np.int32(N), np.int32(K), np.int32(trans_a), np.int32(trans_b),
                np.int64(stride_a), np.int64(stride_b)))


def matmul(a, b, sim=False, version="v3"):
    """np.matmul(a, b) for ndim >= 2 (batch dims broadcast) with kernels/matmul.cu version v1, v2 or v3."""
    _check_version("matmul", version, MATMUL_VERSIONS)
    xp = _array_module("matmul", sim, a, b)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (M, K), N = a.shape[-2:], b.shape[-1]
    n = int(np.prod(batch, dtype=np.int64))
    if n == 0 or M == 0 or N == 0 or K == 0:
        return _from_kernel(xp.zeros(batch + (M, N), xp.float32), a)
    _check_int32_indexing("matmul", a=M * K, b=K * N, out=M * N)
    A, stride_a = _stack_batch(_to_kernel(a, xp), batch, xp)
    B, stride_b = _stack_batch(_to_kernel(b, xp), batch, xp)
    C = _output(xp, (n, M, N), sim)
    _launch_matmul(A, B, C, M, N, K, 0, 0, stride_a, stride_b, version, sim)
    return _from_kernel(C.reshape(batch + (M, N)), a)


def matmul_backward(a, b, grad_out, sim=False, version="v3"):
    """grad_a = grad_out @ b^T, grad_b = a^T @ grad_out, each summed back to the shape of a / b.

    The transposes are read in place by the kernel (trans_b / trans_a flags), never copied.
    """
    _check_version("matmul_backward", version, MATMUL_VERSIONS)
    xp = _array_module("matmul_backward", sim, a, b, grad_out)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    (M, K), N = a.shape[-2:], b.shape[-1]
    n = int(np.prod(batch, dtype=np.int64))
    if n == 0 or M == 0 or N == 0 or K == 0:
        return (_from_kernel(xp.zeros(a.shape, xp.float32), a), _from_kernel(xp.zeros(b.shape, xp.float32), b))
    _check_int32_indexing("matmul_backward", a=M * K, b=K * N, grad_out=M * N)
    A, stride_a = _stack_batch(_to_kernel(a, xp), batch, xp)
    B, stride_b = _stack_batch(_to_kernel(b, xp), batch, xp)
    G = _to_kernel(grad_out, xp).reshape(n, M, N)
    grad_a = _output(xp, (n, M, K), sim)          # (n, M, K) = G (n, M, N) @ B^T
    _launch_matmul(G, B, grad_a, M, K, N, 0, 1, M * N, stride_b, version, sim)
    grad_b = _output(xp, (n, K, N), sim)          # (n, K, N) = A^T @ G (n, M, N)
    _launch_matmul(A, G, grad_b, K, N, M, 1, 0, stride_a, M * N, version, sim)
    grad_a = sum_to_shape(grad_a.reshape(batch + (M, K)), a.shape)
    grad_b = sum_to_shape(grad_b.reshape(batch + (K, N)), b.shape)
    return _from_kernel(grad_a, a), _from_kernel(grad_b, b)


# ---------------------------------------------------------------- attention

def _check_attention_sizes(fn, q, k, v):
    """Head dims within D_MAX and index ranges within 32 bits; returns d, dv."""
    (B, Tq, d), (Tk, dv) = q.shape, v.shape[1:]
    if d > HEAD_DIM_MAX or dv > HEAD_DIM_MAX:
        raise ValueError(f"{fn}: the cuda kernels take head dims up to {HEAD_DIM_MAX}, got q {q.shape} "
                         f"(d={d}) and v {v.shape} (dv={dv}); use backend 'numpy' or 'c' for wider heads")
    _check_int32_indexing(fn, **{"one batch of q": Tq * d, "one batch of k": Tk * d, "one batch of v": Tk * dv,
                                 "one batch of out": Tq * dv, "lse": B * Tq})
    return d, dv


def _forward_launch(version, Tq, d, dv):
    """(blocks along Tq, threads, dynamic shared bytes) of attention_forward_<version>."""
    if version == "v1":  # Q tile, K (padded rows) and V tiles, scores, m, l, rescale
        floats = _F1_BR * d + _F1_BC * (d + 1) + _F1_BC * dv + _F1_BR * _F1_BC + 3 * _F1_BR
        return _ceil_div(Tq, _F1_BR), _F1_THREADS, 4 * floats
    # Q tile (padded rows), one buffer for K (padded rows) then V, P (padded rows)
    floats = _F2_BR * (d + 1) + _F2_BC * max(d + 1, dv) + _F2_BR * (_F2_BC + 1)
    return _ceil_div(Tq, _F2_BR), _F2_THREADS, 4 * floats


def _backward_shared_bytes(d, dv):
    """Dynamic shared memory of attention_backward: K and V (padded rows), Q, dO tiles, P, dS, lse, D."""
    return 4 * (_BWD_BC * (d + 1 + dv + 1) + _BWD_BR * (d + dv) + 2 * _BWD_BR * _BWD_BC + 2 * _BWD_BR)


def attention(q, k, v, is_causal=False, return_lse=False, sim=False, version="v2"):
    """softmax(q k^T / sqrt(d)) v per batch, flash-style (kernels/attention.cu); optionally the row lse.

    q (B, Tq, d), k (B, Tk, d), v (B, Tk, dv) with d, dv <= 128 -> out (B, Tq, dv), lse (B, Tq).
    version: attention_forward_v1 (one score per thread) or v2 (register-tiled, the default).
    """
    _check_version("attention", version, ATTENTION_FORWARD_VERSIONS)
    d, dv = _check_attention_sizes("attention", q, k, v)
    xp = _array_module("attention", sim, q, k, v)
    (B, Tq, _), Tk = q.shape, k.shape[1]
    if B == 0 or Tq == 0 or Tk == 0:
        # a softmax over zero keys is 0/0: NaN outputs and lse = log 0, as the naive formula gives
        out = xp.full((B, Tq, dv), np.nan, xp.float32)
        lse = xp.full((B, Tq), -np.inf, xp.float32)
    else:
        Q, K, V = _to_kernel(q, xp), _to_kernel(k, xp), _to_kernel(v, xp)
        out, lse = _output(xp, (B, Tq, dv), sim), _output(xp, (B, Tq), sim)
        kernel = _kernel("attention", f"attention_forward_{version}", sim)
        blocks, threads, shared = _forward_launch(version, Tq, d, dv)
        for z in _chunks(B):
            kernel((blocks, z.stop - z.start), (threads,),
                   (Q[z], K[z], V[z], out[z], lse[z], np.int32(Tq), np.int32(Tk), np.int32(d), np.int32(dv),
                    np.float32(1.0 / np.sqrt(d)), np.int32(bool(is_causal))),
                   shared_mem=shared)
    out = _from_kernel(out, q)
    return (out, _from_kernel(lse, q)) if return_lse else out


def attention_backward(q, k, v, out, lse, grad_out, is_causal=False, sim=False):
    """(dq, dk, dv) of attention from the saved out and lse, recomputing P (kernels/attention.cu).

    D = rowsum(grad_out * out) comes first (attention_backward_rowdot); then one block
    per key tile accumulates dk and dv and adds its share of dq atomically.
    """
    d, dv = _check_attention_sizes("attention_backward", q, k, v)
    xp = _array_module("attention_backward", sim, q, k, v, out, lse, grad_out)
    (B, Tq, _), Tk = q.shape, k.shape[1]
    if B == 0 or Tq == 0 or Tk == 0:
        zeros = [xp.zeros(x.shape, xp.float32) for x in (q, k, v)]
        return tuple(_from_kernel(g, x) for g, x in zip(zeros, (q, k, v)))
    Q, K, V = _to_kernel(q, xp), _to_kernel(k, xp), _to_kernel(v, xp)
    O, L, G = _to_kernel(out, xp), _to_kernel(lse, xp), _to_kernel(grad_out, xp)
    D = _output(xp, (B, Tq), sim)
    _kernel("attention", "attention_backward_rowdot", sim)(
        (_ceil_div(B * Tq, _ROWDOT_THREADS),), (_ROWDOT_THREADS,), (G, O, D, np.int32(B * Tq), np.int32(dv)))
    grad_q = xp.zeros((B, Tq, d), xp.float32)      # key blocks add into it atomically
    grad_k, grad_v = _output(xp, (B, Tk, d), sim), _output(xp, (B, Tk, dv), sim)
    kernel = _kernel("attention", "attention_backward", sim)
    for z in _chunks(B):
        kernel((_ceil_div(Tk, _BWD_BC), z.stop - z.start), (_BWD_THREADS,),
               (Q[z], K[z], V[z], G[z], L[z], D[z], grad_q[z], grad_k[z], grad_v[z],
                np.int32(Tq), np.int32(Tk), np.int32(d), np.int32(dv),
                np.float32(1.0 / np.sqrt(d)), np.int32(bool(is_causal))),
               shared_mem=_backward_shared_bytes(d, dv))
    return _from_kernel(grad_q, q), _from_kernel(grad_k, k), _from_kernel(grad_v, v)
