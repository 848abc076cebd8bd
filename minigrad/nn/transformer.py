"""The pre-norm transformer block and a GPT built from it (lesson `04_attention` and the GPT lesson).

    x = x + Attention(LayerNorm₁(x))       tokens exchange information
    x = x + MLP(LayerNorm₂(x))             each token thinks on its own: Linear(d, 4d) → GELU → Linear(4d, d)

The residual stream x keeps its shape (B, T, d) through every block.
"""
import math

import numpy as np

from ..autograd import no_grad
from ..random import generator
from ..tensor import Tensor
from ..utils.checkpoint import checkpoint as recompute_in_backward
from .activation import GELU
from .attention import MultiheadAttention
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

    def forward(self, x):  # x: (B, T, d)
        x = x + self.drop(self.attn(self.ln1(x), is_causal=self.causal))  # (B, T, d)
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

    def forward(self, idx):
        idx = idx.data if isinstance(idx, Tensor) else np.asarray(idx)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"GPT expects integer token ids of shape (B, T), got shape {tuple(idx.shape)} "
                             f"and dtype {idx.dtype}")
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"GPT: sequence length {T} exceeds block_size {self.block_size}; crop the input "
                             f"to its last {self.block_size} tokens")
        h = self.drop(self.wte(Tensor(idx)) + self.wpe(Tensor(np.arange(T))))  # (B, T, d)
        for block in self.blocks:
            h = recompute_in_backward(block, h) if self.checkpoint else block(h)  # (B, T, d)
        return self.lm_head(self.ln_f(h))  # (B, T, V)

    @no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
        """Extend idx (B, T) by max_new_tokens sampled tokens, one at a time; returns (B, T + max_new_tokens).

        Each step feeds the last block_size tokens, divides the last position's logits by temperature
        (< 1 sharpens, > 1 flattens), keeps only the top_k largest if given, and samples from the
        softmax with minigrad's generator, so `mg.manual_seed` makes the result reproducible. Returns a
        Tensor if idx was one, else a NumPy array. Call model.eval() first to turn dropout off.
        """
        as_tensor = isinstance(idx, Tensor)
        idx = np.array(idx.data if as_tensor else idx, dtype=np.int64)
        if idx.ndim != 2:
            raise ValueError(f"GPT.generate expects token ids of shape (B, T), got shape {idx.shape}")
        if temperature <= 0:
            raise ValueError(f"GPT.generate: temperature must be > 0, got {temperature} (use top_k=1 for "
                             "greedy decoding)")
        if top_k is not None and not 1 <= top_k:
            raise ValueError(f"GPT.generate: top_k must be >= 1, got {top_k}")
        for _ in range(max_new_tokens):
            logits = self(idx[:, -self.block_size:]).data[:, -1, :].astype(np.float64)  # (B, V)
            idx = np.concatenate([idx, sample_next(logits, temperature, top_k)[:, None]], axis=1)
        return Tensor(idx) if as_tensor else idx


def sample_next(logits, temperature=1.0, top_k=None):
    """One token per row from p = softmax(logits / temperature), restricted to the top_k largest logits.

    Sampling by inverting the CDF with one uniform draw per row from minigrad's generator.
    """
    logits = logits / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = np.partition(logits, -top_k, axis=-1)[:, -top_k, None]  # (B, 1)
        logits = np.where(logits < kth, -np.inf, logits)
    p = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cdf = np.cumsum(p, axis=-1)  # (B, V), unnormalised
    u = generator().random((logits.shape[0], 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=-1), logits.shape[-1] - 1)
