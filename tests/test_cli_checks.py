"""`python -m minigrad gpt/sample`: options checked before any work, every unusable checkpoint one
`error:` line (exit 2), --resume equal to the uninterrupted run, Ctrl-C saves and exits cleanly."""
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import minigrad as mg
from minigrad.__main__ import load_checkpoint

TINY = ["--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--d-model", "16", "--block-size", "16",
        "--batch-size", "4",
        "--backend", "numpy", "--eval-seconds", "0", "--sample-tokens", "5"]


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "minigrad", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(result, *needles):
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40)
    return path


@pytest.mark.parametrize("option, value", [
    ("--steps", "0"), ("--steps", "-3"), ("--steps", "2.5"), ("--minutes", "0"), ("--minutes", "nan"),
    ("--lr", "0"), ("--lr", "-1e-3"), ("--lr", "inf"), ("--lr", "nan"), ("--warmup", "-1"),
    ("--batch-size", "0"), ("--block-size", "0"), ("--n-layer", "0"), ("--n-head", "-2"), ("--d-model", "0"),
    ("--weight-decay", "-0.1"), ("--eval-seconds", "-1"), ("--sample-tokens", "0"), ("--seed", "-1"),
])
def test_numeric_options_are_checked_up_front(tmp_path, option, value):
    result = run("gpt", option, value, "--checkpoint", tmp_path / "never.npz")
    one_line_error(result, option)
    assert not (tmp_path / "never.npz").exists()


@pytest.mark.parametrize("option, value", [("--tokens", "0"), ("--temperature", "-1"), ("--top-k", "0")])
def test_sample_options_are_checked(tmp_path, option, value):
    one_line_error(run("sample", tmp_path / "x.npz", option, value), option)


def test_heads_must_divide_the_width(tmp_path, corpus):
    one_line_error(run("gpt", "--corpus", corpus, "--n-head", "3", "--d-model", "16", "--steps", "1"),
                   "--n-head 3", "--d-model 16")


def test_checkpoint_path_is_checked_before_training(tmp_path, corpus):
    start = time.perf_counter()
    one_line_error(run("gpt", "--corpus", corpus, "--checkpoint", tmp_path / "no" / "dir" / "g.npz", *TINY),
                   "does not exist")
    one_line_error(run("gpt", "--corpus", corpus, "--checkpoint", tmp_path, *TINY), "is a directory")
    assert time.perf_counter() - start < 60


def _bad_checkpoints(tmp_path, good):
    state = mg.load(good)
    files = {}

    def variant(name, **changes):
        changed = dict(state)
        for key, value in changes.items():
            if value is None:
                changed.pop(key)
            else:
                changed[key] = value
        files[name] = tmp_path / f"{name}.npz"
        mg.save(changed, files[name])

    variant("heads do not divide", **{"config.n_head": np.asarray(3)})
    variant("zero layers", **{"config.n_layer": np.asarray(0)})
    variant("vocab too short", vocab=state["vocab"].data[:-1])
    variant("vocab repeated", vocab=np.zeros_like(state["vocab"].data))
    variant("vocab not characters", vocab=np.full_like(state["vocab"].data, -5))
    variant("no config", **{"config.d_model": None})
    files["single tensor"] = tmp_path / "single.npz"
    mg.save(mg.zeros(3), files["single tensor"])
    files["folder"] = tmp_path / "folder"
    files["folder"].mkdir()
    files["empty"] = tmp_path / "empty.npz"
    files["empty"].write_bytes(b"")
    files["text"] = tmp_path / "text.npz"
    files["text"].write_text("hello\n")
    files["npy"] = tmp_path / "a.npy"
    np.save(files["npy"], np.arange(3))
    data = good.read_bytes()
    files["truncated"] = tmp_path / "truncated.npz"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["corrupt"] = tmp_path / "corrupt.npz"
    files["corrupt"].write_bytes(data[:30] + bytes(len(data) - 60) + data[-30:])
    files["objects"] = tmp_path / "objects.npz"
    np.savez(files["objects"], x=np.array([None], dtype=object))
    return files


def test_every_unusable_checkpoint_is_one_error_line(tmp_path, corpus):
    good = tmp_path / "good.npz"
    assert run("gpt", "--steps", "1", "--corpus", corpus, "--checkpoint", good, *TINY).returncode == 0
    problems = {"heads do not divide": "cannot build a GPT", "zero layers": "positive integer",
                "vocab too short": "vocabulary", "vocab repeated": "vocabulary", "vocab not characters": "vocabulary",
                "no config": "lacks config.d_model", "single tensor": "single tensor", "folder": "directory",
                "empty": "empty", "text": "not an .npz", "npy": ".npy", "truncated": "truncated or corrupt",
                "corrupt": "corrupt", "objects": "pickled"}
    for name, path in _bad_checkpoints(tmp_path, good).items():
        for command in (["sample", path], ["gpt", "--resume", path, "--corpus", corpus, "--steps", "2"]):
            result = run(*command)
            one_line_error(result, str(path), problems[name])
            if name != "objects":
                assert "pickle" not in result.stderr, (name, result.stderr)
    one_line_error(run("sample", tmp_path / "missing.npz"), "no checkpoint")


def _parameters(path):
    model, _, _ = load_checkpoint(str(path))
    return {k: v.data for k, v in model.state_dict().items()}


def test_resumed_run_equals_the_uninterrupted_run(tmp_path, corpus):
    straight, half = tmp_path / "straight.npz", tmp_path / "half.npz"
    common = ["--corpus", corpus, *TINY, "--warmup", "4"]
    assert run("gpt", "--steps", "8", "--checkpoint", straight, *common).returncode == 0
    assert run("gpt", "--steps", "3", "--checkpoint", half, *common).returncode == 0
    resumed = run("gpt", "--resume", half, "--steps", "8", *common)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stdout and "at step 3" in resumed.stdout
    a, b = _parameters(straight), _parameters(half)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert int(mg.load(half)["train.step"].item()) == 8
    one_line_error(run("gpt", "--resume", half, "--steps", "8", *common), "at step 8 already")
    one_line_error(run("gpt", "--resume", half, "--steps", "9", *common[:-4], "--d-model", "32"), "d_model=16")


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, corpus):
    path = tmp_path / "interrupted.npz"
    process = subprocess.Popen([sys.executable, "-m", "minigrad", "gpt", "--steps", "100000", "--corpus", str(corpus),
                                "--checkpoint", str(path), *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    for line in process.stdout:  # wait until training runs
        if line.startswith("step 3 "):
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err
    assert "checkpoint saved" in err and "--resume" in err
    step = int(mg.load(path)["train.step"].item())
    assert step >= 3
    result = run("gpt", "--resume", path, "--steps", step + 2, "--corpus", corpus, *TINY)
    assert result.returncode == 0, result.stderr
    assert f"done: {step + 2} steps" in result.stdout


def test_help_shows_defaults():
    result = run("gpt", "--help")
    assert result.returncode == 0
    assert "(default: 0.003)" in result.stdout and "(default: 50)" in result.stdout
    assert "(default: None)" not in result.stdout
