"""How fast the CUDA simulator runs kernels on the CPU, as seconds and as ratios to NumPy in the same run.

    python benchmarks/bench_cuda_sim.py

The simulator is for checking kernels, not for speed: every CUDA thread is a fiber,
every __syncthreads() switches through all threads of the block, and every load and
store of a kernel goes through a bounds check (measured: a 256^3 v2 matmul took about
4x the CPU time of the same kernel unchecked). What matters
is that the test shapes take milliseconds and a 256^3 tiled matmul (kernels/matmul.cu v2) well under a second.
Also measured: compile once vs load from the disk cache, the cost of a launch, and
the fiber switch (assembly vs the portable setjmp/longjmp fallback).
"""
import os
import tempfile
import time

# The simulator runs on one core, so NumPy's BLAS (the reference) gets one thread too;
# set before NumPy loads it. A busy machine also makes spinning BLAS threads erratic.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from minigrad.cuda import SimModule, build  # noqa: E402

SOURCE = r"""
#define THREADS 256

extern "C" __global__ void vec_add(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

/* block sums by warp shuffles: each warp reduces in registers, warp 0 adds the warps */
extern "C" __global__ void warp_sum(const float *x, float *partial, int n)
{
    __shared__ float warps[THREADS / 32];
    int i = blockIdx.x * THREADS + threadIdx.x, lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float v = 0.0f;
    for (; i < n; i += gridDim.x * THREADS)
        v += x[i];
    for (int offset = 16; offset > 0; offset /= 2)
        v += __shfl_down_sync(0xffffffff, v, offset);
    if (lane == 0)
        warps[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < THREADS / 32 ? warps[lane] : 0.0f;
        for (int offset = 16; offset > 0; offset /= 2)
            v += __shfl_down_sync(0xffffffff, v, offset);
        if (lane == 0)
            partial[blockIdx.x] = v;
    }
}

/* nothing but barriers: the cost of switching between fibers */
extern "C" __global__ void barriers(float *out, int n)
{
    float acc = 0.0f;
    for (int i = 0; i < n; i++) {
        acc += 1.0f;
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = acc;
}
"""


def best_of(fn, repeat=3):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_compile():
    with tempfile.TemporaryDirectory() as cache:
        previous = os.environ.get("MINIGRAD_CACHE_DIR")
        os.environ["MINIGRAD_CACHE_DIR"] = cache
        try:
            build._loaded.clear()
            first_s = best_of(lambda: SimModule(code=SOURCE + "/* first */"), repeat=1)
            compile_s = best_of(lambda: SimModule(code=SOURCE), repeat=1)
            load_s = best_of(lambda: (build._loaded.clear(), SimModule(code=SOURCE)), repeat=3)
        finally:
            if previous is None:
                del os.environ["MINIGRAD_CACHE_DIR"]
            else:
                os.environ["MINIGRAD_CACHE_DIR"] = previous
            build._loaded.clear()
    print(f"compile the first module:    {first_s:8.3f} s   (the scheduler is compiled once per cache)")
    print(f"compile a module:            {compile_s:8.3f} s")
    print(f"load it from the disk cache: {load_s:8.4f} s   ({compile_s / load_s:.0f}x faster than compiling)")


def bench_launch(mod):
    add = mod.get_function("vec_add")
    a = np.ones(32, np.float32)
    c = np.empty_like(a)
    args = (a, a, c, np.int32(32))
    reps = 200
    sim = best_of(lambda: [add(1, 32, args) for _ in range(reps)]) / reps
    ref = best_of(lambda: [np.add(a, a, out=c) for _ in range(reps)]) / reps
    print(f"launch of a 32-thread vec_add: {sim * 1e6:8.1f} us   ({sim / ref:.0f}x np.add of 32 floats)")


def bench_switch():
    n, threads, blocks = 200, 256, 4
    out = np.zeros(threads * blocks, np.float32)
    results = {}
    for label, options in (("assembly", ()), ("setjmp/longjmp", ("-DMINIGRAD_SIM_PORTABLE_SWITCH",))):
        kernel = SimModule(code=SOURCE, options=options).get_function("barriers")
        seconds = best_of(lambda: kernel((blocks,), (threads,), (out, np.int32(n))))
        results[label] = seconds / (n * threads * blocks)
    asm, portable = results["assembly"], results["setjmp/longjmp"]
    print(f"one thread through one __syncthreads(): {asm * 1e9:6.1f} ns with the assembly switch, "
          f"{portable * 1e9:6.1f} ns with setjmp/longjmp ({portable / asm:.1f}x)")


def bench_matmul():
    """kernels/matmul.cu's versions through the simulator, as the tests and the cuda-sim backend run them."""
    from minigrad.kernels import cuda_backend
    rng = np.random.default_rng(0)
    print(f"{'matmul.cu M x N x K':>24} {'version':>8} {'order':>9} {'simulator':>11} {'NumPy':>11} {'ratio':>8}")
    shapes = [(15, 17, 33), (37, 33, 17), (64, 64, 64), (128, 128, 128), (256, 256, 256)]
    previous = os.environ.get("MINIGRAD_CUDA_SIM_ORDER")
    try:
        for M, N, K in shapes:
            A, B = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
            ref = best_of(lambda: A @ B, repeat=20)
            for version in cuda_backend.MATMUL_VERSIONS:
                for order in ("forward", "reverse", "random:0") if M == 256 else ("forward",):
                    os.environ["MINIGRAD_CUDA_SIM_ORDER"] = order
                    C = cuda_backend.matmul(A, B, sim=True, version=version)
                    sim = best_of(lambda: cuda_backend.matmul(A, B, sim=True, version=version))
                    assert np.allclose(C, A @ B, rtol=1e-3, atol=1e-3)
                    print(f"{f'{M} x {N} x {K}':>24} {version:>8} {order:>9} {sim:10.4f}s {ref:10.6f}s "
                          f"{sim / ref:7.0f}x")
    finally:
        if previous is None:
            os.environ.pop("MINIGRAD_CUDA_SIM_ORDER", None)
        else:
            os.environ["MINIGRAD_CUDA_SIM_ORDER"] = previous


def bench_reduction(mod):
    kernel = mod.get_function("warp_sum")
    x = np.random.default_rng(1).standard_normal(1 << 20).astype(np.float32)
    partial = np.empty(64, np.float32)
    sim = best_of(lambda: kernel((64,), (256,), (x, partial, np.int32(x.size))))
    ref = best_of(lambda: x.sum(), repeat=20)
    assert np.isclose(partial.sum(dtype=np.float64), x.sum(dtype=np.float64), rtol=1e-4, atol=1e-2)
    print(f"warp-shuffle sum of 2^20 floats: {sim:.4f} s   ({sim / ref:.0f}x np.sum)")


def main():
    bench_compile()
    mod = SimModule(code=SOURCE)
    bench_launch(mod)
    bench_switch()
    bench_matmul()
    bench_reduction(mod)


if __name__ == "__main__":
    main()
