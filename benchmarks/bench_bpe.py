"""Byte-level BPE: training time, and encode speed against tiktoken with the same ranks on the same text.

Training: CPU seconds (this process, one thread: the trainer is pure Python) for 1,000 merges with the
GPT-4 split, on the CLI's corpus (Python's documentation, ~0.47 MB) and on ~1 MB (the docs followed by
standard-library source files). Target: under 30 s on one core.
Encoding: minigrad's `encode` beside `tiktoken.Encoding(pat_str=tok.pattern,
mergeable_ranks=tok.mergeable_ranks())`'s `encode_ordinary` (Rust, one thread) on the same text, called
in turn; minigrad cold (a fresh tokenizer, empty chunk cache) and warm (the cache filled by a first
call). Medians of --repeats; the machine is shared, so compare the ratios.

    python benchmarks/bench_bpe.py
    python benchmarks/bench_bpe.py --merges 2000 --repeats 5
"""
import argparse
import os
import platform
import sysconfig
import time
from pathlib import Path

import numpy as np

from minigrad.__main__ import python_docs_text
from minigrad.text import BPETokenizer
from machine import cpu_model_and_flags


def one_megabyte_text(docs, size=1_000_000):
    """The docs, then standard-library sources in sorted order, up to `size` characters."""
    parts, total = [docs], len(docs)
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        if total >= size:
            break
        code = path.read_text(encoding="utf-8", errors="replace")
        parts.append(code)
        total += len(code)
    return "".join(parts)[:size]


def train_seconds(text, merges, pattern):
    tok = BPETokenizer()
    start = time.process_time()
    tok.train(text, 256 + merges, pattern=pattern)
    return time.process_time() - start, tok


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--merges", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tiktoken

    print(f"CPU: {cpu_model_and_flags()[0]}; Python {platform.python_version()}; tiktoken {tiktoken.__version__}; "
          f"RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')} (tiktoken's encode_ordinary is "
          f"single-threaded); medians of {args.repeats}")
    docs = python_docs_text()
    corpora = {"docs": docs, "1 MB": one_megabyte_text(docs)}
    print(f"\ntraining {args.merges} merges (CPU s, target < 30)")
    trained = {}
    for name, text in corpora.items():
        for pattern in ("gpt4", "gpt2"):
            runs = [train_seconds(text, args.merges, pattern) for _ in range(args.repeats)]
            trained[name, pattern] = runs[-1][1]
            print(f"  {name:>5} ({len(text.encode('utf-8')) / 1e6:.2f} MB), split {pattern}: "
                  f"{np.median([r[0] for r in runs]):6.2f} s")

    print("\nencoding the same text (ms; ratio = minigrad / tiktoken)")
    print(f"  {'corpus':>6} {'split':>5} {'tokens':>8} {'bytes/token':>11} {'tiktoken':>9} {'cold':>16} {'warm':>16}")
    for (name, pattern), tok in trained.items():
        text = corpora[name]
        enc = tiktoken.Encoding("bench", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
                                special_tokens={})
        times = {"tiktoken": [], "cold": [], "warm": []}
        for _ in range(args.repeats):
            fresh = BPETokenizer.from_json(tok.to_json())
            for key, call in (("tiktoken", lambda: enc.encode_ordinary(text)), ("cold", lambda: fresh.encode(text)),
                              ("warm", lambda: fresh.encode(text))):
                start = time.perf_counter()
                ids = call()
                times[key].append(1000 * (time.perf_counter() - start))
        assert ids == enc.encode_ordinary(text), "minigrad and tiktoken disagree"
        ms = {key: float(np.median(v)) for key, v in times.items()}
        print(f"  {name:>6} {pattern:>5} {len(ids):>8} {len(text.encode('utf-8')) / len(ids):>11.2f} "
              f"{ms['tiktoken']:>9.1f} {ms['cold']:>8.1f} ({ms['cold'] / ms['tiktoken']:4.1f}x) "
              f"{ms['warm']:>8.1f} ({ms['warm'] / ms['tiktoken']:4.1f}x)")


if __name__ == "__main__":
    main()
