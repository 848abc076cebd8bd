"""Speed of the CUDA kernels (kernels/matmul.cu, kernels/attention.cu).

    python benchmarks/bench_cuda.py          # on a GPU if CuPy can use one, else the simulator report
    python benchmarks/bench_cuda.py --sim    # the simulator report even on a GPU machine

On a GPU: GFLOP/s of matmul v1, v2, v3 beside cupy.matmul (cuBLAS) for n x n x n,
n = 1024..8192, and flash attention forward and backward beside the naive CuPy
composition softmax(q k^T / sqrt d) v for T = 1024..8192, each printed as a ratio
measured in the same run, plus the memory each one holds at its peak.
On a CPU: the time the simulator takes for the shapes the tests use, beside NumPy
on the same shapes (a simulator runs every CUDA thread as a CPU fiber: these
figures say how long the tests take, nothing about a GPU).
"""
import argparse
import time

import numpy as np

from minigrad.kernels import cuda_backend, numpy_backend

MATMUL_SIZES = (1024, 2048, 4096, 8192)
ATTENTION_T = (1024, 2048, 4096, 8192)
ATTENTION_HEADS, HEAD_DIM = 8, 64       # batch 1 x 8 heads folded into the leading dim


# ---------------------------------------------------------------- GPU

def gpu_time(cupy, fn, reps):
    """Median seconds of fn() over reps runs, timed with CUDA events after one warm-up run."""
    fn()
    times = []
    for _ in range(reps):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def peak_bytes(cupy, fn):
    """Bytes the memory pool holds at most while fn() runs (freed blocks stay cached, so the
    pool's total after the call is its high-water mark)."""
    pool = cupy.get_default_memory_pool()
    cupy.cuda.Device().synchronize()
    pool.free_all_blocks()
    before = pool.total_bytes()
    fn()
    cupy.cuda.Device().synchronize()
    return pool.total_bytes() - before


def bench_matmul_gpu(cupy):
    print("matmul float32, n x n @ n x n: GFLOP/s and fraction of cupy.matmul (cuBLAS)")
    print(f"{'n':>6} {'cuBLAS':>10} " + " ".join(f"{v:>18}" for v in cuda_backend.MATMUL_VERSIONS))
    for n in MATMUL_SIZES:
        a = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        b = cupy.random.standard_normal((n, n), dtype=cupy.float32)
        flops = 2.0 * n ** 3
        reps = 10 if n <= 2048 else 3
        ref = flops / gpu_time(cupy, lambda: cupy.matmul(a, b), reps) / 1e9
        cells = []
        for version in cuda_backend.MATMUL_VERSIONS:
            gflops = flops / gpu_time(cupy, lambda: cuda_backend.matmul(a, b, version=version), reps) / 1e9
            cells.append(f"{gflops:9.0f} ({gflops / ref:5.2f}x)")
        print(f"{n:>6} {ref:10.0f} " + " ".join(f"{c:>18}" for c in cells))


def naive_attention(cupy, q, k, v, causal):
    """The composition the flash kernel replaces: three (B, T, T) arrays alive at once."""
    T = q.shape[1]
    s = q @ k.transpose(0, 2, 1) * np.float32(1 / np.sqrt(q.shape[-1]))    # (B, T, T)
    if causal:
        s = cupy.where(cupy.triu(cupy.ones((T, T), bool), 1), -cupy.inf, s)
    p = cupy.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return p @ v, p


def naive_attention_backward(cupy, q, k, v, p, grad_out):
    scale = np.float32(1 / np.sqrt(q.shape[-1]))
    dp = grad_out @ v.transpose(0, 2, 1)                                    # (B, T, T)
    ds = p * (dp - (dp * p).sum(-1, keepdims=True))
    return scale * ds @ k, scale * ds.transpose(0, 2, 1) @ q, p.transpose(0, 2, 1) @ grad_out


def bench_attention_gpu(cupy):
    B, d = ATTENTION_HEADS, HEAD_DIM
    print(f"\nattention float32, {B} heads, d={d}: ms per call; in brackets the speed-up over the naive"
          " CuPy composition; peak extra memory in MiB")
    versions = cuda_backend.ATTENTION_FORWARD_VERSIONS
    print(f"{'T':>6} {'causal':>6} {'naive fwd':>10} " + " ".join(f"{'flash fwd ' + v:>16}" for v in versions)
          + f" {'naive bwd':>10} {'flash bwd':>16} {'naive MiB':>10} {'flash MiB':>10}")
    for T in ATTENTION_T:
        q, k, v, g = (cupy.random.standard_normal((B, T, d), dtype=cupy.float32) for _ in range(4))
        for causal in (False, True):
            flash_fwd = [gpu_time(cupy, lambda: cuda_backend.attention(q, k, v, causal, True, version=ver), 3)
                         for ver in versions]
            out, lse = cuda_backend.attention(q, k, v, causal, True)
            flash_bwd = gpu_time(cupy, lambda: cuda_backend.attention_backward(q, k, v, out, lse, g, causal), 3)
            flash_mib = peak_bytes(cupy, lambda: cuda_backend.attention(q, k, v, causal, True)) / 2 ** 20
            try:
                naive_fwd = gpu_time(cupy, lambda: naive_attention(cupy, q, k, v, causal), 3)
                probs = naive_attention(cupy, q, k, v, causal)[1]
                naive_bwd = gpu_time(cupy, lambda: naive_attention_backward(cupy, q, k, v, probs, g), 3)
                probs = None
                naive_mib = peak_bytes(cupy, lambda: naive_attention(cupy, q, k, v, causal)) / 2 ** 20
            except cupy.cuda.memory.OutOfMemoryError:
                probs = None
                naive_fwd = naive_bwd = naive_mib = float("nan")   # printed as nan: the naive form did not fit
            cupy.get_default_memory_pool().free_all_blocks()
            print(f"{T:>6} {str(causal):>6} {naive_fwd * 1e3:10.2f} "
                  + " ".join(f"{t * 1e3:8.2f} ({naive_fwd / t:4.1f}x)" for t in flash_fwd)
                  + f" {naive_bwd * 1e3:10.2f} {flash_bwd * 1e3:8.2f} ({naive_bwd / flash_bwd:4.1f}x)"
                  f" {naive_mib:10.0f} {flash_mib:10.1f}")


# ---------------------------------------------------------------- simulator

def cpu_time(fn, reps=3):
    """Best of reps wall-clock runs after one warm-up run (which also compiles the module)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_simulator():
    g = np.random.default_rng(0)
    print("CUDA simulator (CPU): ms per call for the test shapes, and how many times NumPy's time on the"
          " same shape.\nGPU figures (GFLOP/s beside cuBLAS, flash beside naive attention) need a GPU"
          " with CuPy: run this script there.\n")
    print(f"{'kernel':<34} {'shape':<22} {'sim ms':>9} {'x NumPy':>9}   (attention rows: x NumPy naive forward)")
    for M, K, N in [(17, 33, 37), (37, 15, 33), (128, 128, 128)]:
        a, b = (g.standard_normal(s, dtype=np.float32) for s in ((M, K), (K, N)))
        numpy_s = cpu_time(lambda: a @ b, 20)
        for version in cuda_backend.MATMUL_VERSIONS:
            sim_s = cpu_time(lambda: cuda_backend.matmul(a, b, sim=True, version=version))
            print(f"{'matmul_' + version:<34} {f'{M}x{K} @ {K}x{N}':<22} {sim_s * 1e3:9.2f}"
                  f" {sim_s / numpy_s:9.1f}")
    for B, T, d in [(2, 40, 16), (1, 37, 64), (1, 128, 64)]:
        q, k, v, gr = (g.standard_normal((B, T, d), dtype=np.float32) for _ in range(4))
        for causal in (False, True):
            numpy_s = cpu_time(lambda: numpy_backend.attention(q, k, v, causal), 20)
            fwd_s = [cpu_time(lambda: cuda_backend.attention(q, k, v, causal, True, sim=True, version=ver))
                     for ver in cuda_backend.ATTENTION_FORWARD_VERSIONS]
            out, lse = cuda_backend.attention(q, k, v, causal, True, sim=True)
            bwd_s = cpu_time(lambda: cuda_backend.attention_backward(q, k, v, out, lse, gr, causal, sim=True))
            shape = f"B={B} T={T} d={d}" + (" causal" if causal else "")
            for ver, sim_s in zip(cuda_backend.ATTENTION_FORWARD_VERSIONS, fwd_s):
                print(f"{'attention_forward_' + ver:<34} {shape:<22} {sim_s * 1e3:9.2f} {sim_s / numpy_s:9.1f}")
            print(f"{'attention_backward (+ rowdot)':<34} {shape:<22} {bwd_s * 1e3:9.2f} {bwd_s / numpy_s:9.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sim", action="store_true", help="report simulator times even if a GPU is present")
    args = parser.parse_args()
    if not args.sim:
        from minigrad.device import require_cupy
        try:
            cupy = require_cupy()
        except RuntimeError as exc:
            print(f"No GPU benchmark: {exc}\n")
        else:
            bench_matmul_gpu(cupy)
            bench_attention_gpu(cupy)
            return
    bench_simulator()


if __name__ == "__main__":
    main()
