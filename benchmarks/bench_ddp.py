"""Data-parallel GPT training: 2 ranks × 1 thread against 1 rank × 1 thread on the same global batch.

    python benchmarks/bench_ddp.py                   # both configurations, alternating, 3 rounds
    python benchmarks/bench_ddp.py --rounds 5 --steps 10 --backend numpy

The model is the lessons' char-level GPT (vocab 96, context 128, 4 layers, 4 heads, d_model 128) with
a global batch of 16 sequences: 1 rank computes all 16, each of 2 ranks computes 8 and the gradients
are averaged by DistributedDataParallel (buckets all-reduced during backward). Throughput is tokens of
the global batch per second of the slowest rank; ideal scaling on 2 cores is 2.0×. The communication
share is the time a rank spent inside MPI calls for the gradients (DDP's comm_seconds) over its step
time; the standalone all-reduce of all gradients is timed too, for the cost model. The two
configurations alternate so both see the same machine load; compare the ratio (the ratio of the median
step times, and the median of the per-round ratios, which pairs runs made next to each other in time).
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import minigrad as mg  # noqa: E402
import minigrad.distributed as dist  # noqa: E402
import minigrad.nn as nn  # noqa: E402
import minigrad.nn.functional as F  # noqa: E402
import minigrad.optim as optim  # noqa: E402
from bench_allreduce import cpu_line  # noqa: E402

CONFIG = dict(vocab_size=96, block_size=128, n_layer=4, n_head=4, d_model=128)
GLOBAL_BATCH = 16


def worker(steps, backend):
    """One configuration, inside the MPI job: median step time and communication time of this rank."""
    dist.init_process_group()
    mg.set_backend(backend)
    mg.manual_seed(0)
    model = nn.parallel.DistributedDataParallel(nn.GPT(**CONFIG))
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(0)
    mine = dist.local_slice(GLOBAL_BATCH)
    times, comm = [], []
    for step in range(steps + 2):  # the first two steps warm up caches and allocations
        idx = rng.integers(0, CONFIG["vocab_size"], (GLOBAL_BATCH, CONFIG["block_size"] + 1))[mine]
        dist.barrier()
        start, comm_before = time.perf_counter(), model.comm_seconds
        logits = model(idx[:, :-1])  # (B/W, T, V)
        loss = F.cross_entropy(logits.reshape(-1, CONFIG["vocab_size"]), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 2:
            times.append(time.perf_counter() - start)
            comm.append(model.comm_seconds - comm_before)
    grads = np.ones(sum(p.numel() for p in model.parameters()), np.float32)
    allreduce = []
    for _ in range(10):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(grads)
        allreduce.append(time.perf_counter() - start)
    mine = np.array([np.median(times), np.median(comm), np.median(allreduce)])
    slowest = mine.copy()
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        print(json.dumps(dict(world=dist.get_world_size(), step=slowest[0], comm=slowest[1], allreduce=slowest[2],
                              bytes=grads.nbytes)), flush=True)


def run(n, steps, backend):
    proc = dist.run_mpi([__file__, "--worker", "--steps", steps, "--backend", backend], n=n, threads=1,
                        env=dict(PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
    if proc.returncode:
        raise RuntimeError(f"the {n}-rank run failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backend", default="c", choices=["numpy", "c"])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.backend)
    results = {1: [], 2: []}
    for _ in range(args.rounds):
        for n in (1, 2):
            results[n].append(run(n, args.steps, args.backend))
    tokens = GLOBAL_BATCH * CONFIG["block_size"]
    one = np.median([r["step"] for r in results[1]])
    two = np.median([r["step"] for r in results[2]])
    comm = np.median([r["comm"] for r in results[2]])
    allreduce = np.median([r["allreduce"] for r in results[2]])
    print(cpu_line())
    print(f"GPT {CONFIG}, global batch {GLOBAL_BATCH} × {CONFIG['block_size']} tokens, backend {args.backend}, "
          f"1 thread per rank (OPENBLAS/OMP/MINIGRAD_NUM_THREADS=1), median of {args.rounds} alternating rounds "
          f"of {args.steps} steps")
    print(f"1 rank : {one * 1e3:7.1f} ms/step  {tokens / one:8,.0f} tok/s")
    paired = [a["step"] / b["step"] for a, b in zip(results[1], results[2])]  # runs next to each other in time
    print(f"2 ranks: {two * 1e3:7.1f} ms/step  {tokens / two:8,.0f} tok/s  speed-up {one / two:.2f}× "
          f"(scaling efficiency {one / two / 2:.0%})")
    print(f"speed-up per round (1-rank run / the 2-rank run right after it): "
          f"{', '.join(f'{r:.2f}' for r in paired)}; median {np.median(paired):.2f}×")
    print(f"communication inside the step (DDP, per rank): {comm * 1e3:.1f} ms = {comm / two:.1%} of the step; "
          f"a standalone all-reduce of all {results[2][0]['bytes'] / 2 ** 20:.2f} MiB of gradients: "
          f"{allreduce * 1e3:.1f} ms")
    print("rounds (ms/step, 1 rank | 2 ranks): "
          + ", ".join(f"{a['step'] * 1e3:.0f} | {b['step'] * 1e3:.0f}" for a, b in zip(results[1], results[2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
