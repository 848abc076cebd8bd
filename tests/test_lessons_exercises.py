"""Every lesson runs top to bottom, and every exercise's check rejects the stub and the planted wrong answer and
accepts the solution.

One Jupyter kernel per lesson, in quick mode (MINIGRAD_LESSON_QUICK=1), on the lesson's student copy (what
`python -m minigrad.lessons open --student` gives a learner): the cells before and between the exercises run once,
as a learner would run them, and must not fail. At each exercise (a code cell tagged `solution`, followed by its
check cell) the kernel runs, in this order,

    the stub (`raise NotImplementedError`)            then the check: it must fail,
    the planted wrong answer (cell metadata)          then the check: it must fail,
    the lesson's solution                             then the check: it must pass,

so later exercises and cells see the state the solution leaves. A written answer (a Markdown cell tagged
`solution`) has nothing to run. The lesson's wall time is measured: each lesson must stay under 180 s on the
project's 2-core machines.
"""
import json
import os
import time
from pathlib import Path

import pytest

from minigrad import lessons
from lesson_list import NOT_YET_ON_TEMPLATE, lesson_params

jupyter_client = pytest.importorskip("jupyter_client", reason="the lessons' exercises run in a Jupyter kernel")

REPO = Path(__file__).resolve().parent.parent
CELL_TIMEOUT = 180    # seconds: only catches a hung cell
LESSON_BUDGET = 180   # seconds for a whole lesson in quick mode, exercises included


def _source(cell):
    return lessons._source(cell)


class Kernel:
    """A Python kernel that runs code cells and reports whether they raised."""

    def __init__(self, cwd):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
        env["MINIGRAD_LESSON_QUICK"] = "1"
        # Lessons multiply small matrices, for which one BLAS thread is fastest; on 2 busy cores two OpenBLAS
        # threads wait for each other (a small GEMM was measured 15-200x slower).
        env["OPENBLAS_NUM_THREADS"] = "1"
        self.manager = jupyter_client.KernelManager(kernel_name="python3")
        self.manager.start_kernel(cwd=str(cwd), env=env)
        self.client = self.manager.client()
        self.client.start_channels()
        self.client.wait_for_ready(timeout=120)

    def run(self, code):
        """Run `code`; return None if it ran, or 'ErrorName: message' if it raised."""
        errors = []

        def keep_errors(message):
            if message["msg_type"] == "error":
                errors.append(f"{message['content']['ename']}: {message['content']['evalue']}")

        reply = self.client.execute_interactive(code, timeout=CELL_TIMEOUT, output_hook=keep_errors,
                                                allow_stdin=False)
        if reply["content"]["status"] == "ok":
            return None
        return errors[0] if errors else f"{reply['content'].get('ename')}: {reply['content'].get('evalue')}"

    def close(self):
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


def exercises(notebook):
    """(index of the solution cell, its source, the planted wrong answer) for each code exercise."""
    return [(i, _source(cell), lessons.planted_wrong_answer(cell))
            for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "code" and lessons.is_solution(cell)]


@pytest.mark.parametrize("path", lesson_params())
def test_every_exercise_has_a_planted_wrong_answer_and_a_check(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    found = exercises(notebook)
    assert found, f"{path.name}: no code exercise (a code cell tagged 'solution' followed by its check)"
    for i, solution, wrong in found:
        assert wrong and wrong.strip() != solution.strip(), \
            f"{path.name} cell {i}: put a plausible wrong solution in the cell metadata as \"minigrad\": {{\"wrong\": ...}}"
        check = notebook["cells"][i + 1] if i + 1 < len(notebook["cells"]) else None
        assert check is not None and check["cell_type"] == "code" and not lessons.is_solution(check), \
            f"{path.name} cell {i}: the cell after an exercise must be its check (a code cell)"


def run_exercises(path, variants=True):
    """Run the lesson at `path` as described above; return (problems found, number of exercises, seconds).
    variants=False runs only the solutions and their checks (a lesson not yet converted to the template)."""
    original = json.loads(Path(path).read_text(encoding="utf-8"))
    student = lessons.student_copy(original)["cells"]
    solutions = {i: (solution, wrong) for i, solution, wrong in exercises(original)}
    problems = []
    start = time.perf_counter()
    kernel = Kernel(Path(path).parent)
    try:
        skip_check = False
        for i, cell in enumerate(student):
            if cell["cell_type"] != "code" or skip_check:
                skip_check = False
                continue
            if i not in solutions:
                error = kernel.run(_source(cell))
                if error:
                    problems.append(f"cell {i} raised {error}")
                    break  # what follows depends on this cell
                continue
            check = _source(student[i + 1])
            solution, wrong = solutions[i]
            for name, code in (("the stub", _source(cell)), ("the planted wrong answer", wrong)) if variants else ():
                kernel.run(code or "")  # the stub raises by design; a wrong answer may or may not
                if kernel.run(check) is None:
                    problems.append(f"cell {i + 1}: the check passes on {name}")
            error = kernel.run(solution) or kernel.run(check)
            if error:
                problems.append(f"cell {i + 1}: the check fails on the solution: {error}")
            skip_check = True
    finally:
        kernel.close()
    return problems, len(solutions), time.perf_counter() - start


@pytest.mark.slow
@pytest.mark.parametrize("path", lesson_params(template=False))
def test_lesson_runs_and_every_check_tells_stub_and_wrong_from_solution(path):
    # a lesson not yet on the template has no planted wrong answers: it must still run, and its checks pass
    problems, count, seconds = run_exercises(path, variants=path.stem not in NOT_YET_ON_TEMPLATE)
    print(f"{path.stem}: {count} exercises, {seconds:.0f} s in quick mode")
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)
    assert seconds < LESSON_BUDGET, f"{path.name} took {seconds:.0f} s in quick mode, over the {LESSON_BUDGET} s budget"


def _toy(tmp_path, check, wrong):
    def cell(kind, text, **extra):
        return {"cell_type": kind, "metadata": extra.pop("metadata", {}), "source": text,
                **({"outputs": [], "execution_count": None} if kind == "code" else {})}
    cells = [cell("markdown", "# 99 · Toy"), cell("code", "x = 3"),
             cell("code", "answer = x ** 2", metadata={"tags": ["solution"], "minigrad": {"wrong": wrong}}),
             cell("code", check)]
    path = tmp_path / "99_toy.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    return path


def test_the_runner_reports_a_check_that_lets_a_wrong_answer_or_the_stub_through(tmp_path):
    good = "assert answer == 9"
    assert run_exercises(_toy(tmp_path, good, "answer = x * 2"))[:2] == ([], 1)
    problems, _, _ = run_exercises(_toy(tmp_path, good, "answer = 9.0"))
    assert problems == ["cell 3: the check passes on the planted wrong answer"]
    problems, _, _ = run_exercises(_toy(tmp_path, "answer = 9\nassert answer == 9", "answer = 1"))
    assert problems == ["cell 3: the check passes on the stub", "cell 3: the check passes on the planted wrong answer"]
    problems, _, _ = run_exercises(_toy(tmp_path, "assert answer == 10", "answer = 1"))
    assert problems == ["cell 3: the check fails on the solution: AssertionError: "]
