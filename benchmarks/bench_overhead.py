"""Per-op overhead of the autograd engine on tiny tensors, beside PyTorch eager in the same run.

    python benchmarks/bench_overhead.py

Measures `a + b` on 4×4 float32 tensors with requires_grad=True: forward alone,
and forward+backward through a chain of 100 adds, in microseconds per op
(median of repeated runs). Also the time of `python -c "import minigrad"`.
"""
import statistics
import subprocess
import sys
import time

import numpy as np

import minigrad as mg

CHAIN = 100
REPEATS = 30


def per_op(fn, ops):
    fn()  # warm up
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) / ops * 1e6


def chain_forward(a, b):
    y = a
    for _ in range(CHAIN):
        y = y + b
    return y


def measure(lib, a, b):
    forward = per_op(lambda: chain_forward(a, b), CHAIN)
    both = per_op(lambda: chain_forward(a, b).sum().backward(), CHAIN)
    return forward, both


def import_time():
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import minigrad"], check=True)
        runs.append(time.perf_counter() - start)
    baseline = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import numpy"], check=True)
        baseline.append(time.perf_counter() - start)
    return min(runs), min(baseline)


def main():
    x = np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32)
    results = {"minigrad": measure("minigrad", mg.tensor(x, requires_grad=True), mg.tensor(x, requires_grad=True))}
    try:
        import torch
        torch.set_num_threads(1)
        results["torch"] = measure("torch", torch.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True))
    except ImportError:
        print("PyTorch is not installed: only minigrad's figures are shown")
    print(f"a + b on 4x4 float32, requires_grad=True, chain of {CHAIN} ops (median of {REPEATS} runs)")
    print(f"{'library':<10} {'forward us/op':>14} {'fwd+bwd us/op':>14}")
    for name, (forward, both) in results.items():
        print(f"{name:<10} {forward:>14.2f} {both:>14.2f}")
    if "torch" in results:
        (mf, mb), (tf, tb) = results["minigrad"], results["torch"]
        print(f"ratio minigrad/torch: forward {mf / tf:.2f}x, forward+backward {mb / tb:.2f}x (target <= 1.0x, issue 15)")
    total, numpy_only = import_time()
    print(f"python -c 'import minigrad': {total:.3f} s wall (python + numpy alone: {numpy_only:.3f} s; target < 0.3 s)")


if __name__ == "__main__":
    main()
