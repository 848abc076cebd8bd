"""Max pooling over NCHW images, and its module."""
import numpy as np

from ..tensor import Tensor, as_tensor
from .conv import as_pair, sliding_windows
from .module import Module


def max_pool2d(x, kernel_size, stride=None):
    """y[n, c, i, j] = max_{0≤p<kh, 0≤q<kw} x[n, c, i·s + p, j·s + q]   (stride defaults to kernel_size)

    x: (N, C, H, W) or (C, H, W) → (…, Ho, Wo), Ho = (H − kh)//s + 1 (rows that do not fill a
    window are dropped, like PyTorch). Backward: each output's gradient goes to the one input
    that was the maximum of its window (the first one on ties).
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
    if x.ndim == 3:
        return max_pool2d(x.unsqueeze(0), (kh, kw), (sh, sw)).squeeze(0)
    if (sh, sw) == (kh, kw):
        return _max_pool_tiled(x, kh, kw)
    return _max_pool_strided(x, kh, kw, sh, sw)


def _max_pool_tiled(x, kh, kw):
    """Windows that tile the image (stride = kernel): a reshape exposes them without copying the image."""
    N, C, H, W = x.shape
    Ho, Wo = H // kh, W // kw
    tiles = x.data[:, :, :Ho * kh, :Wo * kw].reshape(N, C, Ho, kh, Wo, kw)
    win = tiles.transpose(0, 1, 2, 4, 3, 5).reshape(N, C, Ho, Wo, kh * kw)  # (N, C, Ho, Wo, kh·kw)
    arg = win.argmax(axis=-1)[..., None]                               # (N, C, Ho, Wo, 1)
    out = np.take_along_axis(win, arg, axis=-1)[..., 0]                # (N, C, Ho, Wo)

    def backward(grad):
        dwin = np.zeros(win.shape, dtype=grad.dtype)
        np.put_along_axis(dwin, arg, grad[..., None], axis=-1)
        dx = np.zeros(x.shape, dtype=grad.dtype)
        dx[:, :, :Ho * kh, :Wo * kw] = (dwin.reshape(N, C, Ho, Wo, kh, kw)
                                        .transpose(0, 1, 2, 4, 3, 5).reshape(N, C, Ho * kh, Wo * kw))
        return (dx,)

    return Tensor.from_op(out, (x,), backward, "max_pool2d")


def _max_pool_strided(x, kh, kw, sh, sw):
    """Overlapping or gapped windows: a strided view of all windows, then the same argmax."""
    N, C = x.shape[:2]
    win = sliding_windows(x.data, kh, kw, (sh, sw))                           # (N, C, Ho, Wo, kh, kw) view
    Ho, Wo = win.shape[2:4]
    arg = win.reshape(N, C, Ho, Wo, kh * kw).argmax(axis=-1)           # (N, C, Ho, Wo)
    out = np.take_along_axis(win.reshape(N, C, Ho, Wo, kh * kw), arg[..., None], axis=-1)[..., 0]

    def backward(grad):
        dx = np.zeros(x.shape, dtype=grad.dtype)
        # One slice-add per window offset (p, q): the outputs whose maximum sat there.
        for p in range(kh):
            for q in range(kw):
                dx[:, :, p:p + sh * Ho:sh, q:q + sw * Wo:sw] += np.where(arg == p * kw + q, grad, 0)
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
