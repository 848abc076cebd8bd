"""The package as a user installs it: a wheel, in a fresh virtual environment, run from another folder.

`pip wheel .` builds it (without build isolation: setuptools and cffi are already here), a venv with
--system-site-packages (for NumPy, Jupyter, …) installs it, and from a temporary folder, without the
repository on the path, backend "c" and "cuda-sim" must compute what the reference computes and
`python -m minigrad.lessons list / student / open` must find the lessons the wheel carries.
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

CHECK = """
import json, pathlib, sys
import numpy as np
import minigrad as mg
from minigrad import kernels, resources
package = pathlib.Path(mg.__file__).resolve().parent
rng = np.random.default_rng(0)
a, b = rng.standard_normal((33, 17)).astype(np.float32), rng.standard_normal((17, 9)).astype(np.float32)
q, k, v = (rng.standard_normal((2, 9, 8)).astype(np.float32) for _ in range(3))
reference = kernels.attention(q, k, v, is_causal=True, backend="numpy")
print(json.dumps({
    "package": str(package),
    "kernel_dir": str(resources.kernel_dir()),
    "lessons_dir": str(resources.lessons_dir()),
    "default": mg.get_backend(),
    "c_matmul": float(np.abs(kernels.matmul(a, b, backend="c") - a @ b).max()),
    "sim_attention": float(np.abs(kernels.attention(q, k, v, is_causal=True, backend="cuda-sim") - reference).max()),
    "sim_matmul": float(np.abs(kernels.matmul(a, b, backend="cuda-sim") - a @ b).max()),
}))
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def venv(tmp_path_factory, c_kernels_built_once):
    """(python of a fresh venv with the wheel installed, a working folder outside the repository, its env)."""
    tmp = tmp_path_factory.mktemp("wheel")
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "MINIGRAD_CKERNELS_DIR")}
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp / "dist"), "-q"], check=True, cwd=tmp, env=env, timeout=1200)
    wheel, = (tmp / "dist").glob("minigrad-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp / "venv")], check=True,
                   timeout=300)
    python = tmp / "venv" / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   cwd=tmp, env=env, timeout=600)
    work = tmp / "elsewhere"
    work.mkdir()
    return python, work, env


@pytest.fixture(scope="module")
def c_kernels_built_once():
    if not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler: the wheel would carry no C kernels to test")


def run(venv, *args, timeout=300):
    python, work, env = venv
    result = subprocess.run([str(python), *args], cwd=work, env=env, capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_wheel_runs_backend_c_and_cuda_sim_from_its_own_files(venv):
    result = json.loads(run(venv, "-c", CHECK).strip().splitlines()[-1])
    package = Path(result["package"])
    assert "site-packages" in package.parts and ROOT not in package.parents, result
    assert Path(result["kernel_dir"]) == package / "_data" / "kernels"
    assert Path(result["lessons_dir"]) == package / "_data" / "lessons"
    assert result["default"] == "c"
    assert result["c_matmul"] < 1e-5 and result["sim_matmul"] < 1e-4 and result["sim_attention"] < 1e-5, result


def test_the_wheel_lists_and_copies_the_lessons(venv):
    listing = run(venv, "-m", "minigrad.lessons", "list")
    assert "00_autograd" in listing and "07_flash_attention" in listing
    out = venv[1] / "students"
    run(venv, "-m", "minigrad.lessons", "student", str(out))
    copies = sorted(p.name for p in out.glob("*.ipynb"))
    assert "00_autograd.ipynb" in copies and len(copies) >= 10


def test_the_wheel_opens_jupyterlab_on_the_lessons(venv):
    pytest.importorskip("jupyterlab", reason="`lessons open` starts JupyterLab, which is not installed")
    python, work, env = venv
    port = free_port()
    server = subprocess.Popen([str(python), "-m", "minigrad.lessons", "open", "--no-browser", f"--port={port}",
                               "--ServerApp.token=", "--ServerApp.password="], cwd=work, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)  # its own process group: JupyterLab is its child
    try:
        deadline, contents = time.monotonic() + 120, None
        while time.monotonic() < deadline and contents is None:
            if server.poll() is not None:
                pytest.fail(f"JupyterLab exited with {server.returncode}: {server.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/contents/", timeout=5) as response:
                    contents = json.load(response)
            except OSError:
                time.sleep(1)
        assert contents is not None, "JupyterLab did not answer within 120 s"
        names = {item["name"] for item in contents["content"]}
        assert "00_autograd.ipynb" in names and "README.md" in names, names
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
