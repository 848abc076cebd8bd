"""What a GPT training step costs: parameters, FLOPs, bytes, and model FLOP utilisation (lesson `12_memory_and_precision`).

With N the weights that multiply activations (every Linear and attention projection, the lm_head; not the
embedding tables, which are looked up), L layers, width d, context T:

    forward FLOPs per token  = 2·N + 4·L·T·d          2 per multiply-add; attention's QKᵀ and PV add 2·T·d each
    training FLOPs per token = 3 × forward            backward does two products per forward product
    the 6N rule              = 6·N                    (the attention term dropped; Kaplan et al. 2020)

Bytes of a step: parameters and gradients N_all·s each (s = bytes per element), Adam's two moments 2·N_all·4,
and the activations the backward pass needs (`gpt_activation_bytes`, counted from what minigrad's ops keep).
MFU = achieved FLOP/s ÷ the machine's peak FLOP/s, the peak measured here at run time (`measure_peak_flops`).
"""
import time

import numpy as np

__all__ = ["count_parameters", "gpt_matmul_parameters", "gpt_flops_per_token", "six_n_flops_per_token",
           "parameter_bytes", "gradient_bytes", "adam_state_bytes", "gpt_activation_bytes",
           "training_step_bytes", "measure_peak_flops", "mfu"]


def count_parameters(model, trainable_only=False):
    """Σ over the model's parameters of their number of elements."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _gpt_shape(model):
    """(L, d, H, V, block_size) of a minigrad GPT."""
    block = model.blocks[0]
    return len(model.blocks), block.attn.embed_dim, block.attn.num_heads, model.vocab_size, model.block_size


def gpt_matmul_parameters(model):
    """N: the weights that take part in a matrix product (everything but embeddings, norms and biases)."""
    L, d, _, V, _ = _gpt_shape(model)
    return L * (3 * d * d + d * d + 2 * 4 * d * d) + d * V  # qkv, out_proj, the MLP's two, lm_head


def gpt_flops_per_token(model, seq_len=None, training=True):
    """Exact matrix-product FLOPs per token: 2·N + 4·L·T·d forward (×3 for a training step).

    The attention term counts the full T × T score matrix, the convention of MFU figures (PaLM,
    Chowdhery et al. 2022) even though a causal kernel may skip the masked half. Elementwise work (norms,
    GELU, softmax: O(d) per token) is left out; it is < 1% of the products at these widths.
    """
    L, d, _, _, block_size = _gpt_shape(model)
    T = block_size if seq_len is None else seq_len
    forward = 2 * gpt_matmul_parameters(model) + 4 * L * T * d
    return 3 * forward if training else forward


def six_n_flops_per_token(model):
    """The 6N rule for a training step: 6 FLOPs per matmul weight per token (2 forward, 4 backward)."""
    return 6 * gpt_matmul_parameters(model)


def parameter_bytes(model):
    return sum(p.data.nbytes for p in model.parameters())


def gradient_bytes(model):
    """One gradient per trainable parameter, in the parameter's dtype."""
    return sum(p.data.nbytes for p in model.parameters() if p.requires_grad)


def adam_state_bytes(model, state_dtype=np.float32):
    """Adam's two moments (m and v) per trainable parameter element."""
    return 2 * np.dtype(state_dtype).itemsize * count_parameters(model, trainable_only=True)


ACTIVATIONS_PER_BLOCK = 23  # arrays of (B, T, d) one block keeps for backward; see gpt_activation_bytes


def gpt_activation_bytes(model, batch_size, seq_len=None, itemsize=4, attention="fused"):
    """Bytes of the arrays a GPT's forward pass keeps alive for backward, counted op by op (dropout off).

    Per block, in units of one (B, T, d) array: ln1 keeps its output (1; x̂ is recomputed from the saved
    row mean and 1/σ); the q, k, v projections their products (3: each Linear adds its bias in place);
    attention its output (1) and the head merge's copy (1); out_proj 1; the residual sum 1; ln2 1; the
    MLP's first Linear 4, GELU its output and Φ(x) 2·4, the second Linear 1; the residual 1: 23 in all.
    Attention also keeps its weights, B·H·T·T, when composed from ops ("full", with a mask or dropout),
    or only the row log-sum-exp ("fused": the op on every backend, whose backward recomputes the weights). Outside the blocks: the embedding sum and its lookup (2),
    ln_f (1) and the logits (B, T, V); cross-entropy keeps only each row's log-sum-exp.
    """
    L, d, H, V, block_size = _gpt_shape(model)
    B, T = batch_size, block_size if seq_len is None else seq_len
    scores = {"full": T * T, "fused": T}
    if attention not in scores:
        raise ValueError(f"gpt_activation_bytes: attention must be one of {sorted(scores)}, got {attention!r}")
    per_block = ACTIVATIONS_PER_BLOCK * B * T * d + B * H * scores[attention]
    outside = 3 * B * T * d + B * T * V
    return itemsize * (L * per_block + outside)


def training_step_bytes(model, batch_size, seq_len=None, optimizer="adam"):
    """{parameters, gradients, optimizer state, activations, total} in bytes for one training step."""
    parts = {"parameters": parameter_bytes(model), "gradients": gradient_bytes(model),
             "optimizer": adam_state_bytes(model) if optimizer == "adam" else 0,
             "activations": gpt_activation_bytes(model, batch_size, seq_len)}
    parts["total"] = sum(parts.values())
    return parts


def measure_peak_flops(n=1024, repeats=5, dtype=np.float32):
    """FLOP/s of this machine, measured now: the best of `repeats` n×n×n products through NumPy's BLAS.

    A large matmul is FMA-bound and BLAS reaches ~85–90% of the cores' theoretical peak (see
    shared/PERF_NOTES.md), so this is the attainable peak on the threads BLAS is allowed, under the current
    load; MFU against it is how close a step comes to what this machine can do, not to a data sheet.
    """
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(dtype), rng.standard_normal((n, n)).astype(dtype)
    a @ b  # warm up: threads started, pages touched
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best


def mfu(flops_per_token, tokens_per_step, step_seconds, peak_flops):
    """Model FLOP utilisation: (FLOPs per token × tokens per step / seconds per step) / peak FLOP/s."""
    if step_seconds <= 0 or peak_flops <= 0:
        raise ValueError(f"mfu: step_seconds and peak_flops must be > 0, got {step_seconds} and {peak_flops}")
    return flops_per_token * tokens_per_step / step_seconds / peak_flops
