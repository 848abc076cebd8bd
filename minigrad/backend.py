"""Which kernel backend Tensor matmul and attention run on.

The backends ("numpy", "c", "cuda", "cuda-sim") all implement the same four
primitives in `minigrad.kernels`; this module only remembers which one the
Tensor code should call.
"""
import contextlib
import os

BACKENDS = ("numpy", "c", "cuda", "cuda-sim")

_current = "cuda-sim" if os.environ.get("MINIGRAD_CUDA_SIM") == "1" else "numpy"


def check_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def get_backend():
    """The backend that Tensor `@` and scaled-dot-product attention use now."""
    return _current


def set_backend(name):
    """Route Tensor matmul and attention through backend `name` from now on."""
    global _current
    _current = check_backend(name)


@contextlib.contextmanager
def backend(name):
    """`with mg.backend("c"):` runs the block on that backend, then restores the previous one."""
    global _current
    previous, _current = _current, check_backend(name)
    try:
        yield
    finally:
        _current = previous
