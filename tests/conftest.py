"""Fixtures shared by the test files."""
import shutil

import pytest

from minigrad.kernels import c_backend


@pytest.fixture
def c_kernels_built():
    """The C kernels, loaded. Skip only where no C compiler exists; with a compiler, unbuilt kernels fail."""
    try:
        return c_backend.load()
    except RuntimeError as exc:
        if shutil.which("cc") or shutil.which("gcc") or shutil.which("clang"):
            raise
        pytest.skip(f"no C compiler on this machine, so no C kernels: {exc}")
