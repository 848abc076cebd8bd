"""build.py, and the C kernels rebuilt with AddressSanitizer + UBSan running the kernel tests clean.

build.py --sanitize compiles the extension with -fsanitize=address,undefined
(and -fno-sanitize-recover, so any finding aborts) into a temporary
directory; a subprocess then runs the C kernels' tests against that
build (MINIGRAD_CKERNELS_DIR) with the ASan runtime preloaded into Python.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import importlib.util

import pytest

ROOT = Path(__file__).resolve().parents[1]
C_KERNEL_TESTS = ("test_kernels_matmul.py", "test_kernels_fuzz.py", "test_threadpool.py", "test_kernels_attention.py",
                  "test_gelu_kernel.py", "test_quantization.py", "test_kernels_fused.py", "test_kernels_isa.py",
                  "test_precision.py", "test_kernels_lstm.py", "test_kernels_conv.py")


def c_compiler():
    """The compiler Python builds extensions with, if it is installed."""
    compiler = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler)


def asan_runtime(compiler):
    """Path of the compiler's shared ASan runtime (what must be preloaded into an uninstrumented python)."""
    for name in ("libasan.so", "libclang_rt.asan-x86_64.so"):
        result = subprocess.run([compiler, f"-print-file-name={name}"], capture_output=True, text=True)
        path = result.stdout.strip()
        if result.returncode == 0 and os.path.isabs(path) and os.path.exists(path):
            return path
    return None


def run_kernel_tests_sanitized(build_dir, test_files, cflags=None):
    """Build the sanitized extension into build_dir (with MINIGRAD_CFLAGS=cflags if given), then run
    test_files against it in a subprocess; assert a clean run."""
    compiler = c_compiler()
    if compiler is None:
        pytest.skip("no C compiler on this machine: the C kernels (and their sanitizer build) need one")
    runtime = asan_runtime(compiler)
    assert runtime, f"{compiler} has no shared AddressSanitizer runtime (libasan); install it (Debian: libasan8)"

    build_env = dict(os.environ)
    if cflags is not None:
        build_env["MINIGRAD_CFLAGS"] = cflags
    build = subprocess.run([sys.executable, str(ROOT / "build.py"), "--sanitize", str(build_dir)],
                           capture_output=True, text=True, timeout=600, cwd=ROOT, env=build_env)
    assert build.returncode == 0, f"sanitizer build failed:\n{build.stdout[-3000:]}\n{build.stderr[-3000:]}"

    tests = [f"tests/{name}" for name in test_files if (ROOT / "tests" / name).exists()]
    env = dict(os.environ,
               MINIGRAD_CKERNELS_DIR=str(build_dir),
               LD_PRELOAD=runtime,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",  # CPython's own allocations are not leaks
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # --capture=sys: a sanitizer report goes to file descriptor 2, which we then see even if the process aborts.
    run = subprocess.run([sys.executable, "-m", "pytest", *tests, "-q", "-x", "--capture=sys",
                          "-p", "no:cacheprovider"],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT, env=env)
    output = run.stdout + run.stderr
    for finding in ("ERROR: AddressSanitizer", "runtime error:"):
        assert finding not in output, f"sanitizer finding:\n{output[-6000:]}"
    assert run.returncode == 0, f"kernel tests failed under the sanitizers (exit {run.returncode}):\n{output[-6000:]}"
    assert " passed" in output
    return env


@pytest.mark.slow
def test_kernel_tests_run_clean_under_asan_and_ubsan(tmp_path):
    run_kernel_tests_sanitized(tmp_path, C_KERNEL_TESTS)


def import_build_script():
    """build.py as a module (importing it compiles nothing)."""
    spec = importlib.util.spec_from_file_location("minigrad_build_script", ROOT / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_compiles_every_c_file_with_its_header():
    build = import_build_script()
    pairs = build.kernel_files()
    assert ("kernels/matmul.c", "kernels/matmul.h") in pairs
    assert {source for source, _ in pairs} == {f"kernels/{p.name}" for p in (ROOT / "kernels").glob("*.c")}


def test_build_flags_from_the_environment(monkeypatch):
    build = import_build_script()
    monkeypatch.setenv("MINIGRAD_CFLAGS", "-O1 -fopenmp -DEXAMPLE=1")
    assert build.compile_flags() == (["-O1", "-fopenmp", "-DEXAMPLE=1"], ["-fopenmp"])
    cflags, ldflags = build.compile_flags(sanitize=True)
    assert "-O1" in cflags and "-fsanitize=address,undefined" in cflags and "-fopenmp" in cflags
    assert "-fsanitize=address,undefined" in ldflags and "-fopenmp" in ldflags


def test_build_without_a_compiler_says_what_is_missing(tmp_path):
    env = dict(os.environ, CC=str(tmp_path / "no-such-cc"))
    env.pop("MINIGRAD_CFLAGS", None)
    result = subprocess.run([sys.executable, str(ROOT / "build.py"), "--sanitize", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode != 0
    assert "C compiler" in result.stderr and "no-such-cc" in result.stderr
    assert not (tmp_path / "out" / "minigrad").exists()
