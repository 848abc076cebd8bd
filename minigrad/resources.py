"""Where minigrad's non-Python files are: the CUDA kernel sources and the lesson notebooks.

In a checkout (and an editable install) they are the repository's own top-level
`kernels/` and `lessons/`, the source of truth. A wheel carries copies of them
inside the package, in `minigrad/_data/` (setup.py's build_py puts them
there), so an install without the repository finds them too.
"""
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
CHECKOUT = PACKAGE.parent
PACKAGED = PACKAGE / "_data"


def _find(name, marker):
    """The directory `name` of the checkout if it holds `marker`, else the packaged copy."""
    for directory in (CHECKOUT / name, PACKAGED / name):
        if (directory / marker).exists():
            return directory
    raise FileNotFoundError(f"minigrad cannot find its {name}/ folder: neither {CHECKOUT / name} (a checkout) nor "
                            f"{PACKAGED / name} (an installed wheel) holds {marker}. Reinstall minigrad "
                            "(pip install .) from a complete checkout")


def kernel_dir():
    """The folder of the .cu / .cuh sources the CUDA backend compiles."""
    return _find("kernels", "cuda_common.cuh")


def lessons_dir():
    """The folder of the lesson notebooks (NN_name.ipynb) and their README."""
    return _find("lessons", "README.md")
