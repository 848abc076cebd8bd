"""Median milliseconds per small-CNN training step (forward, backward, SGD step), minigrad beside PyTorch eager.

The model is the digits CNN of lesson 02_convolution on a batch of 64 8x8 single-channel images:
Conv2d(1,16,3,padding=1)-ReLU-MaxPool2d(2)-Conv2d(16,32,3,padding=1)-ReLU-MaxPool2d(2)-Flatten-Linear(128,10),
cross-entropy loss, SGD(lr=0.1, momentum=0.9). PyTorch (when installed) runs the same model with the same
weights and batch, in the same process, at the same thread count (threadpoolctl limits NumPy's BLAS,
torch.set_num_threads limits PyTorch), one step of each in turn so that load from other processes
falls on both alike. The pixels are random: the time of a step does not depend on them.
Compare the ratio, not the absolute times.

    python benchmarks/bench_cnn_step.py                  # 1 and 2 threads, minigrad and PyTorch
    python benchmarks/bench_cnn_step.py --steps 50 --threads 1
    python benchmarks/bench_cnn_step.py --profile        # cProfile of minigrad's step (1 thread)
"""
import argparse
import cProfile
import pstats
import time

import numpy as np

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from machine import limited_threads  # BLAS, OpenMP and the C kernels on the same thread count

BATCH = 64


def minigrad_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10))


def torch_model(state):
    import torch

    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, 10))
    model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in state.items()})
    return model


def minigrad_step(model, opt, x, y):
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def torch_step(model, opt, x, y):
    import torch.nn.functional as TF

    loss = TF.cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def median_ms(steps, rounds, warmup=5):
    """Median ms per step of each function in `steps`, timed in alternation (one step of each per round),
    so that load from other processes on the machine slows all of them alike."""
    for step in steps:
        for _ in range(warmup):
            step()
    times = [[] for _ in steps]
    for _ in range(rounds):
        for step, samples in zip(steps, times):
            start = time.perf_counter()
            step()
            samples.append(time.perf_counter() - start)
    return [1000 * float(np.median(samples)) for samples in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", action="store_true", help="cProfile minigrad's step instead of timing")
    args = parser.parse_args()

    mg.manual_seed(0)
    model = minigrad_model()
    state = {k: v.detach() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    images = rng.random((BATCH, 1, 8, 8), dtype=np.float32) * 16    # (N, 1, 8, 8), the digits' 0..16 range
    labels = rng.integers(0, 10, size=BATCH)                         # (N,)
    x = mg.tensor(images)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    if args.profile:
        with limited_threads(1):
            profiler = cProfile.Profile(time.process_time)  # CPU time: waits for a busy core left out
            profiler.enable()
            for _ in range(args.steps):
                minigrad_step(model, opt, x, labels)
            profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return

    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing minigrad only (pip install torch==2.13.0 to compare)")

    print(f"small CNN step, batch {BATCH}, 8x8x1 images, median of {args.steps} steps")
    for threads in args.threads:
        steps = [lambda: minigrad_step(model, opt, x, labels)]
        if torch is not None:
            torch.set_num_threads(threads)
            tmodel = torch_model(state)
            topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
            tx, ty = torch.from_numpy(images), torch.from_numpy(labels)
            steps.append(lambda: torch_step(tmodel, topt, tx, ty))
        with limited_threads(threads):
            ms = median_ms(steps, args.steps)
        line = f"threads={threads}: minigrad {ms[0]:7.2f} ms"
        if torch is not None:
            line += f"   PyTorch eager {ms[1]:7.2f} ms   minigrad/PyTorch = {ms[0] / ms[1]:.2f}x"
        print(line)


if __name__ == "__main__":
    main()
