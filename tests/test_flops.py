"""Cost accounting of a GPT step: FLOPs against a count taken from the executed graph, bytes against the
arrays that exist (parameters, Adam's state) and the activation estimate against tracemalloc."""
import gc
import tracemalloc

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.utils import flops

CONFIGS = [dict(B=4, T=64, d=64, H=4, L=2, V=16), dict(B=2, T=128, d=64, H=4, L=3, V=65),
           dict(B=8, T=32, d=96, H=6, L=2, V=100)]


def make_gpt(c):
    mg.manual_seed(0)
    return nn.GPT(c["V"], c["T"], n_layer=c["L"], n_head=c["H"], d_model=c["d"])


def executed_product_flops(root):
    """2 × multiply-adds of every matrix product in the graph that produced `root`, read off the nodes."""
    total, seen, stack = 0, set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if node._op in ("matmul", "linear"):
            a = node._parents[0]
            total += 2 * node.data.size * a.shape[-1]  # each output element is a k-long dot product
        elif node._op.startswith("scaled_dot_product_attention"):
            q, k, v = node._parents[:3]
            L, S = q.shape[-2], k.shape[-2]
            batch = int(np.prod(np.broadcast_shapes(q.shape[:-2], k.shape[:-2])))
            total += 2 * batch * L * S * q.shape[-1] + 2 * batch * L * S * v.shape[-1]  # QKᵀ and PV, full
        stack.extend(node._parents)
    return total


@pytest.mark.parametrize("c", CONFIGS)
def test_forward_flops_equal_the_products_the_graph_executed(c):
    model = make_gpt(c)
    idx = np.random.default_rng(0).integers(0, c["V"], (c["B"], c["T"]))
    logits = model(idx)
    per_token = flops.gpt_flops_per_token(model, c["T"], training=False)
    assert executed_product_flops(logits) == per_token * c["B"] * c["T"]
    assert flops.gpt_flops_per_token(model, c["T"]) == 3 * per_token


def test_six_n_rule_and_the_attention_term():
    c = CONFIGS[0]
    model = make_gpt(c)
    L, d, V = c["L"], c["d"], c["V"]
    n = L * 12 * d * d + d * V  # 4d² attention projections + 8d² MLP per layer, and the lm_head
    assert flops.gpt_matmul_parameters(model) == n
    assert flops.six_n_flops_per_token(model) == 6 * n
    # exact − 6N is the attention's 12·L·T·d (PaLM's formula)
    assert flops.gpt_flops_per_token(model, 100) - 6 * n == 12 * L * 100 * d


def test_parameter_gradient_and_adam_bytes_equal_the_arrays():
    model = make_gpt(CONFIGS[0])
    n = sum(p.data.size for p in model.parameters())
    assert flops.count_parameters(model) == n == model.num_parameters()
    assert flops.parameter_bytes(model) == 4 * n
    opt = optim.Adam(model.parameters())
    idx = np.zeros((1, 4), np.int64)
    F.cross_entropy(model(idx).reshape(-1, 16), idx.reshape(-1)).backward()
    assert flops.gradient_bytes(model) == sum(p.grad.nbytes for p in model.parameters())
    opt.step()
    adam_arrays = sum(v.nbytes for s in opt.state.values() for v in s.values() if isinstance(v, np.ndarray))
    assert flops.adam_state_bytes(model) == adam_arrays == 8 * n


@pytest.mark.parametrize("c", CONFIGS)
def test_activation_estimate_matches_tracemalloc(c):
    """The arrays alive after the forward pass (parameters existed before tracing started) against the
    count. Tolerance 5%: the count leaves out O(B·T) arrays (LayerNorm's 1/σ rows, 2 per block, ≈ 2/d of a
    (B, T, d) array each), the (T, d) position lookup and ~100 graph nodes' Python objects; at these sizes
    they add 1–2%. Backward adds gradient buffers on top; its peak stays within 25% of the estimate."""
    model = make_gpt(c)
    idx = np.random.default_rng(0).integers(0, c["V"], (c["B"], c["T"]))

    def loss():
        return F.cross_entropy(model(idx).reshape(-1, c["V"]), idx.reshape(-1))

    with mg.backend("numpy"):
        loss()  # first call: caches (causal masks) and lazily loaded kernels are not activations
        gc.collect()
        tracemalloc.start()
        try:
            value = loss()
            retained = tracemalloc.get_traced_memory()[0]
            value.backward()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    estimate = flops.gpt_activation_bytes(model, c["B"], c["T"])
    assert retained == pytest.approx(estimate, rel=0.05)
    # the reference attention's backward recomputes the (B, H, T, T) probabilities of one layer at a time and
    # holds up to five such arrays while it works (scores, probabilities and their gradients)
    scores = 5 * 4 * c["B"] * c["H"] * c["T"] ** 2
    assert estimate < peak < 1.25 * estimate + scores


def test_activation_estimate_variants():
    model = make_gpt(CONFIGS[0])
    full = flops.gpt_activation_bytes(model, 4, 64, attention="full")
    fused = flops.gpt_activation_bytes(model, 4, 64)
    # bytes × layers × batch × heads × (the T·T weights the plain formula keeps − the T log-sum-exps)
    assert full - fused == 4 * 2 * 4 * 4 * (64 * 64 - 64)
    with pytest.raises(ValueError, match="attention must be one of"):
        flops.gpt_activation_bytes(model, 4, 64, attention="flash")
    parts = flops.training_step_bytes(model, 4, 64)
    assert parts["total"] == parts["parameters"] + parts["gradients"] + parts["optimizer"] + parts["activations"]


def test_peak_flops_and_mfu():
    peak = flops.measure_peak_flops(n=256, repeats=3)
    assert 1e8 < peak < 1e14  # from an old laptop core to a whole server CPU
    assert flops.mfu(1e6, 1000, 0.5, 4e9) == pytest.approx(0.5)  # 1e9 FLOPs in 0.5 s against 4e9 FLOP/s
    with pytest.raises(ValueError, match="step_seconds and peak_flops must be > 0"):
        flops.mfu(1.0, 1, 0.0, 1.0)
