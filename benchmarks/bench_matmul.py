"""GFLOP/s of every C matmul version against NumPy's BLAS (and PyTorch when installed).

    env -u OPENBLAS_CORETYPE python benchmarks/bench_matmul.py
    env -u OPENBLAS_CORETYPE python benchmarks/bench_matmul.py --sizes 1024 2048 --dtypes float32 --rounds 7
    env -u OPENBLAS_CORETYPE python benchmarks/bench_matmul.py --sizes 256 384 256x1024x256 --versions parallel

Speed is reported as ratios measured in one run: in every round each
contender runs once on the same inputs, back to back, so load from other
processes hits them alike; the table shows the median over rounds of the
GFLOP/s and of the ratio to NumPy. On more than one thread, each contender
starts after a pause of SETTLE seconds: OpenBLAS's idle workers spin for
about 0.1 s of CPU time after a call (measured), and on a 2-core machine the
next contender's second thread would share a core with that spinning.
NumPy's and PyTorch's thread counts are set with threadpoolctl / torch.set_num_threads; the C kernels get
num_threads. "peak" is the share of the FMA peak measured here and now: a
register-only FMA loop in C (matmul_fma_peak_*) on the active instruction
set, times the thread count. Target (issue 15): the parallel version
>= 1.0x NumPy at 256..2048, float32 and float64, on 1 and on 2 threads.
"""
import argparse
import os
import statistics
import time

import numpy as np

from machine import describe
from minigrad.kernels import c_backend

# Slow versions only where they finish in reasonable time.
MAX_SIZE = {"naive": 256, "blocked": 1024, "packed": 2048, "simd": 2048, "parallel": 4096}
TARGET_RATIO, TARGET_SIZES, TARGET_VERSION = 1.0, (256, 512, 1024, 2048), "parallel"
SETTLE = 0.2


def fma_peak_gflops(dtype, rounds=5):
    """One core's peak GFLOP/s on the active instruction set: the best of `rounds` FMA loops, timed in
    this thread's CPU time (the hardware's rate, whatever else the machine runs)."""
    _, lib = c_backend.load()
    probe = lib.matmul_fma_peak_f32 if dtype == np.float32 else lib.matmul_fma_peak_f64
    best = 0.0
    for _ in range(rounds):
        start = time.thread_time()
        flops = probe(20_000_000)
        best = max(best, flops / (time.thread_time() - start) / 1e9)
    return best


def seconds(call, min_time=0.05, clock=time.perf_counter):
    """Time of one call, averaged over enough calls to last min_time."""
    call()
    repeats, elapsed = 1, 0.0
    while True:
        start = clock()
        for _ in range(repeats):
            call()
        elapsed = clock() - start
        if elapsed >= min_time:
            return elapsed / repeats
        repeats *= 2


def contenders(a, b, threads, versions, torch):
    """name -> zero-argument call computing a @ b."""
    calls = {"numpy": lambda: a @ b}
    if torch is not None:
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        calls["torch"] = lambda: (ta @ tb).numpy()
    for version in versions:
        if max(a.shape + b.shape) <= MAX_SIZE[version]:
            calls[version] = (lambda v=version: c_backend.matmul(a, b, version=v, num_threads=threads))
    return calls


def shape(text):
    """(m, k, n) from "N" (a square product) or "MxKxN" (op(A) m x k times op(B) k x n)."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"a size is N or MxKxN with positive integers, got {text!r}")
    return tuple(int(p) for p in parts * (3 if len(parts) == 1 else 1))


def measure(size, dtype, threads, versions, rounds, torch, clock=time.perf_counter):
    """{name: (median GFLOP/s, median ratio to numpy)} over `rounds` interleaved rounds; size is (m, k, n)."""
    rng = np.random.default_rng(0)
    m, k, n = size
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    calls = contenders(a, b, threads, versions, torch)
    expected = a.astype(np.float64) @ b
    for name, call in calls.items():  # a fast wrong kernel is no result
        error = np.abs(call() - expected).max() / np.abs(expected).max()
        assert error < (1e-4 if dtype == np.float32 else 1e-10), f"{name} is wrong at {size}: {error:.2g}"
    flops = 2.0 * m * k * n
    rates = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            if threads > 1:
                time.sleep(SETTLE)  # the previous contender's idle threads stop spinning
            rates[name].append(flops / seconds(call, clock=clock) / 1e9)
    return {name: (statistics.median(r), statistics.median(x / y for x, y in zip(r, rates["numpy"])))
            for name, r in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=shape, nargs="+", default=[shape(str(s)) for s in (128, 256, 512, 1024, 2048)],
                        help="N (square) or MxKxN")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--versions", nargs="+", default=list(c_backend.MATMUL_VERSIONS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even when it is installed")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this thread's CPU time (1 thread only): steady on a busy machine")
    args = parser.parse_args()

    try:
        from threadpoolctl import threadpool_info, threadpool_limits
    except ImportError:
        raise SystemExit("bench_matmul needs threadpoolctl to set NumPy's thread count: pip install threadpoolctl")
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass

    if os.environ.get("OPENBLAS_CORETYPE"):
        print(f"WARNING: OPENBLAS_CORETYPE={os.environ['OPENBLAS_CORETYPE']} forces an OpenBLAS kernel; "
              "run with `env -u OPENBLAS_CORETYPE` to compare against NumPy's best")
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("version")) for i in threadpool_info()
            if i.get("user_api") == "blas"]
    if args.cpu_time and args.threads != [1]:
        raise SystemExit("--cpu-time measures one thread: use it with --threads 1")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(describe())
    print(f"times: {'CPU time of this thread' if args.cpu_time else 'wall clock'}")
    print(f"NumPy BLAS: {blas}; C micro-kernel: {c_backend.simd_kernel()}; "
          f"PyTorch: {torch.__version__ if torch else 'not installed'}; rounds: {args.rounds} (medians)")
    peaks = {dtype: fma_peak_gflops(np.dtype(dtype)) for dtype in args.dtypes}
    print("measured FMA peak per core: " + ", ".join(f"{d} {p:.1f} GFLOP/s" for d, p in peaks.items()))

    missed = []
    for threads in args.threads:
        # Serial versions are the same on any thread count: show them once.
        versions = [v for v in args.versions if threads == min(args.threads) or v == "parallel"]
        if torch is not None:
            torch.set_num_threads(threads)
        with threadpool_limits(threads):
            for dtype in args.dtypes:
                names = ["numpy"] + (["torch"] if torch else []) + versions
                print(f"\n{dtype}, {threads} thread{'s' if threads > 1 else ''}: GFLOP/s (ratio to numpy)")
                print(f"{'size':>14} " + "".join(f"{name:>18}" for name in names) + f"{'parallel/peak':>15}")
                for size in args.sizes:
                    result = measure(size, np.dtype(dtype), threads, versions, args.rounds, torch, clock)
                    cells = [f"{result[n][0]:8.1f} ({result[n][1]:4.2f}x)" if n in result else f"{'-':>16}"
                             for n in names]
                    share = (f"{result[TARGET_VERSION][0] / (peaks[dtype] * threads):14.0%}"
                             if TARGET_VERSION in result else "")
                    label = str(size[0]) if len(set(size)) == 1 else "x".join(map(str, size))
                    print(f"{label:>14} " + "".join(f"{cell:>18}" for cell in cells) + share, flush=True)
                    ratio = result.get(TARGET_VERSION, (0, 0))[1]
                    in_target = all(TARGET_SIZES[0] <= x <= TARGET_SIZES[-1] for x in size)
                    if TARGET_VERSION in result and in_target and ratio < TARGET_RATIO:
                        missed.append(f"{label} {dtype} on {threads} thread(s): {ratio:.2f}x")
    print(f"\ntarget ({TARGET_VERSION} >= {TARGET_RATIO}x NumPy at 256..2048, float32 and float64, 1 and 2 "
          "threads): " + ("met where measured" if not missed else "MISSED: " + "; ".join(missed)))


if __name__ == "__main__":
    main()
