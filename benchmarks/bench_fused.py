"""The fused C kernels (LayerNorm, softmax + cross-entropy, AdamW, GELU) against their NumPy reference
and PyTorch, forward + backward together, on 1 and 2 threads.

    python benchmarks/bench_fused.py
    python benchmarks/bench_fused.py --threads 1 --rounds 15

Shapes are those of the GPT step of issue 15 (batch 16 x T 128 = 2048 rows, d 128, vocab 96, MLP 512)
plus a GPT-2-sized vocabulary for cross-entropy. In every round each contender runs once on the same
inputs, back to back, so load from other processes hits them alike; the table shows the medians over
rounds. What to read are the ratios in a row, not the absolute times.
PyTorch is optional; threadpoolctl (extra "bench") puts NumPy's BLAS on the same thread count.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from machine import describe  # noqa: E402
from minigrad.kernels import c_backend, numpy_backend  # noqa: E402

ROWS, D, VOCAB, HIDDEN = 16 * 128, 128, 96, 512


def gpt_param_shapes(n_layer=4, d=D, vocab=VOCAB, block=128):
    """The parameter shapes of the issue's GPT (about 0.8 M numbers in 4 + 12 * n_layer tensors)."""
    shapes = [(vocab, d), (block, d)]
    for _ in range(n_layer):
        shapes += [(d,), (d,), (3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
    return shapes + [(d,), (d,)]


def problems(rng):
    """name -> {contender: zero-argument call doing forward + backward (or one optimizer step)}."""
    torch = None
    try:
        import torch
        import torch.nn.functional as tf
    except ImportError:
        pass
    f32 = np.float32
    x, w, b, g = (rng.standard_normal(s).astype(f32) for s in ((ROWS, D), (D,), (D,), (ROWS, D)))
    out = {}

    def ln_c(threads):
        o, mean, rstd = c_backend.layer_norm(x, w, b, num_threads=threads)
        return c_backend.layer_norm_backward(x, w, mean, rstd, g, num_threads=threads)

    def ln_numpy():
        o, mean, rstd = numpy_backend.layer_norm(x, w, b)
        return numpy_backend.layer_norm_backward(x, w, mean, rstd, g)

    out[f"layer_norm ({ROWS}, {D})"] = {"c": ln_c, "numpy": ln_numpy}
    if torch:
        tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
        tg = torch.from_numpy(g)
        out[f"layer_norm ({ROWS}, {D})"]["torch"] = lambda: torch.autograd.grad(
            tf.layer_norm(tx, (D,), tw, tb), (tx, tw, tb), tg)

    for vocab in (VOCAB, 8192):
        z = (rng.standard_normal((ROWS, vocab)) * 2).astype(f32)
        y = rng.integers(0, vocab, ROWS)

        def ce_c(threads, z=z, y=y):
            loss, lse = c_backend.cross_entropy(z, y, num_threads=threads)
            return c_backend.cross_entropy_backward(z, y, lse, num_threads=threads)

        def ce_numpy(z=z, y=y):
            loss, lse = numpy_backend.cross_entropy(z, y)
            return numpy_backend.cross_entropy_backward(z, y, lse)

        name = f"cross_entropy ({ROWS}, {vocab})"
        out[name] = {"c": ce_c, "numpy": ce_numpy}
        if torch:
            tz, ty = torch.tensor(z, requires_grad=True), torch.from_numpy(y)
            out[name]["torch"] = lambda tz=tz, ty=ty: torch.autograd.grad(tf.cross_entropy(tz, ty), (tz,))

    shapes = gpt_param_shapes()
    params = [rng.standard_normal(s).astype(f32) for s in shapes]
    grads = [rng.standard_normal(s).astype(f32) for s in shapes]
    state = {name: ([p.copy() for p in params], [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params])
             for name in ("c", "numpy")}
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01)
    steps = [1] * len(params)
    name = f"adamw_step ({sum(p.size for p in params) / 1e6:.2f} M in {len(params)} tensors)"
    out[name] = {"c": lambda threads: c_backend.adamw_step(state["c"][0], grads, state["c"][1], state["c"][2], steps,
                                                           **hyper, num_threads=threads),
                 "numpy": lambda: numpy_backend.adamw_step(state["numpy"][0], grads, state["numpy"][1],
                                                           state["numpy"][2], steps, **hyper)}
    if torch:
        tparams = [torch.tensor(p, requires_grad=True) for p in params]
        for tp, gr in zip(tparams, grads):
            tp.grad = torch.from_numpy(gr)
        optimizer = torch.optim.AdamW(tparams, lr=1e-3, weight_decay=0.01)
        out[name]["torch"] = optimizer.step

    h, gh = (rng.standard_normal((ROWS, HIDDEN)).astype(f32) for _ in range(2))

    def gelu_c(threads):
        o, cdf = c_backend.gelu(h, num_threads=threads)
        return c_backend.gelu_backward(h, cdf, gh, num_threads=threads)

    def gelu_numpy():
        o, cdf = numpy_backend.gelu(h)
        return numpy_backend.gelu_backward(h, cdf, gh)

    out[f"gelu ({ROWS}, {HIDDEN})"] = {"c": gelu_c, "numpy": gelu_numpy}
    if torch:
        th, tgh = torch.tensor(h, requires_grad=True), torch.from_numpy(gh)
        out[f"gelu ({ROWS}, {HIDDEN})"]["torch"] = lambda: torch.autograd.grad(tf.gelu(th), (th,), tgh)
    return out


def median_ms(calls, rounds, min_time=0.02):
    """{name: median ms per call}: each round runs every call for >= min_time, calls taking turns."""
    for call in calls.values():
        call()  # warm-up
    times = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            repeats, start = 0, time.perf_counter()
            while True:
                call()
                repeats += 1
                elapsed = time.perf_counter() - start
                if elapsed >= min_time:
                    break
            times[name].append(1e3 * elapsed / repeats)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        raise SystemExit("bench_fused needs threadpoolctl to set NumPy's thread count: pip install threadpoolctl")
    try:
        import torch
    except ImportError:
        torch = None

    print(describe())
    print(f"float32, forward + backward (AdamW: one step), median ms of {args.rounds} interleaved rounds")
    for threads in args.threads:
        if torch:
            torch.set_num_threads(threads)
        with threadpool_limits(threads):
            print(f"\n{threads} thread{'s' if threads > 1 else ''}:")
            print(f"  {'op':<44}{'C ms':>9}{'NumPy ms':>10}{'torch ms':>10}{'NumPy/C':>9}{'C/torch':>9}")
            for name, contenders in problems(np.random.default_rng(0)).items():
                calls = {k: (lambda f=f: f(threads)) if k == "c" else f for k, f in contenders.items()}
                ms = median_ms(calls, args.rounds)
                t = ms.get("torch", float("nan"))
                print(f"  {name:<44}{ms['c']:9.3f}{ms['numpy']:10.3f}{t:10.3f}{ms['numpy'] / ms['c']:9.2f}"
                      f"{ms['c'] / t:9.2f}", flush=True)


if __name__ == "__main__":
    main()
