"""Compiles the C kernels during `pip install .` / `pip install -e .` (metadata is in pyproject.toml).

build.py describes the extension (cffi_modules). Compiling it is optional:
without a working C compiler the install still succeeds, with a warning, and
backend "c" later says how to get a compiler and run `python build.py`.
"""
import sys

from setuptools import setup
from setuptools.command.build_ext import build_ext

WARNING = """
WARNING: minigrad's C kernels were not compiled ({error}).
minigrad is installed and runs everything on NumPy (backend "numpy"). For backend "c", install a
C compiler (Debian/Ubuntu: sudo apt install build-essential; macOS: xcode-select
--install) and run `python build.py` in the repository root.
"""


def announce(message):
    """Print where the user sees it: pip hides a successful build's output unless run with -v, so the
    warning also goes straight to the terminal when there is one."""
    print(message, file=sys.stderr)
    try:
        with open("/dev/tty", "w") as terminal:
            terminal.write(message)
    except OSError:  # no terminal (CI, Windows): stderr is all there is
        pass


class OptionalBuildExt(build_ext):
    """build_ext that turns a failed compile into a warning instead of a failed install."""

    failure = None

    def run(self):
        try:
            super().run()
        except Exception as exc:  # no compiler, missing headers, bad flags: all leave a usable package
            self.warn_once(exc)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:
            self.warn_once(exc)

    def copy_extensions_to_source(self):
        if self.failure is None:  # an editable install copies the built module; there is none to copy
            super().copy_extensions_to_source()

    def warn_once(self, exc):
        """The first failure names the cause; what fails after it (copying a module never built) would not."""
        if self.failure is None:
            self.failure = exc
            announce(WARNING.format(error=f"{type(exc).__name__}: {exc}"))


setup(cffi_modules=["build.py:setup_ffibuilder"], cmdclass={"build_ext": OptionalBuildExt})
