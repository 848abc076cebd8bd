"""Fused C attention (kernels/attention.c) against the NumPy composition and PyTorch SDPA.

    python benchmarks/bench_attention.py                    T = 256 .. 4096, causal and not
    python benchmarks/bench_attention.py --t 1024 2048 --repeats 9 --threads 2
    python benchmarks/bench_attention.py --no-memory        times only (--memory-only: memory only)

One problem per row: 8 heads (batch 1), d = 64, float32. Times are medians of
`--repeats` calls, the methods taking turns so that a busy machine slows them
alike; what to read are the ratios in the same row, never the absolute times.
  forward:  C flash, the NumPy composition softmax(QK^T/sqrt d)V (backend
            "numpy"), torch.nn.functional.scaled_dot_product_attention
  backward: the same three (PyTorch: autograd's backward of SDPA alone)
  memory:   peak extra resident memory of one call, outputs included, measured
            in a fresh subprocess per method: one call at T = 64 (thread pools
            and caches are set up once per process), inputs made, peak RSS
            reset (/proc/self/clear_refs), one call, VmHWM minus the RSS before.
PyTorch is optional (`pip install torch`); without it its columns are blank.
threadpoolctl (extra "bench") puts NumPy's BLAS on the same thread count.
Targets: forward >= 5x faster than NumPy at T = 2048 (issue 4); forward and
backward each <= 0.6x SDPA's time, causal and not, T 128..4096, on 1 and 2
threads (issue 15: the C/torch columns); peak extra memory at T = 4096 < 32 MiB.
On a shared machine wall-clock medians swing with other processes' load
(printed above the table); --cpu-time times one thread's CPU time instead
(1 thread only), which the load hardly moves.
"""
import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe  # noqa: E402
from minigrad.kernels import c_backend, numpy_backend  # noqa: E402

HEADS, D = 8, 64
METHODS = ("c", "numpy", "torch")


def inputs(t, seed=0):
    rng = np.random.default_rng(seed)
    # drawn as float32: no freed temporaries for the memory probe's calls to reuse
    q, k, v, grad_out = (rng.standard_normal((HEADS, t, D), dtype=np.float32) for _ in range(4))  # (H, T, d)
    return q, k, v, grad_out


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def calls(method, t, causal, threads):
    """(forward, backward): zero-argument callables running one pass of `method` on fresh inputs."""
    q, k, v, grad_out = inputs(t)
    if method == "c":
        out, lse = c_backend.attention(q, k, v, causal, return_lse=True, num_threads=threads)
        return (lambda: c_backend.attention(q, k, v, causal, return_lse=True, num_threads=threads),
                lambda: c_backend.attention_backward(q, k, v, out, lse, grad_out, causal, num_threads=threads))
    if method == "numpy":
        out, lse = numpy_backend.attention(q, k, v, is_causal=causal, return_lse=True)
        return (lambda: numpy_backend.attention(q, k, v, is_causal=causal, return_lse=True),
                lambda: numpy_backend.attention_backward(q, k, v, out, lse, grad_out, is_causal=causal))
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    tq, tk, tv = (torch.from_numpy(x[None]).requires_grad_() for x in (q, k, v))  # (1, H, T, d)
    tgrad = torch.from_numpy(grad_out[None])

    def forward():
        with torch.no_grad():
            return F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)

    out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=causal)
    return forward, lambda: torch.autograd.grad(out, (tq, tk, tv), tgrad, retain_graph=True)


def median_times(functions, repeats, clock=time.perf_counter):
    """Median seconds of each function over `repeats` rounds, one call of each per round."""
    for f in functions:
        f()  # warm-up: first-touch page faults, thread pools
    times = [[] for _ in functions]
    for _ in range(repeats):
        for f, record in zip(functions, times):
            start = clock()
            f()
            record.append(clock() - start)
    return [statistics.median(record) for record in times]


def resident_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure_memory_here(method, direction, t, causal, threads):
    """Peak extra MiB of one call, in this process (run it in a fresh one)."""
    for size in (64, t):  # a small call first sets up thread pools and caches, once per process
        forward, backward = calls(method, size, causal, threads)
        run = forward if direction == "forward" else backward
        if size != t:
            run()
    before = resident_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")  # resets VmHWM to the current RSS
    run()
    return (resident_kib("VmHWM") - before) / 1024


def peak_extra_mib(method, direction, t, causal, threads):
    command = [sys.executable, __file__, "--memory-probe", method, direction, str(t), str(int(causal)),
               "--threads", str(threads)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        return float("nan")
    return float(result.stdout.split()[-1])


def fmt(x, width=8, digits=1):
    return f"{x:{width}.{digits}f}" if x == x else " " * (width - 1) + "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--t", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--cpu-time", action="store_true",
                        help="time this thread's CPU time (needs --threads 1): steady on a busy machine")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    parser.add_argument("--memory-only", action="store_true", help="skip the timings")
    parser.add_argument("--memory-probe", nargs=4, metavar=("METHOD", "DIRECTION", "T", "CAUSAL"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_probe:
        method, direction, t, causal = args.memory_probe
        print(measure_memory_here(method, direction, int(t), causal == "1", args.threads))
        return

    methods = [m for m in METHODS if m != "torch" or have_torch()]
    blas = "NumPy's BLAS on its default threads"
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads, user_api="blas")  # NumPy on the same number of threads
        blas = f"NumPy's BLAS on {args.threads}"
    except ImportError:
        pass
    if args.cpu_time and args.threads != 1:
        raise SystemExit("--cpu-time measures one thread: use it with --threads 1")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(describe())
    print(f"attention, {HEADS} heads, d = {D}, float32, 4-D (B, H, T, d) input to SDPA, {args.threads} threads "
          f"({blas}), median of {args.repeats} {'CPU' if args.cpu_time else 'wall-clock'} times; "
          f"methods: {', '.join(methods)}")
    print(f"{'T':>5} {'causal':>6} | {'forward ms: C':>13} {'NumPy':>8} {'torch':>8} | {'NumPy/C':>7} "
          f"{'C/torch':>7} | {'backward ms: C':>14} {'NumPy':>8} {'torch':>8} | {'NumPy/C':>7} {'C/torch':>7}"
          + ("" if args.no_memory else f" | {'peak extra MiB fwd C':>20} {'NumPy':>7} {'torch':>7} "
             f"{'bwd C':>7} {'NumPy':>7} {'torch':>7}"))
    for t in args.t:
        for causal in (False, True):
            forward, backward = {}, {}
            if not args.memory_only:
                passes = {m: calls(m, t, causal, args.threads) for m in methods}
                repeats = args.repeats if t <= 2048 else max(3, args.repeats // 2)
                forward = dict(zip(methods, median_times([passes[m][0] for m in methods], repeats, clock)))
                backward = dict(zip(methods, median_times([passes[m][1] for m in methods], repeats, clock)))
                del passes
            ms = {m: (1e3 * forward.get(m, np.nan), 1e3 * backward.get(m, np.nan)) for m in METHODS}
            line = (f"{t:5d} {str(causal):>6} | {fmt(ms['c'][0], 13)} {fmt(ms['numpy'][0])} {fmt(ms['torch'][0])} | "
                    f"{fmt(ms['numpy'][0] / ms['c'][0], 7, 2)} {fmt(ms['c'][0] / ms['torch'][0], 7, 2)} | "
                    f"{fmt(ms['c'][1], 14)} {fmt(ms['numpy'][1])} {fmt(ms['torch'][1])} | "
                    f"{fmt(ms['numpy'][1] / ms['c'][1], 7, 2)} {fmt(ms['c'][1] / ms['torch'][1], 7, 2)}")
            if not args.no_memory:
                mib = {(m, direction): peak_extra_mib(m, direction, t, causal, args.threads) if m in methods
                       else float("nan") for m in METHODS for direction in ("forward", "backward")}
                line += " | " + " ".join(fmt(mib[m, direction], 20 if (m, direction) == ("c", "forward") else 7)
                                         for direction in ("forward", "backward") for m in METHODS)
            print(line, flush=True)


if __name__ == "__main__":
    main()
