"""Ways to make a tensor: from data, filled with a constant, or drawn at random."""
import numpy as np

from .dtypes import as_dtype, float32, int64
from .random import generator
from .shapes import shape_args
from .tensor import Tensor


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """A new tensor from a list, a number or an array (floats default to float32)."""
    return Tensor(data, dtype=dtype, requires_grad=requires_grad, device=device)


def _filled(fill, size, dtype, requires_grad, device):
    return Tensor(fill(shape_args(size), dtype=as_dtype(dtype) or float32), requires_grad=requires_grad,
                  device=device)


def zeros(*size, dtype=None, requires_grad=False, device="cpu"):
    return _filled(np.zeros, size, dtype, requires_grad, device)


def ones(*size, dtype=None, requires_grad=False, device="cpu"):
    return _filled(np.ones, size, dtype, requires_grad, device)


def empty(*size, dtype=None, requires_grad=False, device="cpu"):
    return _filled(np.zeros, size, dtype, requires_grad, device)


def full(size, fill_value, dtype=None, requires_grad=False, device="cpu"):
    size = (size,) if isinstance(size, int) else tuple(size)
    if dtype is None:
        dtype = float32 if isinstance(fill_value, float) else int64 if isinstance(fill_value, int) else None
    return Tensor(np.full(size, fill_value, dtype=as_dtype(dtype)), requires_grad=requires_grad, device=device)


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(np.zeros(t.shape, dtype=as_dtype(dtype) or t.dtype), requires_grad=requires_grad, device=t.device)


def ones_like(t, dtype=None, requires_grad=False):
    return Tensor(np.ones(t.shape, dtype=as_dtype(dtype) or t.dtype), requires_grad=requires_grad, device=t.device)


def randn(*size, dtype=None, requires_grad=False, device="cpu"):
    """Standard normal draws N(0, 1) from minigrad's generator (reproducible with mg.manual_seed)."""
    dtype = as_dtype(dtype) or float32
    data = generator().standard_normal(shape_args(size)).astype(dtype)
    return Tensor(data, requires_grad=requires_grad, device=device)


def rand(*size, dtype=None, requires_grad=False, device="cpu"):
    """Uniform draws on [0, 1) from minigrad's generator."""
    dtype = as_dtype(dtype) or float32
    data = generator().random(shape_args(size)).astype(dtype)
    return Tensor(data, requires_grad=requires_grad, device=device)


def randint(low, high=None, size=(), dtype=None, device="cpu"):
    if high is None:
        low, high = 0, low
    data = generator().integers(low, high, size=tuple(size) if not isinstance(size, int) else (size,))
    return Tensor(data.astype(as_dtype(dtype) or int64), device=device)


def arange(start, end=None, step=1, dtype=None, requires_grad=False, device="cpu"):
    """start, start+step, … up to (not including) end; integers unless a bound or the step is a float."""
    if end is None:
        start, end = 0, start
    if dtype is None:
        dtype = float32 if any(isinstance(v, float) for v in (start, end, step)) else int64
    return Tensor(np.arange(start, end, step, dtype=as_dtype(dtype)), requires_grad=requires_grad, device=device)


def linspace(start, end, steps, dtype=None, device="cpu"):
    return Tensor(np.linspace(start, end, steps, dtype=as_dtype(dtype) or float32), device=device)


def eye(n, m=None, dtype=None, device="cpu"):
    return Tensor(np.eye(n, m, dtype=as_dtype(dtype) or float32), device=device)


def from_numpy(array):
    return Tensor(np.asarray(array))
