"""The lessons in a real browser: JupyterLab, driven through Debian's Chromium by Playwright.

A learner opens the lessons in JupyterLab and presses "Run all". This test does the same
for lesson 00 and for its student copy (`python -m minigrad.lessons student OUT`): it
starts JupyterLab on a temporary folder (127.0.0.1, a free port, no token) holding a
copy of the lesson and the student copy, opens each in headless Chromium, runs all
cells, and reads what the page shows:

- the lesson: no cell has an error output, the math is rendered (MathJax elements),
  and at least one figure is drawn;
- the student copy: the exercises' code cells are stubs that raise NotImplementedError
  by design, and JupyterLab stops a "Run all" at the first error. So "no error output"
  means: no error in any cell before the first exercise stub, and the one error there
  is exactly that stub's NotImplementedError; the math and a figure render above it.

Screenshots of both pages are kept in a temporary folder named in any failure message.
Playwright cannot download its own browser here, so this uses /usr/bin/chromium
(`.ci/run` installs Debian's `chromium` when it is missing), with a fresh profile
(Playwright's launch gives each run a new --user-data-dir).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSON = "00_autograd.ipynb"
CHROMIUM = Path("/usr/bin/chromium")
# as root in a container: no sandbox, no GPU, and nothing that reaches out to the network
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
RUN_TIMEOUT_S = 150  # lesson 00 runs in well under a minute on two busy cores

pytestmark = pytest.mark.slow  # measured ~2 min at load average ~15 on 2 cores (lesson 00 alone: 36 s there)

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright's Python package drives the browser: "
                               "pip install -e '.[test]'")
pytest.importorskip("jupyterlab", reason="the lessons open in JupyterLab: pip install -e '.[lessons]'")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def shots():
    """Screenshots outlive the test run, so that a failure message can point at them."""
    return Path(tempfile.mkdtemp(prefix="minigrad-browser-"))


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """JupyterLab serving a folder with lesson 00 and its student copy; yields (base URL, folder)."""
    if not CHROMIUM.exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's package (`apt-get install -y chromium`), as "
                    ".ci/run does")
    folder = tmp_path_factory.mktemp("lessons")
    shutil.copy(ROOT / "lessons" / LESSON, folder / LESSON)  # a copy: the committed notebook stays untouched
    made = subprocess.run([sys.executable, "-m", "minigrad.lessons", "student", str(folder / "student"),
                           str(ROOT / "lessons" / LESSON)],
                          capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert made.returncode == 0, made.stderr
    # JupyterLab's own settings, fresh: no news pop-up over the screenshots
    labconfig = folder / ".jupyter-config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               JUPYTER_CONFIG_DIR=str(folder / ".jupyter-config"),
               JUPYTERLAB_WORKSPACES_DIR=str(folder / ".jupyter-workspaces"))  # no saved layout or user settings
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--ServerApp.root_dir={folder}", "--IdentityProvider.token=", "--ServerApp.password=",
         "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=True"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    server.kill()
                    pytest.fail(f"JupyterLab did not start on {url}:\n{server.stdout.read()[-3000:]}")
                time.sleep(0.5)
        yield url, folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def start_run(browser, url, path, name):
    """Open the notebook at `path` in a page of its own (and a JupyterLab workspace of its own), wait for its
    kernel, press "Run all"; returns the page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.goto(f"{url}/lab/workspaces/{name}/tree/{path}?reset", wait_until="domcontentloaded")
    page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel",
                           timeout=60_000)
    page.wait_for_function("window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=60_000)
    # the command's promise settles when the last cell has run, or when a "Run all" stops at an error
    page.evaluate("""() => {
        window.minigradRunAll = 'running';
        window.jupyterapp.commands.execute('notebook:run-all-cells').then(() => { window.minigradRunAll = 'done'; },
                                                                           () => { window.minigradRunAll = 'done'; });
    }""")
    return page


def finish_run(page, shots, name):
    """Wait until the page's "Run all" is done; returns (page, the cells as nbformat dicts, screenshot path)."""
    page.wait_for_function("window.minigradRunAll === 'done' "
                           "&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                           timeout=RUN_TIMEOUT_S * 1000, polling=500)
    page.wait_for_timeout(1000)  # outputs and math finish rendering
    shot = shots / f"{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    cells = json.loads(page.evaluate("""() => JSON.stringify(
        window.jupyterapp.shell.currentWidget.content.model.sharedModel.cells.map(c => c.toJSON()))"""))
    return page, cells, shot


@pytest.fixture(scope="module")
def runs(jupyterlab, browser, shots):
    """Lesson 00 and its student copy, run at the same time (two pages, two kernels): {name: (page, cells, shot)}."""
    url, _ = jupyterlab
    pages = {name: start_run(browser, url, path, name)
             for name, path in (("lesson-00", LESSON), ("student-00", f"student/{LESSON}"))}
    return {name: finish_run(page, shots, name) for name, page in pages.items()}


def first_error(cells):
    for i, cell in enumerate(cells):
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                return i, out
    return None, None


def rendered(page):
    """(MathJax elements in the page, figures in the outputs)."""
    math = page.locator("mjx-container").count()
    figures = page.locator(".jp-OutputArea-output img, .jp-RenderedImage img").count()
    return math, figures


def test_lesson_00_runs_clean_in_jupyterlab(runs, shots):
    page, cells, shot = runs["lesson-00"]
    where = f"(screenshots in {shots}; this page: {shot})"
    index, error = first_error(cells)
    assert error is None, f"cell {index} has an error output: {error['ename']}: {error['evalue']} {where}"
    code = [c for c in cells if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code), f"not every code cell ran {where}"
    math, figures = rendered(page)
    assert math > 10, f"only {math} MathJax elements: the math did not render {where}"
    assert figures >= 1, f"no figure in the outputs {where}"


def test_student_copy_runs_up_to_its_first_exercise_stub(runs, shots):
    page, cells, shot = runs["student-00"]
    where = f"(screenshots in {shots}; this page: {shot})"
    stubs = [i for i, c in enumerate(cells) if "solution" in c.get("metadata", {}).get("tags", [])
             and c["cell_type"] == "code"]
    assert stubs, f"the student copy has no exercise stub {where}"
    index, error = first_error(cells)
    assert error is not None, f"no cell raised: the first stub (cell {stubs[0]}) should raise NotImplementedError {where}"
    assert index == stubs[0] and error["ename"] == "NotImplementedError", \
        f"the first error is in cell {index} ({error['ename']}: {error['evalue']}), expected the stub's " \
        f"NotImplementedError in cell {stubs[0]} {where}"
    before = [c for c in cells[:stubs[0]] if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in before), f"a cell before the first exercise did not run {where}"
    math, figures = rendered(page)
    assert math > 10 and figures >= 1, f"{math} MathJax elements and {figures} figures above the exercises {where}"
