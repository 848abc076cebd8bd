"""Max pooling over NCHW images, and its module."""
from .. import kernels
from ..tensor import Tensor, as_tensor
from .conv import as_pair
from .module import Module


def max_pool2d(x, kernel_size, stride=None):
    """y[n, c, i, j] = max_{0≤p<kh, 0≤q<kw} x[n, c, i·s + p, j·s + q]   (stride defaults to kernel_size)

    x: (N, C, H, W) or (C, H, W) → (…, Ho, Wo), Ho = (H − kh)//s + 1 (rows that do not fill a
    window are dropped, like PyTorch). Backward: each output's gradient goes to the one input
    that was the maximum of its window (the first in row-major order on ties, like PyTorch; a NaN
    is the maximum), remembered by the forward as argmax (minigrad.kernels.max_pool2d).
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
    if x.ndim == 3:  # one unbatched image (C, H, W)
        return max_pool2d(x.unsqueeze(0), (kh, kw), (sh, sw)).squeeze(0)
    out, argmax = kernels.max_pool2d(x.data, (kh, kw), (sh, sw))       # (N, C, Ho, Wo) each

    def backward(grad):                                                # grad: (N, C, Ho, Wo)
        return (kernels.max_pool2d_backward(argmax, grad, x.shape),)   # (N, C, H, W)

    return Tensor.from_op(out, (x,), backward, "max_pool2d", saved=())


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
