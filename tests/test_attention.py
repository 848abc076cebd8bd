"""Scaled dot-product attention, MultiheadAttention and positional encoding against NumPy written out by hand."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
from minigrad.nn.attention import scaled_dot_product_attention as sdpa


def reference_attention(q, k, v, allowed=None, bias=None, scale=None):
    """softmax(q kᵀ·scale + bias) v, one query row at a time over the keys it may see (float64 loops).

    q (…, L, E), k (…, S, E), v (…, S, Ev) with identical leading dims; allowed (L, S) or (…, L, S) bool.
    A row that may see no key gives 0.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    lead, (L, E), S = q.shape[:-2], q.shape[-2:], k.shape[-2]
    scale = 1 / math.sqrt(E) if scale is None else scale
    allowed = np.ones((L, S), bool) if allowed is None else np.asarray(allowed)
    allowed = np.broadcast_to(allowed, lead + (L, S))
    bias = np.zeros(lead + (L, S)) if bias is None else np.broadcast_to(bias, lead + (L, S))
    out = np.zeros(lead + (L, v.shape[-1]))
    for b in np.ndindex(*lead):
        for i in range(L):
            keys = [j for j in range(S) if allowed[b + (i, j)]]
            if not keys:
                continue
            scores = np.array([q[b + (i,)] @ k[b + (j,)] * scale + bias[b + (i, j)] for j in keys])
            w = np.exp(scores - scores.max())
            w /= w.sum()
            out[b + (i,)] = sum(wj * v[b + (j,)] for wj, j in zip(w, keys))
    return out


def randn(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def tensors(*arrays, requires_grad=False):
    return [mg.tensor(a, requires_grad=requires_grad) for a in arrays]


def test_functional_exports_the_same_function():
    assert F.scaled_dot_product_attention is sdpa
    assert F.positional_encoding is nn.positional.positional_encoding


@pytest.mark.parametrize("L, S", [(5, 5), (3, 6), (6, 3)])
def test_forward_plain_and_causal_match_loops(L, S):
    q, k, v = randn(2, 3, L, 4, seed=1), randn(2, 3, S, 4, seed=2), randn(2, 3, S, 5, seed=3)
    out = sdpa(*tensors(q, k, v))
    np.testing.assert_allclose(out.data, reference_attention(q, k, v), rtol=1e-10, atol=1e-12)
    causal = sdpa(*tensors(q, k, v), is_causal=True)
    allowed = np.tril(np.ones((L, S), bool))  # top-left aligned: query i sees keys 0..i
    np.testing.assert_allclose(causal.data, reference_attention(q, k, v, allowed=allowed), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("L, S", [(70, 70), (70, 45), (45, 70)])
def test_causal_with_broadcast_keys_matches_loops(L, S):
    q, k, v = randn(2, L, 4, seed=1), randn(1, S, 4, seed=2), randn(1, S, 3, seed=3)  # composed: batch dims differ
    out = sdpa(*tensors(q, k, v), is_causal=True)
    expected = reference_attention(q, np.broadcast_to(k, (2, S, 4)), np.broadcast_to(v, (2, S, 3)),
                                   allowed=np.tril(np.ones((L, S), bool)))
    np.testing.assert_allclose(out.data, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("L, S", [(70, 70), (70, 45), (45, 70)])
def test_fused_and_composed_paths_agree_with_gradients(L, S, backend, request):
    """is_causal=True takes the fused op (the kernels' table); the same mask given as attn_mask is composed
    from Tensor ops. Values and gradients must agree."""
    if backend == "c":
        request.getfixturevalue("c_kernels_built")
    q, k, v = randn(2, 2, L, 5, seed=4), randn(2, 2, S, 5, seed=5), randn(2, 2, S, 3, seed=6)
    grad = randn(2, 2, L, 3, seed=7)
    results = []
    for kwargs in (dict(is_causal=True), dict(attn_mask=np.tril(np.ones((L, S), bool)))):
        tq, tk, tv = tensors(q, k, v, requires_grad=True)
        with mg.backend(backend):
            out = sdpa(tq, tk, tv, **kwargs)
        assert (out._op == f"scaled_dot_product_attention[{backend}]") == ("is_causal" in kwargs)
        out.backward(grad)
        results.append([out.data, tq.grad, tk.grad, tv.grad])
    for name, a, b in zip(("out", "dq", "dk", "dv"), *results):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=name)


def test_boolean_mask_true_means_take_part():
    q, k, v = randn(2, 4, 3, seed=1), randn(2, 6, 3, seed=2), randn(2, 6, 2, seed=3)
    allowed = np.random.default_rng(4).random((2, 4, 6)) < 0.6
    allowed[:, :, 0] = True
    out = sdpa(*tensors(q, k, v), attn_mask=allowed)
    np.testing.assert_allclose(out.data, reference_attention(q, k, v, allowed=allowed), rtol=1e-10, atol=1e-12)
    out_t = sdpa(*tensors(q, k, v), attn_mask=mg.tensor(allowed))
    np.testing.assert_array_equal(out_t.data, out.data)


def test_float_mask_is_added_and_scale_overrides():
    q, k, v = randn(3, 4, seed=1), randn(5, 4, seed=2), randn(5, 4, seed=3)
    bias = randn(3, 5, seed=5)
    out = sdpa(*tensors(q, k, v), attn_mask=bias, scale=0.3)
    np.testing.assert_allclose(out.data, reference_attention(q, k, v, bias=bias, scale=0.3), rtol=1e-10)


def test_float32_forward_and_broadcast_mask():
    q, k, v = (randn(2, 2, 7, 8, seed=s, dtype=np.float32) for s in (1, 2, 3))
    allowed = np.random.default_rng(9).random((7, 7)) < 0.7
    np.fill_diagonal(allowed, True)
    out = sdpa(*tensors(q, k, v), attn_mask=allowed)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.data, reference_attention(q, k, v, allowed=allowed), rtol=1e-5, atol=1e-6)


def test_fully_masked_row_gives_zero_output_and_finite_gradient():
    q, k, v = tensors(randn(3, 2, seed=1), randn(3, 2, seed=2), randn(3, 2, seed=3), requires_grad=True)
    allowed = np.array([[True, False, False], [False, False, False], [True, True, True]])
    out = sdpa(q, k, v, attn_mask=allowed)
    np.testing.assert_array_equal(out.data[1], 0.0)
    out.sum().backward()
    assert all(np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_array_equal(q.grad[1], 0.0)


def test_huge_scores_stay_finite():
    q = mg.tensor(np.full((4, 2), 100.0), requires_grad=True)  # scores of 1e4 / √2
    k = mg.tensor(randn(4, 2, seed=2) * 100, requires_grad=True)
    v = mg.tensor(randn(4, 3, seed=3), requires_grad=True)
    out = sdpa(q, k, v, is_causal=True)
    out.sum().backward()
    assert np.isfinite(out.data).all() and all(np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_allclose(out.data, reference_attention(q.data, k.data, v.data,
                                                             allowed=np.tril(np.ones((4, 4), bool))), rtol=1e-9)


@pytest.mark.parametrize("case", ["plain", "causal", "bool_mask", "scale", "broadcast_batch"])
def test_gradcheck(case):
    q, k, v = randn(2, 4, 3, seed=1), randn(2, 5, 3, seed=2), randn(2, 5, 2, seed=3)
    kwargs = {}
    if case == "causal":
        kwargs = dict(is_causal=True)
    elif case == "bool_mask":
        kwargs = dict(attn_mask=np.random.default_rng(0).random((4, 5)) < 0.5)
    elif case == "scale":
        kwargs = dict(scale=0.7)
    elif case == "broadcast_batch":
        k, v = k[:1], v[:1]  # one set of keys and values shared by both queries' batches
    assert mg.gradcheck(lambda a, b, c: sdpa(a, b, c, **kwargs), tensors(q, k, v, requires_grad=True))


def test_gradcheck_float_mask_that_requires_grad():
    q, k, v, bias = randn(3, 2, seed=1), randn(4, 2, seed=2), randn(4, 3, seed=3), randn(3, 4, seed=4)
    assert mg.gradcheck(lambda a, b, c, m: sdpa(a, b, c, attn_mask=m), tensors(q, k, v, bias, requires_grad=True))


def test_gradcheck_larger_tensors_by_random_directions():
    # 2·3·40·16 = 3840 elements per input (two query blocks): gradcheck samples elements and checks
    # random directions
    q, k, v = (randn(2, 3, 40, 16, seed=s) for s in (1, 2, 3))
    assert mg.gradcheck(lambda a, b, c: sdpa(a, b, c, is_causal=True), tensors(q, k, v, requires_grad=True))


def test_dropout_zeroes_and_rescales_weights():
    # with V = I the output *is* the (dropped-out) weight matrix
    q, k = randn(1, 40, 4, seed=1), randn(1, 40, 4, seed=2)
    eye = np.eye(40)[None]
    weights = reference_attention(q, k, eye)
    mg.manual_seed(0)
    dropped = sdpa(*tensors(q, k, eye), dropout_p=0.25).data
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / 0.75, rtol=1e-10)
    assert 0.2 < 1 - kept.mean() < 0.3  # 1600 weights, std of the dropped fraction ≈ 0.011
    mg.manual_seed(0)
    np.testing.assert_array_equal(sdpa(*tensors(q, k, eye), dropout_p=0.25).data, dropped)


def test_gradcheck_with_dropout_under_a_fixed_seed():
    def fn(a, b, c):
        mg.manual_seed(7)  # the same dropout mask on every evaluation
        return sdpa(a, b, c, dropout_p=0.3)
    assert mg.gradcheck(fn, tensors(randn(4, 3, seed=1), randn(5, 3, seed=2), randn(5, 2, seed=3),
                                    requires_grad=True))


@pytest.mark.parametrize("kwargs, message", [
    (dict(attn_mask=np.ones((4, 4), bool), is_causal=True), "not both"),
    (dict(attn_mask=np.ones((3, 4), bool)), r"\(3, 4\).*\(2, 4, 4\)"),
    (dict(attn_mask=np.ones((4, 4), np.int64)), "int64"),
    (dict(dropout_p=1.0), "dropout_p"),
])
def test_bad_arguments(kwargs, message):
    q, k, v = tensors(randn(2, 4, 3, seed=1), randn(2, 4, 3, seed=2), randn(2, 4, 3, seed=3))
    with pytest.raises((ValueError, TypeError), match=message):
        sdpa(q, k, v, **kwargs)


def test_mismatched_shapes_name_them():
    with pytest.raises(ValueError, match=r"\(2, 4, 3\).*\(2, 4, 5\)"):
        sdpa(*tensors(randn(2, 4, 3), randn(2, 4, 5), randn(2, 4, 3)))
    with pytest.raises(ValueError, match="sequence length S"):
        sdpa(*tensors(randn(2, 4, 3), randn(2, 4, 3), randn(2, 5, 3)))


@pytest.mark.parametrize("backend, shapes", [
    ("c", ((2, 3, 33, 16), (2, 3, 33, 16), (2, 3, 33, 16))),
    ("c", ((2, 3, 17, 16), (2, 3, 40, 16), (2, 3, 40, 8))),
    ("cuda-sim", ((2, 2, 9, 8), (2, 2, 9, 8), (2, 2, 9, 8))),
    ("cuda-sim", ((1, 2, 5, 8), (1, 2, 11, 8), (1, 2, 11, 4))),
])
@pytest.mark.parametrize("is_causal", [False, True])
def test_kernel_backend_matches_numpy_forward_and_backward(backend, shapes, is_causal, request):
    if backend == "c":
        request.getfixturevalue("c_kernels_built")
    q, k, v = (randn(*shape, seed=s, dtype=np.float32) for s, shape in enumerate(shapes))
    grad = randn(*(shapes[0][:-1] + shapes[2][-1:]), seed=4, dtype=np.float32)
    results = {}
    for name in ("numpy", backend):
        tq, tk, tv = tensors(q, k, v, requires_grad=True)
        with mg.backend(name):
            out = sdpa(tq, tk, tv, is_causal=is_causal)
            out.backward(grad)
        results[name] = [out.data, tq.grad, tk.grad, tv.grad]
        assert out._op == f"scaled_dot_product_attention[{name}]"  # the kernel route was really taken
    for name, a, b in zip(("out", "dq", "dk", "dv"), results[backend], results["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.usefixtures("c_kernels_built")
def test_backend_can_route_attention_alone(monkeypatch):
    from minigrad import kernels
    used = []
    original = kernels.matmul
    monkeypatch.setattr(kernels, "matmul", lambda a, b, backend=None: used.append(backend) or original(a, b, backend))
    q, k, v = tensors(*(randn(2, 2, 6, 4, seed=s, dtype=np.float32) for s in (1, 2, 3)), requires_grad=True)
    with mg.backend("numpy"), mg.backend("c", ops=("attention",)):
        assert mg.get_backend() == "numpy"
        out = sdpa(q, k, v, is_causal=True) @ mg.tensor(np.eye(4, dtype=np.float32))  # matmul stays NumPy
    assert out._parents[0]._op == "scaled_dot_product_attention[c]" and used == ["numpy"]
    out.sum().backward()
    expected = reference_attention(q.data, k.data, v.data, allowed=np.tril(np.ones((6, 6), bool)))
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-6)
    with mg.backend("numpy"):
        assert sdpa(q, k, v)._op == "scaled_dot_product_attention[numpy]"  # the routing ends with the block
    with pytest.raises(ValueError, match="unknown backend 'fast'"):
        with mg.backend("fast", ops=("attention",)):
            pass
    with pytest.raises(ValueError, match="unknown op 'softmax'"):
        with mg.backend("c", ops=("softmax",)):
            pass


def test_masks_and_a_custom_scale_take_the_composed_path_under_other_backends():
    q, k, v = tensors(randn(1, 4, 3, seed=1), randn(1, 4, 3, seed=2), randn(1, 4, 3, seed=3))
    allowed = np.tril(np.ones((4, 4), bool))
    with mg.backend("cuda-sim"):
        out = sdpa(q, k, v, attn_mask=allowed)
        scaled = sdpa(q, k, v, scale=0.5)
    assert out._op == scaled._op == "matmul"  # weights @ v, the last op of the composition
    np.testing.assert_allclose(out.data, reference_attention(q.data, k.data, v.data, allowed=allowed), rtol=1e-10)


# ----- MultiheadAttention ---------------------------------------------------------------------

def mha_reference(x, w_in, b_in, w_out, b_out, H, allowed=None):
    """PyTorch's MultiheadAttention math written out in NumPy for batch-first x (B, T, E)."""
    B, T, E = x.shape
    hd = E // H
    qkv = x @ w_in.T + b_in  # (B, T, 3E)
    q, k, v = (qkv[..., i * E:(i + 1) * E].reshape(B, T, H, hd).transpose(0, 2, 1, 3) for i in range(3))
    heads = reference_attention(q, k, v, allowed=allowed)  # (B, H, T, hd)
    return heads.transpose(0, 2, 1, 3).reshape(B, T, E) @ w_out.T + b_out


def mha_weights(mha):
    return (mha.in_proj_weight.data, mha.in_proj_bias.data, mha.out_proj.weight.data, mha.out_proj.bias.data)


def randomise(module, seed=0):
    """Nonzero biases too, so a wrong bias path cannot hide behind PyTorch's zero init."""
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.5


def test_mha_parameter_names_and_shapes_are_pytorchs():
    mha = nn.MultiheadAttention(12, 3)
    assert {k: v.shape for k, v in mha.state_dict().items()} == {
        "in_proj_weight": (36, 12), "in_proj_bias": (36,), "out_proj.weight": (12, 12), "out_proj.bias": (12,)}
    np.testing.assert_array_equal(mha.in_proj_bias.data, 0)
    np.testing.assert_array_equal(mha.out_proj.bias.data, 0)
    assert "in_proj_bias" not in nn.MultiheadAttention(12, 3, bias=False).state_dict()


@pytest.mark.parametrize("causal", [False, True])
def test_mha_forward_matches_numpy(causal):
    mg.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2)
    randomise(mha)
    x = randn(3, 5, 8, seed=1, dtype=np.float32)
    out = mha(mg.tensor(x), is_causal=causal)
    allowed = np.tril(np.ones((5, 5), bool)) if causal else None
    np.testing.assert_allclose(out.data, mha_reference(x, *mha_weights(mha), 2, allowed), rtol=1e-4, atol=1e-5)


def test_mha_boolean_mask_uses_pytorchs_convention_true_is_blocked():
    mha = nn.MultiheadAttention(6, 3)
    randomise(mha, 1)
    x = randn(2, 4, 6, seed=2, dtype=np.float32)
    blocked = np.triu(np.ones((4, 4), bool), 1)
    out = mha(mg.tensor(x), attn_mask=blocked)
    np.testing.assert_allclose(out.data, mha_reference(x, *mha_weights(mha), 3, ~blocked), rtol=1e-4, atol=1e-5)
    # is_causal takes the fused kernel, the mask the composed ops: float32 rounding apart, the same numbers
    np.testing.assert_allclose(out.data, mha(mg.tensor(x), is_causal=True).data, rtol=1e-6, atol=1e-6)
    per_head = np.broadcast_to(blocked, (2 * 3, 4, 4))  # (B·H, T, T)
    np.testing.assert_allclose(mha(mg.tensor(x), attn_mask=per_head).data, out.data, rtol=1e-6)


def test_mha_sequence_first_layout():
    mha = nn.MultiheadAttention(6, 2, batch_first=False)
    randomise(mha, 2)
    x = randn(4, 2, 6, seed=3, dtype=np.float32)  # (T, B, E)
    out = mha(mg.tensor(x))
    expected = mha_reference(x.transpose(1, 0, 2), *mha_weights(mha), 2).transpose(1, 0, 2)
    np.testing.assert_allclose(out.data, expected, rtol=1e-4, atol=1e-5)


def test_mha_gradcheck_input_and_weights():
    mha = nn.MultiheadAttention(6, 2)
    randomise(mha, 3)
    w_out, b_out = (mg.tensor(a.astype(np.float64)) for a in (mha.out_proj.weight.data, mha.out_proj.bias.data))

    def fn(x, w_in, b_in):
        # float64 copies of the module's weights, passed the way forward reads them
        object.__setattr__(mha, "in_proj_weight", w_in)
        object.__setattr__(mha, "in_proj_bias", b_in)
        object.__setattr__(mha.out_proj, "weight", w_out)
        object.__setattr__(mha.out_proj, "bias", b_out)
        return mha(x, is_causal=True)
    inputs = tensors(randn(2, 4, 6, seed=4), mha.in_proj_weight.data.astype(np.float64),
                     mha.in_proj_bias.data.astype(np.float64), requires_grad=True)
    assert mg.gradcheck(fn, inputs)


def test_mha_dropout_only_in_training():
    mha = nn.MultiheadAttention(8, 2, dropout=0.5)
    randomise(mha, 4)
    x = mg.tensor(randn(2, 6, 8, seed=5, dtype=np.float32))
    mha.eval()
    np.testing.assert_allclose(mha(x).data, mha_reference(x.data, *mha_weights(mha), 2), rtol=1e-4, atol=1e-5)
    mha.train()
    assert not np.allclose(mha(x).data, mha_reference(x.data, *mha_weights(mha), 2), atol=1e-3)


def test_mha_bad_arguments_name_the_values():
    with pytest.raises(ValueError, match="embed_dim 10.*num_heads 3"):
        nn.MultiheadAttention(10, 3)
    mha = nn.MultiheadAttention(8, 2)
    with pytest.raises(ValueError, match=r"embed_dim 8.*\(2, 5, 6\)"):
        mha(mg.zeros(2, 5, 6))
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(20, 5, 5\).*\(4, 4\)"):
        mha(mg.zeros(10, 5, 8), attn_mask=np.zeros((4, 4), bool))


@pytest.mark.slow  # importing torch alone takes seconds
def test_mha_matches_torch_when_installed():
    torch = pytest.importorskip("torch")
    mha = nn.MultiheadAttention(8, 2)
    randomise(mha, 5)
    ref = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    ref.load_state_dict({k: torch.from_numpy(v.data.copy()) for k, v in mha.state_dict().items()})
    x = randn(2, 5, 8, seed=6, dtype=np.float32)
    blocked = np.triu(np.ones((5, 5), bool), 1)
    xt = torch.from_numpy(x)
    expected, _ = ref(xt, xt, xt, attn_mask=torch.from_numpy(blocked), need_weights=False)
    np.testing.assert_allclose(mha(mg.tensor(x), attn_mask=blocked).data, expected.detach().numpy(),
                               rtol=1e-4, atol=1e-5)


# ----- positional encoding --------------------------------------------------------------------

@pytest.mark.parametrize("d_model", [6, 7, 1])
def test_positional_encoding_matches_the_formula(d_model):
    pe = F.positional_encoding(11, d_model)
    assert pe.shape == (11, d_model) and pe.dtype == np.float32
    for pos in range(11):
        for col in range(d_model):
            i2 = col - col % 2  # 2i
            angle = pos / 10000 ** (i2 / d_model)
            expected = math.sin(angle) if col % 2 == 0 else math.cos(angle)
            assert abs(pe.data[pos, col] - expected) < 1e-6, (pos, col)


def test_positional_encoding_shift_is_a_rotation():
    # PE(pos + k) = R_k PE(pos) within each (sin, cos) pair: a fixed relative offset is a linear map
    pe = F.positional_encoding(20, 8).data.astype(np.float64)
    k, i2 = 3, 4
    w = 1 / 10000 ** (i2 / 8)
    rot = np.array([[math.cos(k * w), -math.sin(k * w)], [math.sin(k * w), math.cos(k * w)]])
    np.testing.assert_allclose(pe[k:, i2:i2 + 2], pe[:-k, i2:i2 + 2] @ rot, atol=1e-6)


def test_positional_encoding_module_adds_the_table_as_a_buffer():
    layer = nn.PositionalEncoding(5, max_len=16)
    assert list(layer.parameters()) == []
    assert list(layer.state_dict()) == ["pe"]
    x = mg.tensor(randn(2, 9, 5, dtype=np.float32), requires_grad=True)
    out = layer(x)
    np.testing.assert_allclose(out.data, x.data + F.positional_encoding(9, 5).data, rtol=1e-6)
    out.sum().backward()
    np.testing.assert_array_equal(x.grad, 1.0)
    with pytest.raises(ValueError, match="length 17 exceeds max_len 16"):
        layer(mg.zeros(1, 17, 5))
    with pytest.raises(ValueError, match=r"d_model 5.*\(1, 3, 4\)"):
        layer(mg.zeros(1, 3, 4))
