"""Activations, erf/GELU, softmax, linear, dropout, layer_norm, embedding against formulas written out in NumPy."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ----- elementwise activations ---------------------------------------------------------------------
@pytest.mark.parametrize("fn,ref", [
    (F.relu, lambda x: np.maximum(x, 0)),
    (F.tanh, np.tanh),
    (F.sigmoid, lambda x: 1 / (1 + np.exp(-x))),
])
def test_elementwise_activations(fn, ref):
    x = rng(1).standard_normal((3, 4)) * 3
    np.testing.assert_allclose(fn(t64(x, False)).data, ref(x), rtol=1e-12, atol=1e-15)
    assert mg.gradcheck(fn, [t64(x + 0.01)])  # +0.01 keeps relu's kink away from the samples


def test_erf_is_double_precision():
    xs = np.concatenate([np.linspace(-7, 7, 2801), [0.0, 1e-8, -1e-3, 0.5, 3.7, 26.0, -30.0]])
    exact = np.array([math.erf(v) for v in xs])
    assert np.abs(F.erf(xs) - exact).max() < 5e-15


def test_normal_cdf_keeps_relative_accuracy_in_the_left_tail():
    xs = np.linspace(-37, 8, 4501)
    exact = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in xs])
    rel = np.abs(F.normal_cdf(xs) - exact) / exact
    assert rel.max() < 1e-12, f"worst relative error {rel.max():.2e} at x = {xs[rel.argmax()]}"


def test_float32_erf_is_float32_accurate_and_stays_float32():
    xs = np.linspace(-6, 6, 1201)
    exact = np.array([math.erf(v) for v in xs])
    got = F.erf(xs.astype(np.float32))
    assert got.dtype == np.float32
    assert np.abs(got - exact).max() < 5e-7


def test_gelu_exact_form():
    x = rng(2).standard_normal(50) * 4
    expected = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(F.gelu(t64(x, False)).data, expected, rtol=1e-13, atol=1e-15)
    assert mg.gradcheck(F.gelu, [t64(x)])


def test_gelu_tanh_form():
    x = rng(3).standard_normal(50) * 4
    expected = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    np.testing.assert_allclose(F.gelu(t64(x, False), approximate="tanh").data, expected, rtol=1e-13, atol=1e-15)
    assert mg.gradcheck(lambda a: F.gelu(a, approximate="tanh"), [t64(x)])


def test_gelu_float32_matches_float64_and_keeps_dtype():
    x = rng(4).standard_normal((4, 300)).astype(np.float32) * 3
    y = F.gelu(mg.tensor(x, requires_grad=True))
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, F.gelu(t64(x, False)).data, rtol=1e-6, atol=1e-7)
    y.sum().backward()
    assert y.dtype == np.float32


@pytest.mark.slow  # importing torch alone takes seconds
def test_gelu_matches_torch_if_installed():
    torch = pytest.importorskip("torch")
    x = rng(5).standard_normal(200) * 5
    for approximate in ("none", "tanh"):
        expected = torch.nn.functional.gelu(torch.tensor(x), approximate=approximate).numpy()
        np.testing.assert_allclose(F.gelu(t64(x, False), approximate).data, expected, rtol=1e-12, atol=1e-14)


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match=r"approximate must be 'none' or 'tanh', got 'erf'"):
        F.gelu(t64([1.0]), approximate="erf")


# ----- softmax family ------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_and_log_softmax_formulas(dim):
    x = rng(6).standard_normal((3, 5))
    e = np.exp(x)
    expected = e / e.sum(axis=dim, keepdims=True)
    np.testing.assert_allclose(F.softmax(t64(x, False), dim).data, expected, rtol=1e-12)
    np.testing.assert_allclose(F.log_softmax(t64(x, False), dim).data, np.log(expected), rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(lambda a: F.softmax(a, dim), [t64(x)])
    assert mg.gradcheck(lambda a: F.log_softmax(a, dim), [t64(x)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family_is_finite_for_huge_logits(dtype):
    x = mg.tensor(np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4 + 1]], dtype=dtype), requires_grad=True)
    p = F.softmax(x, -1)
    z = 2 * math.exp(-1) + 1  # row 2: the last logit is 1 above the other two
    np.testing.assert_allclose(p.data, [[1, 0, 0], [math.exp(-1) / z, math.exp(-1) / z, 1 / z]], rtol=1e-6)
    (p * mg.tensor(np.array([[1.0, 2, 3], [3, 2, 1]], dtype=dtype))).sum().backward()
    assert np.isfinite(x.grad).all()
    x.grad = None
    logp = F.log_softmax(x, -1)
    np.testing.assert_allclose(logp.data[1], [-1 - math.log(z), -1 - math.log(z), -math.log(z)], rtol=1e-6)
    assert logp.data[0, 1] == pytest.approx(-2e4, rel=1e-6)
    logp.sum().backward()
    assert np.isfinite(x.grad).all()


# ----- linear ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 3), (3,)])
def test_linear_formula_and_gradients(shape):
    x, w, b = rng(7).standard_normal(shape), rng(8).standard_normal((2, 3)), rng(9).standard_normal(2)
    y = F.linear(t64(x, False), t64(w, False), t64(b, False))
    assert y.shape == shape[:-1] + (2,)
    expected = np.einsum("...i,oi->...o", x, w) + b
    np.testing.assert_allclose(y.data, expected, rtol=1e-12)
    np.testing.assert_allclose(F.linear(t64(x, False), t64(w, False)).data, expected - b, rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(F.linear, [t64(x), t64(w), t64(b)])


def test_linear_bad_shapes():
    with pytest.raises(ValueError, match=r"last dim in_features=3 \(…, 3\), got shape \(4, 2\)"):
        F.linear(t64(np.ones((4, 2))), t64(np.ones((5, 3))))
    with pytest.raises(ValueError, match=r"bias of shape \(5,\), got \(3,\)"):
        F.linear(t64(np.ones((4, 3))), t64(np.ones((5, 3))), t64(np.ones(3)))


# ----- dropout ---------------------------------------------------------------------------------------
def test_dropout_zeroes_a_fraction_p_and_rescales_the_rest():
    x = rng(10).standard_normal((200, 100)) + 5  # no exact zeros in x itself
    mg.manual_seed(0)
    y = F.dropout(t64(x, False), p=0.3, training=True).data
    kept = y != 0
    # 20000 Bernoulli(0.7) draws: the kept fraction is within 0.7 ± 0.01 (3 standard deviations = 0.0097).
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y[kept], x[kept] / 0.7, rtol=1e-12)


def test_dropout_is_reproducible_under_manual_seed_and_identity_in_eval():
    x = t64(rng(11).standard_normal((8, 8)), False)
    mg.manual_seed(42)
    a = F.dropout(x, 0.5, True).data
    mg.manual_seed(42)
    b = F.dropout(x, 0.5, True).data
    np.testing.assert_array_equal(a, b)
    assert F.dropout(x, 0.5, training=False) is x
    np.testing.assert_array_equal(F.dropout(x, 0.0, True).data, x.data)
    np.testing.assert_array_equal(F.dropout(x, 1.0, True).data, np.zeros((8, 8)))


def test_dropout_gradient_is_the_scaled_mask():
    x = t64(rng(12).standard_normal((5, 6)) + 3)
    mg.manual_seed(3)
    y = F.dropout(x, 0.25, True)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, (y.data != 0) / 0.75, rtol=1e-12)


def test_dropout_rejects_bad_p():
    with pytest.raises(ValueError, match=r"between 0 and 1, got p=1.5"):
        F.dropout(t64([1.0]), 1.5)


# ----- layer_norm ------------------------------------------------------------------------------------
def layer_norm_ref(x, k, w, b, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    mu = x.mean(axis=axes, keepdims=True)
    var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


@pytest.mark.parametrize("normalized_shape", [(6,), (4, 6)])
def test_layer_norm_formula_and_gradients(normalized_shape):
    x = rng(13).standard_normal((3, 4, 6)) * 2 + 1
    w, b = rng(14).standard_normal(normalized_shape), rng(15).standard_normal(normalized_shape)
    y = F.layer_norm(t64(x, False), normalized_shape, t64(w, False), t64(b, False), eps=1e-5)
    np.testing.assert_allclose(y.data, layer_norm_ref(x, len(normalized_shape), w, b, 1e-5), rtol=1e-12, atol=1e-12)
    assert mg.gradcheck(lambda a, c, d: F.layer_norm(a, normalized_shape, c, d), [t64(x), t64(w), t64(b)])
    assert mg.gradcheck(lambda a: F.layer_norm(a, normalized_shape), [t64(x)])


def test_layer_norm_bad_shape():
    with pytest.raises(ValueError, match=r"last dims are normalized_shape \(5,\) \(…, 5\), got shape \(2, 4\)"):
        F.layer_norm(t64(np.ones((2, 4))), 5)
    with pytest.raises(ValueError, match=r"weight of shape \(4,\), got \(3,\)"):
        F.layer_norm(t64(np.ones((2, 4))), 4, t64(np.ones(3)))
    with pytest.raises(TypeError, match=r"bias of the input's dtype float32, got float64"):
        F.layer_norm(mg.ones(2, 4), 4, mg.ones(4), t64(np.zeros(4)))


# ----- embedding -------------------------------------------------------------------------------------
def test_embedding_looks_up_rows_and_sums_gradients_of_repeated_ids():
    w = rng(16).standard_normal((5, 3))
    idx = np.array([[0, 2, 2], [4, 2, 0]])
    y = F.embedding(mg.tensor(idx), t64(w, False))
    np.testing.assert_array_equal(y.data, w[idx])
    weight = t64(w)
    g = rng(17).standard_normal((2, 3, 3))
    F.embedding(idx, weight).backward(g)
    expected = np.zeros((5, 3))
    for (i, j), r in np.ndenumerate(idx):
        expected[r] += g[i, j]
    np.testing.assert_allclose(weight.grad, expected, rtol=1e-12)
    assert mg.gradcheck(lambda a: F.embedding(idx, a), [t64(w)])


def test_embedding_bad_ids():
    w = t64(np.ones((5, 3)))
    with pytest.raises(IndexError, match=r"token id 5 is out of range for a table of 5 rows \(expected 0 <= id < 5\)"):
        F.embedding(np.array([1, 5]), w)
    with pytest.raises(IndexError, match=r"token id -1"):
        F.embedding(np.array([-1]), w)
    with pytest.raises(TypeError, match=r"integer token ids, got dtype float"):
        F.embedding(np.array([1.0]), w)


# ----- float32 stays float32 ---------------------------------------------------------------------------
def test_every_op_keeps_float32_in_values_and_gradients():
    """No op may silently promote a float32 model to float64 (that would double memory and halve speed)."""
    r = rng(18)

    def f32(*shape):
        return mg.tensor(r.standard_normal(shape).astype(np.float32), requires_grad=True)

    x4, w4, b = f32(2, 3, 6, 6), f32(4, 3, 3, 3), f32(4)
    x3, w2, v = f32(2, 5, 4), f32(3, 4), f32(3)
    probs = mg.tensor(r.uniform(0.1, 0.9, (2, 5)).astype(np.float32), requires_grad=True)
    target = mg.tensor(r.uniform(0, 1, (2, 5)).astype(np.float32))
    ln_w, ln_b = f32(4), f32(4)
    h, w_hh = f32(2, 3), f32(3, 3)
    cases = {
        "gelu": lambda: F.gelu(x3), "gelu_tanh": lambda: F.gelu(x3, approximate="tanh"),
        "softmax": lambda: F.softmax(x3, -1), "log_softmax": lambda: F.log_softmax(x3, -1),
        "linear": lambda: F.linear(x3, w2, v), "conv2d": lambda: F.conv2d(x4, w4, b, stride=2, padding=1),
        "convolve2d": lambda: F.convolve2d(x4[0], w4[0, 0], mode="full"), "max_pool2d": lambda: F.max_pool2d(x4, 2),
        "dropout": lambda: F.dropout(x3, 0.5, True), "layer_norm": lambda: F.layer_norm(x3, 4, ln_w, ln_b),
        "embedding": lambda: F.embedding(np.array([[0, 2], [1, 1]]), w2),
        "mse_loss": lambda: F.mse_loss(x3, x3.detach() * 2),
        "cross_entropy": lambda: F.cross_entropy(x3, np.array([[0, 1, 2, 3], [3, 2, 1, 0]])),
        "binary_cross_entropy": lambda: F.binary_cross_entropy(probs, target),
        "binary_cross_entropy_with_logits": lambda: F.binary_cross_entropy_with_logits(probs, target),
        "rnn_tanh_cell": lambda: F.rnn_tanh_cell(x3[:, 0], h, w2, w_hh, v, v),
    }
    for name, op in cases.items():
        leaves = (x4, w4, b, x3, w2, v, probs, ln_w, ln_b, h, w_hh)
        for leaf in leaves:
            leaf.grad = None
        out = op()
        assert out.dtype == np.float32, f"{name} returned {out.dtype}"
        out.backward(np.ones(out.shape, dtype=np.float32))  # an explicit gradient needs an ndarray-backed output
        for leaf in leaves:
            assert leaf.grad is None or leaf.grad.dtype == np.float32, f"{name} gave a {leaf.grad.dtype} gradient"
