"""`python -m minigrad.lessons student OUTDIR`: solution cells stubbed, checks kept, valid notebooks out."""
import json
import subprocess
import sys
from pathlib import Path

import nbclient
import nbformat
import pytest

from minigrad import lessons

REPO = Path(__file__).resolve().parent.parent
LESSONS = sorted((REPO / "lessons").glob("[0-9][0-9]_*.ipynb"))


def _solution(cell):
    cell.metadata["tags"] = ["solution"]
    return cell


def _toy_notebook():
    v4 = nbformat.v4
    figure = v4.new_output("display_data", data={"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"})
    cells = [
        v4.new_markdown_cell("# 99 Toy lesson\nGoal."),
        v4.new_code_cell("x = 2", execution_count=1, outputs=[figure]),
        v4.new_markdown_cell("## Exercise 1\nSquare x."),
        _solution(v4.new_code_cell("answer = x ** 2", execution_count=2,
                                   outputs=[v4.new_output("stream", name="stdout", text="4\n")])),
        v4.new_code_cell("assert answer == 4, f'expected 4, got {answer}'\nprint('correct')", execution_count=3,
                         outputs=[v4.new_output("stream", name="stdout", text="correct\n")]),
        _solution(v4.new_markdown_cell("Because the square of 2 is 4.")),
    ]
    return v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                  "language": "python"}})


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "lessons" / "99_toy.ipynb"
    path.parent.mkdir()
    nbformat.write(_toy_notebook(), path)
    return path


def test_student_copy_stubs_solutions_and_keeps_checks(toy, tmp_path):
    out = tmp_path / "class"
    assert lessons.main(["--lessons-dir", str(toy.parent), "student", str(out)]) == 0
    copy = nbformat.read(out / toy.name, as_version=4)
    nbformat.validate(copy)
    original = nbformat.read(toy, as_version=4)
    assert len(copy.cells) == len(original.cells)
    stubbed = [i for i, cell in enumerate(copy.cells) if "solution" in cell.metadata.get("tags", [])]
    assert stubbed == [3, 5]
    assert "answer = x ** 2" not in copy.cells[3].source
    assert "raise NotImplementedError" in copy.cells[3].source
    assert copy.cells[5].source == lessons.MARKDOWN_STUB
    assert copy.cells[4].source == original.cells[4].source, "the auto-check cell must be kept verbatim"
    assert copy.cells[1].outputs == original.cells[1].outputs, "outputs before the exercises stay"
    assert copy.cells[3].outputs == [] and copy.cells[4].outputs == [], "outputs from the solutions are cleared"
    assert copy.cells[4].execution_count is None


def test_stub_raises_until_the_student_writes_code():
    with pytest.raises(NotImplementedError):
        exec(compile(lessons.CODE_STUB, "<stub>", "exec"), {})


def test_command_line_runs_as_a_module(toy, tmp_path):
    out = tmp_path / "copies"
    result = subprocess.run([sys.executable, "-m", "minigrad.lessons", "student", str(out), str(toy)],
                            capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr
    assert (out / toy.name).is_file()
    listing = subprocess.run([sys.executable, "-m", "minigrad.lessons", "--lessons-dir", str(toy.parent), "list"],
                             capture_output=True, text=True, cwd=REPO, timeout=60)
    assert listing.returncode == 0, listing.stderr
    assert "99_toy" in listing.stdout and "99 Toy lesson" in listing.stdout and "(2 exercise" in listing.stdout


def test_refuses_to_overwrite_the_lessons(toy, capsys):
    assert lessons.main(["student", str(toy.parent), str(toy)]) == 2
    assert "refusing" in capsys.readouterr().err
    assert "answer = x ** 2" in toy.read_text(), "the lesson must be untouched"


def test_missing_notebook_is_a_clear_error(tmp_path, capsys):
    assert lessons.main(["student", str(tmp_path / "out"), str(tmp_path / "nope.ipynb")]) == 2
    assert "nope.ipynb does not exist" in capsys.readouterr().err


def test_import_minigrad_loads_no_lesson_tooling():
    code = ("import sys, minigrad; bad = [m for m in ('minigrad.lessons', 'matplotlib', 'nbformat', 'jupyter_client')"
            " if m in sys.modules]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_has_a_valid_student_copy(path, tmp_path):
    original = json.loads(path.read_text(encoding="utf-8"))
    (target,) = lessons.write_student_copies(tmp_path, [path])
    copy = nbformat.read(target, as_version=4)
    nbformat.validate(copy)
    solutions = [i for i, cell in enumerate(original["cells"]) if lessons.is_solution(cell)]
    assert solutions, f"{path.name} has no cell tagged 'solution' (template item 8: exercises with solutions)"
    for i, (before, after) in enumerate(zip(original["cells"], copy.cells)):
        if i in solutions:
            assert after.source in (lessons.CODE_STUB, lessons.MARKDOWN_STUB)
        else:
            assert after.source == lessons._source(before), f"{path.name} cell {i} changed in the student copy"
    for i in solutions:
        assert lessons.LESSON_METADATA not in copy.cells[i].metadata, \
            f"{path.name} cell {i}: the planted wrong answer must not reach the student copy"
        if original["cells"][i]["cell_type"] == "code":
            check = copy.cells[i + 1] if i + 1 < len(copy.cells) else None
            assert check is not None and check.cell_type == "code", \
                f"{path.name}: the cell after the solution in cell {i} should be its auto-check"


@pytest.mark.slow
def test_student_copy_runs_until_the_first_exercise(toy, tmp_path):
    (copy,) = lessons.write_student_copies(tmp_path / "class", [toy])
    notebook = nbformat.read(copy, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=60, kernel_name="python3", allow_errors=True)
    client.execute()
    errors = [(i, out.ename) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              for out in cell.outputs if out.output_type == "error"]
    assert errors[0] == (3, "NotImplementedError"), f"expected the stub in cell 3 to stop the student, got {errors}"
    assert notebook.cells[1].execution_count is not None, "the lesson part before the exercises must run"


def test_open_command_starts_jupyterlab_on_the_lessons(tmp_path):
    from minigrad.lessons import DEFAULT_LESSONS_DIR, jupyter_command
    command = jupyter_command(DEFAULT_LESSONS_DIR, ["--no-browser"], as_root=True)
    assert command[1:4] == ["-m", "jupyterlab", str(DEFAULT_LESSONS_DIR)]
    assert command[-2:] == ["--allow-root", "--no-browser"]
    assert "--allow-root" not in jupyter_command(DEFAULT_LESSONS_DIR, as_root=False)
    assert (DEFAULT_LESSONS_DIR / "00_autograd.ipynb").exists()


def test_open_student_writes_copies_once_and_keeps_the_students_work(toy, tmp_path):
    folder = tmp_path / "mine"
    (written,) = lessons.prepare_student_folder(folder, toy.parent)
    assert "raise NotImplementedError" in written.read_text()
    written.write_text("my work")
    assert lessons.prepare_student_folder(folder, toy.parent) == []
    assert written.read_text() == "my work", "opening again must not overwrite the student's copy"
    with pytest.raises(ValueError, match="refusing"):
        lessons.prepare_student_folder(toy.parent, toy.parent)


def test_answer_digest_hides_the_answer_and_accepts_equal_forms(capsys):
    digest = lessons.answer_digest(0.7)
    assert "0.7" not in digest and len(digest) == 16
    for same in (0.7, 0.70001, 7e-1, np_float(0.7)):
        lessons.check_answer(same, digest)
    assert capsys.readouterr().out.count("correct") == 4
    for wrong in (0.71, 7, -0.7, "b"):
        with pytest.raises(AssertionError, match="not right"):
            lessons.check_answer(wrong, digest)
    lessons.check_answer(" B", lessons.answer_digest("b"))
    lessons.check_answer((1, "x"), lessons.answer_digest((1.0, "X")))
    with pytest.raises(AssertionError, match="no answer"):
        lessons.check_answer(..., digest)
    with pytest.raises(TypeError, match="answer must be"):
        lessons.answer_digest(object())


def np_float(value):
    import numpy as np
    return np.float32(value)


def test_numpy_op_turns_a_hand_written_backward_into_a_gradchecked_op():
    import numpy as np
    import minigrad as mg

    def forward(x, w):
        out = np.tanh(x @ w)
        return out, (x, w, out)

    def backward(g, cache):
        x, w, out = cache
        da = g * (1 - out ** 2)
        return da @ w.T, x.T @ da

    def backward_wrong(g, cache):
        x, w, out = cache
        return g @ w.T, x.T @ g  # forgets tanh's derivative

    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    w = mg.tensor(np.random.default_rng(1).standard_normal((4, 2)), requires_grad=True)
    assert mg.gradcheck(lessons.numpy_op(forward, backward), (x, w))
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(lessons.numpy_op(forward, backward_wrong), (x, w))
    with pytest.raises(ValueError, match="gradient of input 1 has shape"):
        lessons.numpy_op(forward, lambda g, c: (g @ c[1].T, g))(x, w).sum().backward()
