"""The main job without a notebook: train a character-level GPT, or sample from one.

    python -m minigrad gpt                       # train on Python's own docs, ~4 minutes on 2 cores
    python -m minigrad gpt --steps 200 --corpus my.txt --checkpoint my.npz
    python -m minigrad sample gpt.npz --tokens 400 --prompt "def "
"""
import argparse
import os
import sys
import time

import numpy as np

DEFAULTS = dict(block_size=128, batch_size=16, n_layer=4, n_head=4, d_model=128)
CONFIG_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")


class UserError(Exception):
    """A problem with what the user asked for, reported as one line, not a traceback."""


def python_docs_text():
    """The corpus that ships with every Python: the text of the documentation's topics."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[key] for key in sorted(topics))


def read_corpus(path):
    if path is None:
        return python_docs_text()
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise UserError(f"cannot read corpus {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"corpus {path} is not UTF-8 text") from None
    return text


def split_tokens(tokens, block_size, held_out=0.1):
    """The first 90% of the text trains, the last 10% is held out: loss there measures generalisation."""
    n = int(len(tokens) * (1 - held_out))
    train, val = tokens[:n], tokens[n:]
    if len(val) <= block_size + 1 or len(train) <= block_size + 1:
        raise UserError(f"the corpus has {len(tokens)} characters; it needs more than "
                        f"{int((block_size + 2) / held_out)} for a block size of {block_size}")
    return train, val


def get_batch(tokens, batch_size, block_size, rng):
    """batch_size random windows: inputs x (B, T) and targets y (B, T), y shifted one character ahead."""
    starts = rng.integers(0, len(tokens) - block_size - 1, size=batch_size)
    x = np.stack([tokens[s:s + block_size] for s in starts])  # (B, T)
    y = np.stack([tokens[s + 1:s + block_size + 1] for s in starts])  # (B, T)
    return x, y


def language_model_loss(model, x, y):
    import minigrad.nn.functional as F
    logits = model(x)  # (B, T, V)
    B, T, V = logits.shape
    return F.cross_entropy(logits.reshape(B * T, V), y.reshape(B * T))


def estimate_loss(model, tokens, args, rng, batches=8):
    import minigrad as mg
    model.eval()
    with mg.no_grad():
        losses = [language_model_loss(model, *get_batch(tokens, args.batch_size, args.block_size, rng)).item()
                  for _ in range(batches)]
    model.train()
    return float(np.mean(losses))


def save_checkpoint(path, model, tokenizer, config):
    import minigrad as mg
    state = dict(model.state_dict())
    state.update({f"config.{k}": np.asarray(v) for k, v in config.items()})
    state["vocab"] = np.array([ord(c) for c in tokenizer.chars], dtype=np.int64)
    mg.save(state, path)


def load_checkpoint(path):
    import minigrad as mg
    import minigrad.nn as nn
    from minigrad.text import CharTokenizer
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        state = mg.load(path)
    except (ValueError, OSError) as exc:
        raise UserError(f"{path} is not a minigrad checkpoint ({exc})") from None
    missing = [k for k in CONFIG_KEYS if f"config.{k}" not in state] + (["vocab"] if "vocab" not in state else [])
    if missing:
        raise UserError(f"{path} is not a GPT checkpoint from `python -m minigrad gpt`: it lacks {', '.join(missing)}")
    config = {k: int(state.pop(f"config.{k}").item()) for k in CONFIG_KEYS}
    tokenizer = CharTokenizer([chr(int(c)) for c in state.pop("vocab").data])
    model = nn.GPT(**config)
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path} does not fit a GPT of configuration {config}: {exc}") from None
    return model, tokenizer, config


def sample_text(model, tokenizer, prompt, tokens, temperature, top_k):
    model.eval()
    if not prompt:  # start from a newline when the text has one, as if at the start of a paragraph
        prompt = "\n" if "\n" in tokenizer.stoi else tokenizer.chars[0]
    start = tokenizer.encode(prompt)
    out = model.generate(start[None, :], tokens, temperature=temperature, top_k=top_k)
    return tokenizer.decode(out[0])


def progress_line(step, total, loss, tokens_per_s, elapsed, budget):
    if total:
        done = step / total
        label = f"{step}/{total}"
    else:
        done = min(elapsed / budget, 1.0)
        label = f"{elapsed:.0f}/{budget:.0f}s"
    bar = "#" * int(done * 30)
    return f"\r[{bar:<30}] {label} loss {loss:.3f} {tokens_per_s:,.0f} tok/s"


def train(args):
    import minigrad as mg
    import minigrad.nn as nn
    import minigrad.optim as optim
    from minigrad.text import CharTokenizer

    text = read_corpus(args.corpus)
    if not text.strip():
        raise UserError(f"the corpus {args.corpus or '(Python docs)'} is empty")
    tokenizer = CharTokenizer.from_text(text)
    tokens = tokenizer.encode(text)
    train_tokens, val_tokens = split_tokens(tokens, args.block_size)
    try:
        mg.set_backend(args.backend)
        if args.backend != "numpy":
            from minigrad import kernels
            kernels.matmul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
    except (RuntimeError, ImportError, ValueError) as exc:
        raise UserError(f"backend {args.backend!r} is not usable here: {exc}") from None
    mg.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    config = dict(vocab_size=tokenizer.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                  n_head=args.n_head, d_model=args.d_model)
    model = nn.GPT(**config)
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    print(f"corpus: {len(text):,} characters, vocabulary {tokenizer.vocab_size}; "
          f"GPT with {model.num_parameters():,} parameters; backend {args.backend}")
    budget = args.minutes * 60
    start = time.perf_counter()
    step, tokens_seen, last_eval = 0, 0, 0
    while True:
        elapsed = time.perf_counter() - start
        if (args.steps and step >= args.steps) or (not args.steps and elapsed >= budget):
            break
        lr = args.lr * min(1.0, (step + 1) / args.warmup)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_tokens, args.batch_size, args.block_size, rng)
        loss = language_model_loss(model, x, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        tokens_seen += x.size
        elapsed = time.perf_counter() - start
        if sys.stdout.isatty():
            print(progress_line(step, args.steps, loss.item(), tokens_seen / elapsed, elapsed, budget), end="",
                  flush=True)
        if elapsed - last_eval >= args.eval_seconds or step == args.steps:
            last_eval = elapsed
            print(f"{chr(10) if sys.stdout.isatty() else ''}step {step} ({elapsed:.0f} s, "
                  f"{tokens_seen / elapsed:,.0f} tok/s): train loss {estimate_loss(model, train_tokens, args, rng):.3f}"
                  f", val loss {estimate_loss(model, val_tokens, args, rng):.3f}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"\ndone: {step} steps in {elapsed:.0f} s; train loss "
          f"{estimate_loss(model, train_tokens, args, rng, 16):.3f}, val loss "
          f"{estimate_loss(model, val_tokens, args, rng, 16):.3f}")
    save_checkpoint(args.checkpoint, model, tokenizer, config)
    print(f"checkpoint saved to {args.checkpoint}")
    print("sample:\n" + sample_text(model, tokenizer, None, args.sample_tokens, 0.8, None))


def sample(args):
    import minigrad as mg
    mg.manual_seed(args.seed)
    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    try:
        print(sample_text(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m minigrad", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gpt = commands.add_parser("gpt", help="train a character-level GPT and save a checkpoint")
    gpt.add_argument("--steps", type=int, default=0, help="number of training steps (default: use --minutes)")
    gpt.add_argument("--minutes", type=float, default=4.0, help="time budget when --steps is not given")
    gpt.add_argument("--corpus", help="a UTF-8 text file (default: Python's documentation, pydoc_data.topics)")
    gpt.add_argument("--backend", default="c", choices=["numpy", "c", "cuda", "cuda-sim"])
    gpt.add_argument("--seed", type=int, default=0)
    gpt.add_argument("--checkpoint", default="gpt.npz")
    gpt.add_argument("--lr", type=float, default=3e-3)
    gpt.add_argument("--weight-decay", type=float, default=0.01)
    gpt.add_argument("--warmup", type=int, default=50, help="steps of linear learning-rate warm-up")
    gpt.add_argument("--eval-seconds", type=float, default=30, help="report train and val loss this often")
    gpt.add_argument("--sample-tokens", type=int, default=300)
    for name, value in DEFAULTS.items():
        gpt.add_argument("--" + name.replace("_", "-"), type=int, default=value)
    smp = commands.add_parser("sample", help="sample text from a checkpoint saved by `gpt`")
    smp.add_argument("checkpoint")
    smp.add_argument("--tokens", type=int, default=500)
    smp.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    smp.add_argument("--temperature", type=float, default=0.8)
    smp.add_argument("--top-k", type=int, default=None)
    smp.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        (train if args.command == "gpt" else sample)(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
