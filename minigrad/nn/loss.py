"""Loss functions (lesson `01_gradient_descent`): each one number to minimise, averaged over the batch."""
import numpy as np

from .. import kernels
from ..amp.autocast import full_precision
from ..dtypes import HALF_FLOATS
from ..special import sigmoid
from ..tensor import Tensor, as_tensor
from .module import Module


def _same_shape(op, a, b, a_name, b_name):
    if a.shape != b.shape:
        raise ValueError(f"{op} expected {b_name} of the same shape as {a_name} {a.shape}, got {b.shape}")


def mse_loss(input, target):
    """L = (1/n) Σᵢ (inputᵢ − targetᵢ)²   (lesson 01_gradient_descent)

    Backward: d input = 2(input − target)/n, d target = −2(input − target)/n.
    """
    x, y = full_precision(as_tensor(input), as_tensor(target))  # autocast keeps losses in float32
    _same_shape("mse_loss", x, y, "input", "target")
    y = y.to(x.dtype)
    diff = x.data - y.data
    n = diff.size
    loss = (diff * diff).sum(dtype=np.float32 if x.dtype in HALF_FLOATS else None) / n

    def backward(grad):
        dx = grad * (2 / n) * diff
        return dx, -dx

    return Tensor.from_op(np.asarray(loss, dtype=x.dtype), (x, y), backward, "mse_loss")


def cross_entropy(logits, target, ignore_index=-100):
    """L = −(1/M) Σₘ log softmax(zₘ)[yₘ] = (1/M) Σₘ (log Σ_c e^{zₘ,c} − zₘ,yₘ)   (lesson 01_gradient_descent)

    logits (N, C) with integer targets (N,), or (N, C, d₁, …) with targets (N, d₁, …), or one example's
    logits (C,) with a 0-d target, like PyTorch (for a sequence model pass logits.reshape(B·T, C), targets.reshape(B·T)).
    The log-sum-exp subtracts the row max, so logits of ±1e4 stay finite.
    Backward: dz = (softmax(z) − onehot(y)) / M, softmax recomputed from the row log-sum-exp, so no (M, C)
    array is kept. Both run in `minigrad.kernels.cross_entropy` / `cross_entropy_backward` on the current
    backend: the NumPy reference (numpy_backend.py) or the fused C kernel (kernels/cross_entropy.c).
    Targets equal to ignore_index (−100, as in PyTorch) count for nothing: the mean runs over the other
    rows only and the ignored rows get no gradient (a loss on the answer tokens only: lesson
    11_fine_tuning). If every target is ignored the loss is NaN, as in PyTorch (0/0).
    """
    logits, = full_precision(as_tensor(logits))  # autocast keeps losses in float32
    y = np.asarray(target.data if isinstance(target, Tensor) else target)
    if logits.ndim == 1 and y.ndim == 0:  # one unbatched example, logits (C,) and a class index, as PyTorch takes
        return cross_entropy(logits.reshape(1, -1), y.reshape(1), ignore_index)
    if logits.ndim < 2:
        raise ValueError(f"cross_entropy expected logits (N, C), (N, C, d1, ...) or (C,) with a single target, got "
                         f"logits of shape {logits.shape} and targets of shape {y.shape}")
    C = logits.shape[1]
    expected = logits.shape[:1] + logits.shape[2:]
    if y.shape != expected:
        raise ValueError(f"cross_entropy expected targets of shape {expected} for logits of shape {logits.shape}, "
                         f"got {y.shape}")
    if y.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy expected integer class targets, got dtype {y.dtype}")
    counted = (y != ignore_index).reshape(-1)                         # (M,)
    yflat = y.reshape(-1)                                              # (M,)
    if counted.any() and (yflat[counted].min() < 0 or yflat[counted].max() >= C):
        bad = yflat[counted].min() if yflat[counted].min() < 0 else yflat[counted].max()
        raise IndexError(f"cross_entropy: target {bad} is out of range for {C} classes (expected 0 <= target < {C}); "
                         f"targets equal to ignore_index={ignore_index} are skipped")
    z = np.moveaxis(logits.data, 1, -1).reshape(-1, C)                # (M, C), a view for 2-D logits
    every = counted.all()
    zc, yc = (z, yflat) if every else (z[counted], yflat[counted])     # the rows that count
    if not len(yc):
        return Tensor.from_op(np.asarray(np.nan, dtype=logits.dtype), (logits,),
                              lambda grad: (np.full(logits.shape, np.nan, logits.dtype),), "cross_entropy")
    loss, lse = kernels.cross_entropy(zc, yc)                          # lse: all backward keeps

    def backward(grad):
        dzc = kernels.cross_entropy_backward(zc, yc, lse, float(grad))
        if every:
            dz = dzc                                                   # (M, C)
        else:
            dz = np.zeros(z.shape, dzc.dtype)
            dz[counted] = dzc                                          # ignored rows: no gradient
        moved = dz.reshape(logits.shape[:1] + logits.shape[2:] + (C,))
        return (np.moveaxis(moved, -1, 1),)

    return Tensor.from_op(np.asarray(loss, dtype=logits.dtype), (logits,), backward, "cross_entropy")


def binary_cross_entropy(input, target):
    """L = −(1/n) Σᵢ [yᵢ·log pᵢ + (1 − yᵢ)·log(1 − pᵢ)], each log clamped to ≥ −100 like PyTorch   (lesson 01_gradient_descent)

    The clamp keeps L finite when p is exactly 0 or 1. Backward, as PyTorch:
    dp = (p − y) / max(p(1 − p), 1e-12) / n (the clamp bounds it where p(1 − p) → 0);
    dy = (log(1 − p) − log p) / n with the clamped logs.
    """
    p, y = full_precision(as_tensor(input), as_tensor(target))
    _same_shape("binary_cross_entropy", p, y, "input", "target")
    y = y.to(p.dtype)
    if p.data.size and (p.data.min() < 0 or p.data.max() > 1):
        raise ValueError(f"binary_cross_entropy expected probabilities in [0, 1], got values from "
                         f"{p.data.min()} to {p.data.max()} (use binary_cross_entropy_with_logits for raw scores)")
    n = p.data.size
    with np.errstate(divide="ignore"):
        log_p = np.maximum(np.log(p.data), -100)
        log_1mp = np.maximum(np.log1p(-p.data), -100)
    loss = -(y.data * log_p + (1 - y.data) * log_1mp).sum() / n

    def backward(grad):
        dp = grad * (p.data - y.data) / np.maximum(p.data * (1 - p.data), 1e-12) / n
        dy = grad * (log_1mp - log_p) / n
        return dp, dy

    return Tensor.from_op(np.asarray(loss, dtype=p.dtype), (p, y), backward, "binary_cross_entropy")


def binary_cross_entropy_with_logits(input, target):
    """L = (1/n) Σᵢ [max(zᵢ, 0) − zᵢyᵢ + log(1 + e^{−|zᵢ|})]   (lesson 01_gradient_descent)

    The same value as binary_cross_entropy(σ(z), y), rewritten so no exp can
    overflow and no log sees 0: finite for logits of ±1e4.
    Backward: dz = (σ(z) − y) / n, dy = −z / n.
    """
    z, y = full_precision(as_tensor(input), as_tensor(target))
    _same_shape("binary_cross_entropy_with_logits", z, y, "input", "target")
    y = y.to(z.dtype)
    zd, yd = z.data, y.data
    n = zd.size
    e = np.exp(-np.abs(zd))                                            # in (0, 1]: never overflows
    loss = (np.maximum(zd, 0) - zd * yd + np.log1p(e)).sum() / n

    def backward(grad):
        return grad * (sigmoid(zd) - yd) / n, grad * -zd / n

    return Tensor.from_op(np.asarray(loss, dtype=z.dtype), (z, y), backward, "binary_cross_entropy_with_logits")


class MSELoss(Module):
    """loss_fn(input, target) = mse_loss(input, target), like torch.nn.MSELoss()."""

    def forward(self, input, target):
        return mse_loss(input, target)


class CrossEntropyLoss(Module):
    """loss_fn(logits, target) = cross_entropy(logits, target, ignore_index), like torch.nn.CrossEntropyLoss()."""

    def __init__(self, ignore_index=-100):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits, target):
        return cross_entropy(logits, target, self.ignore_index)


class BCELoss(Module):
    """loss_fn(p, y) = binary_cross_entropy(p, y), like torch.nn.BCELoss()."""

    def forward(self, input, target):
        return binary_cross_entropy(input, target)


class BCEWithLogitsLoss(Module):
    """loss_fn(z, y) = binary_cross_entropy_with_logits(z, y), like torch.nn.BCEWithLogitsLoss()."""

    def forward(self, input, target):
        return binary_cross_entropy_with_logits(input, target)
