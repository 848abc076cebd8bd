"""Compiles the C kernels during `pip install .` / `pip install -e .` (metadata is in pyproject.toml).

build.py describes the extension (cffi_modules). Compiling it is optional:
without a working C compiler the install still succeeds, with a warning, and
backend "c" later says how to get a compiler and run `python build.py`.
"""
from setuptools import setup
from setuptools.command.build_ext import build_ext

WARNING = """
WARNING: minigrad's C kernels were not compiled ({error}).
minigrad is installed and works with backend "numpy". For backend "c", install a
C compiler (Debian/Ubuntu: sudo apt install build-essential; macOS: xcode-select
--install) and run `python build.py` in the repository root.
"""


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, bad flags: all leave a usable package
            print(WARNING.format(error=f"{type(exc).__name__}: {exc}"))

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(WARNING.format(error=f"{type(exc).__name__}: {exc}"))


setup(cffi_modules=["build.py:setup_ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
