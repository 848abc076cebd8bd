"""`python -m minigrad gpt` and `python -m minigrad sample`: a tiny run end to end, and one-line errors."""
import re
import subprocess
import sys

import numpy as np
import pytest

import minigrad as mg
from minigrad.__main__ import get_batch, load_checkpoint, python_docs_text

TINY_MODEL = ["--n-layer", "1", "--n-head", "2", "--d-model", "16", "--block-size", "16", "--batch-size", "4",
              "--backend", "numpy", "--eval-seconds", "0", "--sample-tokens", "20"]
TINY = ["--tokenizer", "char"] + TINY_MODEL  # these tests read the character vocabulary


def run(*args):
    return subprocess.run([sys.executable, "-m", "minigrad", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


def test_train_then_sample(tmp_path, corpus):
    checkpoint = tmp_path / "tiny.npz"
    result = run("gpt", "--steps", "40", "--corpus", str(corpus), "--checkpoint", str(checkpoint), *TINY)
    assert result.returncode == 0, result.stderr
    losses = [float(x) for x in re.findall(r"train loss (\d+\.\d{3})", result.stdout)]
    assert re.search(r"val loss \d+\.\d{3}", result.stdout)
    assert losses[0] > losses[-1], f"training did not lower the loss: {losses}"
    assert losses[0] == pytest.approx(np.log(len(set(corpus.read_text()))), abs=0.3)  # starts near uniform
    model, tokenizer, config = load_checkpoint(str(checkpoint))
    assert config == dict(vocab_size=tokenizer.vocab_size, block_size=16, n_layer=1, n_head=2, d_model=16)
    sample = run("sample", str(checkpoint), "--tokens", "30", "--prompt", "the ")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("the ") and len(sample.stdout.rstrip("\n")) == 34


@pytest.mark.parametrize("args,message", [
    (["gpt", "--corpus", "/no/such/file.txt"], "cannot read corpus"),
    (["sample", "/no/such/checkpoint.npz"], "no checkpoint"),
])
def test_bad_paths_give_one_line_errors(args, message):
    result = run(*args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_empty_corpus_and_foreign_checkpoint(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    result = run("gpt", "--corpus", str(empty), *TINY)
    assert result.returncode == 2 and "empty" in result.stderr and "Traceback" not in result.stderr
    foreign = tmp_path / "foreign.npz"
    mg.save({"weight": mg.zeros(2, 2)}, foreign)
    result = run("sample", str(foreign))
    assert result.returncode == 2 and "not a GPT checkpoint" in result.stderr and "Traceback" not in result.stderr


def test_checkpoint_of_another_configuration_is_refused(tmp_path, corpus):
    checkpoint = tmp_path / "tiny.npz"
    assert run("gpt", "--steps", "1", "--corpus", str(corpus), "--checkpoint", str(checkpoint), *TINY).returncode == 0
    state = mg.load(checkpoint)
    state["config.d_model"] = mg.tensor(32)
    mg.save(state, checkpoint)
    result = run("sample", str(checkpoint))
    assert result.returncode == 2 and "does not fit" in result.stderr and "Traceback" not in result.stderr


def test_batches_are_shifted_windows():
    tokens = np.arange(100)
    x, y = get_batch(tokens, 5, 8, np.random.default_rng(0))
    assert x.shape == y.shape == (5, 8)
    np.testing.assert_array_equal(y, x + 1)
    assert "def" in python_docs_text()


def test_bpe_tokenizer_is_trained_on_the_training_text_and_saved_in_the_checkpoint(tmp_path):
    from minigrad.text import BPETokenizer
    text = python_docs_text()[:20_000]
    corpus = tmp_path / "docs.txt"
    corpus.write_text(text)
    checkpoint = tmp_path / "bpe.npz"
    result = run("gpt", "--steps", "3", "--corpus", str(corpus), "--checkpoint", str(checkpoint),
                 "--tokenizer", "bpe", "--vocab-size", "300", *TINY_MODEL)
    assert result.returncode == 0, result.stderr
    model, tokenizer, config = load_checkpoint(str(checkpoint))
    expected = BPETokenizer()
    expected.train(text[:int(len(text) * 0.9)], 300, pattern="gpt4")  # the training 90% only
    assert tokenizer.vocab == expected.vocab and config["vocab_size"] == 300
    held_out = text[int(len(text) * 0.9):]
    chars_per_token = len(held_out) / len(tokenizer.encode(held_out))
    assert f"({chars_per_token:.2f} characters per token held out)" in result.stdout
    for per_token, per_char in re.findall(r"val loss (\d+\.\d{3}) \((\d+\.\d{3}) nats/char\)", result.stdout):
        assert float(per_char) == pytest.approx(float(per_token) / chars_per_token, abs=1.5e-3)
    sample = run("sample", str(checkpoint), "--tokens", "10", "--prompt", "def ", "--top-p", "0.9",
                 "--top-k", "50", "--temperature", "0.7")
    assert sample.returncode == 0, sample.stderr
    assert sample.stdout.startswith("def ")
    clash = run("gpt", "--resume", str(checkpoint), "--steps", "4", "--corpus", str(corpus), "--tokenizer", "char")
    assert clash.returncode == 2 and "the checkpoint's tokenizer is bpe with 300 tokens" in clash.stderr
    resumed = run("gpt", "--resume", str(checkpoint), "--steps", "4", "--corpus", str(corpus), *TINY_MODEL)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "BPETokenizer of 300 tokens" in resumed.stdout


def test_char_losses_are_the_same_per_token_and_per_character(tmp_path, corpus):
    result = run("gpt", "--steps", "2", "--corpus", str(corpus), "--checkpoint", str(tmp_path / "c.npz"), *TINY)
    pairs = re.findall(r"val loss (\d+\.\d{3}) \((\d+\.\d{3}) nats/char\)", result.stdout)
    assert pairs and all(a == b for a, b in pairs)


@pytest.mark.parametrize("args,message", [
    (["--tokenizer", "bpe", "--vocab-size", "100"], "--vocab-size: .*vocab_size must be an integer >= 256.*100"),
    (["--tokenizer", "char", "--vocab-size", "300"], "--vocab-size sets the size of a BPE vocabulary"),
    (["--vocab-size", "100"], "--vocab-size: .*vocab_size must be an integer >= 256.*100"),  # BPE is the default
])
def test_bad_tokenizer_options_give_one_line_errors(tmp_path, corpus, args, message):
    result = run("gpt", "--steps", "1", "--corpus", str(corpus), "--checkpoint", str(tmp_path / "x.npz"), *args,
                 *TINY_MODEL)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr


def test_sample_refuses_top_p_outside_zero_one(tmp_path, corpus):
    checkpoint = tmp_path / "tiny.npz"
    assert run("gpt", "--steps", "1", "--corpus", str(corpus), "--checkpoint", str(checkpoint), *TINY).returncode == 0
    for bad in ("0", "1.5"):
        result = run("sample", str(checkpoint), "--top-p", bad)
        assert result.returncode == 2 and "--top-p" in result.stderr and "(0, 1]" in result.stderr
