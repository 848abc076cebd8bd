"""Every lesson follows the template of lessons/README.md ("Writing a lesson") and is committed as a clean run.

These checks read the committed JSON only: a lesson must be stored with the outputs of a clean run, so that it
reads well on a code host without running it. Running the lessons (in quick mode, with every exercise's check tried
on the stub, the planted wrong answer and the solution) is tests/test_lessons_exercises.py.
"""
import json
import re
from pathlib import Path

import pytest

from minigrad import lessons
from lesson_list import LESSONS, LESSONS_DIR, lesson_params



def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell):
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_is_committed_as_a_clean_run(path):
    code = [(i, cell) for i, cell in enumerate(_cells(path)) if cell["cell_type"] == "code" and _source(cell).strip()]
    unrun = [i for i, cell in code if cell["execution_count"] is None]
    assert not unrun, f"{path.name}: code cells {unrun} have not been run; commit the notebook after a full run"
    counts = [cell["execution_count"] for _, cell in code]
    assert counts == list(range(1, len(code) + 1)), \
        f"{path.name}: execution counts {counts} are not 1, 2, 3, …: commit the outputs of one clean top-to-bottom run"
    errors = [i for i, cell in code if any(out["output_type"] == "error" for out in cell["outputs"])]
    assert not errors, f"{path.name}: cells {errors} hold error outputs"
    figures = [i for i, cell in code for out in cell["outputs"] if "image/png" in out.get("data", {})]
    assert figures, f"{path.name}: no figure in the outputs (template item 6: at least one matplotlib figure)"


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_checks_gradients_with_the_library(path):
    text = "\n".join(_source(cell) for cell in _cells(path) if cell["cell_type"] == "code")
    assert "import minigrad" in text, f"{path.name} does not use minigrad"
    assert "gradcheck" in text or "max_relative_error" in text, \
        f"{path.name}: template item 5 asks for a live mg.gradcheck in float64"


DOWNLOADS = ("fetch_", "urlopen", "urlretrieve", "requests.get", "wget ", "curl ", "pip install")


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_downloads_nothing(path):
    code = "\n".join(_source(cell) for cell in _cells(path) if cell["cell_type"] == "code")
    found = [word for word in DOWNLOADS if word in code]
    assert not found, (f"{path.name} uses {found}: lessons take data only from installed packages "
                       "(scikit-learn's load_digits, load_diabetes, load_breast_cancer)")


def _headings(path):
    """The '## ' section headings of a lesson, in order, with the index of their cell."""
    return [(i, line[3:].strip()) for i, cell in enumerate(_cells(path)) if cell["cell_type"] == "markdown"
            for line in _source(cell).splitlines() if line.startswith("## ")]


@pytest.mark.parametrize("path", lesson_params())
def test_lesson_title_and_goal_follow_the_template(path):
    first = _source(_cells(path)[0])
    title = first.splitlines()[0] if first else ""
    assert re.fullmatch(r"# \d\d · \S.*", title), f"{path.name}: the first line should be '# NN · Title', got {title!r}"
    assert title[2:4] == path.name[:2], f"{path.name}: the title's number {title[2:4]} is not the file's {path.name[:2]}"
    assert "**Goal.**" in first, f"{path.name}: the title cell should state the lesson's **Goal.**"


@pytest.mark.parametrize("path", lesson_params())
def test_lesson_sections_end_with_exercises_summary_questionnaire(path):
    headings = _headings(path)
    def first(word):
        found = [k for k, (_, text) in enumerate(headings) if word.lower() in text.lower()]
        assert found, f"{path.name}: no '## …{word}…' section (sections: {[h for _, h in headings]})"
        return found[0]
    assert re.match(r"1\. The formula", headings[0][1]), f"{path.name}: the first section should be '## 1. The formula…'"
    by_hand, exercises, summary, questionnaire = first("by hand"), first("Exercises"), first("Summary"), first("Questionnaire")
    assert by_hand < exercises < summary < questionnaire == len(headings) - 1, \
        f"{path.name}: the sections must run formula, …, gradient by hand, …, Exercises, Summary, Questionnaire: " \
        f"{[h for _, h in headings]}"
    numbers = [int(m.group(1)) for _, h in headings for m in [re.match(r"(\d+)\. ", h)] if m]
    assert numbers == list(range(1, len(headings) + 1)), f"{path.name}: sections are numbered 1, 2, 3, …: {numbers}"


@pytest.mark.parametrize("path", lesson_params())
def test_questionnaire_is_auto_checked(path):
    cells = _cells(path)
    start = _headings(path)[-1][0]
    questions = [i for i in range(start, len(cells)) if lessons.is_solution(cells[i])]
    checked = [i for i in questions if cells[i]["cell_type"] == "code"]
    assert len(questions) >= 3, f"{path.name}: the questionnaire should ask at least 3 questions, found {len(questions)}"
    assert checked, f"{path.name}: at least one question of the questionnaire should be auto-checked (a code answer)"


PROGRESS_RESIDUE = re.compile(r"\r|\d+%\|| it/s|s/it\]")


@pytest.mark.parametrize("path", lesson_params())
def test_committed_outputs_hold_no_progress_bars(path):
    for i, cell in enumerate(_cells(path)):
        for out in cell.get("outputs", []):
            text = "".join(out.get("text", "")) if out["output_type"] == "stream" else ""
            assert not PROGRESS_RESIDUE.search(text), \
                f"{path.name} cell {i}: progress-bar residue in the output ({text[:60]!r}); print plain lines instead"
