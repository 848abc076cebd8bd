"""kernels/threadpool.c, through the C matmul that runs on it.

Each element of C is one dot product over k whose terms the kernel adds in
the same order however the rows and columns are shared out, so the product
on 2 or 3 threads must equal the 1-thread product bit for bit; the 1-thread
product is checked against NumPy in float64. Also: never more worker threads
than cores, concurrent callers (the pool busy: run on the caller's thread),
and a forked child (the workers did not come along: no deadlock).
"""
import multiprocessing
import os
import threading

import numpy as np
import pytest

from minigrad.kernels import c_backend


@pytest.fixture(autouse=True)
def c_kernels(c_kernels_built):
    pass


# Each is >= 8 MFLOP, so 2 threads really run (matmul.c: a thread per 4 MFLOP at most), and covers one
# split: many row blocks; few rows (column chunks); k over several B panels; n over several panels (float64's
# NC is 2048); prime sizes with edge tiles.
SHAPES = [(256, 256, 256), (24, 1200, 700), (64, 1100, 130), (30, 70, 2100), (131, 257, 199), (2053, 5, 401)]


def product(m, k, n, dtype, trans_a, trans_b, threads, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(dtype)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(dtype)
    out = c_backend.gemm(a, b, trans_a=trans_a, trans_b=trans_b, version="parallel", num_threads=threads)
    expected = (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b)
    return out, expected


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_threads_give_the_one_thread_bits(m, k, n, dtype, trans_a, trans_b):
    one, expected = product(m, k, n, dtype, trans_a, trans_b, 1)
    tolerance = (2e-5 if dtype == np.float32 else 1e-13) * np.sqrt(k)
    error = np.abs(one - expected).max() / max(np.abs(expected).max(), 1.0)
    assert error < tolerance, f"1 thread ({m},{k},{n}) {np.dtype(dtype).name}: relative error {error:.3g}"
    for threads in (2, 3):
        out, _ = product(m, k, n, dtype, trans_a, trans_b, threads)
        mismatched = np.count_nonzero(out != one)
        assert mismatched == 0, f"{threads} threads ({m},{k},{n}): {mismatched} elements differ from 1 thread"


def test_never_more_workers_than_cores():
    _, lib = c_backend.load()
    cores = lib.threadpool_cores()
    assert cores == len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores >= 1
    for threads in (2, 64, 0):
        product(256, 256, 256, np.float32, False, False, threads)
        assert 0 <= lib.threadpool_workers() <= cores - 1, (threads, lib.threadpool_workers(), cores)
    if cores >= 2:
        assert lib.threadpool_workers() == cores - 1  # 0 (all cores) started them all


def test_concurrent_callers_get_their_own_results():
    """Python threads calling at once (cffi releases the GIL): one runs on the pool, the others alone."""
    inputs = [np.random.default_rng(seed).standard_normal((300, 300)).astype(np.float32) for seed in range(4)]
    expected = [c_backend.matmul(x, x, num_threads=1) for x in inputs]
    wrong = []

    def work(index):
        for _ in range(5):
            if not np.array_equal(c_backend.matmul(inputs[index], inputs[index], num_threads=2), expected[index]):
                wrong.append(index)

    callers = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert not wrong, f"callers {sorted(set(wrong))} got another result than the 1-thread product"


def child_product(queue):
    out, _ = product(256, 256, 256, np.float64, False, False, 2, seed=1)
    queue.put(out)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork() on this platform")
def test_forked_child_multiplies_without_the_parents_workers():
    product(256, 256, 256, np.float64, False, False, 2)  # the parent's workers exist before the fork
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=child_product, args=(queue,))
    child.start()
    out = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    expected, _ = product(256, 256, 256, np.float64, False, False, 1, seed=1)
    assert np.array_equal(out, expected)
