"""The CUDA simulator's per-access checks: memory safety, traffic counts, data races, and its runtime under
AddressSanitizer + UBSan.

Every load and store of a simulated kernel is checked against the launch's regions (array arguments,
dynamic and static shared memory), so an out-of-bounds access at any distance, on either side, or an
access through a pointer that belongs to no region, is a KernelFaultError naming block, thread, line
and array. The same check counts traffic (kernel(..., count=True)) and finds races (race_check=True).
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigrad.cuda import DataRaceError, KernelFaultError, LaunchStats, SimModule

ROOT = Path(__file__).resolve().parents[1]
BROKEN = Path(__file__).parent / "cuda_broken"

SOURCE = r"""
#define TILE 8

__device__ float load_at(const float *p, int i)
{
    return p[i];
}

extern "C" __global__ void shared_at(float *y, int i, int j)
{
    __shared__ float a[8];
    __shared__ float b[8];
    a[threadIdx.x] = 1.0f;
    b[threadIdx.x] = 2.0f;
    __syncthreads();
    if (threadIdx.x == 3)
        y[0] = a[i] + b[j];
}

extern "C" __global__ void tile_at(float *y, int row, int col)
{
    __shared__ float t[TILE][TILE + 1], u;
    t[threadIdx.y][threadIdx.x] = (float)threadIdx.x;
    if (threadIdx.x == 0 && threadIdx.y == 0)
        u = 5.0f;
    __syncthreads();
    if (threadIdx.x == 1 && threadIdx.y == 2)
        y[0] = t[row][col] + u;
}

extern "C" __global__ void read_through_helper(const float *x, float *y, int offset)
{
    y[threadIdx.x] = load_at(x, threadIdx.x + offset);
}

extern "C" __global__ void wide_copy(const float4 *x, float4 *y, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n)  /* one too many on purpose when launched with more threads than n */
        y[i] = x[i];
}

extern "C" __global__ void through_integer(float *y, long long address)
{
    float *p = (float *)address;
    y[0] = *p;
}

extern "C" __global__ void clear_from(float *y, int from, int count)
{
    if (threadIdx.x == 0)
        memset(y + from, 0, count * sizeof(float));   /* a library call: checked all the same */
}

extern "C" __global__ void vec_add(const float *a, const float *b, float *c, int n)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        c[i] = a[i] + b[i];
}

/* C = A B, (M, K) @ (K, N), TILE x TILE tiles through shared memory */
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

/* every thread of a warp writes its slot, __syncwarp, then reads its neighbour's: ordered */
extern "C" __global__ void warp_neighbours(float *y)
{
    __shared__ float s[32];
    s[threadIdx.x] = (float)threadIdx.x;
    __syncwarp();
    y[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

/* the same without the __syncwarp: a race */
extern "C" __global__ void warp_neighbours_racy(float *y)
{
    __shared__ float s[32];
    s[threadIdx.x] = (float)threadIdx.x;
    y[threadIdx.x] = s[(threadIdx.x + 1) % 32];
}

/* all threads count into one shared counter with atomics: no race */
extern "C" __global__ void count_positive(const float *x, int *count)
{
    __shared__ int c;
    if (threadIdx.x == 0)
        c = 0;
    __syncthreads();
    if (x[threadIdx.x] > 0.0f)
        atomicAdd(&c, 1);
    __syncthreads();
    if (threadIdx.x == 0)
        count[blockIdx.x] = c;
}
"""


@pytest.fixture(scope="module")
def mod():
    return SimModule(code=SOURCE)


def line_of(text, source=SOURCE):
    """The 1-based line of the first source line containing text."""
    return next(i for i, line in enumerate(source.splitlines(), 1) if text in line)


# ---- memory safety ------------------------------------------------------------------------

@pytest.mark.parametrize("i", [8, 9, 16, 1000, 2**31 - 1, -1, -8, -2**31])
def test_static_shared_out_of_bounds_at_any_distance_names_the_variable(mod, i):
    """a[8] is where b starts on a GPU: still an error about a, never a read of b."""
    side = "past its end" if i > 0 else "before its start"
    line = line_of("y[0] = a[i] + b[j]")
    with pytest.raises(KernelFaultError, match=rf"block \(0, 0, 0\), thread \(3, 0, 0\) at line {line}: read 4 bytes at "
                                               rf"element {i} \(byte {4 * i}\) of the __shared__ variable `a` "
                                               rf"\(line 11, 32 bytes\), {side}"):
        mod.get_function("shared_at")(1, 8, (np.zeros(1, np.float32), np.int32(i), np.int32(0)))
    y = np.zeros(1, np.float32)
    mod.get_function("shared_at")(1, 8, (y, np.int32(7), np.int32(0)))
    assert y[0] == 3.0


def test_two_dimensional_shared_tile_and_scalar(mod):
    y = np.zeros(1, np.float32)
    mod.get_function("tile_at")(1, (8, 8), (y, np.int32(2), np.int32(6)))
    assert y[0] == 6.0 + 5.0
    # row 7, column 9 is one past the padded row (9 columns) of the last row: past t's end
    with pytest.raises(KernelFaultError, match=r"thread \(1, 2, 0\) at line \d+: read 4 bytes at element 72 \(byte 288\) "
                                               r"of the __shared__ variable `t` \(line \d+, 288 bytes\), past its end"):
        mod.get_function("tile_at")(1, (8, 8), (y, np.int32(7), np.int32(9)))


def test_fault_inside_a_device_function_names_its_line(mod):
    x, y = np.arange(4, dtype=np.float32), np.zeros(4, np.float32)
    mod.get_function("read_through_helper")(1, 4, (x, y, np.int32(0)))
    np.testing.assert_array_equal(y, x)
    with pytest.raises(KernelFaultError, match=rf"thread \(2, 0, 0\) at line {line_of('return p[i];')}: read 4 bytes "
                                               r"at element 4 of argument 0 `const float4? ?\*x` \(4 elements\)"):
        mod.get_function("read_through_helper")(1, 4, (x, y, np.int32(2)))


def test_vector_loads_are_checked_whole(mod):
    x, y = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    with pytest.raises(KernelFaultError, match=r"thread \(4, 0, 0\) at line \d+: (read 16 bytes at element 16 of argument "
                                               r"0 `const float4 \*x`|wrote 16 bytes at element 16 of argument 1 "
                                               r"`float4 \*y`) \(16 elements\), past its end"):
        mod.get_function("wide_copy")(1, 8, (x, y, np.int32(4)))
    mod.get_function("wide_copy")(1, 3, (x, y, np.int32(2)))
    np.testing.assert_array_equal(y[:12], x[:12])


def test_pointer_from_an_integer_is_refused(mod):
    y = np.zeros(1, np.float32)
    for address in (0x1000, y.__array_interface__["data"][0]):  # nowhere, and the NumPy array itself
        with pytest.raises(KernelFaultError, match=rf"thread \(0, 0, 0\) at line \d+: read 4 bytes at address "
                                                   rf"{address:#x}, which is in none of this launch's arrays"):
            mod.get_function("through_integer")(1, 1, (y, np.int64(address)))


def test_overlapping_views_are_checked_against_their_union(mod):
    """Views of one buffer that partly overlap share memory as on a GPU; past the buffer is still an error."""
    x = np.arange(9, dtype=np.float32)
    mod.get_function("vec_add")(1, 8, (x[:-1], x[:-1], x[1:], np.int32(8)))  # x[i + 1] = 2 x[i], in order
    np.testing.assert_array_equal(x, 0)  # forward order: x[1] = 2 x[0] = 0, then x[2] = 2 x[1] = 0, ...
    with pytest.raises(KernelFaultError, match=r"thread \(8, 0, 0\) at line \d+: wrote 4 bytes at address 0x[0-9a-f]+, "
                                               r"which is in none of this launch's arrays .*; that is element 8 of "
                                               r"argument 2 `float \*c` \(8 elements\), past its end"):
        mod.get_function("vec_add")(1, 9, (x[:-1], x[:-1], x[1:], np.int32(9)))


def test_broken_matmul_that_walks_past_its_shared_tile():
    kernel = SimModule(path=BROKEN / "shared_overflow_matmul.cu").get_function("matmul_shared_overflow")
    A, B = np.ones((16, 32), np.float32), np.ones((32, 16), np.float32)
    # row 15 is the first whose As[ty][k] for k >= 16 leaves the tile (rows below land in the next row)
    with pytest.raises(KernelFaultError, match=r"thread \(0, 15, 0\) at line 20: read 4 bytes at element 256 \(byte "
                                               r"1024\) of the __shared__ variable `As` \(line 10, 1024 bytes\), past "
                                               r"its end"):
        kernel((1, 1), (16, 16), (A, B, np.zeros((16, 16), np.float32), np.int32(16), np.int32(16), np.int32(32)))


def test_write_through_another_threads_local_variable():
    kernel = SimModule(path=BROKEN / "stale_local_pointer.cu").get_function("write_through_neighbour")
    with pytest.raises(KernelFaultError, match=r"thread \(1, 0, 0\) at line 13: wrote 4 bytes at address 0x[0-9a-f]+, "
                                               r"in another thread's local variables"):
        kernel(1, 2, (np.zeros(2, np.float32),))


def test_memset_past_the_end_is_caught_before_it_writes(mod):
    y = np.ones(8, np.float32)
    stats = mod.get_function("clear_from")(1, 4, (y, np.int32(2), np.int32(6)), count=True)
    np.testing.assert_array_equal(y, [1, 1, 0, 0, 0, 0, 0, 0])
    assert stats["y"].writes == 6
    with pytest.raises(KernelFaultError, match=rf"thread \(0, 0, 0\) at line {line_of('memset(y + from')}: wrote 28 "
                                               r"bytes at element 2 of argument 0 `float \*y` \(8 elements\), past its"):
        mod.get_function("clear_from")(1, 4, (np.ones(8, np.float32), np.int32(2), np.int32(7)))


def test_signal_faults_name_the_line_too():
    from test_cuda_sim import FAULTS
    faults = SimModule(code=FAULTS)
    with pytest.raises(KernelFaultError, match=rf"integer division by zero .*\(line {line_of('10 / d', FAULTS)}\)"):
        faults.get_function("divide")(1, 4, (np.zeros(4, np.int32), np.int32(0)))
    with pytest.raises(KernelFaultError, match=r"stack overflowed .*\(line \d+\)"):
        faults.get_function("recurse")(1, 2, (np.zeros(2, np.int32), np.int32(10**6)))


# ---- counting global-memory traffic -----------------------------------------------------------

def test_vec_add_reads_each_input_once_and_writes_each_output_once(mod):
    n = 1000
    a, b, c = np.ones(n, np.float32), np.ones(n, np.float32), np.zeros(n, np.float32)
    assert mod.get_function("vec_add")((8,), (128,), (a, b, c, np.int32(n))) is None  # as CuPy: no result
    stats = mod.get_function("vec_add")((8,), (128,), (a, b, c, np.int32(n)), count=True)
    assert isinstance(stats, LaunchStats)
    assert (stats["a"].reads, stats["b"].reads, stats["c"].reads) == (n, n, 0)
    assert (stats["a"].writes, stats["c"].writes, stats[2].write_bytes) == (0, n, 4 * n)
    assert (stats.global_reads, stats.global_writes) == (2 * n, n)
    assert stats.shared_read_bytes == stats.shared_write_bytes == 0


@pytest.mark.parametrize("M,N,K", [(16, 24, 32), (13, 7, 21)])
def test_tiled_matmul_traffic_matches_the_closed_form(mod, M, N, K):
    """Each block loads a TILE-wide strip of A and of B per step: A is read once per block column,
    B once per block row (padding threads load zeros instead of reading)."""
    T = 8
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((M, K), dtype=np.float32), rng.standard_normal((K, N), dtype=np.float32)
    C = np.zeros((M, N), np.float32)
    grid = (-(-N // T), -(-M // T))
    stats = mod.get_function("matmul_tiled")(grid, (T, T), (A, B, C, np.int32(M), np.int32(N), np.int32(K)),
                                             count=True)
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-4, atol=1e-4)
    assert stats["A"].reads == M * K * grid[0]
    assert stats["B"].reads == K * N * grid[1]
    assert (stats["C"].reads, stats["C"].writes) == (0, M * N)
    steps, threads = -(-K // T), T * T * grid[0] * grid[1]
    assert stats.shared_write_bytes == 4 * 2 * threads * steps
    assert stats.shared_read_bytes == 4 * 2 * T * threads * steps


def test_vector_loads_count_their_elements(mod):
    x, y = np.arange(16, dtype=np.float32), np.zeros(16, np.float32)
    stats = mod.get_function("wide_copy")(1, 3, (x, y, np.int32(2)), count=True)
    assert (stats["x"].reads, stats["y"].writes, stats["x"].read_bytes) == (12, 12, 48)


# ---- data races ---------------------------------------------------------------------------------

def test_correct_kernels_are_race_free_in_every_order(mod):
    M, N, K = 20, 12, 17
    A, B = np.ones((M, K), np.float32), np.ones((K, N), np.float32)
    for order in ("forward", "reverse", "random:4"):
        C = np.zeros((M, N), np.float32)
        mod.get_function("matmul_tiled")((2, 3), (8, 8), (A, B, C, np.int32(M), np.int32(N), np.int32(K)),
                                         race_check=True, order=order)
        np.testing.assert_array_equal(C, K)
        y = np.zeros(32, np.float32)
        mod.get_function("warp_neighbours")(1, 32, (y,), race_check=True, order=order)
        np.testing.assert_array_equal(y, (np.arange(32) + 1) % 32)
        counts = np.zeros(2, np.int32)
        x = np.tile(np.arange(-10, 22, dtype=np.float32), 2)
        mod.get_function("count_positive")(2, 32, (x, counts), race_check=True, order=order)
        np.testing.assert_array_equal(counts, [21, 21])


def test_missing_barrier_in_a_tiled_matmul_is_a_race():
    kernel = SimModule(path=BROKEN / "missing_sync_matmul.cu").get_function("matmul_missing_sync")
    A, B, C = np.ones((16, 32), np.float32), np.ones((32, 16), np.float32), np.zeros((16, 16), np.float32)
    with pytest.raises(DataRaceError, match=r"block \(0, 0, 0\), thread \(1, 0, 0\) at line 16: data race on element 1 "
                                            r"\(byte 4\) of the __shared__ variable `As` \(line 10, 1024 bytes\): this "
                                            r"thread wrote it, and thread \(0, 0, 0\) read it at line 20, with no "
                                            r"__syncthreads\(\) between them"):
        kernel((1, 1), (16, 16), (A, B, C, np.int32(16), np.int32(16), np.int32(32)), race_check=True)
    kernel((1, 1), (16, 16), (A, B, C, np.int32(16), np.int32(16), np.int32(32)))  # unchecked: no error,
    assert np.isnan(C).any()  # only poisoned shared memory read back


def test_missing_barrier_in_a_reduction_is_a_race_in_every_order():
    kernel = SimModule(path=BROKEN / "missing_sync_reduction.cu").get_function("block_sum_missing_sync")
    for order in ("forward", "reverse", "random:1"):
        with pytest.raises(DataRaceError, match=r"data race on element \d+ \(byte \d+\) of the __shared__ variable `s` "
                                                r".* at line 15"):
            kernel(2, 256, (np.ones(512, np.float32), np.zeros(2, np.float32), np.int32(512)), race_check=True,
                   order=order)


def test_warp_race_without_syncwarp(mod):
    with pytest.raises(DataRaceError, match=r"the __shared__ variable `s`"):
        mod.get_function("warp_neighbours_racy")(1, 32, (np.zeros(32, np.float32),), race_check=True)


def test_plain_update_of_a_global_from_every_block_is_a_race_atomics_are_not():
    racy = SimModule(path=BROKEN / "race_across_blocks.cu")
    x = np.ones(256, np.float32)
    total = np.zeros(1, np.float32)
    racy.get_function("block_sum_racy")(4, 64, (x, total, np.int32(256)))
    assert total[0] == 256  # blocks run one at a time here: right by luck, which is why a check is needed
    with pytest.raises(DataRaceError, match=r"block \(1, 0, 0\), thread \(0, 0, 0\) at line 20: data race on element 0 "
                                            r"of argument 1 `float \*total` \(1 elements\): this thread read it, and "
                                            r"thread \(0, 0, 0\) of block \(0, 0, 0\) wrote it at line 20, with threads "
                                            r"of different blocks are never synchronised"):
        racy.get_function("block_sum_racy")(4, 64, (x, np.zeros(1, np.float32), np.int32(256)), race_check=True)
    total = np.zeros(1, np.float32)
    racy.get_function("block_sum_atomic")(4, 64, (x, total, np.int32(256)), race_check=True)
    assert total[0] == 256


def test_race_check_for_every_launch_from_the_environment(monkeypatch):
    kernel = SimModule(path=BROKEN / "missing_sync_matmul.cu").get_function("matmul_missing_sync")
    args = (np.ones((16, 32), np.float32), np.ones((32, 16), np.float32), np.zeros((16, 16), np.float32),
            np.int32(16), np.int32(16), np.int32(32))
    kernel((1, 1), (16, 16), args)  # silent without the check
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_RACE_CHECK", "1")
    with pytest.raises(DataRaceError):
        kernel((1, 1), (16, 16), args)


def test_project_kernels_are_race_free_and_in_bounds(monkeypatch):
    """kernels/matmul.cu and kernels/attention.cu through the cuda-sim backend, every launch race-checked."""
    from minigrad import kernels
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_RACE_CHECK", "1")
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((37, 45), dtype=np.float32), rng.standard_normal((45, 29), dtype=np.float32)
    np.testing.assert_allclose(kernels.matmul(a, b, backend="cuda-sim"), a.astype(np.float64) @ b, rtol=1e-4,
                               atol=1e-4)
    g = rng.standard_normal((37, 29), dtype=np.float32)
    ga, gb = kernels.matmul_backward(a, b, g, backend="cuda-sim")
    np.testing.assert_allclose(ga, g.astype(np.float64) @ b.T, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, a.T.astype(np.float64) @ g, rtol=1e-4, atol=1e-4)
    q, k, v = (rng.standard_normal((2, 19, 16), dtype=np.float32) for _ in range(3))
    for causal in (False, True):
        out, lse = kernels.attention(q, k, v, is_causal=causal, return_lse=True, backend="cuda-sim")
        ref, ref_lse = kernels.attention(q, k, v, is_causal=causal, return_lse=True, backend="numpy")
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
        grads = kernels.attention_backward(q, k, v, out, lse, g[:19, :16][None].repeat(2, 0), is_causal=causal,
                                           backend="cuda-sim")
        refs = kernels.attention_backward(q, k, v, ref, ref_lse, g[:19, :16][None].repeat(2, 0), is_causal=causal,
                                          backend="numpy")
        for got, want in zip(grads, refs):
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


# ---- the simulator's own C under AddressSanitizer + UBSan ------------------------------------------

SANITIZED_SCRIPT = """
import numpy as np
from minigrad.cuda import DataRaceError, KernelFaultError, SimModule
from test_cuda_sim_checks import BROKEN, SOURCE
mod = SimModule(code=SOURCE)
M, N, K = 20, 12, 17
A, B, C = np.ones((M, K), np.float32), np.ones((K, N), np.float32), np.zeros((M, N), np.float32)
for order in ("forward", "reverse", "random:3"):
    stats = mod.get_function("matmul_tiled")((2, 3), (8, 8), (A, B, C, np.int32(M), np.int32(N), np.int32(K)),
                                             order=order, count=True, race_check=True)
    assert (C == K).all() and stats["A"].reads == M * K * 2
for i in (8, -1, 2**31 - 1):
    try:
        mod.get_function("shared_at")(1, 8, (np.zeros(1, np.float32), np.int32(i), np.int32(0)))
        raise SystemExit("no fault")
    except KernelFaultError as e:
        assert "`a`" in str(e)
try:
    mod.get_function("through_integer")(1, 1, (np.zeros(1, np.float32), np.int64(0x1000)))
    raise SystemExit("no fault")
except KernelFaultError:
    pass
racy = SimModule(path=BROKEN / "missing_sync_reduction.cu").get_function("block_sum_missing_sync")
try:
    racy(2, 256, (np.ones(512, np.float32), np.zeros(2, np.float32), np.int32(512)), race_check=True)
    raise SystemExit("no race")
except DataRaceError:
    pass
y = np.zeros(32, np.float32)
mod.get_function("warp_neighbours")(1, 32, (y,), race_check=True)
print("clean")
"""


@pytest.mark.slow
def test_simulator_runtime_runs_clean_under_asan_and_ubsan(tmp_path):
    """The scheduler (fibers, barriers, checks, guarded memory) built with -fsanitize=address,undefined and the
    kernels with UBSan (their memory checks are the simulator's own), in a child process with libasan
    preloaded: any finding aborts it. (AddressSanitizer warns once that it ignores a jump out of a fiber stack,
    whose bounds it does not know: the faults the script provokes end that way, and the scheduler clears the
    fiber stacks' shadow memory afterwards.)"""
    from test_kernels_asan import asan_runtime, c_compiler
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler: the simulator needs one")
    runtime = asan_runtime(compiler)
    assert runtime, f"{compiler} has no shared AddressSanitizer runtime (libasan); install it (Debian: libasan8)"
    env = {**os.environ, "MINIGRAD_CUDA_SIM_CFLAGS": "-fsanitize=address,undefined -fno-sanitize-recover=all",
           "MINIGRAD_CACHE_DIR": str(tmp_path), "LD_PRELOAD": runtime,
           "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=1", "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run([sys.executable, "-c", SANITIZED_SCRIPT], capture_output=True, text=True, env=env,
                         timeout=600, cwd=ROOT)
    output = out.stdout + out.stderr
    for finding in ("ERROR: AddressSanitizer", "runtime error:"):
        assert finding not in output, output[-6000:]
    assert out.returncode == 0 and out.stdout.strip() == "clean", output[-6000:]
    # and the scheduler really was built with AddressSanitizer
    assert any("asan" in p.read_bytes().decode("latin-1") for p in (tmp_path / "cuda-sim").glob("scheduler-*.o"))
