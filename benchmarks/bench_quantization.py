"""int8 dynamic quantization: the kernel against float32 BLAS, and GPT generation float32 vs int8.

Part 1 times one layer's product y = x Wᵀ at the shapes generation and a prompt make (rows 1 and 64):
NumPy float32 (OpenBLAS), the int8 kernel's portable and AVX-512 VNNI versions (kernels/qmatmul.c),
and the whole QuantizedLinear (quantize x per row, int8 product, rescale). Part 2 times
GPT.generate of the float32 model and of quantize_dynamic(model) on the same prompt.
All variants run interleaved in one process at each thread count; compare ratios, not times.

    python benchmarks/bench_quantization.py                 # 1 and 2 threads
    python benchmarks/bench_quantization.py --threads 1 --repeats 20
"""
import argparse
import os

import numpy as np

import minigrad as mg
import minigrad.nn as nn
from minigrad import quantization as Q
from bench_precision import interleaved_median_ms  # the same timing loop
from machine import cpu_model_and_flags, limited_threads

GPT_CONFIG = dict(vocab_size=256, block_size=128, n_layer=4, n_head=8, d_model=512)


def kernel_table(threads, repeats):
    rng = np.random.default_rng(0)
    print(f"\n-- one layer y = x W^T, W (out, in); {threads} thread(s); median ms, ratio = float32 / variant")
    print(f"{'rows':>5} {'in':>5} {'out':>5} {'variant':>22} {'ms':>9} {'ratio':>7}")
    for rows, k, n in ((1, 512, 2048), (1, 2048, 512), (64, 512, 2048), (256, 512, 512)):
        x = rng.standard_normal((rows, k)).astype(np.float32)
        layer = nn.Linear(k, n, bias=False)
        w = layer.weight.data
        quantized = Q.QuantizedLinear.from_float(layer)
        xq, _ = Q.quantize_symmetric(x)
        wq = quantized.weight.data
        functions = {"numpy float32 x @ W.T": lambda: x @ w.T,
                     "int8 kernel portable": lambda: Q.int8_matmul(xq, wq, version="portable",
                                                                   num_threads=threads)}
        if Q.vnni_available():
            functions["int8 kernel vnni"] = lambda: Q.int8_matmul(xq, wq, version="vnni", num_threads=threads)
        functions["QuantizedLinear (all)"] = lambda: quantized(x)
        with limited_threads(threads):
            ms = interleaved_median_ms(functions, repeats)
        for name, value in ms.items():
            print(f"{rows:>5} {k:>5} {n:>5} {name:>22} {value:>9.3f} {ms['numpy float32 x @ W.T'] / value:>7.2f}")


def generation_table(threads, repeats, new_tokens):
    mg.manual_seed(0)
    model = nn.GPT(**GPT_CONFIG).eval()
    quantized = Q.quantize_dynamic(model)
    prompt = np.zeros((1, 16), np.int64)
    functions = {"float32": lambda: model.generate(prompt, new_tokens, top_k=1),
                 "int8 (quantize_dynamic)": lambda: quantized.generate(prompt, new_tokens, top_k=1)}
    with limited_threads(threads):
        ms = interleaved_median_ms(functions, repeats)
    same = (model.generate(prompt, new_tokens, top_k=1) == quantized.generate(prompt, new_tokens, top_k=1)).mean()
    print(f"\n-- GPT.generate {new_tokens} tokens after a 16-token prompt, {GPT_CONFIG}, {threads} thread(s)")
    for name, value in ms.items():
        print(f"{name:>24}: {value:9.1f} ms  {new_tokens / value * 1000:7.1f} tokens/s  "
              f"speed-up {ms['float32'] / value:5.2f}x")
    print(f"{'greedy tokens equal':>24}: {same:.0%} (random weights: near-ties flip; see tests for val loss)")
    float_mb = sum(v.data.nbytes for v in model.state_dict().values()) / 2 ** 20
    quant_mb = sum(v.data.nbytes for v in quantized.state_dict().values()) / 2 ** 20
    print(f"{'state dict':>24}: {float_mb:.2f} MiB float32, {quant_mb:.2f} MiB quantized "
          f"({float_mb / quant_mb:.2f}x smaller; embeddings and norms stay float32)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    model, flags = cpu_model_and_flags()
    print(f"CPU: {model}; flags: {' '.join(flags)}; VNNI kernel usable: {Q.vnni_available()}")
    print(f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')}, "
          f"MINIGRAD_NUM_THREADS set per table; NumPy BLAS limited with threadpoolctl")
    for threads in args.threads:
        kernel_table(threads, args.repeats)
        generation_table(threads, max(3, args.repeats // 3), args.new_tokens)


if __name__ == "__main__":
    main()
