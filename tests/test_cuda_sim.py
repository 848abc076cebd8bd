"""The CUDA simulator (minigrad.cuda): kernels written as for CuPy, run on the CPU, checked against NumPy.

Most kernels below share one module so that the suite compiles it once; compiled
modules are cached on disk ($MINIGRAD_CACHE_DIR), so a second run compiles nothing.
"""
import os
import signal
import subprocess
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

from minigrad.cuda import (BarrierDivergenceError, CompileError, CompileWarning, KernelFaultError,
                           OrderDependenceError, SimModule, SimRawKernel, WarpDivergenceError, build)

ORDERS = ("forward", "reverse", "random:1")
BROKEN = Path(__file__).parent / "cuda_broken"

SOURCE = r"""
#define TILE 16
#define SUM_THREADS 128

extern "C" __global__ void vec_add(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

/* one partial sum per block: a tree in shared memory, a barrier between levels */
extern "C" __global__ void block_sum(const float *x, float *partial, int n)
{
    __shared__ float s[SUM_THREADS];
    int tid = threadIdx.x, i = blockIdx.x * SUM_THREADS + tid;
    s[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int stride = SUM_THREADS / 2; stride > 0; stride /= 2) {
        if (tid < stride)
            s[tid] += s[tid + stride];
        __syncthreads();
    }
    if (tid == 0)
        partial[blockIdx.x] = s[0];
}

extern "C" __global__ void matmul_tiled(const float *A, const float *B, float *C, int M, int N, int K)
{
    __shared__ float As[TILE][TILE];
    __shared__ float Bs[TILE][TILE];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    float acc = 0.0f;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(k0 + ty) * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; k++)
            acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N)
        C[row * N + col] = acc;
}

/* reverse each block's slice through dynamic shared memory, CuPy-documentation form */
extern "C" __global__ void reverse_extern(const float *x, float *y, int n)
{
    extern __shared__ float buf[];
    int tid = threadIdx.x, i = blockIdx.x * blockDim.x + tid;
    buf[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - tid);
    if (j < n)
        y[j] = buf[tid];
}

/* the same through the call that kernels/cuda_common.cuh's DYNAMIC_SHARED expands to */
extern "C" __global__ void reverse_call(const float *x, float *y, int n)
{
    float *buf = (float *)__sim_dynamic_shared();
    int tid = threadIdx.x, i = blockIdx.x * blockDim.x + tid;
    buf[tid] = i < n ? x[i] : 0.0f;
    __syncthreads();
    int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - tid);
    if (j < n)
        y[j] = buf[tid];
}

/* what a thread sees in shared memory nobody wrote: must be NaN in every block */
extern "C" __global__ void read_unwritten(float *out)
{
    __shared__ float s[32];
    extern __shared__ float dyn[];
    out[2 * blockIdx.x] = s[threadIdx.x];
    out[2 * blockIdx.x + 1] = dyn[threadIdx.x];
    __syncthreads();
    s[threadIdx.x] = 1.0f;
    dyn[threadIdx.x] = 1.0f;
}

extern "C" __global__ void histogram(const int *values, int *bins, float *total, int n, int nbins)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        atomicAdd(&bins[values[i] % nbins], 1);
        atomicAdd(total, (float)values[i]);
    }
}

/* per warp: sum by __shfl_down_sync (lane 0 holds it), by __shfl_xor_sync (every lane),
 * broadcast of lane 3 by __shfl_sync, inclusive scan by __shfl_up_sync, a ballot */
extern "C" __global__ void warp_ops(const float *x, float *down, float *butterfly, float *bcast,
                                    float *scan, unsigned int *ballot)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % warpSize;
    float v = x[i], d = v, b = v, s = v;
    for (int offset = 16; offset > 0; offset /= 2) {
        d += __shfl_down_sync(0xffffffff, d, offset);
        b += __shfl_xor_sync(0xffffffff, b, offset);
    }
    for (int offset = 1; offset < 32; offset *= 2) {
        float up = __shfl_up_sync(0xffffffff, s, offset);
        if (lane >= offset)
            s += up;
    }
    down[i] = d;
    butterfly[i] = b;
    bcast[i] = __shfl_sync(0xffffffff, v, 3);
    scan[i] = s;
    ballot[i] = __ballot_sync(0xffffffff, v > 0.0f);
}

/* each half warp sums its 16 values with its own mask, in different branches */
extern "C" __global__ void half_warp_sums(const float *x, float *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    float v = x[i];
    if (lane < 16) {
        for (int offset = 8; offset > 0; offset /= 2)
            v += __shfl_xor_sync(0x0000ffff, v, offset, 16);
    } else {
        for (int offset = 8; offset > 0; offset /= 2)
            v += __shfl_xor_sync(0xffff0000, v, offset, 16);
    }
    out[i] = v;
}

/* shuffles within groups of 8 lanes (the optional width argument) */
extern "C" __global__ void warp_sum_width8(const float *x, float *out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    float v = x[i];
    for (int offset = 4; offset > 0; offset /= 2)
        v += __shfl_xor_sync(0xffffffff, v, offset, 8);
    out[i] = v;
}

/* every thread writes its coordinates, at its linear index in the whole grid */
extern "C" __global__ void coords(int *out)
{
    int block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    int thread = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    int i = block * blockDim.x * blockDim.y * blockDim.z + thread;
    out[6 * i + 0] = blockIdx.x;
    out[6 * i + 1] = blockIdx.y;
    out[6 * i + 2] = blockIdx.z;
    out[6 * i + 3] = threadIdx.x;
    out[6 * i + 4] = threadIdx.y;
    out[6 * i + 5] = threadIdx.z;
}

/* the order in which threads ran: each takes the next ticket */
extern "C" __global__ void tickets(int *counter, int *ticket)
{
    ticket[blockIdx.x * blockDim.x + threadIdx.x] = atomicAdd(counter, 1);
}

/* a large per-thread array must fit on the fiber's stack, across barriers */
extern "C" __global__ void local_array(const float *x, float *out, int n)
{
    float local[2048];
    int tid = threadIdx.x;
    for (int j = 0; j < 2048; j++)
        local[j] = x[tid] * j;
    __syncthreads();
    float acc = 0.0f;
    for (int j = 0; j < n; j++)
        acc += local[j];
    out[blockIdx.x * blockDim.x + tid] = acc;
}

/* __syncthreads_count/_and/_or, __activemask and bit intrinsics */
extern "C" __global__ void block_votes(const int *x, int *out)
{
    int t = threadIdx.x;
    int count = __syncthreads_count(x[t] > 0);
    int all = __syncthreads_and(x[t] > 0);
    int any = __syncthreads_or(x[t] > 0);
    if (t == 0) {
        out[0] = count;
        out[1] = all;
        out[2] = any;
        out[3] = __popc(0xF0F0u) + 100 * __ffs(8) + 1000 * __clz(1);
    }
    if (t % 32 >= 4) {
        unsigned int active = __activemask();
        if (t == 40)
            out[4] = (int)active;
        return;
    }
}

extern "C" __global__ void scalars(double *out, double a, long long b, unsigned int c, bool flag)
{
    out[0] = a;
    out[1] = (double)b;
    out[2] = (double)c;
    out[3] = flag ? 1.0 : 0.0;
    out[4] = (double)min(3, -2) + max(1.5f, 2.5f);
}
"""


@pytest.fixture(scope="module")
def mod():
    return SimModule(code=SOURCE)


def ceil_div(a, b):
    return (a + b - 1) // b


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("n", [1, 255, 1000])
def test_vec_add(mod, n, order):
    rng = np.random.default_rng(n)
    a, b = rng.standard_normal(n, dtype=np.float32), rng.standard_normal(n, dtype=np.float32)
    c = np.full(n, -1.0, np.float32)
    mod.get_function("vec_add")((ceil_div(n, 128),), (128,), (a, b, c, np.int32(n)), order=order)
    np.testing.assert_array_equal(c, a + b)


@pytest.mark.parametrize("order", ORDERS)
def test_block_sum_reduction(mod, order):
    n = 1000
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32)
    partial = np.zeros(ceil_div(n, 128), np.float32)
    mod.get_function("block_sum")((len(partial),), (128,), (x, partial, np.int32(n)), order=order)
    expected = np.pad(x, (0, 128 * len(partial) - n)).reshape(-1, 128).astype(np.float64).sum(1)
    np.testing.assert_allclose(partial, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (15, 17, 33), (37, 33, 17), (16, 48, 32), (5, 70, 9)])
def test_tiled_matmul(mod, M, N, K, order):
    rng = np.random.default_rng(M * N * K)
    A, B = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    C = np.full((M, N), np.nan, np.float32)
    mod.get_function("matmul_tiled")((ceil_div(N, 16), ceil_div(M, 16)), (16, 16),
                                     (A, B, C, np.int32(M), np.int32(N), np.int32(K)), order=order)
    expected = A.astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_allclose(C, expected, rtol=1e-4, atol=1e-4 * np.sqrt(K))


@pytest.mark.parametrize("kernel", ["reverse_extern", "reverse_call"])
def test_dynamic_shared_memory(mod, kernel):
    n, threads = 100, 32
    x = np.arange(n, dtype=np.float32)
    y = np.full(n, -1.0, np.float32)
    mod.get_function(kernel)((ceil_div(n, threads),), (threads,), (x, y, np.int32(n)), shared_mem=4 * threads)
    padded = np.pad(x, (0, threads * ceil_div(n, threads) - n))
    np.testing.assert_array_equal(y, padded.reshape(-1, threads)[:, ::-1].reshape(-1)[:n])


def test_shared_memory_starts_every_block_as_nan(mod):
    out = np.zeros(2 * 3, np.float32)
    mod.get_function("read_unwritten")((3,), (1,), (out,), shared_mem=4)
    assert np.isnan(out).all(), out


def test_extern_c_block():
    code = 'extern "C" {\n__global__ void one(int *y) { y[threadIdx.x] = 1; }\n}\n'
    y = np.zeros(3, np.int32)
    SimModule(code=code).get_function("one")(1, 3, (y,))
    np.testing.assert_array_equal(y, 1)


def test_file_scope_extern_shared():
    code = r"""
    extern __shared__ int scratch[];
    extern "C" __global__ void copy_via_shared(const int *x, int *y)
    {
        scratch[threadIdx.x] = x[threadIdx.x] * 2;
        __syncthreads();
        y[threadIdx.x] = scratch[blockDim.x - 1 - threadIdx.x];
    }
    """
    x = np.arange(10, dtype=np.int32)
    y = np.zeros(10, np.int32)
    SimModule(code=code).get_function("copy_via_shared")(1, 10, (x, y), shared_mem=40)
    np.testing.assert_array_equal(y, 2 * x[::-1])


@pytest.mark.parametrize("order", ORDERS)
def test_atomic_add_histogram(mod, order):
    n, nbins = 1000, 7
    values = np.random.default_rng(3).integers(0, 100, n).astype(np.int32)
    bins = np.zeros(nbins, np.int32)
    total = np.zeros(1, np.float32)
    mod.get_function("histogram")((ceil_div(n, 64),), (64,), (values, bins, total, np.int32(n), np.int32(nbins)),
                                  order=order)
    np.testing.assert_array_equal(bins, np.bincount(values % nbins, minlength=nbins))
    assert total[0] == values.sum()  # integers below 2**24 add exactly in float32


@pytest.mark.parametrize("order", ORDERS)
def test_warp_shuffles(mod, order):
    threads, blocks = 64, 2
    x = np.random.default_rng(4).standard_normal(threads * blocks).astype(np.float32)
    outs = [np.zeros_like(x) for _ in range(4)] + [np.zeros(x.size, np.uint32)]
    mod.get_function("warp_ops")((blocks,), (threads,), (x, *outs), order=order)
    down, butterfly, bcast, scan, ballot = outs
    warps = x.reshape(-1, 32).astype(np.float64)
    np.testing.assert_allclose(down.reshape(-1, 32)[:, 0], warps.sum(1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(butterfly.reshape(-1, 32), np.repeat(warps.sum(1, keepdims=True), 32, 1),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bcast.reshape(-1, 32), np.repeat(x.reshape(-1, 32)[:, 3:4], 32, 1))
    np.testing.assert_allclose(scan.reshape(-1, 32), np.cumsum(warps, 1), rtol=1e-5, atol=1e-5)
    bits = ((x.reshape(-1, 32) > 0) * (1 << np.arange(32, dtype=np.uint64))).sum(1).astype(np.uint32)
    np.testing.assert_array_equal(ballot.reshape(-1, 32), np.repeat(bits[:, None], 32, 1))


def test_disjoint_masks_shuffle_separately(mod):
    # lanes 0-15 and 16-31 of each warp shuffle at different lines, each half with its own mask
    x = np.arange(64, dtype=np.float32)
    out = np.zeros_like(x)
    mod.get_function("half_warp_sums")((1,), (64,), (x, out), order="reverse")
    np.testing.assert_array_equal(out, np.repeat(x.reshape(-1, 16).sum(1), 16))


def test_warp_shuffle_with_width(mod):
    x = np.arange(64, dtype=np.float32)
    out = np.zeros_like(x)
    mod.get_function("warp_sum_width8")((1,), (64,), (x, out))
    np.testing.assert_array_equal(out, np.repeat(x.reshape(-1, 8).sum(1), 8))


def test_shuffle_from_a_lane_outside_the_block_reads_nan(mod):
    # 48 threads: warp 1 has lanes 0..15 only, so shfl_down from lane 8 by 16 reads nothing
    x = np.ones(48, np.float32)
    outs = [np.zeros_like(x) for _ in range(4)] + [np.zeros(48, np.uint32)]
    mod.get_function("warp_ops")((1,), (48,), (x, *outs))
    down = outs[0]
    assert down[0] == 32.0
    assert np.isnan(down[32]), down[32:]


@pytest.mark.parametrize("grid,block", [((3, 2, 2), (4, 3, 2)), ((2, 3), (5, 2)), (4, 7), ((1, 1, 3), (1, 1, 64))])
def test_grids_and_blocks_in_2d_and_3d(mod, grid, block):
    g = tuple(grid) if isinstance(grid, tuple) else (grid,)
    b = tuple(block) if isinstance(block, tuple) else (block,)
    g, b = g + (1,) * (3 - len(g)), b + (1,) * (3 - len(b))
    out = np.full((np.prod(g) * np.prod(b), 6), -1, np.int32)
    mod.get_function("coords")(grid, block, (out,))
    bz, by, bx, tz, ty, tx = np.meshgrid(*(np.arange(d) for d in (g[2], g[1], g[0], b[2], b[1], b[0])),
                                         indexing="ij")
    expected = np.stack([a.reshape(-1) for a in (bx, by, bz, tx, ty, tz)], 1)
    np.testing.assert_array_equal(out, expected)


def test_launches_from_several_python_threads(mod):
    # launches take turns (fault handlers are process-wide); each must still see its own arguments
    rng = np.random.default_rng(9)
    jobs = [(rng.standard_normal((20, 24), dtype=np.float32), rng.standard_normal((24, 18), dtype=np.float32))
            for _ in range(4)]
    results = [None] * len(jobs)

    def work(j):
        A, B = jobs[j]
        C = np.zeros((20, 18), np.float32)
        for _ in range(5):
            mod.get_function("matmul_tiled")((2, 2), (16, 16), (A, B, C, np.int32(20), np.int32(18), np.int32(24)))
        results[j] = C

    threads = [threading.Thread(target=work, args=(j,)) for j in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (A, B), C in zip(jobs, results):
        np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)


def test_thread_orders(mod, monkeypatch):
    def run(order=None):
        counter, ticket = np.zeros(1, np.int32), np.zeros(64, np.int32)
        mod.get_function("tickets")((1,), (64,), (counter, ticket), order=order)
        return ticket

    np.testing.assert_array_equal(run("forward"), np.arange(64))
    np.testing.assert_array_equal(run("reverse"), np.arange(64)[::-1])
    shuffled = run("random:7")
    assert sorted(shuffled) == list(range(64)) and list(shuffled) != list(range(64))
    np.testing.assert_array_equal(run("random:7"), shuffled)
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_ORDER", "reverse")
    np.testing.assert_array_equal(run(), np.arange(64)[::-1])
    with pytest.raises(ValueError, match="thread order 'sideways'"):
        run("sideways")


def test_large_local_arrays_and_changing_geometry(mod):
    # fibers are made for the largest block seen and reused: grow, shrink, grow again
    for threads, blocks in [(32, 2), (1024, 1), (7, 3), (256, 2)]:
        x = np.random.default_rng(threads).standard_normal(threads * blocks).astype(np.float32)
        out = np.zeros_like(x)
        mod.get_function("local_array")((blocks,), (threads,), (x[:threads], out, np.int32(2048)))
        expected = np.tile(x[:threads].astype(np.float64) * np.arange(2048).sum(), blocks)
        np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_scalar_parameter_types(mod):
    out = np.zeros(5, np.float64)
    scalars = mod.get_function("scalars")
    scalars(1, 1, (out, np.float64(2.5), np.int64(7), np.uint32(4000000000), np.bool_(True)))
    np.testing.assert_array_equal(out, [2.5, 7.0, 4e9, 1.0, -2.0 + 2.5])
    # exact types even where CuPy's 64-bit conversion would happen to fit
    with pytest.raises(TypeError, match=r"`long long b` got a Python int.*np.int64\(7\)"):
        scalars(1, 1, (out, np.float64(2.5), 7, np.uint32(4), np.bool_(True)))
    with pytest.raises(TypeError, match=r"`bool flag` got a Python bool.*np.bool\(True\)"):
        scalars(1, 1, (out, np.float64(2.5), np.int64(7), np.uint32(4), True))


def test_block_votes_and_bit_intrinsics(mod):
    x = np.array([1, -1, 2, 3] + [1] * 44, np.int32)
    out = np.zeros(5, np.int32)
    mod.get_function("block_votes")(1, 48, (x, out))
    # lanes 4.. of each warp reach __activemask together; warp 1 has lanes 0..15 only
    np.testing.assert_array_equal(out, [47, 0, 1, 8 + 100 * 4 + 1000 * 31, 0xFFF0])


def test_kernel_signatures_are_read_after_macros():
    code = r"""
    #define KERNEL extern "C" __global__ void
    #define WIDTH 4
    typedef float real;
    KERNEL __launch_bounds__(256) fill(float *__restrict__ y, const float4 *v, unsigned n, long long int s,
                                       const int arr[], float * const z)
    {
        y[threadIdx.x] = v[0].x + WIDTH + n + s + arr[0] + z[0];
    }
    __global__ void __launch_bounds__(128, 2) plain(void) {}
    __device__ float helper(float x) { return x; }
    """
    mod = SimModule(code=code)
    assert mod.kernel_names == ("fill", "plain")
    params = mod.get_function("fill").params
    assert [str(p) for p in params] == ["float *y", "const float4 *v", "unsigned int n", "long long s",
                                        "const int *arr", "float *z"]
    assert [p.dtype for p in params] == [np.float32, np.float32, np.uint32, np.int64, np.int32, np.float32]
    y, v, z = np.zeros(2, np.float32), np.array([1, 0, 0, 0], np.float32), np.full(1, 0.5, np.float32)
    mod.get_function("fill")(1, 2, (y, v, np.uint32(2), np.int64(3), np.array([10], np.int32), z))
    np.testing.assert_array_equal(y, 1 + 4 + 2 + 3 + 10 + 0.5)
    typedefs = SimModule(code='typedef float floatX;\nextern "C" __global__ void k(floatX *x, floatX s) {}')
    assert [str(p) for p in typedefs.get_function("k").params] == ["float *x", "float s"]
    with pytest.raises(CompileError, match="type 'half', which the simulator cannot pass"):
        SimModule(code='typedef struct { short bits; } half;\nextern "C" __global__ void k(half x) {}')


def test_static_shared_memory_is_counted_per_kernel():
    code = r"""
    #define N 1024
    extern "C" __global__ void two_arrays(float *y)
    {
        __shared__ float a[N][4], b[N];
        __shared__ __align__(16) double c[8];
        a[0][threadIdx.x] = 1.0f;
        b[threadIdx.x] = 2.0f;
        c[threadIdx.x] = 3.0;
        __syncthreads();
        y[threadIdx.x] = a[0][threadIdx.x] + b[threadIdx.x] + (float)c[threadIdx.x];
    }
    extern "C" __global__ void none(float *y) { y[0] = 0.0f; }
    """
    mod = SimModule(code=code)
    kernel = mod.get_function("two_arrays")
    assert kernel.shared_size_bytes == 4 * 1024 * 4 + 4 * 1024 + 8 * 8
    assert mod.get_function("none").shared_size_bytes == 0
    y = np.zeros(4, np.float32)
    kernel(1, 4, (y,), shared_mem=48 * 1024 - kernel.shared_size_bytes)
    np.testing.assert_array_equal(y, 6.0)
    with pytest.raises(ValueError, match=r"20544 bytes of static __shared__ arrays plus shared_mem=28609 make 49153 "
                                         r"bytes .* a GPU allows 49152"):
        kernel(1, 4, (y,), shared_mem=48 * 1024 - kernel.shared_size_bytes + 1)


def test_raw_kernel_like_cupy():
    kernel = SimRawKernel(SOURCE, "vec_add", order="reverse")
    a = np.arange(5, dtype=np.float32)
    c = np.zeros_like(a)
    kernel((1,), (8,), (a, a, c, np.int32(5)))
    np.testing.assert_array_equal(c, 2 * a)
    assert kernel.module.order == "reverse"


def test_cuda_cxx_overloads_of_math_functions():
    code = r"""
    #define max(a, b) ((a) > (b) ? (a) : (b))
    extern "C" __global__ void maths(const float *x, float *y, double *z)
    {
        float v = x[threadIdx.x];
        y[threadIdx.x] = abs(v) + sqrt(v * v) + max(v, 0.0f);  /* float overloads, not int abs */
        z[threadIdx.x] = (double)(exp(v) - expf(v));          /* exp of a float is expf */
    }
    """
    x = np.array([-1.5, 2.25], np.float32)
    y, z = np.zeros(2, np.float32), np.ones(2, np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the source's own max macro must not warn
        SimModule(code=code).get_function("maths")(1, 2, (x, y, z))
    np.testing.assert_array_equal(y, np.abs(x) * 2 + np.maximum(x, 0))
    np.testing.assert_array_equal(z, 0.0)
    with pytest.raises(CompileError, match="implicit-int"):
        SimModule(code='extern "C" __global__ void k(float *y) { auto v = 1.5f; y[0] = v; }')


def test_options_define_macros():
    code = r"""
    extern "C" __global__ void fill(float *y) { y[threadIdx.x] = SCALE * OFFSET; }
    """
    y = np.zeros(4, np.float32)
    mod = SimModule(code=code, options=("-std=c++11", "-DSCALE=3", "-D", "OFFSET=2", "--use_fast_math"))
    mod.get_function("fill")(1, 4, (y,))
    np.testing.assert_array_equal(y, 6.0)


# ---- launch checks -----------------------------------------------------------------------

def test_argument_errors(mod):
    add = mod.get_function("vec_add")
    a = np.zeros(8, np.float32)
    with pytest.raises(TypeError, match=r"argument 0 `const float \*a` needs a float32 array, got float64"):
        add(1, 8, (a.astype(np.float64), a, a, np.int32(8)))
    with pytest.raises(TypeError, match=r"int n` got a Python int.*as int64 .*garbage.*np.int32\(8\)"):
        add(1, 8, (a, a, a, 8))
    with pytest.raises(TypeError, match=r"int n` needs an np.int32 scalar, got int64"):
        add(1, 8, (a, a, a, np.int64(8)))
    with pytest.raises(ValueError, match=r"non-contiguous array \(shape \(8,\), strides \(8,\)\)"):
        add(1, 8, (a, np.zeros(16, np.float32)[::2], a, np.int32(8)))
    readonly = a.copy()
    readonly.flags.writeable = False
    add(1, 8, (readonly, readonly, a, np.int32(8)))  # const parameters may be read-only
    with pytest.raises(ValueError, match=r"argument 2 `float \*c` got a read-only array"):
        add(1, 8, (a, a, readonly, np.int32(8)))
    with pytest.raises(TypeError, match=r"needs a NumPy array .* got list"):
        add(1, 8, ([0.0] * 8, a, a, np.int32(8)))
    with pytest.raises(TypeError, match="takes 4 arguments, got 3"):
        add(1, 8, (a, a, a))
    with pytest.raises(TypeError, match="float x` got a Python float"):
        SimModule(code='extern "C" __global__ void k(float x) {}').get_function("k")(1, 1, (1.0,))


def test_launch_limit_errors(mod):
    add = mod.get_function("vec_add")
    a = np.zeros(8, np.float32)
    args = (a, a, a, np.int32(8))
    with pytest.raises(ValueError, match=r"block \(64, 32, 1\) has 2048 threads; CUDA allows at most 1024"):
        add(1, (64, 32), args)
    with pytest.raises(ValueError, match=r"block \(1, 1, 65\) has z = 65; CUDA allows 1 to 64"):
        add(1, (1, 1, 65), args)
    with pytest.raises(ValueError, match=r"grid \(0, 1, 1\) has x = 0"):
        add(0, 8, args)
    with pytest.raises(ValueError, match=r"shared_mem=49153 bytes .* 0 to 49152 per block"):
        add(1, 8, args, shared_mem=48 * 1024 + 1)
    add.max_dynamic_shared_size_bytes = 64 * 1024  # the opt-in, as on cupy.RawKernel
    add(1, 8, args, shared_mem=64 * 1024)
    with pytest.raises(ValueError, match="at most 232448"):
        add.max_dynamic_shared_size_bytes = 228 * 1024
    with pytest.raises(TypeError, match="grid must be an int or a tuple of 1 to 3 ints"):
        add((1, 1, 1, 1), 8, args)
    with pytest.raises(ValueError, match="no __global__ kernel named 'vec_sub'.*vec_add"):
        mod.get_function("vec_sub")


# ---- broken kernels must be caught -----------------------------------------------------

def test_missing_barrier_in_tiled_matmul_is_caught():
    kernel = SimModule(path=BROKEN / "missing_sync_matmul.cu").get_function("matmul_missing_sync")
    M, N, K = 20, 24, 40
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    wrong = {}
    for order in ORDERS:
        C = np.zeros((M, N), np.float32)
        kernel((2, 2), (16, 16), (A, B, C, np.int32(M), np.int32(N), np.int32(K)), order=order)
        wrong[order] = np.isnan(C).any() or not np.allclose(C, A @ B, rtol=1e-4, atol=1e-4)
    assert any(wrong.values()), "a missing __syncthreads() went unnoticed in every thread order"
    assert wrong["forward"]  # NaN: thread 0 reads tile entries of threads that have not run yet


def test_missing_barrier_in_reduction_is_caught():
    kernel = SimModule(path=BROKEN / "missing_sync_reduction.cu").get_function("block_sum_missing_sync")
    x = np.random.default_rng(1).random(512).astype(np.float32)
    sums = {}
    for order in ORDERS:
        partial = np.zeros(2, np.float32)
        kernel((2,), (256,), (x, partial, np.int32(512)), order=order)
        sums[order] = partial
    expected = x.reshape(2, 256).sum(1)
    assert any(not np.allclose(s, expected, rtol=1e-5) for s in sums.values()), sums


def test_compare_order_finds_the_race_and_passes_good_kernels(mod, monkeypatch):
    x = np.random.default_rng(1).random(512).astype(np.float32)
    broken = SimModule(path=BROKEN / "missing_sync_reduction.cu").get_function("block_sum_missing_sync")
    with pytest.raises(OrderDependenceError, match=r"argument 1 `float \*partial` differs between forward and "
                                                   r"reverse thread order at flat index 0"):
        broken((2,), (256,), (x, np.zeros(2, np.float32), np.int32(512)), order="compare")
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_ORDER", "compare")  # every launch checked, as a test suite may
    partial = np.zeros(4, np.float32)
    mod.get_function("block_sum")((4,), (128,), (x, partial, np.int32(512)))
    np.testing.assert_allclose(partial, x.reshape(4, 128).sum(1), rtol=1e-5)
    total, bins = np.zeros(1, np.float32), np.zeros(3, np.int32)
    values = np.arange(300, dtype=np.int32)
    mod.get_function("histogram")((5,), (64,), (values, bins, total, np.int32(300), np.int32(3)))
    assert total[0] == values.sum()  # float atomics in two orders still agree


def test_early_return_before_barrier_is_barrier_divergence():
    kernel = SimModule(path=BROKEN / "early_return.cu").get_function("scale_early_return")
    n = 100  # block 1 has threads 36..63 past the end
    x, y = np.ones(n, np.float32), np.zeros(n, np.float32)
    with pytest.raises(BarrierDivergenceError,
                       match=r"block \(1, 0, 0\): thread \(36, 0, 0\) returned .* __syncthreads\(\) number 1 "
                             r"\(line 14\)"):
        kernel((2,), (64,), (x, y, np.int32(n)))
    kernel((1,), (64,), (x, y, np.int32(64)))  # the module still works after the error
    np.testing.assert_array_equal(y[:64], 2.0)


def test_barriers_at_different_lines_are_divergence():
    code = r"""
    extern "C" __global__ void split(float *y)
    {
        if (threadIdx.x < 16) {
            y[threadIdx.x] = 1.0f;
            __syncthreads();
        } else {
            __syncthreads();
        }
    }
    """
    with pytest.raises(BarrierDivergenceError, match="line 6 but thread .* line 8"):
        SimModule(code=code).get_function("split")(1, 32, (np.zeros(32, np.float32),))


def test_shuffle_while_lane_waits_at_barrier_is_warp_divergence():
    code = r"""
    extern "C" __global__ void bad_shuffle(float *y)
    {
        float v = y[threadIdx.x];
        if (threadIdx.x == 5)
            __syncthreads();
        else
            v = __shfl_down_sync(0xffffffff, v, 1);
        y[threadIdx.x] = v;
    }
    """
    with pytest.raises(WarpDivergenceError, match=r"__shfl_down_sync \(line 8.*thread \(5, 0, 0\).*line 6"):
        SimModule(code=code).get_function("bad_shuffle")(1, 32, (np.zeros(32, np.float32),))
    split = code.replace("__syncthreads();", "v = __shfl_up_sync(0xffffffff, v, 1);")
    with pytest.raises(WarpDivergenceError, match=r"thread \(0, 0, 0\) waits at __shfl_down_sync \(line 8, mask "
                                                  r"0xffffffff\) while thread \(5, 0, 0\), which that mask names, "
                                                  r"waits at __shfl_up_sync \(line 6"):
        SimModule(code=split).get_function("bad_shuffle")(1, 32, (np.zeros(32, np.float32),))


FAULTS = r"""
extern "C" __global__ void wild_write(float *y, long long offset)
{
    if (threadIdx.x == 3)
        y[offset] = 1.0f;
}

extern "C" __global__ void divide(int *y, int d)
{
    y[threadIdx.x] = 10 / d;
}

__device__ __noinline__ int deep(int n)
{
    volatile char pad[2048];
    pad[0] = (char)n;
    int r = n == 0 ? 0 : deep(n - 1);
    pad[1] = (char)r;  /* after the call: keeps the recursion from becoming a loop */
    return r + pad[0];
}

extern "C" __global__ void recurse(int *y, int n)
{
    y[threadIdx.x] = deep(n);
}
"""


BOUNDS = r"""
extern "C" __global__ void write_at(float *y, int index)
{
    y[index] = 1.0f;
}

extern "C" __global__ void read_next(const float *x, float *y, int n)
{
    int i = threadIdx.x;
    if (i < n)
        y[i] = x[i + 1];
}

extern "C" __global__ void read_shared_at(float *y, int index)
{
    extern __shared__ float buf[];
    buf[threadIdx.x] = 2.0f;
    __syncthreads();
    y[threadIdx.x] = buf[index];
}

extern "C" __global__ void scale_in_place(const float *x, float *y, int n)
{
    int i = threadIdx.x;
    if (i < n)
        y[i] = 2.0f * x[i];
}
"""


@pytest.fixture(scope="module")
def bounds():
    return SimModule(code=BOUNDS)


@pytest.mark.parametrize("index", [10, 11, 1000, 2**20, 2**31 - 1, -1, -3, -2000, -2**20, -2**31])
def test_out_of_bounds_writes_at_any_distance_name_the_array_and_line(bounds, index):
    """An int index reaches at most 8 GiB from a float array: inside its own 32 GiB window, never another array."""
    y = np.zeros(10, np.float32)
    side = "past its end" if index > 0 else "before its start"
    with pytest.raises(KernelFaultError, match=rf"block \(0, 0, 0\), thread \(0, 0, 0\) at line 4: wrote 4 bytes at "
                                               rf"element {index} of argument 0 `float \*y` \(10 elements\), {side}"):
        bounds.get_function("write_at")(1, 1, (y, np.int32(index)))
    assert not y.any()  # nothing is copied back from a failed launch


def test_reading_one_past_the_end_is_an_error(bounds):
    x, y = np.arange(5, dtype=np.float32), np.zeros(5, np.float32)
    bounds.get_function("read_next")(1, 4, (x, y, np.int32(4)))
    np.testing.assert_array_equal(y[:4], x[1:])
    with pytest.raises(KernelFaultError, match=r"thread \(4, 0, 0\) at line 11: read 4 bytes at element 5 of "
                                               r"argument 0 `const float \*x` \(5 elements\), past its end"):
        bounds.get_function("read_next")(1, 5, (x, y, np.int32(5)))


def test_reading_past_dynamic_shared_memory_faults(bounds):
    y = np.zeros(4, np.float32)
    kernel = bounds.get_function("read_shared_at")
    kernel(1, 4, (y, np.int32(3)), shared_mem=16)
    np.testing.assert_array_equal(y, 2.0)
    for index in (4, 1500, -1, 2**31 - 1):
        with pytest.raises(KernelFaultError, match=rf"read 4 bytes at element {index} \(byte {4 * index}\) of the "
                                                   r"dynamic shared memory \(shared_mem=16 bytes\)"):
            kernel(1, 4, (y, np.int32(index)), shared_mem=16)


def test_aliased_arguments_see_one_memory(bounds):
    kernel = bounds.get_function("scale_in_place")
    a = np.arange(6, dtype=np.float32)
    kernel(1, 6, (a, a, np.int32(6)))  # the same array as input and output
    np.testing.assert_array_equal(a, 2 * np.arange(6))
    b = np.arange(6, dtype=np.float32)
    kernel(1, 5, (b[:-1], b[1:], np.int32(5)))  # overlapping views: thread i reads what thread i-1 wrote
    np.testing.assert_array_equal(b, [0, 0, 0, 0, 0, 0])


def test_kernel_faults_raise_instead_of_killing_python():
    mod = SimModule(code=FAULTS)
    y = np.zeros(8, np.float32)
    with pytest.raises(KernelFaultError, match=r"block \(0, 0, 0\), thread \(3, 0, 0\) at line 5: wrote 4 bytes at "
                                               r"address 0x[0-9a-f]+, which is in none of this launch's arrays"):
        mod.get_function("wild_write")(2, 8, (y, np.int64(2**40)))
    with pytest.raises(KernelFaultError, match=r"thread \(0, 0, 0\): integer division by zero"):
        mod.get_function("divide")(1, 4, (np.zeros(4, np.int32), np.int32(0)))
    with pytest.raises(KernelFaultError, match=r"thread \(0, 0, 0\): the thread's stack overflowed"):
        mod.get_function("recurse")(1, 2, (np.zeros(2, np.int32), np.int32(10**6)))
    out = np.zeros(2, np.int32)
    mod.get_function("recurse")(1, 2, (out, np.int32(3)))  # fibers are rebuilt after a fault
    np.testing.assert_array_equal(out, 3 + 2 + 1)
    mod.get_function("wild_write")(1, 8, (y, np.int64(5)))
    assert y[5] == 1.0


def test_assert_and_printf_in_a_kernel(capfd):
    code = r"""
    extern "C" __global__ void checked(const int *x, int n)
    {
        int i = blockIdx.x * blockDim.x + threadIdx.x;
        if (i == 0)
            printf("checking %d values\n", n);
        assert(x[i] >= 0);
    }
    """
    kernel = SimModule(code=code).get_function("checked")
    kernel(2, 4, (np.arange(8, dtype=np.int32), np.int32(8)))
    assert capfd.readouterr().out == "checking 8 values\n"
    x = np.arange(8, dtype=np.int32)
    x[6] = -1
    with pytest.raises(KernelFaultError, match=r"block \(1, 0, 0\), thread \(2, 0, 0\): assertion `x\[i\] >= 0` "
                                               r"failed at line 7"):
        kernel(2, 4, (x, np.int32(8)))


def test_ctrl_c_stops_a_long_launch(mod):
    # eight million blocks: seconds of simulation, cut short by SIGINT as by Ctrl-C in a notebook
    x = np.zeros(1, np.float32)
    handler = signal.getsignal(signal.SIGINT)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match=r"kernel vec_add .*interrupted in block"):
            mod.get_function("vec_add")((1 << 20, 8), (1,), (x, x, x, np.int32(0)))
    finally:
        timer.cancel()
    assert signal.getsignal(signal.SIGINT) is handler  # Python's handler is back


def test_second_ctrl_c_stops_a_thread_stuck_in_a_loop():
    code = r"""
    extern "C" __global__ void spin(volatile int *flag)
    {
        while (flag[0] == 0)
            ;
    }
    """
    kernel = SimModule(code=code).get_function("spin")
    timers = [threading.Timer(t, os.kill, (os.getpid(), signal.SIGINT)) for t in (0.3, 0.6)]
    for timer in timers:
        timer.start()
    try:
        with pytest.raises(KeyboardInterrupt, match=r"interrupted twice while block \(0, 0, 0\), thread "
                                                    r"\(0, 0, 0\) was running \(stuck in a loop\?\)"):
            kernel(1, 1, (np.zeros(1, np.int32),))
    finally:
        for timer in timers:
            timer.cancel()
    flag = np.ones(1, np.int32)
    kernel(1, 4, (flag,))  # fibers restart cleanly after the jump out of the loop


# ---- compiling --------------------------------------------------------------------------

def test_compile_error_names_the_line_of_the_source(tmp_path):
    code = 'extern "C" __global__ void k(float *y)\n{\n    y[0] = undefined_name;\n}\n'
    with pytest.raises(CompileError, match=r"kernel\.cu:3:\d+: error: .undefined_name. undeclared"):
        SimModule(code=code)
    path = tmp_path / "mistake.cu"
    path.write_text(code)
    with pytest.raises(CompileError, match=r"mistake\.cu:3:\d+: error"):
        SimModule(path=path)


def test_uninitialized_variable_is_a_compile_warning(recwarn, monkeypatch):
    code = 'extern "C" __global__ void k(const float *x, float *y, int n)\n{\n    float acc;\n' \
           '    for (int i = 0; i < n; i++)\n        acc += x[i];\n    y[0] = acc;\n}\n'
    with pytest.warns(CompileWarning, match=r"kernel\.cu:6:\d+: warning: .acc. may be used uninitialized"):
        SimModule(code=code)
    monkeypatch.setattr(build, "_loaded", {})  # load from disk, where the warnings are kept
    SimModule(code=SOURCE)
    assert not [w for w in recwarn if issubclass(w.category, CompileWarning)]
    with pytest.warns(CompileWarning, match="acc"):
        SimModule(code=code)


def test_unsupported_parameter_type_is_a_compile_error():
    with pytest.raises(CompileError, match=r"parameter `float \*\*rows` is not supported"):
        SimModule(code='extern "C" __global__ void k(float **rows) {}')


def test_second_module_with_same_source_does_not_recompile(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGRAD_CACHE_DIR", str(tmp_path))
    code = 'extern "C" __global__ void one(int *y) { y[threadIdx.x] = 1; }\n'
    compiles = []
    real_run = build._run
    monkeypatch.setattr(build, "_run", lambda *a, **k: compiles.append(a) or real_run(*a, **k))
    SimModule(code=code)
    assert len(compiles) == 4  # the scheduler (once per cache), preprocess, compile the kernels, link
    libraries = sorted(p.name for p in (tmp_path / "cuda-sim").iterdir())
    monkeypatch.setattr(build, "_loaded", {})  # as in a fresh process: only the disk cache remains
    y = np.zeros(3, np.int32)
    SimModule(code=code).get_function("one")(1, 3, (y,))
    assert len(compiles) == 4
    assert sorted(p.name for p in (tmp_path / "cuda-sim").iterdir()) == libraries
    np.testing.assert_array_equal(y, 1)
    SimModule(code=code, options=("-DX=1",))
    assert len(compiles) == 8  # other -D options: another library, and the scheduler sees them too
    SimModule(code=code + "\n", options=("-DX=1",))
    assert len(compiles) == 11


def test_portable_context_switch_gives_the_same_results():
    # setjmp/longjmp + makecontext: the path used where the assembly switch is not available
    mod = SimModule(code=SOURCE, options=("-DMINIGRAD_SIM_PORTABLE_SWITCH",))
    M, N, K = 33, 17, 40
    rng = np.random.default_rng(5)
    A, B = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    C = np.zeros((M, N), np.float32)
    mod.get_function("matmul_tiled")((2, 3), (16, 16), (A, B, C, np.int32(M), np.int32(N), np.int32(K)),
                                     order="random:2")
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    x = np.random.default_rng(6).standard_normal(64).astype(np.float32)
    outs = [np.zeros_like(x) for _ in range(4)] + [np.zeros(64, np.uint32)]
    mod.get_function("warp_ops")((1,), (64,), (x, *outs))
    np.testing.assert_allclose(outs[1].reshape(2, 32)[:, 0], x.reshape(2, 32).astype(np.float64).sum(1), rtol=1e-5)


UBSAN_SCRIPT = """
import numpy as np
from minigrad.cuda import SimModule
from test_cuda_sim import SOURCE, BOUNDS
mod = SimModule(code=SOURCE)
A, B = np.ones((37, 20), np.float32), np.ones((20, 33), np.float32)
C = np.zeros((37, 33), np.float32)
for order in ("forward", "reverse", "random:3"):
    mod.get_function("matmul_tiled")((3, 3), (16, 16), (A, B, C, np.int32(37), np.int32(33), np.int32(20)),
                                     order=order)
    assert (C == 20).all()
x = np.arange(96, dtype=np.float32)
outs = [np.zeros_like(x) for _ in range(4)] + [np.zeros(96, np.uint32)]
mod.get_function("warp_ops")((2,), (48,), (x, *outs), order="random:1")
mod.get_function("block_votes")(1, 48, (np.ones(48, np.int32), np.zeros(5, np.int32)))
mod.get_function("local_array")((2,), (64,), (x, np.zeros(128, np.float32), np.int32(100)))
mod.get_function("reverse_extern")((4,), (32,), (x, np.zeros_like(x), np.int32(96)), shared_mem=128)
bounds = SimModule(code=BOUNDS)
try:
    bounds.get_function("write_at")(1, 1, (np.zeros(10, np.float32), np.int32(1000)))
except Exception as e:
    assert "past its end" in str(e)
print("clean")
"""


@pytest.mark.slow
def test_simulator_has_no_undefined_behaviour_under_ubsan():
    probe = subprocess.run(build.compiler() + ["-fsanitize=undefined", "-x", "c", "-", "-o", os.devnull],
                           input="int main(void) { return 0; }", capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"the C compiler cannot build with -fsanitize=undefined here: {probe.stderr.strip()[:200]}")
    # in a child process: UBSan aborts the process at the first undefined behaviour it sees
    env = {**os.environ, "MINIGRAD_CUDA_SIM_CFLAGS": "-fsanitize=undefined -fno-sanitize-recover=all",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), str(Path(__file__).parent)])}
    out = subprocess.run([sys.executable, "-c", UBSAN_SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr[-3000:]


def test_import_is_lazy():
    code = "import sys, minigrad.cuda; print('cffi' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert out.stdout.strip() == "False", out.stderr


def test_missing_barrier_after_a_warp_shuffle_is_caught():
    """A shuffle synchronises its warp only: the other warp's later write must still need a barrier."""
    kernel = SimModule(path=BROKEN / "missing_sync_after_shuffle.cu").get_function("swap_halves_missing_sync")
    tid = np.arange(64)
    expected = ((tid + 32) % 64 + ((tid ^ 1) + 32) % 64).astype(np.float32)
    wrong = []
    for order in ("forward", "reverse", "random:3"):
        out = np.zeros(64, np.float32)
        kernel((1,), (64,), (out,), order=order)
        wrong.append(not np.array_equal(out, expected))
    assert any(wrong), "the race between warps went unnoticed in every thread order"
