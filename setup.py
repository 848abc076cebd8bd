"""Compiles the C kernels during `pip install .` / `pip install -e .` (metadata is in pyproject.toml),
and puts into the package what it reads at run time from the repository's top-level folders.

build.py describes the extension (cffi_modules). Compiling it is optional:
without a working C compiler the install still succeeds, with a warning, and
backend "c" later says how to get a compiler and run `python build.py`.

kernels/ and lessons/ stay the source of truth; a built package (a wheel, or
`pip install .`) gets copies in minigrad/_data/: the .cu/.cuh sources that
backend "cuda"/"cuda-sim" compiles, and the lesson notebooks with whatever
else lessons/ holds. minigrad/resources.py finds either.
"""
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PACKAGED = {"kernels": ("*.cu", "*.cuh"), "lessons": ("*",)}  # folder -> the files the package carries

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


class BuildPyWithData(build_py):
    """build_py that also copies PACKAGED's files into minigrad/_data/<folder>/ of the built package."""

    def run(self):
        super().run()
        for folder, patterns in PACKAGED.items():
            target = Path(self.build_lib) / "minigrad" / "_data" / folder
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for pattern in patterns:
                for source in sorted((ROOT / folder).glob(pattern)):
                    if source.is_file() and not source.name.startswith("."):
                        shutil.copy2(source, target / source.name)


setup(cffi_modules=["build.py:setup_ffibuilder"],
      cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithData})
