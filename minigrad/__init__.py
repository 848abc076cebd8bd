"""minigrad: a tiny reverse-mode autograd engine on NumPy, with a PyTorch-shaped API.

    import minigrad as mg
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()     # x.grad == [2., 4.]
"""
import importlib

from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import backend, get_backend, set_backend
from .creation import (arange, empty, eye, from_numpy, full, linspace, ones, ones_like, rand, randint, randn,
                       tensor, zeros, zeros_like)
from .gradcheck import GradcheckError, gradcheck, max_relative_error
from .random import manual_seed
from .serialization import load, save
from .amp.autocast import autocast
from .dtypes import bfloat16, bool_, float16, float32, float64, int8, int16, int32, int64, uint8
from .tensor import Tensor, cat, matmul, stack, where

bool = bool_  # noqa: A001 - `mg.bool` like `torch.bool`
float = float32  # noqa: A001
double = float64
half = float16
long = int64
int = int32  # noqa: A001

__version__ = "0.1.0"


def _method(name):
    def function(input, *args, **kwargs):
        return getattr(input, name)(*args, **kwargs)
    function.__name__ = name
    function.__doc__ = f"mg.{name}(t, ...) is t.{name}(...)."
    return function


for _name in ("exp", "log", "sqrt", "tanh", "sigmoid", "relu", "abs", "clamp", "sum", "mean", "max", "min",
              "amax", "amin", "argmax", "argmin", "var", "std", "softmax", "log_softmax", "reshape",
              "transpose", "permute", "unsqueeze", "squeeze", "flatten", "detach"):
    globals()[_name] = _method(_name)
del _name

_SUBMODULES = ("nn", "optim", "kernels", "cuda", "text", "amp", "utils", "quantization")


def __getattr__(name):
    """`mg.nn`, `mg.optim`, … are imported on first use, so `import minigrad` stays fast."""
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'minigrad' has no attribute {name!r}")
