"""LoRA: the formula against NumPy, gradients (gradcheck in float64 and the closed form), merging, freezing."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.nn.lora import apply_lora, lora_linear, merge_lora


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def lora_layer(r=3, alpha=6, seed=0):
    mg.manual_seed(seed)
    base = nn.Linear(5, 4)
    base.weight.data = base.weight.data.astype(np.float64)
    base.bias.data = base.bias.data.astype(np.float64)
    layer = nn.LoRALinear(base, r=r, alpha=alpha)
    layer.lora_B.data = np.random.default_rng(seed).normal(size=layer.lora_B.shape)  # a trained-looking B
    return layer


def test_initial_state_shapes_and_frozen_base():
    mg.manual_seed(0)
    base = nn.Linear(6, 3)
    layer = nn.LoRALinear(base, r=2, alpha=4)
    assert layer.lora_A.shape == (2, 6) and layer.lora_B.shape == (3, 2) and layer.scaling == 2.0
    assert np.all(layer.lora_B.data == 0) and np.abs(layer.lora_A.data).max() <= 1 / np.sqrt(6)
    assert np.abs(layer.lora_A.data).max() > 0.5 / np.sqrt(6)
    assert not base.weight.requires_grad and not base.bias.requires_grad
    assert layer.lora_A.requires_grad and layer.lora_B.requires_grad
    x = np.random.default_rng(1).normal(size=(2, 7, 6)).astype(np.float32)
    np.testing.assert_array_equal(layer(x).data, base(x).data)  # B = 0: the pretrained layer exactly
    assert sorted(n for n, _ in layer.named_parameters()) == ["base.bias", "base.weight", "lora_A", "lora_B"]


def test_forward_equals_the_formula_in_numpy():
    layer = lora_layer()
    x = np.random.default_rng(2).normal(size=(2, 3, 5))
    W, b, A, B = (p.data for p in (layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B))
    expected = x @ W.T + b + (6 / 3) * (x @ A.T) @ B.T
    np.testing.assert_allclose(layer(t64(x, False)).data, expected, rtol=1e-13, atol=1e-13)


def test_gradcheck_of_every_input_in_float64():
    rng = np.random.default_rng(3)
    x, W, b, A, B = (t64(rng.normal(size=s)) for s in [(3, 5), (4, 5), (4,), (2, 5), (4, 2)])
    assert mg.gradcheck(lambda x, W, b, A, B: lora_linear(x, W, b, A, B, 1.5).tanh(), [x, W, b, A, B])


def test_gradients_equal_the_closed_form_and_skip_the_frozen_base():
    layer = lora_layer()
    rng = np.random.default_rng(4)
    x, g = rng.normal(size=(6, 5)), rng.normal(size=(6, 4))
    (layer(t64(x, False)) * t64(g, False)).sum().backward()
    A, B, s = layer.lora_A.data, layer.lora_B.data, layer.scaling
    np.testing.assert_allclose(layer.lora_A.grad, s * (g @ B).T @ x, rtol=1e-12)  # dA = s (g B)ᵀ x
    np.testing.assert_allclose(layer.lora_B.grad, s * g.T @ (x @ A.T), rtol=1e-12)  # dB = s gᵀ (x Aᵀ)
    assert layer.base.weight.grad is None and layer.base.bias.grad is None


def gpt(seed=0):
    mg.manual_seed(seed)
    return nn.GPT(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=16)


def test_apply_lora_trains_only_the_lora_parameters():
    model = gpt()
    before = {k: v.data.copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(5).integers(0, 11, size=(4, 8))
    reference = model(x).data
    assert apply_lora(model, r=4, alpha=8) is model
    np.testing.assert_array_equal(model(x).data, reference)  # B = 0 and the MLP keeps its order
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert sorted(trainable) == sorted(f"blocks.{i}.{m}.{ab}" for i in range(2)
                                       for m in ("attn.in_proj_lora", "attn.out_proj", "mlp.0", "mlp.2")
                                       for ab in ("lora_A", "lora_B"))
    d = 16  # in_proj d→3d, out_proj d→d, mlp.0 d→4d, mlp.2 4d→d: r·(in + out) each
    assert sum(p.numel() for p in trainable.values()) == 2 * 4 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d))
    opt = optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = F.cross_entropy(model(x).reshape(-1, 11), x.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, value in model.state_dict().items():
        plain = name.replace(".base.", ".")
        if "lora_" in name:
            continue
        np.testing.assert_array_equal(value.data, before[plain], err_msg=f"{name} changed although frozen")
    assert np.abs(model.blocks[0].mlp[0].lora_B.data).max() > 0


def test_merge_gives_the_same_outputs_and_plain_linears():
    model = gpt(1)
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    apply_lora(model, r=2, alpha=5, targets=("mlp.0", "lm_head", "attn.in_proj"))
    rng = np.random.default_rng(6)
    for name, p in model.named_parameters():
        if name.endswith("lora_B"):
            p.data = rng.normal(0, 0.1, p.shape)
    x = rng.integers(0, 11, size=(3, 8))
    adapted = model(x).data
    delta = model.lm_head.delta_weight()
    base_w = model.lm_head.base.weight.data.copy()
    assert merge_lora(model) is model
    assert not any(isinstance(m, (nn.LoRALinear, nn.lora.LoRAWeight)) for m in model.modules())
    assert isinstance(model.lm_head, nn.Linear) and isinstance(model.blocks[1].mlp[0], nn.Linear)
    np.testing.assert_allclose(model.lm_head.weight.data, base_w + delta, rtol=1e-14)
    np.testing.assert_allclose(model(x).data, adapted, rtol=1e-10, atol=1e-12)
    assert set(model.state_dict()) == set(gpt().state_dict())


def test_bad_arguments_are_named():
    for r in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match=f"r \\(the rank\\) must be a positive integer, got {r!r}"):
            nn.LoRALinear(nn.Linear(3, 2), r=r)
    with pytest.raises(ValueError, match="base must be an nn.Linear, got Conv2d"):
        nn.LoRALinear(nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="alpha"):
        nn.LoRALinear(nn.Linear(3, 2), alpha=float("nan"))
    with pytest.raises(ValueError, match=r"targets \['ln1'\] match 'blocks.0.ln1', a LayerNorm; LoRA adapts nn.Linear"):
        apply_lora(gpt(), targets=("ln1",))
    with pytest.raises(ValueError, match=r"targets \['mlp.7'\] match no submodule"):
        apply_lora(gpt(), targets=("mlp.0", "mlp.7"))
    with pytest.raises(ValueError, match="r \\(the rank\\)"):
        apply_lora(gpt(), r=0)


def test_lora_on_attention_in_proj_equals_the_updated_weight_and_passes_gradcheck():
    mg.manual_seed(2)
    attn = nn.MultiheadAttention(8, 2)
    for p in attn.parameters():
        p.data = p.data.astype(np.float64)
    plain = nn.MultiheadAttention(8, 2)
    plain.load_state_dict({k: v.data.copy() for k, v in attn.state_dict().items()})
    for p in plain.parameters():
        p.data = p.data.astype(np.float64)
    apply_lora(attn, r=3, alpha=3, targets=("in_proj",))
    lora = attn.in_proj_lora
    rng = np.random.default_rng(8)
    lora.lora_B.data = rng.normal(size=lora.lora_B.shape)
    plain.in_proj_weight.data += lora.lora_B.data @ lora.lora_A.data  # alpha / r = 1
    x = rng.normal(size=(2, 5, 8))
    np.testing.assert_allclose(attn(t64(x, False), is_causal=True).data, plain(t64(x, False), is_causal=True).data,
                               rtol=1e-12, atol=1e-12)
    assert [n for n, p in attn.named_parameters() if p.requires_grad] == ["in_proj_lora.lora_A", "in_proj_lora.lora_B"]
    A, B = lora.lora_A, lora.lora_B

    def output(A_, B_):
        lora.lora_A, lora.lora_B = A_, B_
        return attn(t64(x, False), is_causal=True)
    assert mg.gradcheck(output, [t64(A.data), t64(B.data)])
