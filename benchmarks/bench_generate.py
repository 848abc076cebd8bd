"""Generation with and without the KV cache: seconds for 200 new tokens from the CLI's default GPT.

Without the cache every new token reruns the model over the whole context, O(T) tokens through every
layer and O(T²) attention; with it, each step runs the newest token only and attends to the cached keys
and values, O(1) tokens and O(T) attention. The two give the same tokens (greedy, checked here). The
model is `python -m minigrad gpt`'s default configuration with random weights (speed does not depend on
training); the prompt is one token, as `python -m minigrad sample` starts from a newline. Both modes are
run in turn, median of --repeats, at 1 and 2 threads (threadpoolctl for NumPy's BLAS,
$MINIGRAD_NUM_THREADS for the C kernels, machine.limited_threads). Wall time and CPU time (all threads of this
process) are both shown: on a shared, loaded machine each of the cached loop's many small operations
waits for a core, and the CPU time is the steadier figure. Compare the ratios. Target: with cache >= 4x
faster.

    python benchmarks/bench_generate.py
    python benchmarks/bench_generate.py --tokens 400 --block-size 512
    python benchmarks/bench_generate.py --backend numpy      # NumPy for every product (default: minigrad's)
"""
import argparse
import os
import time

import numpy as np

import minigrad as mg
import minigrad.nn as nn
from minigrad.__main__ import DEFAULT_TOKENIZER, DEFAULT_VOCAB_SIZE, DEFAULTS
from machine import cpu_model_and_flags, limited_threads


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--block-size", type=int, default=DEFAULTS["block_size"])
    parser.add_argument("--backend", default=None, help="minigrad backend (default: minigrad's default)")
    args = parser.parse_args()
    if args.backend:
        mg.set_backend(args.backend)

    vocab = DEFAULT_VOCAB_SIZE if DEFAULT_TOKENIZER == "bpe" else 103  # the docs have 103 distinct characters
    config = dict(vocab_size=vocab, block_size=args.block_size, n_layer=DEFAULTS["n_layer"],
                  n_head=DEFAULTS["n_head"], d_model=DEFAULTS["d_model"])
    mg.manual_seed(0)
    model = nn.GPT(**config).eval()
    prompt = np.zeros((1, 1), dtype=np.int64)
    print(f"CPU: {cpu_model_and_flags()[0]}; backend {mg.get_backend()}; MINIGRAD_NUM_THREADS="
          f"{os.environ.get('MINIGRAD_NUM_THREADS', 'unset')}; GPT {config}; {args.tokens} new tokens from a "
          f"1-token prompt, greedy; median of {args.repeats} (wall s); load average {os.getloadavg()[0]:.1f}")
    if args.tokens + 1 > args.block_size:
        print(f"note: past block_size {args.block_size} the window jumps to its newest half (GPT.generate); "
              "both modes read the same window")
    print(f"{'threads':>7} {'':>5} {'no cache':>10} {'cache':>10} {'speed-up':>9}")
    for threads in args.threads:
        with limited_threads(threads):
            wall, cpu, outputs = {True: [], False: []}, {True: [], False: []}, {}
            for _ in range(args.repeats):
                for use_cache in (True, False):
                    start, start_cpu = time.perf_counter(), time.process_time()
                    outputs[use_cache] = model.generate(prompt, args.tokens, temperature=0, use_cache=use_cache)
                    wall[use_cache].append(time.perf_counter() - start)
                    cpu[use_cache].append(time.process_time() - start_cpu)
            assert np.array_equal(outputs[True], outputs[False]), "the cache changed the greedy tokens"
        for name, times in (("wall", wall), ("CPU", cpu)):
            cached, plain = np.median(times[True]), np.median(times[False])
            print(f"{threads:>7} {name:>5} {plain:>9.2f}s {cached:>9.2f}s {plain / cached:>8.1f}x")


if __name__ == "__main__":
    main()
