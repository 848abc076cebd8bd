"""`python -m minigrad.lessons`: options after the subcommand, and one-line errors for bad OUTDIR/notebooks."""
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "minigrad.lessons", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def one_line_error(result, *needles):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_lessons_dir_before_or_after_the_subcommand(tmp_path):
    lessons = REPO / "lessons"
    before = run("--lessons-dir", lessons, "list")
    after = run("list", "--lessons-dir", lessons)
    assert before.returncode == after.returncode == 0, (before.stderr, after.stderr)
    assert before.stdout == after.stdout and "00_autograd" in after.stdout
    result = run("student", tmp_path / "out", "--lessons-dir", lessons)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").glob("*.ipynb")) == sorted(p.name for p in lessons.glob("[0-9][0-9]_*.ipynb"))


def test_existing_file_as_outdir(tmp_path):
    outdir = tmp_path / "taken"
    outdir.write_text("a file, not a folder")
    one_line_error(run("student", outdir), str(outdir), "existing file")


@pytest.mark.parametrize("content, problem", [("not json at all", "not valid JSON"),
                                              ('{"no": "cells"}', "no list of 'cells'"),
                                              (b"\xff\xfe\x00binary", "not UTF-8")])
def test_notebook_that_is_not_a_notebook(tmp_path, content, problem):
    bad = tmp_path / "99_bad.ipynb"
    bad.write_bytes(content if isinstance(content, bytes) else content.encode())
    one_line_error(run("student", tmp_path / "out", bad), str(bad), problem)
    one_line_error(run("list", "--lessons-dir", tmp_path), str(bad), problem)


def test_missing_lessons_dir():
    one_line_error(run("list", "--lessons-dir", "/no/such/dir"), "/no/such/dir")
