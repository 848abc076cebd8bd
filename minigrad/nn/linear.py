"""The affine layer y = x Wᵀ + b, and the shape-only layers Flatten and Identity."""
import math

import numpy as np

from .. import kernels
from ..random import generator
from ..amp.autocast import lower_precision
from ..dtypes import HALF_FLOATS
from ..kernels.halfconv import cast
from ..tensor import Tensor, as_tensor
from .module import Module, Parameter


_KERNEL_FLOATS = frozenset((np.dtype(np.float32), np.dtype(np.float64))) | HALF_FLOATS  # what kernels.matmul takes


def uniform_parameter(shape, bound):
    """A float32 Parameter drawn from U(−bound, bound): PyTorch's default init for Linear, Conv2d and RNNs."""
    return Parameter(generator().uniform(-bound, bound, size=shape).astype(np.float32))


def linear(x, weight, bias=None):
    """y = x Wᵀ + b, with x: (…, in), W: (out, in), b: (out,) → y: (…, out).

    One op: the leading dims are folded into one so the product is a single 2-D matmul on whichever
    backend is active, and b is added into that fresh product in place.
    Backward: dx = dy W, dW = dyᵀ x, db = Σ dy over the folded rows (one GEMM for each of dx and dW).
    """
    x, weight = as_tensor(x), as_tensor(weight)
    x, weight, bias = lower_precision(x, weight, bias)  # autocast: a 16-bit product
    if getattr(weight, "is_quantized", False):  # int8 weights: minigrad.quantization's product
        return weight.linear(x, bias)
    if weight.ndim != 2:
        raise ValueError(f"linear expected a 2-D weight (out_features, in_features), got shape {weight.shape}")
    if x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear expected input with last dim in_features={weight.shape[1]} (…, {weight.shape[1]}), "
                         f"got shape {x.shape}")
    out_features = weight.shape[0]
    if bias is not None:
        bias = as_tensor(bias)
        if bias.shape != (out_features,):
            raise ValueError(f"linear expected a bias of shape ({out_features},), got {bias.shape}")
    if x.dtype not in _KERNEL_FLOATS or weight.dtype != x.dtype or (bias is not None and bias.dtype != x.dtype):
        # mixed or other dtypes: the same formula from Tensor ops, which promote like PyTorch
        y = (x.reshape(-1, weight.shape[1]) @ weight.T).reshape(*x.shape[:-1], out_features)
        return y if bias is None else y + bias
    x2 = x.data.reshape(-1, weight.shape[1])                           # (N, in)
    if x.dtype in HALF_FLOATS:  # 16-bit: product and bias in float32, rounded once (PyTorch's addmm)
        out = kernels.matmul(cast(x2, np.float32), cast(weight.data, np.float32).T)
    else:
        out = kernels.matmul(x2, weight.data.T)                        # (N, out), a fresh array
    if bias is not None:
        out += bias.data
    out = cast(out, x.dtype) if out.dtype != x.dtype else out

    def backward(grad):
        g = grad.reshape(-1, out_features)                             # (N, out)
        dx = kernels.matmul(g, weight.data).reshape(x.shape) if x.requires_grad else None   # (…, in)
        dw = kernels.matmul(g.T, x2) if weight.requires_grad else None                      # (out, in)
        if bias is None:
            return dx, dw
        return dx, dw, column_sums(g) if bias.requires_grad else None                         # (out,)
    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor.from_op(out.reshape(*x.shape[:-1], out_features), parents, backward, "linear", saved=(x, weight))


def column_sums(g):
    """Σ over rows of g (N, out): the bias gradient; 16-bit rows are summed in float32 and rounded once."""
    if g.dtype in HALF_FLOATS:
        return g.sum(axis=0, dtype=np.float32).astype(g.dtype)
    if g.shape[1] < 256:
        # NumPy's sum over axis 0 pays its iterator ~15 ns per row: for a conv layer's (N·Ho·Wo, 16) gradient
        # einsum's own loop is 4-5x faster; from ~256 columns on, sum's vector loop is the faster one.
        return np.einsum("ij->j", g)
    return g.sum(axis=0)


class Linear(Module):
    """y = x Wᵀ + b with W: (out_features, in_features), b: (out_features,), both U(−1/√in, 1/√in) like PyTorch."""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1 / math.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = uniform_parameter((out_features, in_features), bound)
        self.bias = uniform_parameter((out_features,), bound) if bias else None

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear expected input with {self.in_features} features (…, {self.in_features}), "
                             f"got shape {x.shape}")
        return linear(x, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Flatten(Module):
    """Merges dims start_dim…end_dim into one: (N, C, H, W) → (N, C·H·W) with the defaults, like PyTorch."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return as_tensor(x).flatten(self.start_dim, self.end_dim)


class Identity(Module):
    """Returns its input unchanged (a placeholder where a layer is optional)."""

    def forward(self, x):
        return x
