"""Sinusoidal positional encoding (lesson `05_positional_encoding`).

Attention by itself ignores order: permuting the tokens permutes the output.
Adding a position-dependent vector to each embedding gives the model the
order back. The sinusoidal table needs no training and works for any length.
"""
import numpy as np

from ..tensor import Tensor, as_tensor
from .module import Module


def positional_encoding(seq_len, d_model):
    """The (seq_len, d_model) table of Vaswani et al. (2017), float32:

        PE(pos, 2i)   = sin(pos / 10000^(2i/d))
        PE(pos, 2i+1) = cos(pos / 10000^(2i/d))

    Each pair of columns is a sinusoid whose wavelength grows geometrically from 2π to 10000·2π, so
    PE(pos + k) is a fixed rotation of PE(pos). An odd d_model ends with a sine column.
    Lesson `05_positional_encoding`.
    """
    if seq_len < 0 or d_model < 1:
        raise ValueError(f"positional_encoding needs seq_len >= 0 and d_model >= 1, got seq_len={seq_len}, "
                         f"d_model={d_model}")
    pos = np.arange(seq_len, dtype=np.float64)[:, None]  # (seq_len, 1)
    two_i = np.arange(0, d_model, 2, dtype=np.float64)  # (ceil(d/2),)
    angle = pos / 10000.0 ** (two_i / d_model)  # (seq_len, ceil(d/2))
    pe = np.empty((seq_len, d_model), dtype=np.float64)
    pe[:, 0::2] = np.sin(angle)
    pe[:, 1::2] = np.cos(angle[:, : d_model // 2])
    return Tensor(pe.astype(np.float32))


class PositionalEncoding(Module):
    """x + PE[:T] for embeddings x of shape (B, T, d_model), with the table of `positional_encoding`.

    The table `pe` (max_len, d_model) is a buffer, not a Parameter: the optimizer never sees it, and like
    PyTorch's registered buffers it is saved in `state_dict()`. Lesson `05_positional_encoding`.
    """

    def __init__(self, d_model, max_len=5000):
        super().__init__()
        self.d_model, self.max_len = d_model, max_len
        self.register_buffer("pe", positional_encoding(max_len, d_model))  # (max_len, d_model)

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 2 or x.shape[-1] != self.d_model:
            raise ValueError(f"PositionalEncoding expects input (…, T, d_model) with d_model {self.d_model}, "
                             f"got shape {x.shape}")
        T = x.shape[-2]
        if T > self.max_len:
            raise ValueError(f"PositionalEncoding: sequence length {T} exceeds max_len {self.max_len}")
        return x + Tensor(self.pe.data[:T].astype(x.dtype, copy=False))

    def extra_repr(self):
        return f"d_model={self.d_model}, max_len={self.max_len}"
