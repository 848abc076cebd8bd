"""Shape rules shared by every op: broadcasting's gradient and the dim / shape arguments."""
import numpy as np


def sum_to_shape(grad, shape):
    """Sum a gradient that broadcasting stretched back down to `shape`.

    If x of shape (3, 1) was broadcast to (2, 3, 4), every x[i, 0] was used 2·4
    times, so its gradient is the sum over those copies (lesson 00_autograd).
    """
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(i + extra for i, n in enumerate(shape) if n == 1 and grad.shape[i + extra] != 1)
    return grad.sum(axis=axes, keepdims=True).reshape(shape)


def shape_args(shape):
    """reshape(2, 3), reshape((2, 3)) and reshape([2, 3]) all mean the same."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def normalize_dims(dim, ndim):
    """A dim argument (None, int, tuple; negatives allowed) as a tuple of axes."""
    if dim is None:
        return tuple(range(ndim))
    dims = (dim,) if isinstance(dim, (int, np.integer)) else tuple(dim)
    out = []
    for d in dims:
        if not -max(ndim, 1) <= d < max(ndim, 1):
            raise IndexError(f"dimension {d} is out of range for a tensor with {ndim} dimensions")
        out.append(int(d) % max(ndim, 1))
    return tuple(out)


def expand_reduced(grad, shape, axes, keepdim):
    """The gradient of a reduction, stretched back over the reduced axes."""
    if not keepdim and shape:
        grad = np.expand_dims(grad, axes)
    return np.broadcast_to(grad, shape)
