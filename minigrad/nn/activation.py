"""Activation functions and the softmax family, with their modules.

relu, tanh, sigmoid, softmax and log_softmax are the Tensor's own ops; gelu is
defined here, its backward rule beside the forward; the erf it needs is in minigrad/special.py.
"""
import math

import numpy as np

from .. import kernels
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
    """The exact GELU through the kernels' table: the C kernel on backend "c", the reference
    (minigrad.kernels.numpy_backend.gelu, from minigrad.special's Φ) otherwise."""
    backend = kernels.resolve("gelu", None, x.dtype)
    out, cdf = kernels.gelu(x.data, backend=backend)

    def backward(grad):
        return (kernels.gelu_backward(x.data, cdf, grad, backend=backend),)

    return Tensor.from_op(out, (x,), backward, "gelu")


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
