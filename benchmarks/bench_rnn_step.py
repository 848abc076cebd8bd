"""Median milliseconds per RNN and LSTM training step (forward, backward, Adam step), minigrad beside PyTorch.

The model reads a batch of 16 sequences of 64 steps of 32 features with one recurrent layer of 128 hidden
units (nn.RNN with tanh, or nn.LSTM), and a Linear(128, 10) head on the last hidden state; cross-entropy
loss, Adam(lr=1e-3). PyTorch (when installed) runs the same model with the same weights and batch, in the
same process, at the same thread count (NumPy's BLAS, OpenMP and the C kernels: bench_gpt_step.limited_threads,
torch.set_num_threads limits PyTorch), one step of each in turn so that load from other processes falls
on both alike. Compare the ratios, not the absolute times.

    python benchmarks/bench_rnn_step.py                  # RNN and LSTM, 1 and 2 threads
    python benchmarks/bench_rnn_step.py --steps 50 --threads 1 --cell lstm
    python benchmarks/bench_rnn_step.py --profile --cell lstm   # cProfile of minigrad's step (1 thread)
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
from machine import limited_threads
from bench_gpt_step import interleaved_median_ms, machine  # the same timing and machine report as the GPT benchmark

INPUT, HIDDEN, BATCH, STEPS, CLASSES = 32, 128, 16, 64, 10


class Classifier(nn.Module):
    def __init__(self, recurrent):
        super().__init__()
        self.recurrent = recurrent
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x):                        # x: (B, T, INPUT)
        out, _ = self.recurrent(x)               # (B, T, HIDDEN)
        return self.head(out[:, -1])             # (B, CLASSES)


def minigrad_model(cell):
    return Classifier(nn.LSTM(INPUT, HIDDEN) if cell == "lstm" else nn.RNN(INPUT, HIDDEN))


def torch_model(cell, state):
    import torch

    class TorchClassifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            layer = torch.nn.LSTM if cell == "lstm" else torch.nn.RNN
            self.recurrent = layer(INPUT, HIDDEN, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, CLASSES)

        def forward(self, x):
            out, _ = self.recurrent(x)
            return self.head(out[:, -1])

    model = TorchClassifier()
    model.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in state.items()})
    return model


def train_step(model, opt, x, y, cross_entropy):
    loss = cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cell", choices=("rnn", "lstm", "both"), default="both")
    parser.add_argument("--profile", action="store_true", help="cProfile minigrad's step instead of timing")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, STEPS, INPUT)).astype(np.float32)  # (B, T, INPUT)
    y = rng.integers(0, CLASSES, size=BATCH)                              # (B,)
    cells = ("rnn", "lstm") if args.cell == "both" else (args.cell,)
    try:
        import torch
    except ImportError:
        torch = None
        print("PyTorch is not installed: timing minigrad only")
    print(machine())
    print(f"training step: batch {BATCH}, {STEPS} time steps, input {INPUT}, hidden {HIDDEN}, float32, "
          f"backend {mg.get_backend()!r}, median wall (median CPU) ms of {args.steps} steps; ratio = minigrad / PyTorch")
    for cell in cells:
        mg.manual_seed(0)
        model = minigrad_model(cell)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        xt = mg.tensor(x)
        step = lambda: train_step(model, opt, xt, y, F.cross_entropy)  # noqa: E731
        if args.profile:
            with limited_threads(1):
                step()
                profiler = cProfile.Profile(time.process_time)  # CPU time: waits for a busy core left out
                profiler.enable()
                for _ in range(args.steps):
                    step()
                profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            continue
        steps = {"minigrad": step}
        if torch is not None:
            import torch.nn.functional as TF

            state = {k: v.detach() for k, v in model.state_dict().items()}
            tmodel = torch_model(cell, state)
            topt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            with torch.no_grad():
                same = np.abs(tmodel(tx).numpy() - model(xt).data).max()
            print(f"{cell.upper()} same model check: max |logits difference| minigrad vs PyTorch = {same:.1e}")
            steps["torch"] = lambda: train_step(tmodel, topt, tx, ty, TF.cross_entropy)
        for threads in args.threads:
            if torch is not None:
                torch.set_num_threads(threads)
            with limited_threads(threads):
                ms = interleaved_median_ms(steps, args.steps)
            (ours, ours_cpu) = ms["minigrad"]
            line = f"{cell.upper():>4} threads={threads}: minigrad {ours:7.2f} ms ({ours_cpu:6.2f} CPU)"
            if torch is not None:
                theirs, theirs_cpu = ms["torch"]
                line += (f"   PyTorch {theirs:7.2f} ms ({theirs_cpu:6.2f} CPU)   minigrad/PyTorch = "
                         f"{ours / theirs:.2f}x ({ours_cpu / theirs_cpu:.2f}x CPU)")
            print(line)


if __name__ == "__main__":
    main()
