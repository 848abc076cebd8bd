"""Median milliseconds per small-CNN training step (forward, backward, SGD step), minigrad beside PyTorch eager.

The model is the digits CNN of lesson 02_convolution on a batch of 64 8x8 single-channel images:
Conv2d(1,16,3,padding=1)-ReLU-MaxPool2d(2)-Conv2d(16,32,3,padding=1)-ReLU-MaxPool2d(2)-Flatten-Linear(128,10),
cross-entropy loss, SGD(lr=0.1, momentum=0.9). PyTorch (when installed) runs the same model with the same
weights and batch, in the same process, at the same thread count (threadpoolctl limits NumPy's BLAS,
torch.set_num_threads limits PyTorch), one step of each in turn so that load from other processes
falls on both alike, with a 10 ms pause before each (bench_gpt_step.interleaved_median_ms: one library's
spinning OpenMP workers are not billed to the other); medians of wall and CPU time. The pixels are random:
the time of a step does not depend on them. Compare the ratio, not the absolute times.

    python benchmarks/bench_cnn_step.py                  # 1 and 2 threads, minigrad and PyTorch
    python benchmarks/bench_cnn_step.py --steps 50 --threads 1
    python benchmarks/bench_cnn_step.py --profile        # cProfile of minigrad's step (1 thread)
    python benchmarks/bench_cnn_step.py --torch-first    # PyTorch's OpenMP keeps its default (spinning) waits

OpenMP's wait policy: PyTorch and minigrad's C kernels share one libgomp (the same library name), and
whichever loads first sets its policy. By default minigrad loads first (passive waits: idle threads
sleep, which a busy machine needs), and PyTorch's 2-thread step, which spins by default, then pays a
wake-up per parallel region; --torch-first gives PyTorch its own default instead. Report both.
"""
import argparse
import cProfile
import os
import pstats
import time

import numpy as np

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from bench_gpt_step import interleaved_median_ms, machine  # the same timing and machine report as the GPT's
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


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--profile", action="store_true", help="cProfile minigrad's step instead of timing")
    parser.add_argument("--torch-first", action="store_true",
                        help="import PyTorch before the C kernels load: its OpenMP keeps PyTorch's default waits")
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

    # Whichever loads first sets the one OpenMP runtime's wait policy for both (see the docstring): by default
    # the C kernels, whose c_backend.load sets passive waits.
    policy = os.environ.get("OMP_WAIT_POLICY")  # what the first library to load OpenMP finds
    if args.torch_first:
        try:
            import torch  # noqa: F401
        except ImportError:
            pass
    backend = mg.get_backend()
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing minigrad only (pip install torch==2.13.0 to compare)")

    print(machine())
    print(f"small CNN step, batch {BATCH}, 8x8x1 images, float32, backend {backend!r}, "
          f"OpenMP loaded by {'PyTorch' if args.torch_first else 'minigrad'} "
          f"with OMP_WAIT_POLICY={policy or ('unset' if args.torch_first else 'PASSIVE')}; median wall (median CPU) ms of {args.steps} steps; "
          f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    steps = {"minigrad": lambda: minigrad_step(model, opt, x, labels)}
    if torch is not None:
        tmodel = torch_model(state)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.from_numpy(images), torch.from_numpy(labels)
        with torch.no_grad():
            same = np.abs(tmodel(tx).numpy() - model(x).data).max()
        print(f"same model check: max |logits difference| minigrad vs PyTorch = {same:.1e}")
        steps["torch"] = lambda: torch_step(tmodel, topt, tx, ty)
    for threads in args.threads:
        if torch is not None:
            torch.set_num_threads(threads)
        with limited_threads(threads):
            ms = interleaved_median_ms(steps, args.steps)
        ours, ours_cpu = ms["minigrad"]
        line = f"threads={threads}: minigrad {ours:6.2f} ms ({ours_cpu:5.2f} CPU)"
        if torch is not None:
            theirs, theirs_cpu = ms["torch"]
            line += (f"   PyTorch eager {theirs:6.2f} ms ({theirs_cpu:5.2f} CPU)   minigrad/PyTorch = "
                     f"{ours / theirs:.2f}x ({ours_cpu / theirs_cpu:.2f}x CPU)")
        print(line)


if __name__ == "__main__":
    main()
