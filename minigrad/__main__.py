"""The main job without a notebook: train a GPT on byte-pair (BPE) tokens or characters, or sample from one.

    python -m minigrad gpt                       # train on Python's own docs for 5 minutes
    python -m minigrad gpt --steps 200 --corpus my.txt --checkpoint my.npz
    python -m minigrad gpt --resume gpt.npz --steps 400    # continue a run where it stopped
    python -m minigrad gpt --tokenizer char                # one token per character (default: BPE, 512 tokens)
    python -m minigrad sample gpt.npz --tokens 400 --prompt "def " --temperature 0.7 --top-p 0.9

A checkpoint holds the model, the optimizer's state, the step and both random generators, so a
resumed run takes exactly the steps the uninterrupted run would have taken. Ctrl-C during training
saves one and exits.
"""
import argparse
import json
import math
import contextlib
import os
import signal
import sys
import tempfile
import time

import numpy as np

DEFAULTS = dict(block_size=128, batch_size=16, n_layer=4, n_head=4, d_model=128)
DEFAULT_TOKENIZER, DEFAULT_VOCAB_SIZE = "bpe", 512  # chosen by measurement: see make_tokenizer
# Dropout 0.1 by measurement: without it the default model overfits the docs corpus (465k characters) within the
# 2,000-3,000 steps that 5 minutes give on an idle machine (held-out 1.30 nats/char at step 1,000, 1.39 at 2,000);
# with it, 1.22 at step 1,900.
DEFAULT_DROPOUT = 0.1
CONFIG_KEYS = ("vocab_size", "block_size", "n_layer", "n_head", "d_model")
# Entries of a checkpoint that are not model parameters: the rest is the model's state dict.
RUN_PREFIXES = ("config.", "vocab", "tokenizer.", "optimizer.", "train.")
BPE_KEY = "tokenizer.bpe"  # a BPETokenizer's JSON file as uint8 bytes (a character tokenizer is "vocab")
HELD_OUT = 0.1  # the last 10% of the corpus is never trained on, tokenizer included


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


def make_tokenizer(args, text):
    """char: one token per distinct character of the corpus. bpe: byte-pair merges learned from the
    training part of the corpus only, so the held-out text is as new to the tokenizer as to the model.

    The default, BPE with 512 tokens, was measured on Python's docs with the default model (2 cores shared
    with other jobs, load ~12, OPENBLAS_NUM_THREADS=1, backend c): 1.27 nats per character on held-out
    text after 240 s (939 steps), against 1.63 for characters after 600 steps (346 s); 1,024 tokens gave
    the same at 600 steps but a wider train/val gap (more overfitting of the small corpus).
    """
    from minigrad.text import BPETokenizer, CharTokenizer
    kind = args.tokenizer or DEFAULT_TOKENIZER
    if kind == "char":
        if args.vocab_size is not None:
            raise UserError("--vocab-size sets the size of a BPE vocabulary; add --tokenizer bpe")
        return CharTokenizer.from_text(text)
    tokenizer = BPETokenizer()
    try:
        tokenizer.train(text[:held_out_start(text)], args.vocab_size or DEFAULT_VOCAB_SIZE, pattern="gpt4")
    except ValueError as exc:
        raise UserError(f"--vocab-size: {exc}") from None
    return tokenizer


def check_same_tokenizer(args, tokenizer):
    """A resumed run keeps its checkpoint's tokenizer: options that ask for another one are an error."""
    kind = "char" if hasattr(tokenizer, "chars") else "bpe"
    if args.tokenizer not in (None, kind) or args.vocab_size not in (None, tokenizer.vocab_size):
        raise UserError(f"--resume {args.resume}: the checkpoint's tokenizer is {kind} with {tokenizer.vocab_size} "
                        "tokens; drop or match --tokenizer and --vocab-size")


def held_out_start(text):
    return int(len(text) * (1 - HELD_OUT))


def encode_splits(tokenizer, text, block_size):
    """Train and held-out token arrays, and the held-out text's characters per token.

    The text is cut at 90% of its characters before encoding, so that a loss per token converts to a
    loss per character (L_char = L_token · tokens / characters): the measure that compares tokenizers.
    """
    n = held_out_start(text)
    train, val = (np.asarray(tokenizer.encode(part), dtype=np.int64) for part in (text[:n], text[n:]))
    if len(val) <= block_size + 1 or len(train) <= block_size + 1:
        raise UserError(f"the corpus has {len(train) + len(val)} tokens; it needs more than "
                        f"{int((block_size + 2) / HELD_OUT)} for a block size of {block_size}")
    return train, val, (len(text) - n) / len(val)


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
    """Mean loss over `batches` random batches. `rng` is the evaluation's own generator: evaluating
    (how often depends on the clock) never changes which batches training sees."""
    import minigrad as mg
    model.eval()
    with mg.no_grad():
        losses = [language_model_loss(model, *get_batch(tokens, args.batch_size, args.block_size, rng)).item()
                  for _ in range(batches)]
    model.train()
    return float(np.mean(losses))


def generator_state(generator):
    """A NumPy generator's state as a uint8 array (JSON text): .npz holds arrays, never pickles."""
    return np.frombuffer(json.dumps(generator.bit_generator.state).encode(), dtype=np.uint8)


def set_generator_state(generator, array):
    generator.bit_generator.state = json.loads(bytes(np.asarray(array, dtype=np.uint8)).decode())


def flatten(prefix, tree):
    """{"a": {"b": x}} -> {"prefix.a.b": x}: an optimizer's nested state dict as .npz entries."""
    if tree is None:  # e.g. SGD's momentum buffer without momentum: nothing to keep
        return {}
    if isinstance(tree, list) and any(isinstance(item, dict) for item in tree):
        tree = dict(enumerate(tree))  # param_groups: one entry per group index
    if isinstance(tree, dict):
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(f"{prefix}.{key}", value))
        return flat
    if isinstance(tree, (list, tuple)):
        return {prefix: np.asarray(tree, dtype=np.float64 if any(isinstance(v, float) for v in tree) else None)}
    return {prefix: np.asarray(tree)}


def optimizer_state(state, optimizer):
    """The optimizer's state dict back from the "optimizer.*" entries of a checkpoint."""
    saved = optimizer.state_dict()  # the layout (groups, parameter indices) to fill in
    groups = saved["param_groups"]
    for group_index, group in enumerate(groups):
        for key, default in list(group.items()):
            entry = state.pop(f"optimizer.param_groups.{group_index}.{key}", None)
            if entry is not None and key != "params":
                value = entry.data
                group[key] = tuple(value.tolist()) if isinstance(default, tuple) else value.item()
    per_param = {}
    for name in [k for k in state if k.startswith("optimizer.state.")]:
        index, key = name[len("optimizer.state."):].split(".", 1)
        per_param.setdefault(int(index), {})[key] = state.pop(name).data
    return {"state": per_param, "param_groups": groups}


def save_checkpoint(path, model, tokenizer, config, optimizer=None, step=0, rngs=None):
    """Model, configuration and vocabulary; with `optimizer` also what `--resume` needs to go on."""
    import minigrad as mg
    state = dict(model.state_dict())
    state.update({f"config.{k}": np.asarray(v) for k, v in config.items()})
    state.update(tokenizer_entries(tokenizer))
    if optimizer is not None:
        state.update(flatten("optimizer", optimizer.state_dict()))
        state["train.step"] = np.asarray(step)
        for name, generator in (rngs or {}).items():
            state[f"train.{name}"] = generator_state(generator)
    mg.save(state, path)  # atomic: a crash mid-save leaves the previous checkpoint intact


def tokenizer_entries(tokenizer):
    from minigrad.text import BPETokenizer
    if isinstance(tokenizer, BPETokenizer):
        return {BPE_KEY: np.frombuffer(tokenizer.to_json().encode(), dtype=np.uint8)}
    return {"vocab": np.array([ord(c) for c in tokenizer.chars], dtype=np.int64)}


def _config(path, state):
    missing = ([f"config.{k}" for k in CONFIG_KEYS if f"config.{k}" not in state]
               + ["vocab"] * ("vocab" not in state and BPE_KEY not in state))
    if missing:
        raise UserError(f"{path} is not a GPT checkpoint from `python -m minigrad gpt`: it lacks {', '.join(missing)}")
    config = {}
    for key in CONFIG_KEYS:
        value = state.pop(f"config.{key}").data
        if value.shape != () or value.dtype.kind not in "iu" or value < 1:
            raise UserError(f"{path}: config.{key} must be a positive integer, got {value!r}")
        config[key] = int(value)
    return config


def _tokenizer(path, state, vocab_size):
    from minigrad.text import BPETokenizer, CharTokenizer
    if BPE_KEY in state:
        try:
            text = bytes(state.pop(BPE_KEY).data.astype(np.uint8))
            tokenizer = BPETokenizer.from_json(text, source=f"{path}'s {BPE_KEY}")
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if tokenizer.vocab_size != vocab_size:
            raise UserError(f"{path}: its BPE tokenizer has {tokenizer.vocab_size} tokens, config.vocab_size "
                            f"says {vocab_size}")
        return tokenizer
    codes = state.pop("vocab").data
    if codes.ndim != 1 or codes.dtype.kind not in "iu" or len(codes) != vocab_size:
        raise UserError(f"{path}: the vocabulary must be {vocab_size} integer code points (config.vocab_size), "
                        f"got shape {codes.shape} of {codes.dtype}")
    if codes.size and (codes.min() < 0 or codes.max() > sys.maxunicode):
        raise UserError(f"{path}: the vocabulary holds {int(codes.min())}..{int(codes.max())}, not all "
                        "Unicode code points")
    try:
        return CharTokenizer([chr(int(c)) for c in codes])
    except ValueError as exc:
        raise UserError(f"{path}: bad vocabulary: {exc}") from None


def load_checkpoint(path, with_run_state=False, dropout=0.0):
    """(model, tokenizer, config), plus the run's state ("optimizer.*", "train.*" entries) if asked;
    `dropout` is the model's training-time dropout (a resumed run keeps training with it).

    Every way a checkpoint can be unusable becomes one UserError naming the file and the problem.
    """
    import minigrad as mg
    import minigrad.nn as nn
    if not os.path.exists(path):
        raise UserError(f"no checkpoint at {path}")
    try:
        state = mg.load(path)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a single tensor, not a GPT checkpoint from `python -m minigrad gpt`")
    config = _config(path, state)
    tokenizer = _tokenizer(path, state, config["vocab_size"])
    try:
        model = nn.GPT(**config, dropout=dropout)
    except (ValueError, TypeError, MemoryError) as exc:
        raise UserError(f"{path}: its configuration {config} cannot build a GPT: {exc}") from None
    run_state = {k: state.pop(k) for k in list(state) if k.startswith(RUN_PREFIXES)}
    try:
        model.load_state_dict(state)
    except (KeyError, ValueError) as exc:
        raise UserError(f"{path} does not fit a GPT of configuration {config}: {exc}") from None
    if with_run_state:
        return model, tokenizer, config, run_state
    return model, tokenizer, config


def restore_run(path, run_state, optimizer, rngs):
    """Put the optimizer's state and the generators back; returns the step the run had reached."""
    needed = ["train.step"] + [f"train.{name}" for name in rngs]
    missing = [k for k in needed if k not in run_state]
    if missing:
        raise UserError(f"{path} cannot be resumed: it has the model but not the run's state ({', '.join(missing)})")
    try:
        optimizer.load_state_dict(optimizer_state(run_state, optimizer))
        for name, generator in rngs.items():
            set_generator_state(generator, run_state[f"train.{name}"].data)
        return int(run_state["train.step"].item())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} cannot be resumed: its optimizer or generator state is damaged ({exc})") from None


def check_writable(path):
    """Fail before training, not after it, when the checkpoint cannot be written."""
    if os.path.isdir(path):
        raise UserError(f"checkpoint path {path} is a directory; give a file name such as {os.path.join(path, 'gpt.npz')}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UserError(f"cannot write checkpoint {path}: directory {folder} does not exist")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise UserError(f"cannot write checkpoint {path}: {exc.strerror}") from None


def sample_text(model, tokenizer, prompt, tokens, temperature, top_k, top_p=None):
    model.eval()
    if not prompt:  # start from a newline when the text has one, as if at the start of a paragraph
        chars = getattr(tokenizer, "chars", "\n")  # a BPE tokenizer encodes any text
        prompt = "\n" if "\n" in chars else chars[0]
    start = np.asarray(tokenizer.encode(prompt), dtype=np.int64)
    out = model.generate(start[None, :], tokens, temperature=temperature, top_k=top_k, top_p=top_p)
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


def choose_backend(name):
    """Switch to the backend asked for (None: keep minigrad's default, the fastest one built here)."""
    import minigrad as mg
    if name is None:
        return mg.get_backend()
    try:
        mg.set_backend(name)
        if name != "numpy":
            from minigrad import kernels
            kernels.matmul(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32))
    except (RuntimeError, ImportError, ValueError) as exc:
        raise UserError(f"backend {name!r} is not usable here: {exc}") from None
    return name


def model_config(args, vocab_size, resumed=None):
    """The GPT's shape: from the options, or from the checkpoint being resumed (options may not differ)."""
    asked = {key: getattr(args, key) for key in DEFAULTS if key != "batch_size"}
    if resumed is not None:
        clash = {k: v for k, v in asked.items() if v is not None and v != resumed[k]}
        if clash:
            raise UserError(f"--resume {args.resume}: the checkpoint's model has "
                            f"{', '.join(f'{k}={resumed[k]}' for k in clash)}; drop or match the options "
                            f"{', '.join('--' + k.replace('_', '-') for k in clash)}")
        return resumed
    config = dict(vocab_size=vocab_size, **{k: DEFAULTS[k] if v is None else v for k, v in asked.items()})
    if config["d_model"] % config["n_head"]:
        raise UserError(f"--n-head {config['n_head']} must divide --d-model {config['d_model']} "
                        "(each head gets d_model / n_head features)")
    return config


@contextlib.contextmanager
def stop_on_ctrl_c():
    """While training, the first Ctrl-C only raises a flag, checked between steps, so the checkpoint
    saved on the way out is a consistent one (never a half-applied optimizer step); a second Ctrl-C
    stops at once."""
    requested = []

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
        yield requested
        return
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)


def data_parallel_job(batch_size):
    """Under `mpiexec -n W`: data-parallel training, rank r on its B/W rows of each global batch."""
    from minigrad.distributed import DataParallelJob
    try:
        return DataParallelJob(batch_size)
    except ValueError as exc:
        raise UserError(f"--batch-size: {exc}") from None


def train(args):
    import minigrad as mg
    import minigrad.nn as nn
    import minigrad.optim as optim
    from minigrad.random import generator

    checkpoint = args.checkpoint or args.resume or "gpt.npz"
    check_writable(checkpoint)
    job = data_parallel_job(args.batch_size)
    text = read_corpus(args.corpus)
    if not text.strip():
        raise UserError(f"the corpus {args.corpus or '(Python docs)'} is empty")
    backend = choose_backend(args.backend)
    mg.manual_seed(args.seed)
    rngs = {"batch_rng": np.random.default_rng(args.seed), "eval_rng": np.random.default_rng(args.seed + 1),
            "minigrad_rng": generator()}
    if args.resume:
        model, tokenizer, resumed, run_state = load_checkpoint(args.resume, with_run_state=True, dropout=args.dropout)
        check_same_tokenizer(args, tokenizer)
        config = model_config(args, tokenizer.vocab_size, resumed)
    else:
        tokenizer = make_tokenizer(args, text)
        config = model_config(args, tokenizer.vocab_size)
        model = nn.GPT(**config, dropout=args.dropout)
    try:
        train_tokens, val_tokens, chars_per_token = encode_splits(tokenizer, text, config["block_size"])
    except ValueError as exc:
        raise UserError(f"--resume {args.resume}: the corpus does not fit the checkpoint's vocabulary: {exc}") from None
    optimizer = optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    step = restore_run(args.resume, run_state, optimizer, rngs) if args.resume else 0
    rng, eval_rng = rngs["batch_rng"], rngs["eval_rng"]
    args.block_size = config["block_size"]
    print(f"corpus: {len(text):,} characters, {type(tokenizer).__name__} of {tokenizer.vocab_size} tokens "
          f"({chars_per_token:.2f} characters per token held out); "
          f"GPT with {model.num_parameters():,} parameters; backend {backend}"
          + (f"; resumed from {args.resume} at step {step}" if args.resume else ""))
    if args.steps and step >= args.steps:
        raise UserError(f"--resume {args.resume} is at step {step} already; ask for more with --steps N > {step}")

    def save():
        save_checkpoint(checkpoint, model, tokenizer, config, optimizer, step, rngs)

    budget = args.minutes * 60
    start = time.perf_counter()
    tokens_seen, last_eval = 0, 0
    trained = job.wrap(model)  # under mpiexec: gradients averaged over the ranks
    with stop_on_ctrl_c() as interrupted:
        while True:
            elapsed = time.perf_counter() - start
            if job.agree(interrupted or (args.steps and step >= args.steps) or (not args.steps and elapsed >= budget)):
                break
            lr = args.lr * min(1.0, (step + 1) / args.warmup) if args.warmup else args.lr
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = get_batch(train_tokens, args.batch_size, args.block_size, rng)  # the global batch
            loss = language_model_loss(trained, *job.local(x, y))  # this rank's rows of it
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
            tokens_seen += x.size
            elapsed = time.perf_counter() - start
            loss_value = job.mean(loss.item())  # the global batch's loss
            if sys.stdout.isatty():
                print(progress_line(step, args.steps, loss_value, tokens_seen / elapsed, elapsed, budget), end="",
                      flush=True)
            if job.is_main and (elapsed - last_eval >= args.eval_seconds or step == args.steps):
                last_eval = elapsed
                print(f"{chr(10) if sys.stdout.isatty() else ''}step {step} ({elapsed:.0f} s, "
                      f"{tokens_seen / elapsed:,.0f} tok/s): train loss "
                      f"{estimate_loss(model, train_tokens, args, eval_rng):.3f}"
                      f", val loss {per_character(estimate_loss(model, val_tokens, args, eval_rng), chars_per_token)}",
                      flush=True)
    if not job.is_main:
        return 130 if interrupted else 0
    if interrupted:
        save()
        print(f"\ninterrupted at step {step}: checkpoint saved to {checkpoint}; continue with "
              f"`python -m minigrad gpt --resume {checkpoint}`", file=sys.stderr)
        return 130
    elapsed = time.perf_counter() - start
    print(f"\ndone: {step} steps in {elapsed:.0f} s; train loss "
          f"{estimate_loss(model, train_tokens, args, eval_rng, 16):.3f}, val loss "
          f"{per_character(estimate_loss(model, val_tokens, args, eval_rng, 16), chars_per_token)}")
    save()
    print(f"checkpoint saved to {checkpoint}")
    print("sample:\n" + sample_text(model, tokenizer, None, args.sample_tokens, 0.8, None))
    return 0


def per_character(loss, chars_per_token):
    """"1.234 (0.411 nats/char)": a loss per token, and per character of the held-out text."""
    return f"{loss:.3f} ({loss / chars_per_token:.3f} nats/char)"


def sample(args):
    import minigrad as mg
    mg.manual_seed(args.seed)
    model, tokenizer, _ = load_checkpoint(args.checkpoint)
    try:
        print(sample_text(model, tokenizer, args.prompt, args.tokens, args.temperature, args.top_k, args.top_p))
    except ValueError as exc:
        raise UserError(str(exc)) from None


def _number(kind, low, strict, text):
    """argparse type: a finite number of `kind` that is >= low (> low when strict)."""
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
    if not math.isfinite(value) or value < low or (strict and value == low):
        raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low}, got {text}")
    return value


def positive_int(text):
    return _number(int, 1, False, text)


def nonnegative_int(text):
    return _number(int, 0, False, text)


def probability(text):
    """argparse type for --top-p: a number in (0, 1]."""
    value = _number(float, -math.inf, False, text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1], got {text}")
    return value


def dropout_probability(text):
    """argparse type for --dropout: a number in [0, 1)."""
    value = _number(float, -math.inf, False, text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1), got {text}")
    return value


def positive_float(text):
    return _number(float, 0, True, text)


def nonnegative_float(text):
    return _number(float, 0, False, text)


class HelpWithDefaults(argparse.HelpFormatter):
    """--help shows every option's default (options whose default is "not given" explain it in words)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            text += " (default: %(default)s)"
        return text


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m minigrad", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    formatter = HelpWithDefaults
    gpt = commands.add_parser("gpt", help="train a GPT (BPE tokens or characters) and save a checkpoint",
                              formatter_class=formatter)
    gpt.add_argument("--steps", type=positive_int, default=None,
                     help="train until this step (default: for --minutes; with --resume, the total step count)")
    gpt.add_argument("--minutes", type=positive_float, default=5.0, help="time budget when --steps is not given")
    gpt.add_argument("--corpus", help="a UTF-8 text file (default: Python's documentation, pydoc_data.topics)")
    gpt.add_argument("--backend", default=None, choices=["numpy", "c", "cuda", "cuda-sim"],
                     help="kernel backend (default: minigrad's, the fastest one built here)")
    gpt.add_argument("--seed", type=nonnegative_int, default=0)
    gpt.add_argument("--checkpoint", default=None,
                     help="where to save the checkpoint (default: gpt.npz, or the --resume file)")
    gpt.add_argument("--resume", metavar="FILE", default=None,
                     help="continue the run saved in FILE: model, optimizer, step and random state")
    gpt.add_argument("--lr", type=positive_float, default=3e-3, help="peak learning rate")
    gpt.add_argument("--weight-decay", type=nonnegative_float, default=0.01)
    gpt.add_argument("--dropout", type=dropout_probability, default=DEFAULT_DROPOUT,
                     help="dropout on attention weights and residual branches while training")
    gpt.add_argument("--warmup", type=nonnegative_int, default=50, help="steps of linear learning-rate warm-up")
    gpt.add_argument("--eval-seconds", type=nonnegative_float, default=30,
                     help="report train and val loss this often")
    gpt.add_argument("--sample-tokens", type=positive_int, default=300)
    gpt.add_argument("--batch-size", type=positive_int, default=DEFAULTS["batch_size"])
    gpt.add_argument("--tokenizer", choices=["char", "bpe"], default=None,
                     help=f"characters, or byte-pair tokens learned from the training text (default: {DEFAULT_TOKENIZER})")
    gpt.add_argument("--vocab-size", type=positive_int, default=None,
                     help=f"BPE vocabulary size, >= 256 (default: {DEFAULT_VOCAB_SIZE})")
    for name, value in DEFAULTS.items():
        if name != "batch_size":
            gpt.add_argument("--" + name.replace("_", "-"), type=positive_int, default=None,
                             help=f"model size (default: {value}; a resumed run keeps its checkpoint's)")
    smp = commands.add_parser("sample", help="sample text from a checkpoint saved by `gpt`", formatter_class=formatter)
    smp.add_argument("checkpoint")
    smp.add_argument("--tokens", type=positive_int, default=500)
    smp.add_argument("--prompt", default=None, help="text to continue (default: a newline)")
    smp.add_argument("--temperature", type=nonnegative_float, default=0.8,
                     help="< 1 sharpens the distribution, > 1 flattens it, 0 takes the most likely token")
    smp.add_argument("--top-k", type=positive_int, default=None, help="sample among the k most likely tokens only")
    smp.add_argument("--top-p", type=probability, default=None,
                     help="sample among the fewest most likely tokens whose probabilities sum to at least p")
    smp.add_argument("--seed", type=nonnegative_int, default=0)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    try:
        return (train if args.command == "gpt" else sample)(args) or 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
