"""Activation checkpointing: gradients equal the plain run's bit for bit (dropout included), the random
stream after backward is the plain run's, and the peak memory of a deep stack is at least 40% lower."""
import tracemalloc

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
from minigrad.utils.checkpoint import checkpoint


def gpt_step(use_checkpoint, dropout=0.1, n_layer=4, seed=0):
    """One forward + backward of a small GPT; returns (named grads, loss, peak traced bytes, next draws)."""
    mg.manual_seed(seed)
    model = nn.GPT(20, 32, n_layer=n_layer, n_head=4, d_model=32, dropout=dropout, checkpoint=use_checkpoint)
    idx = np.random.default_rng(seed).integers(0, 20, (4, 32))
    tracemalloc.start()
    try:
        loss = F.cross_entropy(model(idx).reshape(-1, 20), idx.reshape(-1))
        loss.backward()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return grads, loss.item(), peak, mg.rand(5).data


def test_gpt_gradients_identical_with_dropout():
    plain, loss_plain, _, next_plain = gpt_step(False)
    ckpt, loss_ckpt, _, next_ckpt = gpt_step(True)
    assert loss_plain == loss_ckpt
    assert plain.keys() == ckpt.keys()
    for name in plain:
        assert np.array_equal(plain[name], ckpt[name]), name  # same masks, same arithmetic: bit-identical
    # the recomputation restored the random state: draws after backward are the plain run's
    np.testing.assert_array_equal(next_plain, next_ckpt)


def test_dropout_masks_repeat_in_the_recomputation():
    """Without restoring the state the recomputed mask would differ and the gradient would be wrong."""
    mg.manual_seed(3)
    x = mg.randn(200, requires_grad=True)
    y = checkpoint(lambda t: F.dropout(t, 0.5, True) * 2, x)
    y.sum().backward()
    kept = y.data != 0
    np.testing.assert_array_equal(x.grad, np.where(kept, 2 / (1 - 0.5), 0.0))


def test_gradcheck_through_checkpoint():
    mg.manual_seed(1)
    w = mg.randn(4, 3, dtype=mg.float64, requires_grad=True)

    def f(x, b):
        return (x @ w).tanh() * b

    x = mg.randn(5, 4, dtype=mg.float64, requires_grad=True)
    b = mg.randn(3, dtype=mg.float64, requires_grad=True)
    mg.gradcheck(lambda x, b, w: checkpoint(f, x, b), (x, b, w))


def test_tuple_outputs_and_non_tensor_arguments():
    mg.manual_seed(2)
    x = mg.randn(3, 4, requires_grad=True)

    def f(t, power):
        return t ** power, t.exp()

    a, b = checkpoint(f, x, 2)
    (a.sum() * 3 + b.sum()).backward()
    np.testing.assert_allclose(x.grad, 6 * x.data + np.exp(x.data), rtol=1e-6)


def test_module_weights_get_gradients_when_the_input_needs_none():
    mg.manual_seed(4)
    layer = nn.Linear(3, 2)
    x = mg.randn(5, 3)  # requires_grad=False, as a first layer's input
    checkpoint(layer, x).sum().backward()
    np.testing.assert_allclose(layer.weight.grad, np.broadcast_to(x.data.sum(0), (2, 3)), rtol=1e-6)
    np.testing.assert_allclose(layer.bias.grad, [5.0, 5.0])


def test_no_graph_is_kept_in_forward_and_none_under_no_grad():
    mg.manual_seed(5)
    block = nn.TransformerBlock(16, 2)
    x = mg.randn(2, 8, 16, requires_grad=True)
    out = checkpoint(block, x)
    assert out._op == "checkpoint" and all(p is x or isinstance(p, nn.Parameter) for p in out._parents)
    with mg.no_grad():
        assert not checkpoint(block, x).requires_grad


def test_deep_stack_peak_memory_at_least_40_percent_lower():
    """Plain: every block keeps its attention weights (B, H, T, T), MLP activations (B, T, 4d) and more until
    backward. Checkpointed: only the blocks' (B, T, d) inputs, plus one block's intermediates at a time."""
    _, _, plain, _ = gpt_step(False, dropout=0.0, n_layer=8)
    _, _, ckpt, _ = gpt_step(True, dropout=0.0, n_layer=8)
    assert ckpt <= 0.6 * plain, f"peak {ckpt / 1e6:.2f} MB with checkpointing vs {plain / 1e6:.2f} MB plain"


def test_bad_input_is_named():
    with pytest.raises(TypeError, match="must be a callable .*got Tensor"):
        checkpoint(mg.ones(2), mg.ones(2))
    with pytest.raises(TypeError, match="must return a Tensor or a tuple of Tensors, got float"):
        checkpoint(lambda t: 1.0, mg.ones(2, requires_grad=True))


def test_recomputation_runs_in_the_forwards_autocast_precision():
    """Backward runs outside the autocast block; the recomputed block must still compute in bfloat16."""
    def step(use_checkpoint):
        mg.manual_seed(7)
        block = nn.TransformerBlock(16, 2)
        x = mg.randn(2, 6, 16, requires_grad=True)
        with mg.autocast(dtype=mg.bfloat16):
            out = checkpoint(block, x) if use_checkpoint else block(x)
        out.float().sum().backward()
        return x.grad, [p.grad for p in block.parameters()]
    (gx, gp), (cx, cp) = step(False), step(True)
    assert np.array_equal(gx, cx) and all(np.array_equal(a, b) for a, b in zip(gp, cp))
