"""TransformerBlock and GPT against a NumPy forward written out by hand; causality, gradients, sampling, training."""
import collections
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.nn.transformer import sample_next
from minigrad.text import CharTokenizer

_erf = np.vectorize(math.erf)


def ln_ref(x, w, b, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu_ref(x):
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


def attention_ref(x, sd, prefix, H, causal):
    """Multi-head self-attention in NumPy: split the fused projection, softmax(q kᵀ/√hd + causal −∞) v per head."""
    B, T, E = x.shape
    hd = E // H
    qkv = x @ sd[prefix + "in_proj_weight"].T + sd[prefix + "in_proj_bias"]
    q, k, v = (qkv[..., i * E:(i + 1) * E].reshape(B, T, H, hd).transpose(0, 2, 1, 3) for i in range(3))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)  # (B, H, T, T)
    if causal:
        scores = np.where(np.tril(np.ones((T, T), bool)), scores, -np.inf)
    w = np.exp(scores - scores.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    y = (w @ v).transpose(0, 2, 1, 3).reshape(B, T, E)
    return y @ sd[prefix + "out_proj.weight"].T + sd[prefix + "out_proj.bias"]


def block_ref(x, sd, prefix, H, causal=True):
    h = ln_ref(x, sd[prefix + "ln1.weight"], sd[prefix + "ln1.bias"])
    x = x + attention_ref(h, sd, prefix + "attn.", H, causal)
    h = ln_ref(x, sd[prefix + "ln2.weight"], sd[prefix + "ln2.bias"])
    h = gelu_ref(h @ sd[prefix + "mlp.0.weight"].T + sd[prefix + "mlp.0.bias"])
    return x + h @ sd[prefix + "mlp.2.weight"].T + sd[prefix + "mlp.2.bias"]


def gpt_ref(idx, sd, n_layer, H):
    T = idx.shape[1]
    h = sd["wte.weight"][idx] + sd["wpe.weight"][:T]
    for i in range(n_layer):
        h = block_ref(h, sd, f"blocks.{i}.", H)
    return ln_ref(h, sd["ln_f.weight"], sd["ln_f.bias"]) @ sd["lm_head.weight"].T


def numpy_state(module):
    return {k: v.data.astype(np.float64) for k, v in module.state_dict().items()}


def randomise(module, seed=0, scale=0.3):
    """Nonzero biases and non-unit LayerNorm gains, so every parameter's path is exercised."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape) * scale


def to_float64(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


def tiny_gpt(seed=0, **kw):
    mg.manual_seed(seed)
    config = dict(vocab_size=11, block_size=8, n_layer=2, n_head=2, d_model=8) | kw
    return nn.GPT(**config)


@pytest.mark.parametrize("causal", [True, False])
def test_block_matches_numpy(causal):
    mg.manual_seed(0)
    block = nn.TransformerBlock(8, 2, causal=causal)
    randomise(block)
    x = np.random.default_rng(1).standard_normal((2, 5, 8)).astype(np.float32)
    out = block(mg.tensor(x))
    np.testing.assert_allclose(out.data, block_ref(x.astype(np.float64), numpy_state(block), "", 2, causal),
                               rtol=1e-4, atol=1e-4)


def test_block_gradcheck():
    mg.manual_seed(0)
    block = to_float64(nn.TransformerBlock(6, 2))
    randomise(block, 2)
    x = mg.tensor(np.random.default_rng(3).standard_normal((2, 4, 6)), requires_grad=True)
    assert mg.gradcheck(block, [x])


def test_gpt_forward_matches_numpy():
    model = tiny_gpt()
    randomise(model, 4)
    idx = np.random.default_rng(5).integers(0, 11, size=(3, 7))
    logits = model(idx)
    assert logits.shape == (3, 7, 11)
    np.testing.assert_allclose(logits.data, gpt_ref(idx, numpy_state(model), 2, 2), rtol=1e-4, atol=1e-4)


def test_gpt_init_follows_gpt2():
    model = tiny_gpt(n_layer=8, d_model=64, vocab_size=200, block_size=64)
    sd = numpy_state(model)
    assert abs(sd["wte.weight"].std() - 0.02) < 0.002
    assert abs(sd["blocks.3.attn.in_proj_weight"].std() - 0.02) < 0.002
    assert abs(sd["blocks.3.mlp.2.weight"].std() - 0.02 / 4) < 0.0005  # 0.02/√(2·8)
    np.testing.assert_array_equal(sd["blocks.3.mlp.0.bias"], 0)
    np.testing.assert_array_equal(sd["ln_f.weight"], 1)


def test_gpt_state_dict_keys_follow_the_documented_layout():
    keys = list(tiny_gpt(n_layer=1).state_dict())
    block = ["ln1.weight", "ln1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "ln2.weight", "ln2.bias", "mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias"]
    assert keys == ["wte.weight", "wpe.weight"] + [f"blocks.0.{k}" for k in block] + [
        "ln_f.weight", "ln_f.bias", "lm_head.weight"]
    for key in keys:  # each documented in the GPT docstring's mapping table
        assert key.replace("blocks.0.", "blocks.{i}.").rsplit(".", 1)[0] in nn.GPT.__doc__, key


def test_changing_a_future_token_leaves_earlier_logits_unchanged():
    model = tiny_gpt()
    idx = np.random.default_rng(6).integers(0, 11, size=(2, 8))
    changed = idx.copy()
    changed[:, 5] = (idx[:, 5] + 1) % 11
    a, b = model(idx).data, model(changed).data
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=0, atol=1e-6)
    assert np.abs(a[:, 5:] - b[:, 5:]).max() > 1e-4  # the change does reach the positions that may see it


def test_gpt_gradients_along_random_directions():
    # float64 model; the loss gradient over all ~2k parameters checked along 3 random directions
    model = to_float64(tiny_gpt(1))
    randomise(model, 7)
    rng = np.random.default_rng(8)
    idx, targets = rng.integers(0, 11, size=(2, 6)), rng.integers(0, 11, size=(2, 6))
    params = list(model.parameters())

    def loss():
        return F.cross_entropy(model(idx).reshape(-1, 11), targets.reshape(-1))
    loss().backward()
    eps = 1e-6
    originals = [p.data.copy() for p in params]
    for _ in range(3):
        u = [rng.standard_normal(p.shape) for p in params]
        norm = math.sqrt(sum((d * d).sum() for d in u))
        analytic = sum((p.grad * d).sum() for p, d in zip(params, u)) / norm
        values = []
        for sign in (1, -1):
            for p, o, d in zip(params, originals, u):
                p.data = o + sign * eps * d / norm
            with mg.no_grad():
                values.append(loss().item())
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(analytic - numeric) < 1e-6 + 1e-5 * abs(numeric), (analytic, numeric)
        for p, o in zip(params, originals):
            p.data = o


def test_gpt_bad_input_names_the_values():
    model = tiny_gpt()
    with pytest.raises(ValueError, match="length 9 exceeds block_size 8"):
        model(np.zeros((1, 9), np.int64))
    with pytest.raises(ValueError, match=r"\(B, T\).*\(9,\)"):
        model(np.zeros(9, np.int64))
    with pytest.raises(ValueError, match="float"):
        model(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.zeros((1, 1), np.int64), 2, temperature=-0.5)


def test_generate_is_deterministic_under_manual_seed():
    model = tiny_gpt()
    start = np.array([[1, 2], [3, 4]])
    mg.manual_seed(42)
    first = model.generate(start, 12)
    mg.manual_seed(42)
    second = model.generate(start, 12)
    assert first.shape == (2, 14) and first.dtype == np.int64
    np.testing.assert_array_equal(first, second)
    np.testing.assert_array_equal(first[:, :2], start)
    assert ((first >= 0) & (first < 11)).all()
    mg.manual_seed(43)
    assert not np.array_equal(model.generate(start, 12), first)  # 11^24 outcomes: a repeat means the seed is ignored


def test_generate_top_k_1_is_greedy_and_crops_to_block_size():
    model = tiny_gpt()
    randomise(model, 9, scale=0.5)
    idx = np.array([[3]])
    expected = idx.copy()
    for _ in range(12):  # beyond block_size 8: only the last 8 tokens are fed
        logits = model(expected[:, -8:]).data[:, -1]
        expected = np.concatenate([expected, logits.argmax(-1)[:, None]], axis=1)
    got = model.generate(mg.tensor(idx), 12, top_k=1)
    assert isinstance(got, mg.Tensor)
    np.testing.assert_array_equal(got.data, expected)


@pytest.mark.parametrize("temperature, top_k", [(1.0, None), (2.0, None), (0.5, 2)])
def test_sample_next_draws_from_softmax_of_scaled_logits(temperature, top_k):
    logits = np.array([0.0, 1.0, 2.0, -1.0])
    p = np.exp(logits / temperature)
    if top_k:
        p[np.argsort(logits)[:-top_k]] = 0
    p /= p.sum()
    mg.manual_seed(0)
    draws = sample_next(np.tile(logits, (40000, 1)), temperature, top_k)
    freq = np.bincount(draws, minlength=4) / draws.size
    np.testing.assert_allclose(freq, p, atol=0.01)  # binomial std ≤ 0.0025 at n = 40000
    if top_k:
        assert set(np.unique(draws)) <= set(np.argsort(logits)[-top_k:])


def test_tiny_gpt_overfits_a_short_text():
    text = "the quick brown fox jumps over the lazy dog."
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    x, y = ids[None, :-1], ids[None, 1:]
    # Threshold: a model that only learned which character follows which (bigram statistics) cannot go
    # below the conditional entropy H(next | current) of this text, 0.62 nats (checked here); the start is
    # ln(vocab) ≈ 3.3. Reaching 0.05 (mean probability of the right character ≈ 0.95) means attention
    # carries context from earlier positions.
    pairs, firsts = collections.Counter(zip(text, text[1:])), collections.Counter(text[:-1])
    bigram_entropy = -sum(c * math.log(c / firsts[a]) for (a, _), c in pairs.items()) / len(x[0])
    assert bigram_entropy > 0.6
    mg.manual_seed(0)
    model = nn.GPT(tok.vocab_size, len(x[0]), n_layer=2, n_head=2, d_model=32)
    opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(100):
        loss = F.cross_entropy(model(x).reshape(-1, tok.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.05:
            break
    assert loss.item() < 0.05, f"loss {loss.item():.3f} after training"
    model.eval()
    assert tok.decode(model.generate(ids[None, :1], len(text) - 1, top_k=1)[0]) == text


@pytest.mark.usefixtures("c_kernels_built")
def test_gpt_attention_runs_through_the_backend_kernels(monkeypatch):
    from minigrad import kernels
    calls = collections.Counter()
    for name in ("attention", "attention_backward"):
        def counted(*args, _inner=getattr(kernels, name), _name=name, **kwargs):
            calls[_name, kwargs["backend"]] += 1
            return _inner(*args, **kwargs)
        monkeypatch.setattr(kernels, name, counted)
    model = tiny_gpt()
    randomise(model, 10)
    idx = np.random.default_rng(11).integers(0, 11, size=(2, 8))
    weights = mg.tensor(np.linspace(-1, 1, 2 * 8 * 11, dtype=np.float32).reshape(2, 8, 11))
    results = {}
    for backend in ("numpy", "c"):
        model.zero_grad()
        with mg.backend(backend):
            logits = model(idx)
            (logits * weights).sum().backward()
        results[backend] = [logits.data] + [p.grad.copy() for p in model.parameters()]
    assert calls == {(name, backend): 2 for name in ("attention", "attention_backward")
                     for backend in ("numpy", "c")}  # once per layer, through the table on either backend
    for a, b in zip(results["c"], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
