"""Softmax attention (lesson `04_attention`): the function and the multi-head module.

    Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V

`scaled_dot_product_attention` takes one of two paths, as nanoGPT does:
- fused: without a mask, dropout or a custom scale, one op whose forward and
  backward are `minigrad.kernels.attention` / `attention_backward` on this
  thread's backend (the NumPy reference on "numpy", the C flash kernel on
  "c", the CUDA kernels on "cuda" / "cuda-sim");
- composed: otherwise, the formula written with Tensor ops (matmul, softmax,
  where, dropout), which autograd differentiates.
"""
import math

import numpy as np

from .. import kernels
from ..amp.autocast import lower_precision
from ..device import array_module
from ..dtypes import is_floating
from ..kernels.numpy_backend import causal_mask
from ..random import generator
from ..tensor import Tensor, as_tensor, where
from .dropout import dropout
from .linear import Linear, linear
from .module import Module, Parameter


def scaled_dot_product_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None):
    """softmax(Q Kᵀ · scale + M) V over the last two axes, like `torch.nn.functional.scaled_dot_product_attention`.

    q: (…, L, E), k: (…, S, E), v: (…, S, Ev) → (…, L, Ev); leading dims broadcast. scale defaults to
    1/√E. attn_mask broadcasts to (…, L, S): boolean True = the query may attend to that key, or a float
    bias added to the scores. is_causal masks keys after the query (j > i). dropout_p drops attention
    weights (call with 0 in eval mode; this function does not know the mode). Lesson `04_attention`.
    """
    q, k, v = lower_precision(as_tensor(q), as_tensor(k), as_tensor(v))  # autocast: 16-bit attention
    check_attention_shapes(q, k, v)
    if is_causal and attn_mask is not None:
        raise ValueError("scaled_dot_product_attention: pass either attn_mask or is_causal=True, not both "
                         "(fold the causal mask into attn_mask)")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_p must lie in [0, 1), got {dropout_p}")
    default_scale = scale is None or scale == 1.0 / math.sqrt(q.shape[-1])
    if (attn_mask is None and dropout_p == 0.0 and default_scale and q.shape[:-2] == k.shape[:-2] == v.shape[:-2]
            and k.shape[-2] > 0 and q.shape[-1] > 0):
        return fused_attention(q, k, v, is_causal)
    return composed_attention(q, k, v, attn_mask, dropout_p, is_causal, scale)


def check_attention_shapes(q, k, v):
    if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
        raise ValueError(f"scaled_dot_product_attention needs q, k, v of at least 2 dims (…, T, d), got shapes "
                         f"{q.shape}, {k.shape}, {v.shape}")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"scaled_dot_product_attention: q and k need the same last dim E, got q {q.shape} and "
                         f"k {k.shape}")
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"scaled_dot_product_attention: k and v need the same sequence length S, got k "
                         f"{k.shape} and v {v.shape}")
    if not is_floating(q.dtype) or not q.dtype == k.dtype == v.dtype:
        raise TypeError(f"scaled_dot_product_attention needs q, k, v of one float dtype, got {q.dtype}, "
                        f"{k.dtype}, {v.dtype}")
    try:
        np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: batch dims of q {q.shape}, k {k.shape}, v {v.shape} "
                         "do not broadcast") from None


def fused_attention(q, k, v, is_causal):
    """The op through the kernels' table, on (B·H, T, d) views of (…, T, d) inputs.

    The kernels keep the row log-sum-exp (lse) instead of the (L, S) weights; the backward recomputes them.
    The (B·H, T, d) copies the kernels read are made again in backward rather than kept alive in between.
    """
    backend = kernels.resolve("attention", None, q.dtype)
    xp = array_module(q.data)

    def flat(t):  # (…, T, d) → (B·H, T, d), C-contiguous (a copy when t is a transposed view)
        return xp.ascontiguousarray(t.data.reshape((-1,) + t.shape[-2:]))
    out, lse = kernels.attention(flat(q), flat(k), flat(v), is_causal=is_causal, return_lse=True, backend=backend)

    def backward(grad):
        grad3 = xp.ascontiguousarray(grad.reshape(out.shape))
        dq, dk, dv = kernels.attention_backward(flat(q), flat(k), flat(v), out, lse, grad3, is_causal=is_causal,
                                                backend=backend)
        return dq.reshape(q.shape), dk.reshape(k.shape), dv.reshape(v.shape)
    return Tensor.from_op(out.reshape(q.shape[:-1] + v.shape[-1:]), (q, k, v), backward,
                          f"scaled_dot_product_attention[{backend}]")


def composed_attention(q, k, v, attn_mask, dropout_p, is_causal, scale):
    """softmax(Q Kᵀ · scale + M) V from Tensor ops; autograd gives the backward (and a float mask's gradient).

    A query row that may see no key at all gets weights 0 (output 0, gradient 0) instead of 0/0, as
    PyTorch's SDPA does.
    """
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q * scale) @ k.transpose(-2, -1)  # (…, L, S); scaling q is cheaper than scaling the scores
    allowed = None
    if is_causal:
        allowed = causal_mask(scores.shape[-2], scores.shape[-1], array_module(q.data))  # (L, S)
    elif attn_mask is not None:
        allowed, bias = attention_mask(attn_mask, scores.shape, q.dtype)
        if bias is not None:
            scores = scores + bias
    if allowed is None:
        weights = scores.softmax(-1)  # (…, L, S)
    else:
        sees_a_key = allowed.any(axis=-1, keepdims=True)  # (…, L, 1)
        weights = where(allowed | ~sees_a_key, scores, -np.inf).softmax(-1)
        weights = where(sees_a_key, weights, 0.0)
    if dropout_p > 0.0:
        weights = dropout(weights, dropout_p, training=True)
    return weights @ v  # (…, L, Ev)


def attention_mask(attn_mask, shape, dtype):
    """(allowed, bias) of an attn_mask: a boolean mask says which keys take part (True), a float one is a
    bias (a Tensor, so a mask that requires grad gets one) added to the scores of the given shape."""
    mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(np.asarray(attn_mask))
    try:
        np.broadcast_shapes(mask.shape, shape)
    except ValueError:
        raise ValueError(f"scaled_dot_product_attention: attn_mask of shape {tuple(mask.shape)} does not broadcast "
                         f"to the attention scores of shape {shape} (…, L, S)") from None
    if mask.dtype == np.bool_:
        return mask.data, None
    if not is_floating(mask.dtype):
        raise TypeError(f"scaled_dot_product_attention: attn_mask must be boolean (True = take part) or float "
                        f"(added to the scores), got dtype {mask.dtype}")
    return None, mask.to(dtype)


class KVCache:
    """The keys and values one attention layer has computed so far, for generation (lesson
    `10_tokens_and_generation`): a new token's query attends to every earlier key, and those keys do not
    change when tokens are appended, so they are kept instead of recomputed.

    k, v: (B, H, max_len, hd) buffers, of which the first `length` positions are filled. Appending costs
    the new tokens only; attending costs O(length) per new token instead of the O(length²) of a full
    recomputation.
    """

    def __init__(self, batch_size, num_heads, max_len, head_dim, dtype=np.float32):
        self.k = np.zeros((batch_size, num_heads, max_len, head_dim), dtype)  # (B, H, max_len, hd)
        self.v = np.zeros_like(self.k)
        self.length = 0

    @property
    def max_len(self):
        return self.k.shape[2]

    def append(self, k, v):
        """Store k, v (B, H, T, hd) after the cached positions; returns the keys and values of all of them."""
        start, end = self.length, self.length + k.shape[2]
        if k.shape[:2] != self.k.shape[:2] or k.shape[3] != self.k.shape[3] or k.shape != v.shape:
            raise ValueError(f"KVCache: k {k.shape} and v {v.shape} do not fit a cache of shape {self.k.shape} "
                             "(B, H, max_len, hd)")
        if end > self.max_len:
            raise ValueError(f"KVCache: {start} cached + {k.shape[2]} new positions exceed max_len {self.max_len}")
        self.k[:, :, start:end], self.v[:, :, start:end] = k, v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]  # (B, H, end, hd) views


def xavier_uniform(shape, fan_in, fan_out):
    """U(−a, a) with a = √(6 / (fan_in + fan_out)) (Glorot & Bengio), PyTorch's init for in_proj_weight."""
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return generator().uniform(-bound, bound, size=shape).astype(np.float32)


class MultiheadAttention(Module):
    """Multi-head self-attention with PyTorch's parameter names (lesson `04_attention`).

        Q, K, V = split(x W_inᵀ + b_in)            one fused projection, W_in: (3E, E) = [W_q; W_k; W_v]
        head_h  = softmax(Q_h K_hᵀ / √(E/H) + M) V_h   for each of the H heads of width E/H
        out     = concat(head_1 … head_H) W_outᵀ + b_out

    Parameters: `in_proj_weight` (3E, E), `in_proj_bias` (3E,), `out_proj.weight` (E, E), `out_proj.bias` (E,)
    — the names and shapes of `torch.nn.MultiheadAttention`, so state dicts move both ways.

    forward(x, attn_mask=None, is_causal=False, kv_cache=None) takes x (B, T, E) (or (T, B, E) with
    batch_first=False) and returns the output only, of x's shape; PyTorch returns (output, weights) and takes separate
    query, key and value. attn_mask follows PyTorch's MultiheadAttention convention, the OPPOSITE of
    scaled_dot_product_attention's: boolean True = NOT allowed to attend; a float mask is added. Its shape
    is (T, T) or (B·H, T, T). With an attn_mask, is_causal is only a hint (as in PyTorch) and the mask is
    used as given; without one, is_causal=True applies the causal mask.

    With a `KVCache` (generation, no gradient), x holds only the new tokens: their keys and values are
    appended to the cache and their queries attend causally to everything cached.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, batch_first=True):
        super().__init__()
        if embed_dim % num_heads != 0:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} must be divisible by num_heads "
                             f"{num_heads} (each head gets embed_dim / num_heads features)")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        self.in_proj_weight = Parameter(xavier_uniform((3 * embed_dim, embed_dim), embed_dim, 3 * embed_dim))
        self.in_proj_bias = Parameter(np.zeros(3 * embed_dim, dtype=np.float32)) if bias else None
        self.out_proj = Linear(embed_dim, embed_dim, bias=bias)
        if bias:
            self.out_proj.bias.data[...] = 0  # PyTorch zeroes both projection biases at init

    def forward(self, x, attn_mask=None, is_causal=False, kv_cache=None):
        x = as_tensor(x)
        if x.ndim != 3 or x.shape[-1] != self.embed_dim:
            layout = "(B, T, E)" if self.batch_first else "(T, B, E)"
            raise ValueError(f"MultiheadAttention expects input {layout} with E = embed_dim {self.embed_dim}, "
                             f"got shape {x.shape}")
        if not self.batch_first:
            x = x.transpose(0, 1)
        B, T, E = x.shape
        H, hd = self.num_heads, self.head_dim
        W, b = self.in_proj_weight, self.in_proj_bias
        if "in_proj_lora" in self._modules:  # set by nn.lora.apply_lora: W + (alpha/r)·B A, only A and B train
            W = W + self.in_proj_lora.delta()
        if kv_cache is not None:
            y = self._attend_cached(linear(x, W, b), kv_cache, attn_mask, is_causal)  # (B, T, E)
        else:
            # q = x W_qᵀ + b_q with W_q the first E rows of W_in, and so on: slicing the (3E, E) weight
            # costs less in the backward pass than slicing a (B, T, 3E) activation
            q, k, v = (linear(x, W[i * E:(i + 1) * E], None if b is None else b[i * E:(i + 1) * E])
                       .reshape(B, T, H, hd).transpose(1, 2) for i in range(3))  # (B, H, T, hd) each
            mask = None if attn_mask is None else self._sdpa_mask(attn_mask, B, T)
            y = scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                                             dropout_p=self.dropout if self.training else 0.0)  # (B, H, T, hd)
            y = y.transpose(1, 2).reshape(B, T, E)  # (B, T, E): the heads side by side
        y = self.out_proj(y)  # (B, T, E)
        return y if self.batch_first else y.transpose(0, 1)

    def _attend_cached(self, qkv, cache, attn_mask, is_causal):
        """The new tokens' queries against the cached keys and values followed by their own; qkv (B, T, 3E)
        is their one fused projection (no backward pass here, so no reason to split the weight). Returns
        the heads side by side, (B, T, E). Plain arrays throughout: a cache passes no gradient."""
        if attn_mask is not None or not is_causal:
            raise ValueError("MultiheadAttention: a kv_cache is for causal self-attention (is_causal=True, "
                             "no attn_mask)")
        if qkv.requires_grad:
            raise ValueError("MultiheadAttention: a kv_cache holds plain arrays and passes no gradient; "
                             "run it under mg.no_grad() (generation)")
        B, T, E = qkv.shape[0], qkv.shape[1], self.embed_dim
        H, hd = self.num_heads, self.head_dim
        q, k, v = qkv.data.reshape(B, T, 3, H, hd).transpose(2, 0, 3, 1, 4)  # (B, H, T, hd) each
        keys, values = cache.append(k, v)  # (B, H, S, hd), S = positions cached so far + T
        S = keys.shape[2]
        if T == 1 or S == T:  # one new token sees every key; an empty cache: causal attention over the prompt
            y = kernels.attention(*(a.reshape(B * H, -1, hd) for a in (q, keys, values)), is_causal=T > 1)
        else:  # new tokens after cached ones: query i sees keys j <= S - T + i
            y = scaled_dot_product_attention(Tensor(q), Tensor(keys), Tensor(values),
                                             attn_mask=causal_mask(T, S, offset=S - T)).data
        return Tensor(y.reshape(B, H, T, hd).transpose(0, 2, 1, 3).reshape(B, T, E))  # (B, T, E)

    def _sdpa_mask(self, attn_mask, B, T):
        """PyTorch's MHA mask (True = blocked; (T, T) or (B·H, T, T)) → SDPA's (True = take part; (B, H, T, T))."""
        mask = attn_mask if isinstance(attn_mask, Tensor) else Tensor(np.asarray(attn_mask))
        H = self.num_heads
        if mask.shape not in ((T, T), (B * H, T, T)):
            raise ValueError(f"MultiheadAttention: attn_mask must have shape (T, T) = {(T, T)} or (B·H, T, T) = "
                             f"{(B * H, T, T)}, got {mask.shape}")
        if mask.ndim == 3:
            mask = mask.reshape(B, H, T, T)
        return Tensor(~mask.data) if mask.dtype == np.bool_ else mask

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}"
