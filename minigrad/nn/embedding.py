"""Embedding: a lookup table of learned vectors, one row per token id."""
import numpy as np

from ..random import generator
from ..tensor import Tensor, as_tensor
from .module import Module, Parameter


def embedding(idx, weight):
    """y[…] = W[idx[…]]: idx integer (…) of ids in [0, n), W (n, d) → y (…, d).

    Backward: dW[r] = Σ of g over every position whose id is r (ids may repeat).
    """
    weight = as_tensor(weight)
    ids = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
    if weight.ndim != 2:
        raise ValueError(f"embedding expected a 2-D weight (num_embeddings, embedding_dim), got shape {weight.shape}")
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding expected integer token ids, got dtype {ids.dtype}")
    n = weight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= n):
        bad = ids.min() if ids.min() < 0 else ids.max()
        raise IndexError(f"embedding: token id {bad} is out of range for a table of {n} rows (expected 0 <= id < {n})")
    out = weight.data[ids]                                             # (…, d)

    def backward(grad):  # the rows of g grouped by id (a stable sort), each group summed in one reduceat
        flat = ids.reshape(-1)                                         # (N,)
        order = np.argsort(flat, kind="stable")
        sorted_ids = flat[order]
        starts = np.flatnonzero(np.concatenate(([True], sorted_ids[1:] != sorted_ids[:-1])))  # first row of each id
        dw = np.zeros(weight.shape, dtype=grad.dtype)
        if flat.size:
            dw[sorted_ids[starts]] = np.add.reduceat(grad.reshape(-1, weight.shape[1])[order], starts, axis=0)
        return (dw,)

    return Tensor.from_op(out, (weight,), backward, "embedding", saved=())  # backward reads the ids only


class Embedding(Module):
    """A table weight (num_embeddings, embedding_dim) drawn from N(0, 1) like PyTorch; forward(idx) = weight[idx]."""

    def __init__(self, num_embeddings, embedding_dim):
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.weight = Parameter(generator().standard_normal((num_embeddings, embedding_dim)).astype(np.float32))

    def forward(self, idx):
        return embedding(idx, self.weight)

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}"
