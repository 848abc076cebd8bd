"""Bandwidth of minigrad's from-scratch ring all-reduce beside MPI's own Allreduce, in the same job.

    python benchmarks/bench_allreduce.py             # starts mpiexec -n 2 itself, one thread per rank
    python benchmarks/bench_allreduce.py -n 4
    mpiexec -n 2 python benchmarks/bench_allreduce.py

For n bytes per rank the ring moves 2(W−1)/W · n bytes in and out of every rank in 2(W−1) messages,
so its time is T = 2(W−1)·α + 2(W−1)/W · n·β (minigrad.distributed.ring_cost). The "bus bandwidth"
2(W−1)/W · n / T is then independent of W, and comparable between algorithms. α and β are fitted to
the ring's times by least squares; the last columns compare the model with the measurement.
Both run back to back at every size (same machine load); compare the ratio, not the absolute figures.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import minigrad.distributed as dist  # noqa: E402

SIZES = [2 ** k for k in range(10, 27, 2)]  # 1 KiB … 64 MiB of float32


def cpu_line():
    model = "unknown CPU"
    flags = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni") if f in flags]
    return f"CPU: {model} ({os.cpu_count()} logical CPUs; {', '.join(simd) or platform.machine()})"


def median_time(fn, buffer, repeats):
    times = []
    for _ in range(repeats):
        buffer[...] = 1
        dist.barrier()
        start = time.perf_counter()
        fn(buffer)
        times.append(time.perf_counter() - start)
    worst = np.array([np.median(times)])
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)  # a collective is as slow as its slowest rank
    return float(worst[0])


def measure(repeats):
    world = dist.get_world_size()
    rows = []
    for nbytes in SIZES:
        buffer = np.ones(nbytes // 4, np.float32)
        reps = repeats if nbytes < 2 ** 22 else max(3, repeats // 4)
        ring = median_time(dist.ring_all_reduce, buffer, reps)
        assert np.all(buffer == world), "the ring all-reduce gave a wrong sum"
        mpi = median_time(dist.all_reduce, buffer, reps)
        rows.append(dict(bytes=nbytes, ring=ring, mpi=mpi))
    return rows


def fit_alpha_beta(rows, world):
    """Least squares of T = 2(W−1) α + 2(W−1)/W n β over the measured sizes."""
    steps = 2 * (world - 1)
    A = np.array([[steps, steps / world * r["bytes"]] for r in rows])
    t = np.array([r["ring"] for r in rows])
    (alpha, beta), *_ = np.linalg.lstsq(A / t[:, None], np.ones_like(t), rcond=None)  # relative errors
    return alpha, beta


def report(rows, world, threads):
    print(cpu_line())
    print(f"{world} ranks, {threads} thread(s) each, MPI: {mpi_version()}")
    alpha, beta = fit_alpha_beta(rows, world)
    print(f"fitted ring cost model: α = {alpha * 1e6:.1f} µs per message, 1/β = {1 / beta / 1e9:.2f} GB/s")
    print(f"{'bytes':>10} {'ring ms':>9} {'MPI ms':>9} {'ring GB/s':>10} {'MPI GB/s':>9} {'ring/MPI':>9} "
          f"{'model ms':>9}")
    factor = 2 * (world - 1) / world
    for r in rows:
        model = dist.ring_cost(r["bytes"], world, alpha, beta)
        print(f"{r['bytes']:>10} {r['ring'] * 1e3:>9.3f} {r['mpi'] * 1e3:>9.3f} "
              f"{factor * r['bytes'] / r['ring'] / 1e9:>10.2f} {factor * r['bytes'] / r['mpi'] / 1e9:>9.2f} "
              f"{r['ring'] / r['mpi']:>9.2f} {model * 1e3:>9.3f}")
    print("bus bandwidth = 2(W−1)/W · bytes / time; ring/MPI = time ratio (MPI picks its own algorithm)")


def mpi_version():
    from mpi4py import MPI
    return MPI.Get_library_version().splitlines()[0].strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2, help="ranks to start when not already under mpiexec")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print the measurements as one JSON line")
    args = parser.parse_args()
    if not dist.launched_by_mpi():
        proc = dist.run_mpi([__file__, "--repeats", args.repeats] + (["--json"] if args.json else []), n=args.n)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    dist.init_process_group()
    rows = measure(args.repeats)
    if dist.get_rank() == 0:
        if args.json:
            print(json.dumps(dict(world=dist.get_world_size(), rows=rows)))
        else:
            report(rows, dist.get_world_size(), os.environ.get("OPENBLAS_NUM_THREADS", "default"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
