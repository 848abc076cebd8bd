"""Layer normalisation, one op with its backward, and its module."""
import math

import numpy as np

from .. import kernels
from ..amp.autocast import full_precision
from ..tensor import Tensor, as_tensor
from .module import Module, Parameter


def _as_shape(normalized_shape):
    if isinstance(normalized_shape, (int, np.integer)):
        return (int(normalized_shape),)
    return tuple(int(n) for n in normalized_shape)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """y = (x − μ) / √(σ² + ε) · γ + β, with μ, σ² the mean and biased variance over the last len(normalized_shape) dims.

    Backward, with x̂ = (x − μ)/√(σ² + ε), ĝ = g·γ and means over the normalised dims:
    dx = (ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) / √(σ² + ε),  dγ = Σ g·x̂,  dβ = Σ g  (sums over the other dims).
    Both run in `minigrad.kernels.layer_norm` / `layer_norm_backward` on the current backend: the NumPy
    reference (numpy_backend.py) or the fused C kernel (kernels/layernorm.c).
    """
    x = as_tensor(x)
    weight = None if weight is None else as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    x, weight, bias = full_precision(x, weight, bias)  # autocast keeps norms in float32
    shape = _as_shape(normalized_shape)
    k = len(shape)
    if k == 0 or x.ndim < k or x.shape[x.ndim - k:] != shape:
        raise ValueError(f"layer_norm expected input whose last dims are normalized_shape {shape} "
                         f"(…, {', '.join(map(str, shape))}), got shape {x.shape}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != shape:
            raise ValueError(f"layer_norm expected {name} of shape {shape}, got {tuple(p.shape)}")
        if p is not None and p.dtype != x.dtype:
            raise TypeError(f"layer_norm expected {name} of the input's dtype {x.dtype}, got {p.dtype}")
    # over the last k dims = over one last dim of their product: the fused kernel's (rows, C) layout
    rows_shape = x.shape[:x.ndim - k] + (math.prod(shape),)
    xd = x.data.reshape(rows_shape)                                    # (…, C)
    w = None if weight is None else weight.data.reshape(-1)            # (C,)
    b = None if bias is None else bias.data.reshape(-1)                # (C,)
    out, mean, rstd = kernels.layer_norm(xd, w, b, eps)                # (…, C), (…), (…)
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(grad):  # minigrad.kernels.numpy_backend.layer_norm_backward has the formulas above
        dx, dw, db = kernels.layer_norm_backward(xd, w, mean, rstd, grad.reshape(rows_shape))
        grads = [dx.reshape(x.shape)]
        if weight is not None:
            grads.append(dw.reshape(shape))
        if bias is not None:
            grads.append(db.reshape(shape))
        return tuple(grads)

    return Tensor.from_op(out.reshape(x.shape), parents, backward, "layer_norm")


class LayerNorm(Module):
    """Normalises over the last dims (normalized_shape) then scales and shifts: weight starts at ones, bias at zeros."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True):
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps = eps
        affine = elementwise_affine
        self.weight = Parameter(np.ones(self.normalized_shape, dtype=np.float32)) if affine else None
        self.bias = Parameter(np.zeros(self.normalized_shape, dtype=np.float32)) if affine and bias else None

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}"
