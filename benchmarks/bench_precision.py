"""16-bit floats on the CPU: what computing them through the float32 kernels buys, and what autocast costs.

Part 1: one n×n×n product in float16/bfloat16 three ways: NumPy's own float16 matmul (no BLAS: a plain
loop), minigrad.kernels.matmul on backend "numpy" (widen to float32, OpenBLAS, round once) and on backend
"c" (widen, the C kernel, round), beside float32 itself. Part 2: one GPT training step in float32 and
under mg.autocast (bfloat16 and float16 + GradScaler). All variants interleaved in one process at each
thread count; compare ratios, not times.

    python benchmarks/bench_precision.py                 # 1 and 2 threads
    python benchmarks/bench_precision.py --threads 1 --repeats 5
"""
import argparse
import os
import time

import numpy as np

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad import kernels
from machine import cpu_model_and_flags, limited_threads

NUMPY_HALF = "float16, NumPy's own a @ b"
GPT_CONFIG = dict(vocab_size=96, block_size=64, n_layer=2, n_head=4, d_model=128)


def interleaved_median_ms(functions, repeats):
    """Each function once per round, rounds repeated: the same machine load for all; median ms each."""
    for f in functions.values():
        f()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * float(np.median(t)) for name, t in times.items()}


def matmul_table(threads, repeats, n):
    rng = np.random.default_rng(0)
    a32, b32 = rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)
    a16, b16 = a32.astype(np.float16), b32.astype(np.float16)
    abf, bbf = a32.astype(mg.bfloat16), b32.astype(mg.bfloat16)
    functions = {"float32, numpy (BLAS)": lambda: kernels.matmul(a32, b32, backend="numpy"),
                 NUMPY_HALF: lambda: a16 @ b16,
                 "float16 via float32, numpy": lambda: kernels.matmul(a16, b16, backend="numpy"),
                 "float16 via float32, c": lambda: kernels.matmul(a16, b16, backend="c"),
                 "bfloat16 via float32, numpy": lambda: kernels.matmul(abf, bbf, backend="numpy")}
    with limited_threads(threads):
        ms = interleaved_median_ms(functions, repeats)
    print(f"\n-- {n}x{n}x{n} matmul, {threads} thread(s); median ms; ratio = NumPy float16 / variant")
    for name, value in ms.items():
        print(f"{name:>30}: {value:10.2f} ms  {ms[NUMPY_HALF] / value:8.1f}x")


def gpt_table(threads, repeats):
    mg.manual_seed(0)
    model = nn.GPT(**GPT_CONFIG)
    opt = optim.AdamW(model.parameters(), lr=3e-4)
    rng = np.random.default_rng(0)
    x = rng.integers(0, GPT_CONFIG["vocab_size"], (8, GPT_CONFIG["block_size"]))
    scaler = mg.amp.GradScaler()

    def step(dtype=None):
        with mg.autocast(dtype=dtype or mg.bfloat16, enabled=dtype is not None):
            loss = F.cross_entropy(model(x).reshape(-1, GPT_CONFIG["vocab_size"]), x.reshape(-1))
        opt.zero_grad()
        if dtype == mg.float16:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()

    functions = {"float32": step, "autocast bfloat16": lambda: step(mg.bfloat16),
                 "autocast float16 + GradScaler": lambda: step(mg.float16)}
    with limited_threads(threads):
        ms = interleaved_median_ms(functions, repeats)
    print(f"\n-- GPT training step {GPT_CONFIG}, batch 8, {threads} thread(s); ratio = float32 / variant")
    for name, value in ms.items():
        print(f"{name:>30}: {value:10.1f} ms  {ms['float32'] / value:8.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--n", type=int, default=256)
    args = parser.parse_args()
    model, flags = cpu_model_and_flags()
    print(f"CPU: {model}; flags: {' '.join(flags)}; OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}; "
          "NumPy's BLAS limited per table with threadpoolctl, MINIGRAD_NUM_THREADS set per table")
    for threads in args.threads:
        matmul_table(threads, args.repeats, args.n)
        gpt_table(threads, args.repeats)


if __name__ == "__main__":
    main()
