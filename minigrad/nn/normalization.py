"""Layer normalisation, one op with its backward, and its module."""
import numpy as np

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
    """
    x = as_tensor(x)
    weight = None if weight is None else as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
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
    axes = tuple(range(x.ndim - k, x.ndim))
    lead = tuple(range(x.ndim - k))
    xd = x.data
    mu = xd.mean(axis=axes, keepdims=True)
    centered = xd - mu
    rstd = 1 / np.sqrt((centered * centered).mean(axis=axes, keepdims=True) + eps)
    xhat = centered * rstd
    out = xhat if weight is None else xhat * weight.data
    if bias is not None:
        out = out + bias.data
    parents = tuple(t for t in (x, weight, bias) if t is not None)

    def backward(grad):
        ghat = grad if weight is None else grad * weight.data
        dx = rstd * (ghat - ghat.mean(axis=axes, keepdims=True)
                     - xhat * (ghat * xhat).mean(axis=axes, keepdims=True))
        grads = [dx]
        if weight is not None:
            grads.append((grad * xhat).sum(axis=lead))
        if bias is not None:
            grads.append(grad.sum(axis=lead))
        return tuple(grads)

    return Tensor.from_op(out, parents, backward, "layer_norm")


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
