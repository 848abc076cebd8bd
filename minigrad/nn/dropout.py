"""Dropout: random zeroing during training, the identity in eval mode."""
from ..random import generator
from ..tensor import Tensor, as_tensor
from .module import Module


def dropout(x, p=0.5, training=True):
    """y = x ⊙ m / (1 − p),  mᵢ ~ Bernoulli(1 − p) while training;  y = x otherwise.

    Dividing by 1 − p keeps E[y] = x, so eval mode needs no rescaling. The mask
    comes from minigrad's generator, so `mg.manual_seed` makes it reproducible.
    Backward: dx = g ⊙ m / (1 − p).
    """
    x = as_tensor(x)
    if not 0 <= p <= 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, got p={p}")
    if not training or p == 0:
        return x
    if p == 1:
        scaled_mask = x.data * 0
    else:
        scaled_mask = (generator().random(x.shape) >= p).astype(x.dtype) * x.dtype.type(1 / (1 - p))
    return Tensor.from_op(x.data * scaled_mask, (x,), lambda grad: (grad * scaled_mask,), "dropout")


class Dropout(Module):
    """Zeroes each element with probability p in training mode (scaling the rest by 1/(1 − p)); identity in eval."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0 <= p <= 1:
            raise ValueError(f"Dropout probability has to be between 0 and 1, got p={p}")
        self.p = p

    def forward(self, x):
        return dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"
