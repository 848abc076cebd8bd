"""Every lesson notebook runs top to bottom in a fresh Jupyter kernel, and is committed as a clean run.

The execution tests are slow (each lesson takes up to about a minute on 2 cores) but still run in CI.
The static checks read the committed JSON only: a lesson must be stored with the outputs of a clean run,
so that it reads well on a code host without running it.
"""
import json
import os
from pathlib import Path

import nbclient
import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
LESSONS_DIR = REPO / "lessons"
LESSONS = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT = 180  # seconds; a lesson is meant to take ~40 s in all, this only catches a hung cell


def _cells(path):
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _source(cell):
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


@pytest.mark.slow
@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs_clean_in_a_fresh_kernel(path, monkeypatch):
    # the kernel is a child process: it finds this checkout's minigrad even when it is not pip-installed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Lessons multiply small matrices, for which one BLAS thread is fastest; on 2 cores busy with the rest of
    # the suite, two OpenBLAS threads wait for each other and a small GEMM was measured 15-200x slower.
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    # Lessons that train for minutes (08_gpt) or sweep sizes (06, 07) take a shorter run here; the committed
    # outputs come from the full run.
    monkeypatch.setenv("MINIGRAD_LESSON_QUICK", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT, kernel_name="python3",
                                     resources={"metadata": {"path": str(LESSONS_DIR)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name} failed while running:\n{error}")
    errors = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
              and any(out.output_type == "error" for out in cell.outputs)]
    assert not errors, f"{path.name}: cells {errors} produced error outputs"


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
