"""Max pooling over NCHW images, and its module."""
import numpy as np

from ..tensor import Tensor, as_tensor
from .conv import as_pair
from .module import Module


def max_pool2d(x, kernel_size, stride=None):
    """y[n, c, i, j] = max_{0≤p<kh, 0≤q<kw} x[n, c, i·s + p, j·s + q]   (stride defaults to kernel_size)

    x: (N, C, H, W) or (C, H, W) → (…, Ho, Wo), Ho = (H − kh)//s + 1 (rows that do not fill a
    window are dropped, like PyTorch). Backward: each output's gradient goes to the one input
    that was the maximum of its window (the first in row-major order on ties, like PyTorch).
    """
    x = as_tensor(x)
    kh, kw = as_pair(kernel_size, "kernel_size", "max_pool2d")
    sh, sw = (kh, kw) if stride is None else as_pair(stride, "stride", "max_pool2d")
    if x.ndim not in (3, 4):
        raise ValueError(f"max_pool2d expected input (N, C, H, W) or (C, H, W), got shape {x.shape}")
    if min(kh, kw, sh, sw) < 1:
        raise ValueError(f"max_pool2d expected kernel_size and stride >= 1, got {(kh, kw)} and {(sh, sw)}")
    if x.shape[-2] < kh or x.shape[-1] < kw:
        raise ValueError(f"max_pool2d: the {kh}x{kw} window is larger than the input {x.shape[-2:]} "
                         f"(input shape {x.shape})")
    Ho, Wo = (x.shape[-2] - kh) // sh + 1, (x.shape[-1] - kw) // sw + 1

    def offset_view(a, p, q):
        """Element (p, q) of every window: a strided slice, (…, Ho, Wo), no copy."""
        return a[..., p:p + sh * Ho:sh, q:q + sw * Wo:sw]

    # kh·kw elementwise maxima over strided slices, in the input's own memory order
    # (channels-last after a conv). Even when the windows tile the image this beats
    # reshaping it into window-major order, which has to copy it (benchmarks/bench_cnn_step.py
    # times the pooling inside the CNN step).
    offsets = [(p, q) for p in range(kh) for q in range(kw)]
    out = offset_view(x.data, 0, 0).copy(order="K")                   # (…, Ho, Wo)
    for p, q in offsets[1:]:
        np.maximum(out, offset_view(x.data, p, q), out=out)

    def backward(grad):
        dx = np.zeros_like(x.data, dtype=grad.dtype)
        unclaimed = grad.copy(order="K")                               # zeroed once a window's max is found
        for p, q in offsets:
            claimed = unclaimed * (offset_view(x.data, p, q) == out)
            dx_pq = offset_view(dx, p, q)
            dx_pq += claimed
            unclaimed -= claimed                                       # so only the first maximum gets it
        return (dx,)

    return Tensor.from_op(out, (x,), backward, "max_pool2d")


class MaxPool2d(Module):
    """Max over kernel_size windows moved by stride (default: kernel_size), like PyTorch's MaxPool2d."""

    def __init__(self, kernel_size, stride=None):
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None else stride

    def forward(self, x):
        return max_pool2d(x, self.kernel_size, self.stride)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}"
