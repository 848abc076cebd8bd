"""Convolution (lesson `02_convolution`): the true convolution sum and the NCHW conv layer.

conv2d gathers every receptive field into one matrix (im2col) so the whole
layer is a single matmul; its backward is two more matmuls and a scatter of
the columns back onto the image (col2im). im2col and col2im are ops of
minigrad.kernels: a NumPy reference (strided views) and a C kernel.
"""
import math

import numpy as np

from .. import kernels
from ..amp.autocast import lower_precision
from ..tensor import Tensor, as_tensor
from .linear import uniform_parameter
from .module import Module


def as_pair(value, name, op):
    """An int or a pair of ints → (vertical, horizontal)."""
    # the common cases first, on every conv and pooling call: no generator below
    if type(value) is int:
        return value, value
    if type(value) is tuple and len(value) == 2 and type(value[0]) is int and type(value[1]) is int:
        return value
    pair = (value, value) if isinstance(value, (int, np.integer)) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) for v in pair):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """y[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q W[o, c, p, q] · x_pad[n, c, i·s + p, j·s + q]   (lesson 02_convolution)

    Cross-correlation on NCHW like PyTorch's conv2d: x (N, C, H, W) (or one image (C, H, W)),
    W (O, C, kh, kw), b (O,) → y (N, O, Ho, Wo), Ho = (H + 2·pad − kh)//s + 1. As matrices, Y = cols(x) Wᵀ,
    so dW = dYᵀ cols(x), dcols = dY W, dx = col2im(dcols), db = Σ dY: three products on the active
    backend (the bias rides in two of them as the weight of a column of ones), and im2col / col2im
    (minigrad.kernels) move the pixels. The output is an NCHW view of
    channels-last memory, which the next conv or pooling reads without a copy.
    """
    x, weight = as_tensor(x), as_tensor(weight)
    bias = None if bias is None else as_tensor(bias)
    x, weight, bias = lower_precision(x, weight, bias)  # autocast: a 16-bit convolution
    stride, padding = as_pair(stride, "stride", "conv2d"), as_pair(padding, "padding", "conv2d")
    if x.ndim == 3 and weight.ndim == 4 and x.shape[0] == weight.shape[1]:  # one unbatched image
        return conv2d(x.unsqueeze(0), weight, bias, stride, padding).squeeze(0)
    _check_conv_args(x, weight, bias, stride, padding)
    N, C, H, W = x.data.shape
    O, _, kh, kw = weight.data.shape
    Ho, Wo = kernels.check_window("conv2d", x.data.shape, (kh, kw), stride, padding)
    K = kh * kw * C
    # With a bias, cols gets a last column of ones and the weight matrix the bias as its last column:
    # the product adds the bias, and its backward's dYᵀ cols holds db beside dW.
    cols = kernels.im2col(x.data, (kh, kw), stride, padding, bias_column=bias is not None)  # (N·Ho·Wo, K [+ 1])
    wmat = weight.data.transpose(0, 2, 3, 1).reshape(O, K)             # (O, K), columns in cols' order (p, q, c)
    wb = wmat if bias is None else np.concatenate([wmat, bias.data[:, None]], axis=1)  # (O, K [+ 1])
    y = kernels.matmul(cols, wb.T)                                     # (N·Ho·Wo, O)
    out = y.reshape(N, Ho, Wo, O).transpose(0, 3, 1, 2)                # (N, O, Ho, Wo)
    parents = (x, weight) if bias is None else (x, weight, bias)

    def backward(grad):                                                # grad: (N, O, Ho, Wo)
        g = grad.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, O)         # (N·Ho·Wo, O), a view when channels-last
        dx = dw = db = None
        if x.requires_grad:  # not for the images fed to a first layer: the (N·Ho·Wo, K) product is skipped
            dcols = kernels.matmul(g, wmat)                            # (N·Ho·Wo, K)
            dx = kernels.im2col_backward(dcols, (N, C, H, W), (kh, kw), stride, padding)  # (N, C, H, W)
        if weight.requires_grad or bias is not None and bias.requires_grad:
            dwb = kernels.matmul(g.T, cols)                            # (O, K [+ 1]) = [dW db]
            dw = dwb[:, :K].reshape(O, kh, kw, C).transpose(0, 3, 1, 2)  # (O, C, kh, kw)
            db = None if bias is None else dwb[:, K]                   # (O,)
        return (dx, dw) if bias is None else (dx, dw, db)

    return Tensor.from_op(out, parents, backward, "conv2d")


def _check_conv_args(x, weight, bias, stride, padding):
    if weight.ndim != 4:
        raise ValueError(f"conv2d expected a 4-D weight (out_channels, in_channels, kH, kW), got shape {weight.shape}")
    O, C, kh, kw = weight.shape
    if x.ndim != 4 or x.shape[1] != C:
        raise ValueError(f"conv2d expected input with {C} channels (N, {C}, H, W), got shape {x.shape}")
    if bias is not None and tuple(bias.shape) != (O,):
        raise ValueError(f"conv2d expected a bias of shape ({O},), got {tuple(bias.shape)}")
    if min(stride) < 1 or min(padding) < 0:
        raise ValueError(f"conv2d expected stride >= 1 and padding >= 0, got stride={stride}, padding={padding}")
    Hp, Wp = x.shape[2] + 2 * padding[0], x.shape[3] + 2 * padding[1]
    if Hp < kh or Wp < kw:
        raise ValueError(f"conv2d: the {kh}x{kw} kernel is larger than the padded input {Hp}x{Wp} "
                         f"(input shape {x.shape}, padding {padding})")
    if x.dtype != weight.dtype or (bias is not None and bias.dtype != x.dtype):
        raise TypeError(f"conv2d expected input, weight and bias of one dtype, got {x.dtype}, {weight.dtype}"
                        + (f", {bias.dtype}" if bias is not None else ""))


def _flip2d(k):
    """k[::-1, ::-1] on the last two dims, as an op (its gradient is flipped back)."""
    return Tensor.from_op(np.ascontiguousarray(k.data[..., ::-1, ::-1]), (k,),
                          lambda grad: (grad[..., ::-1, ::-1],), "flip2d")


def convolve2d(x, k, mode="valid"):
    """y(m, n) = Σ_i Σ_j k(i, j) · x(m − i, n − j)   (lesson 02_convolution)

    The true convolution sum: the kernel is flipped, which is what makes it
    commutative and associative (unlike the cross-correlation that conv2d computes).
    x: (H, W) or a batch (N, H, W); k: (kh, kw).
    mode="full": every (m, n) where kernel and image overlap, (H + kh − 1, W + kw − 1);
    mode="valid": only where the kernel fits inside the image, (H − kh + 1, W − kw + 1).
    Computed as conv2d with the flipped kernel (and kh−1, kw−1 zero padding for "full").
    """
    x, k = as_tensor(x), as_tensor(k)
    if mode not in ("valid", "full"):
        raise ValueError(f"convolve2d: mode must be 'valid' or 'full', got {mode!r}")
    if x.ndim not in (2, 3):
        raise ValueError(f"convolve2d expected an image (H, W) or a batch (N, H, W), got shape {x.shape}")
    if k.ndim != 2:
        raise ValueError(f"convolve2d expected a 2-D kernel (kh, kw), got shape {k.shape}")
    kh, kw = k.shape
    if mode == "valid" and (x.shape[-2] < kh or x.shape[-1] < kw):
        raise ValueError(f"convolve2d: mode='valid' needs the kernel {k.shape} to fit inside the image "
                         f"{x.shape[-2:]}; use mode='full'")
    if x.dtype != k.dtype:
        raise TypeError(f"convolve2d expected image and kernel of one dtype, got {x.dtype} and {k.dtype}")
    padding = (kh - 1, kw - 1) if mode == "full" else (0, 0)
    images = x.reshape(-1, 1, *x.shape[-2:])                           # (N, 1, H, W)
    y = conv2d(images, _flip2d(k).reshape(1, 1, kh, kw), padding=padding)  # (N, 1, Ho, Wo)
    return y.reshape(*x.shape[:-2], *y.shape[-2:])


class Conv2d(Module):
    """2-D convolution layer, NCHW: weight (out_channels, in_channels, kH, kW), bias (out_channels,).

    Both start U(−1/√fan_in, 1/√fan_in), fan_in = in_channels·kH·kW, like PyTorch.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        kh, kw = as_pair(kernel_size, "kernel_size", "Conv2d")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride = as_pair(stride, "stride", "Conv2d")
        self.padding = as_pair(padding, "padding", "Conv2d")
        bound = 1 / math.sqrt(in_channels * kh * kw)
        self.weight = uniform_parameter((out_channels, in_channels, kh, kw), bound)
        self.bias = uniform_parameter((out_channels,), bound) if bias else None

    def forward(self, x):
        x = as_tensor(x)
        C = self.in_channels
        if not (x.ndim == 4 and x.shape[1] == C or x.ndim == 3 and x.shape[0] == C):
            raise ValueError(f"Conv2d expected input with {C} channels (N, {C}, H, W), got shape {x.shape}")
        return conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")
