"""Activation functions and the softmax family, with their modules.

relu, tanh, sigmoid, softmax and log_softmax are the Tensor's own ops; gelu is
defined here, its backward rule beside the forward; the erf it needs is in minigrad/special.py.
"""
import math

import numpy as np

from ..special import erf, normal_cdf  # noqa: F401  (F.erf, F.normal_cdf)
from ..tensor import Tensor, as_tensor
from .module import Module


def relu(x):
    """relu(x) = max(x, 0)."""
    return as_tensor(x).relu()


def tanh(x):
    """tanh(x) = (eˣ − e⁻ˣ) / (eˣ + e⁻ˣ)."""
    return as_tensor(x).tanh()


def sigmoid(x):
    """σ(x) = 1 / (1 + e⁻ˣ)."""
    return as_tensor(x).sigmoid()


def gelu(x, approximate="none"):
    """GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2)), PyTorch's default (exact) form.

    approximate="tanh": ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
    Backward: d/dx = Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π) (tanh form: its own derivative).
    """
    x = as_tensor(x)
    if approximate == "none":
        return _gelu_exact(x)
    if approximate == "tanh":
        return _gelu_tanh(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def _gelu_exact(x):
    xd = x.data
    compiled = _compiled_gelu(xd)
    if compiled is not None:
        return compiled(x)
    cdf = normal_cdf(xd)
    out = xd * cdf

    def backward(grad):
        pdf = np.exp(-0.5 * xd * xd) * (1 / math.sqrt(2 * math.pi))
        return (grad * (cdf + xd * pdf),)

    return Tensor.from_op(out, (x,), backward, "gelu")


_C_KERNELS = None


def _compiled_gelu(xd):
    """The same GELU through kernels/activation.c (libm's erf, one pass) when the C kernels are built.

    NumPy has no erf, so the NumPy path above needs ~30 array passes; returns None (use that path) for
    device arrays, other dtypes, or when the extension was never built.
    """
    global _C_KERNELS
    if not isinstance(xd, np.ndarray) or xd.dtype not in (np.float32, np.float64):
        return None
    if _C_KERNELS is None:
        try:
            from ..kernels import c_backend
            ffi, lib = c_backend.load()
            _C_KERNELS = (ffi, lib) if hasattr(lib, "gelu_forward_f32") else False
        except (RuntimeError, ImportError):
            _C_KERNELS = False
    if not _C_KERNELS:
        return None
    ffi, lib = _C_KERNELS
    ctype, suffix = ("float[]", "f32") if xd.dtype == np.float32 else ("double[]", "f64")
    forward, backward_kernel = getattr(lib, "gelu_forward_" + suffix), getattr(lib, "gelu_backward_" + suffix)

    def gelu_c(x):
        xc = np.ascontiguousarray(xd)
        out, cdf = np.empty_like(xc), np.empty_like(xc)
        forward(ffi.from_buffer(ctype, xc), ffi.from_buffer(ctype, out), ffi.from_buffer(ctype, cdf), xc.size)

        def backward(grad):
            grad = np.ascontiguousarray(grad, dtype=xc.dtype)
            dx = np.empty_like(xc)
            backward_kernel(ffi.from_buffer(ctype, xc), ffi.from_buffer(ctype, cdf), ffi.from_buffer(ctype, grad),
                            ffi.from_buffer(ctype, dx), xc.size)
            return (dx,)

        return Tensor.from_op(out, (x,), backward, "gelu")
    return gelu_c


def _gelu_tanh(x):
    xd = x.data
    k = math.sqrt(2 / math.pi)
    th = np.tanh(k * (xd + 0.044715 * xd * xd * xd))
    out = 0.5 * xd * (1 + th)

    def backward(grad):
        dinner = k * (1 + 3 * 0.044715 * xd * xd)
        return (grad * (0.5 * (1 + th) + 0.5 * xd * (1 - th * th) * dinner),)

    return Tensor.from_op(out, (x,), backward, "gelu_tanh")


def softmax(x, dim):
    """softmax(x)ᵢ = e^{xᵢ − m} / Σⱼ e^{xⱼ − m}, m = maxⱼ xⱼ: the Tensor's own op (subtracting m keeps e^· finite)."""
    return as_tensor(x).softmax(dim)


def log_softmax(x, dim):
    """log_softmax(x)ᵢ = xᵢ − m − log Σⱼ e^{xⱼ − m}, m = maxⱼ xⱼ: the Tensor's own op."""
    return as_tensor(x).log_softmax(dim)


class ReLU(Module):
    def forward(self, x):
        return relu(x)


class GELU(Module):
    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return gelu(x, self.approximate)

    def extra_repr(self):
        return "" if self.approximate == "none" else f"approximate={self.approximate!r}"


class Tanh(Module):
    def forward(self, x):
        return tanh(x)


class Sigmoid(Module):
    def forward(self, x):
        return sigmoid(x)


class Softmax(Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    def __init__(self, dim):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return log_softmax(x, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"
