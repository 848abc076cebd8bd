"""The pre-norm transformer block and a GPT built from it (lesson `04_attention` and the GPT lesson).

    x = x + Attention(LayerNorm₁(x))       tokens exchange information
    x = x + MLP(LayerNorm₂(x))             each token thinks on its own: Linear(d, 4d) → GELU → Linear(4d, d)

The residual stream x keeps its shape (B, T, d) through every block.
"""
import math

import numpy as np

from ..autograd import no_grad
from ..random import generator
from ..special import softmax
from ..tensor import Tensor
from ..utils.checkpoint import checkpoint as recompute_in_backward
from .activation import GELU
from .attention import KVCache, MultiheadAttention
from .dropout import Dropout
from .embedding import Embedding
from .linear import Linear
from .module import Module, ModuleList, Sequential
from .normalization import LayerNorm


class TransformerBlock(Module):
    """Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)), with a GELU MLP of width 4·d_model.

    causal=True lets position t attend to positions ≤ t only (a decoder block, as in GPT).
    Submodules: ln1, attn (MultiheadAttention), ln2, mlp (Sequential: 0 Linear(d, 4d), 1 GELU,
    2 Linear(4d, d)); dropout applies to attention weights and to both residual branches.
    """

    def __init__(self, d_model, n_heads, causal=True, dropout=0.0):
        super().__init__()
        self.causal = causal
        self.ln1 = LayerNorm(d_model)
        self.attn = MultiheadAttention(d_model, n_heads, dropout=dropout)
        self.ln2 = LayerNorm(d_model)
        self.mlp = Sequential(Linear(d_model, 4 * d_model), GELU(), Linear(4 * d_model, d_model))
        self.drop = Dropout(dropout)

    def forward(self, x, kv_cache=None):  # x: (B, T, d)
        x = x + self.drop(self.attn(self.ln1(x), is_causal=self.causal, kv_cache=kv_cache))  # (B, T, d)
        return x + self.drop(self.mlp(self.ln2(x)))  # (B, T, d)


class GPT(Module):
    """A character- or token-level GPT: model(idx) maps integer tokens (B, T) to logits (B, T, vocab_size).

        h = wte[idx] + wpe[0..T-1]             token embedding + learned position embedding   (B, T, d)
        h = blocks(h)                          n_layer causal pre-norm TransformerBlocks      (B, T, d)
        logits = lm_head(ln_f(h))              final LayerNorm, Linear(d, vocab, bias=False)  (B, T, V)

    checkpoint=True (or setting model.checkpoint later) runs each block under activation checkpointing
    (`minigrad.utils.checkpoint`): only the blocks' inputs are kept for backward, the rest recomputed.

    Weights start as in GPT-2 / nanoGPT: N(0, 0.02) for every Linear and Embedding weight, zero biases,
    and N(0, 0.02/√(2·n_layer)) for the two projections that write into the residual stream.

    state_dict keys and their nanoGPT (`model.py`, GPT-2 layout) / PyTorch names; every shape is the
    same, so arrays copy across unchanged (nanoGPT ties lm_head.weight to wte.weight; here they are two
    parameters, so copy the same array into both):

        wte.weight                        transformer.wte.weight            (V, d)
        wpe.weight                        transformer.wpe.weight            (block_size, d)
        blocks.{i}.ln1.weight / .bias     transformer.h.{i}.ln_1.weight / .bias
        blocks.{i}.attn.in_proj_weight    transformer.h.{i}.attn.c_attn.weight   (3d, d), rows q, k, v
        blocks.{i}.attn.in_proj_bias      transformer.h.{i}.attn.c_attn.bias     (3d,)
        blocks.{i}.attn.out_proj.weight   transformer.h.{i}.attn.c_proj.weight   (d, d)  (+ .bias)
        blocks.{i}.ln2.weight / .bias     transformer.h.{i}.ln_2.weight / .bias
        blocks.{i}.mlp.0.weight / .bias   transformer.h.{i}.mlp.c_fc.weight / .bias    (4d, d)
        blocks.{i}.mlp.2.weight / .bias   transformer.h.{i}.mlp.c_proj.weight / .bias  (d, 4d)
        ln_f.weight / .bias               transformer.ln_f.weight / .bias
        lm_head.weight                    lm_head.weight                    (V, d)

    Each block's attention also has exactly the names of `torch.nn.MultiheadAttention`
    (in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias). Hugging Face's GPT-2 checkpoints
    store c_attn, c_proj and c_fc transposed (Conv1D); transpose those when loading them.
    """

    def __init__(self, vocab_size, block_size, n_layer, n_head, d_model, dropout=0.0, checkpoint=False):
        super().__init__()
        self.vocab_size, self.block_size = vocab_size, block_size
        self.checkpoint = checkpoint  # True: keep only each block's input, recompute the rest in backward
        self.wte = Embedding(vocab_size, d_model)
        self.wpe = Embedding(block_size, d_model)
        self.drop = Dropout(dropout)
        self.blocks = ModuleList([TransformerBlock(d_model, n_head, causal=True, dropout=dropout)
                                  for _ in range(n_layer)])
        self.ln_f = LayerNorm(d_model)
        self.lm_head = Linear(d_model, vocab_size, bias=False)
        self._init_gpt2(n_layer)

    def _init_gpt2(self, n_layer):
        rng = generator()

        def normal(p, std):
            p.data[...] = rng.normal(0.0, std, size=p.shape)
        for m in self.modules():
            if isinstance(m, (Linear, Embedding)):
                normal(m.weight, 0.02)
            elif isinstance(m, MultiheadAttention):
                normal(m.in_proj_weight, 0.02)
        for name, p in self.named_parameters():
            if name.endswith("bias"):  # LayerNorm biases start at 0 too
                p.data[...] = 0
        for block in self.blocks:  # the projections that add into the residual stream, once per sublayer
            normal(block.attn.out_proj.weight, 0.02 / math.sqrt(2 * n_layer))
            normal(block.mlp[2].weight, 0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx, kv_caches=None):
        """Logits (B, T, V) for tokens idx (B, T). With kv_caches (one KVCache per block, from
        new_kv_caches), idx holds only the tokens after the cached ones, at positions cached … cached + T − 1."""
        idx = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"GPT expects integer token ids of shape (B, T), got shape {tuple(idx.shape)} "
                             f"and dtype {idx.dtype}")
        B, T = idx.shape
        start = 0 if kv_caches is None else kv_caches[0].length
        if start + T > self.block_size:
            raise ValueError(f"GPT: sequence length {start + T} exceeds block_size {self.block_size}; crop the input "
                             f"to its last {self.block_size} tokens")
        h = self.drop(self.wte(Tensor(idx)) + self.wpe(Tensor(np.arange(start, start + T))))  # (B, T, d)
        for i, block in enumerate(self.blocks):
            if kv_caches is not None:
                h = block(h, kv_cache=kv_caches[i])  # (B, T, d)
            else:
                h = recompute_in_backward(block, h) if self.checkpoint else block(h)  # (B, T, d)
        return self.lm_head(self.ln_f(h))  # (B, T, V)

    def new_kv_caches(self, batch_size):
        """One empty KVCache per block, block_size positions long."""
        attn = self.blocks[0].attn
        return [KVCache(batch_size, attn.num_heads, self.block_size, attn.head_dim, self.wte.weight.dtype)
                for _ in self.blocks]

    @no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, use_cache=True):
        """Extend idx (B, T) by max_new_tokens sampled tokens, one at a time; returns (B, T + max_new_tokens).

        Each step takes the logits of the last position and draws the next token from
        sampling_probs(logits, temperature, top_k, top_p) with minigrad's generator (`mg.manual_seed` makes
        it reproducible); temperature=0 takes the most likely token.

        The context window: the model reads at most block_size tokens, the last ones (a longer prompt is
        cropped). When a new token would overflow the window, the window jumps forward and keeps only its
        newest block_size // 2 tokens, then grows again; so the model always sees between half a window
        and a whole one. (Sliding by one token per step would shift every learned position embedding at
        every step, and no cached key would ever be reusable; jumping by half a window recomputes half a
        window once per block_size // 2 tokens, as llama.cpp's context shift does.)

        use_cache=True keeps each layer's keys and values (KVCache): the window is run once, then each
        step feeds only the newest token, O(T) work per token instead of O(T²); after a jump the kept
        tokens are run once more. use_cache=False reruns the whole window every step. Both read the same
        window, so the tokens are the same either way. Returns a Tensor if idx was one, else a NumPy
        array. Call model.eval() first to turn dropout off.
        """
        as_tensor = isinstance(idx, Tensor)
        idx = np.array(idx.data if as_tensor else idx, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[1] == 0:
            raise ValueError(f"GPT.generate expects token ids of shape (B, T) with T >= 1, got shape {idx.shape}")
        check_sampling(temperature, top_k, top_p)
        keep = max(1, self.block_size // 2)  # tokens the window keeps when it jumps
        start, caches = max(0, idx.shape[1] - self.block_size), None  # the model reads idx[:, start:]
        for _ in range(max_new_tokens):
            if idx.shape[1] - start > self.block_size:  # the window is full: keep its newest `keep` tokens
                start, caches = idx.shape[1] - keep, None
            if not use_cache:
                logits = self(idx[:, start:])  # (B, T - start, V)
            elif caches is None:
                caches = self.new_kv_caches(idx.shape[0])
                logits = self(idx[:, start:], kv_caches=caches)  # the window fills the caches
            else:
                logits = self(idx[:, -1:], kv_caches=caches)  # the newest token only: (B, 1, V)
            probs = sampling_probs(logits.data[:, -1, :].astype(np.float64), temperature, top_k, top_p)  # (B, V)
            idx = np.concatenate([idx, sample_from(probs)[:, None]], axis=1)
        return Tensor(idx) if as_tensor else idx


def check_sampling(temperature, top_k, top_p):
    if not temperature >= 0:  # also refuses NaN
        raise ValueError(f"temperature must be >= 0 (0 takes the most likely token), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must lie in (0, 1], got {top_p}")


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution the next token is drawn from, per row of logits (B, V) → (B, V) (lesson 10):

        p = softmax(logits / temperature)                   < 1 sharpens, > 1 flattens
        top_k: keep the k largest p (ties at the k-th value all stay), renormalise
        top_p: keep the smallest set of largest p whose sum reaches top_p (nucleus sampling), renormalise
        temperature = 0: all mass on the largest logit (the first one on a tie, like argmax)

    In that order, as in Hugging Face's samplers.
    """
    check_sampling(temperature, top_k, top_p)
    logits = np.asarray(logits, dtype=np.float64)
    B, V = logits.shape
    if temperature == 0:
        probs = np.zeros((B, V))
        probs[np.arange(B), logits.argmax(axis=-1)] = 1.0
        return probs
    z = logits / temperature
    if top_k is not None and top_k < V:
        kth = np.partition(z, -top_k, axis=-1)[:, -top_k, None]  # (B, 1)
        z = np.where(z < kth, -np.inf, z)
    probs = softmax(z, axis=-1)  # (B, V)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")  # (B, V), most likely first
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the tokens ranked above each one
        keep = np.zeros_like(probs, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, axis=-1)  # the top token always stays (before = 0)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(axis=-1, keepdims=True)
    return probs


def sample_from(probs):
    """One index per row of probs (B, V), by inverting the CDF with one uniform draw from minigrad's generator."""
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    u = generator().random((probs.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), probs.shape[-1] - 1)


def sample_next(logits, temperature=1.0, top_k=None, top_p=None):
    """One token per row of logits (B, V), drawn from sampling_probs(logits, temperature, top_k, top_p)."""
    return sample_from(sampling_probs(logits, temperature, top_k, top_p))
