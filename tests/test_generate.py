"""Generation: the KV cache against full recomputation, and the sampling controls against NumPy by hand."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
from minigrad.kernels.numpy_backend import causal_mask
from minigrad.nn.attention import KVCache
from minigrad.nn.transformer import sample_next, sampling_probs


def gpt(dtype=np.float64, block_size=8, vocab=13, seed=0):
    """A small GPT with weights large enough that its next-token distributions are far from uniform."""
    mg.manual_seed(seed)
    model = nn.GPT(vocab, block_size, n_layer=2, n_head=2, d_model=16)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data = rng.normal(0, 0.6, p.shape).astype(dtype)
    return model.eval()


def test_cached_logits_equal_the_full_forward():
    model = gpt()
    idx = np.random.default_rng(1).integers(0, 13, size=(3, 8))
    with mg.no_grad():
        full = model(idx).data  # (B, T, V)
        caches = model.new_kv_caches(3)
        pieces = [model(idx[:, :3], kv_caches=caches).data,  # the prompt: causal attention over an empty cache
                  model(idx[:, 3:4], kv_caches=caches).data,  # one token: no mask
                  model(idx[:, 4:7], kv_caches=caches).data,  # three tokens after four cached: the offset mask
                  model(idx[:, 7:], kv_caches=caches).data]
    np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, rtol=0, atol=1e-12)
    assert [c.length for c in caches] == [8, 8]


def test_cached_causal_mask_is_aligned_bottom_right():
    np.testing.assert_array_equal(causal_mask(2, 5, offset=3), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(causal_mask(3, 3, offset=0), np.tril(np.ones((3, 3))))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_greedy_tokens_are_the_same_with_and_without_the_cache_past_block_size(dtype):
    model = gpt(dtype)
    prompt = np.array([[1, 2, 3], [4, 4, 4]])
    cached = model.generate(prompt, 30, temperature=0, use_cache=True)  # 33 tokens: the window jumps 6 times
    plain = model.generate(prompt, 30, temperature=0, use_cache=False)
    np.testing.assert_array_equal(cached, plain)
    expected, start = prompt.copy(), 0  # greedy by hand: the window holds 4 to 8 tokens, jumping when full
    for _ in range(30):
        if expected.shape[1] - start > 8:
            start = expected.shape[1] - 4
        logits = model(expected[:, start:]).data[:, -1]
        expected = np.concatenate([expected, logits.argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(cached, expected)
    assert len(set(cached[0, 3:].tolist())) > 2  # not a constant sequence


def test_sampled_tokens_are_the_same_with_and_without_the_cache():
    model = gpt()
    for kwargs in (dict(), dict(temperature=0.7, top_k=5), dict(top_p=0.8)):
        mg.manual_seed(3)
        cached = model.generate(np.array([[5]]), 20, **kwargs)
        mg.manual_seed(3)
        plain = model.generate(np.array([[5]]), 20, use_cache=False, **kwargs)
        np.testing.assert_array_equal(cached, plain)


def test_a_prompt_longer_than_block_size_is_cropped():
    model = gpt()
    prompt = np.arange(12)[None, :] % 13
    out = model.generate(prompt, 5, temperature=0)
    assert out.shape == (1, 17)
    np.testing.assert_array_equal(out, model.generate(prompt, 5, temperature=0, use_cache=False))
    first = model(prompt[:, -8:]).data[0, -1].argmax()  # the first new token sees the prompt's last 8 tokens
    assert out[0, 12] == first
    second = model(out[:, 9:13]).data[0, -1].argmax()  # then the window jumps: the newest 4 tokens
    assert out[0, 13] == second


def test_cache_misuse_is_refused():
    cache = KVCache(1, 2, 4, 3)
    with pytest.raises(ValueError, match="exceed max_len 4"):
        cache.append(np.zeros((1, 2, 5, 3)), np.zeros((1, 2, 5, 3)))
    with pytest.raises(ValueError, match="do not fit"):
        cache.append(np.zeros((1, 3, 1, 3)), np.zeros((1, 3, 1, 3)))
    attn = nn.MultiheadAttention(6, 2)
    with pytest.raises(ValueError, match="no_grad"):
        attn(mg.randn(1, 1, 6), is_causal=True, kv_cache=KVCache(1, 2, 4, 3))
    model = gpt()
    caches = model.new_kv_caches(1)
    with mg.no_grad():
        model(np.zeros((1, 6), np.int64), kv_caches=caches)
        with pytest.raises(ValueError, match="length 9 exceeds block_size 8"):
            model(np.zeros((1, 3), np.int64), kv_caches=caches)


def probs_by_hand(logits, temperature, top_k, top_p):
    """One row at a time with Python sorting: softmax(z/τ), drop below the k-th largest, then keep the most
    likely tokens until their sum reaches top_p."""
    out = []
    for row in logits:
        if temperature == 0:
            p = np.zeros(len(row))
            p[int(np.argmax(row))] = 1
            out.append(p)
            continue
        z = row / temperature
        if top_k is not None:
            kth = sorted(z, reverse=True)[min(top_k, len(z)) - 1]
            z = np.array([v if v >= kth else -np.inf for v in z])
        p = np.exp(z - z.max())
        p /= p.sum()
        if top_p is not None:
            ranked = sorted(range(len(p)), key=lambda i: -p[i])
            kept, total = [], 0.0
            for i in ranked:
                kept.append(i)
                total += p[i]
                if total >= top_p:
                    break
            p = np.array([p[i] if i in kept else 0.0 for i in range(len(p))])
            p /= p.sum()
        out.append(p)
    return np.array(out)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, None, None), (0.5, None, None), (2.0, None, None), (0, None, None), (1.0, 3, None),
    (1.0, None, 0.6), (0.7, 4, 0.9), (1.3, None, 0.95), (1.0, 1, None), (1.0, None, 1.0), (1.0, 50, None)])
def test_sampling_probs_match_numpy_by_hand(temperature, top_k, top_p):
    logits = np.random.default_rng(7).normal(0, 2, size=(6, 9))
    got = sampling_probs(logits, temperature, top_k, top_p)
    np.testing.assert_allclose(got, probs_by_hand(logits, temperature, top_k, top_p), rtol=1e-12, atol=1e-15)


def test_top_p_keeps_the_smallest_set_that_reaches_p():
    logits = np.log(np.array([[0.5, 0.05, 0.3, 0.15]]))
    kept = lambda p: set(np.flatnonzero(sampling_probs(logits, 1.0, None, p)[0]))
    assert kept(0.4) == {0} and kept(0.79) == {0, 2} and kept(0.81) == {0, 2, 3} and kept(0.99) == {0, 1, 2, 3}
    np.testing.assert_allclose(sampling_probs(logits, 1.0, None, 0.79)[0], [0.625, 0, 0.375, 0])


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, None, None), (0.6, 3, None), (1.0, None, 0.7)])
def test_sample_next_draws_from_sampling_probs(temperature, top_k, top_p):
    logits = np.array([0.3, 1.0, -0.5, 2.0, 0.0])
    p = probs_by_hand(logits[None], temperature, top_k, top_p)[0]
    mg.manual_seed(0)
    draws = sample_next(np.tile(logits, (40000, 1)), temperature, top_k, top_p)
    np.testing.assert_allclose(np.bincount(draws, minlength=5) / draws.size, p, atol=0.01)  # std <= 0.0025
    assert set(np.unique(draws)) == set(np.flatnonzero(p))


def test_bad_sampling_arguments_are_named():
    model = gpt()
    start = np.array([[1]])
    for kwargs, message in [(dict(temperature=-1.0), "temperature must be >= 0.*-1.0"),
                            (dict(temperature=float("nan")), "temperature"),
                            (dict(top_p=0.0), r"top_p must lie in \(0, 1\].*0.0"),
                            (dict(top_p=1.5), "top_p.*1.5"), (dict(top_p=-0.2), "top_p"),
                            (dict(top_k=0), "top_k must be an integer >= 1, got 0"), (dict(top_k=2.5), "top_k")]:
        with pytest.raises(ValueError, match=message):
            model.generate(start, 3, **kwargs)
        with pytest.raises(ValueError, match=message):
            sampling_probs(np.zeros((1, 4)), **kwargs)
