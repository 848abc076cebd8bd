"""Every Tensor op: forward against a NumPy expression, backward by float64 gradcheck, over random shapes."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import array_shapes, mutually_broadcastable_shapes

import minigrad as mg

settings.register_profile("minigrad", max_examples=15, deadline=None)
settings.load_profile("minigrad")

shapes = array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
pairs = mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=0, max_side=4)


def leaf(array):
    return mg.tensor(np.array(array, dtype=np.float64), requires_grad=True)


def data(seed, shape, low=-2.0, high=2.0):
    return np.random.default_rng(seed).uniform(low, high, size=shape)


UNARY = {
    "exp": (lambda t: t.exp(), np.exp, (-2, 2)),
    "log": (lambda t: t.log(), np.log, (0.5, 3)),
    "sqrt": (lambda t: t.sqrt(), np.sqrt, (0.5, 3)),
    "tanh": (lambda t: t.tanh(), np.tanh, (-2, 2)),
    "sigmoid": (lambda t: t.sigmoid(), lambda x: 1 / (1 + np.exp(-x)), (-4, 4)),
    "relu": (lambda t: t.relu(), lambda x: np.maximum(x, 0), (-2, 2)),
    "abs": (lambda t: t.abs(), np.abs, (-2, 2)),
    "neg": (lambda t: -t, np.negative, (-2, 2)),
    "clamp": (lambda t: t.clamp(-0.5, 0.7), lambda x: np.clip(x, -0.5, 0.7), (-2, 2)),
    "clamp_min": (lambda t: t.clamp(min=0.1), lambda x: np.maximum(x, 0.1), (-2, 2)),
    "pow_scalar": (lambda t: t ** 3, lambda x: x ** 3, (-2, 2)),
    "pow_frac": (lambda t: t ** 0.5, np.sqrt, (0.5, 3)),
    "rpow": (lambda t: 2.0 ** t, lambda x: 2.0 ** x, (-2, 2)),
    "rsub": (lambda t: 1.0 - t, lambda x: 1.0 - x, (-2, 2)),
    "rdiv": (lambda t: 3.0 / t, lambda x: 3.0 / x, (0.5, 3)),
    "square_via_mul": (lambda t: t * t, lambda x: x * x, (-2, 2)),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(shape=shapes, seed=st.integers(0, 2**16))
def test_unary(name, shape, seed):
    op, reference, (low, high) = UNARY[name]
    x = data(seed, shape, low, high)
    if name in ("relu", "abs", "clamp", "clamp_min"):  # keep clear of the kinks, where no derivative exists
        x = np.where(np.abs(x) < 0.05, 0.3, x)
        x = np.where(np.abs(x - 0.7) < 0.05, 0.3, np.where(np.abs(x + 0.5) < 0.05, 0.3, x))
        x = np.where(np.abs(x - 0.1) < 0.05, 0.3, x)
    t = leaf(x)
    np.testing.assert_allclose(op(t).data, reference(x), rtol=1e-12, atol=1e-12)
    assert mg.gradcheck(op, (t,))


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(shapes=pairs, seed=st.integers(0, 2**16))
def test_binary_broadcasting(name, shapes, seed):
    op, reference = BINARY[name]
    sa, sb = shapes.input_shapes
    a = data(seed, sa, 0.5, 2.0)
    b = data(seed + 1, sb, 0.5, 2.0) * (1 if name in ("div", "pow") else np.sign(data(seed + 2, sb)))
    ta, tb = leaf(a), leaf(b)
    out = op(ta, tb)
    np.testing.assert_allclose(out.data, reference(a, b), rtol=1e-12)
    assert out.shape == np.broadcast_shapes(sa, sb)
    assert mg.gradcheck(op, (ta, tb))


def test_broadcast_gradient_is_summed_back():
    a = mg.ones(2, 3, requires_grad=True)
    b = mg.ones(3, requires_grad=True)
    c = mg.ones(2, 1, requires_grad=True)
    (a * b + c).sum().backward()
    np.testing.assert_array_equal(b.grad, [2, 2, 2])  # each b[j] used by both rows
    np.testing.assert_array_equal(c.grad, [[3], [3]])  # each c[i] used by all three columns
    assert a.grad.shape == (2, 3)


REDUCTIONS = {
    "sum": (lambda t, d, k: t.sum(d, keepdim=k), lambda x, d, k: x.sum(axis=d, keepdims=k)),
    "mean": (lambda t, d, k: t.mean(d, keepdim=k), lambda x, d, k: x.mean(axis=d, keepdims=k)),
    "max": (lambda t, d, k: t.max(d, keepdim=k), lambda x, d, k: x.max(axis=d, keepdims=k)),
    "min": (lambda t, d, k: t.min(d, keepdim=k), lambda x, d, k: x.min(axis=d, keepdims=k)),
    "var": (lambda t, d, k: t.var(d, keepdim=k), lambda x, d, k: x.var(axis=d, keepdims=k)),
    "var_unbiased": (lambda t, d, k: t.var(d, keepdim=k, unbiased=True),
                     lambda x, d, k: x.var(axis=d, keepdims=k, ddof=1)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4), seed=st.integers(0, 2**16),
       keepdim=st.booleans(), data_=st.data())
def test_reductions(name, shape, seed, keepdim, data_):
    op, reference = REDUCTIONS[name]
    dim = data_.draw(st.sampled_from([None] + list(range(-len(shape), len(shape)))))
    x = data(seed, shape)
    t = leaf(x)
    axis = None if dim is None else dim
    np.testing.assert_allclose(op(t, dim, keepdim).data, reference(x, axis, keepdim), rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(lambda t: op(t, dim, keepdim), (t,))


def test_reduction_over_several_dims_and_empty():
    x = data(0, (2, 3, 4))
    np.testing.assert_allclose(leaf(x).sum((0, 2)).data, x.sum(axis=(0, 2)))
    assert mg.gradcheck(lambda t: t.mean((0, 2), keepdim=True), (leaf(x),))
    assert leaf(np.zeros((0, 3))).sum().item() == 0.0
    np.testing.assert_array_equal(leaf(np.zeros((0, 3))).sum(0).data, np.zeros(3))


def test_max_ties_share_the_gradient():
    t = mg.tensor([1.0, 3.0, 3.0, 2.0], requires_grad=True)
    t.max().backward()
    np.testing.assert_allclose(t.grad, [0, 0.5, 0.5, 0])


@pytest.mark.parametrize("which", ["softmax", "log_softmax"])
@given(shape=array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5), seed=st.integers(0, 2**16), data_=st.data())
def test_softmax_family(which, shape, seed, data_):
    dim = data_.draw(st.integers(-len(shape), len(shape) - 1))
    x = data(seed, shape, -3, 3)
    e = np.exp(x - x.max(axis=dim, keepdims=True))
    soft = e / e.sum(axis=dim, keepdims=True)
    expected = soft if which == "softmax" else np.log(soft)
    op = lambda t: getattr(t, which)(dim)  # noqa: E731
    np.testing.assert_allclose(op(leaf(x)).data, expected, rtol=1e-10, atol=1e-12)
    assert mg.gradcheck(op, (leaf(x),))


def test_softmax_is_finite_for_huge_logits():
    t = mg.tensor([[1e4, -1e4, 0.0]], dtype=mg.float32, requires_grad=True)
    out = t.log_softmax(-1)
    (out * mg.tensor([[1.0, 2.0, 3.0]])).sum().backward()
    assert np.isfinite(out.data).all() and np.isfinite(t.grad).all()
    np.testing.assert_allclose(t.softmax(-1).data, [[1, 0, 0]], atol=1e-7)


MATMUL_SHAPES = [((3,), (3,)), ((3,), (3, 4)), ((2, 3), (3,)), ((2, 3), (3, 4)), ((5, 2, 3), (3, 4)),
                 ((2, 3), (5, 3, 4)), ((2, 1, 2, 3), (4, 3, 2)), ((0, 3), (3, 2)), ((2, 0), (0, 3))]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul(sa, sb):
    a, b = data(1, sa), data(2, sb)
    ta, tb = leaf(a), leaf(b)
    np.testing.assert_allclose((ta @ tb).data, np.matmul(a, b), rtol=1e-12, atol=1e-14)
    assert mg.gradcheck(lambda x, y: x @ y, (ta, tb))
    assert mg.matmul(ta, tb).shape == np.matmul(a, b).shape


SHAPE_OPS = {
    "reshape": (lambda t: t.reshape(4, 6), lambda x: x.reshape(4, 6)),
    "reshape_tuple": (lambda t: t.view((-1, 3)), lambda x: x.reshape(-1, 3)),
    "transpose": (lambda t: t.transpose(0, 2), lambda x: x.swapaxes(0, 2)),
    "permute": (lambda t: t.permute(2, 0, 1), lambda x: x.transpose(2, 0, 1)),
    "unsqueeze": (lambda t: t.unsqueeze(1), lambda x: x[:, None]),
    "unsqueeze_neg": (lambda t: t.unsqueeze(-1), lambda x: x[..., None]),
    "squeeze": (lambda t: t[:, :1].squeeze(1), lambda x: x[:, 0]),
    "flatten": (lambda t: t.flatten(1), lambda x: x.reshape(2, 12)),
    "flatten_all": (lambda t: t.flatten(), lambda x: x.reshape(-1)),
    "T": (lambda t: t[0].T, lambda x: x[0].T),
    "expand": (lambda t: t[:, :1].expand(2, 3, 4), lambda x: np.broadcast_to(x[:, :1], (2, 3, 4))),
    "slice": (lambda t: t[1:, ::2, -1], lambda x: x[1:, ::2, -1]),
    "int_index": (lambda t: t[1], lambda x: x[1]),
    "ellipsis_none": (lambda t: t[..., None, 1], lambda x: x[..., None, 1]),
    "int_array_repeats": (lambda t: t[np.array([0, 0, 1, 0])], lambda x: x[np.array([0, 0, 1, 0])]),
    "two_int_arrays": (lambda t: t[[0, 1, 1], [2, 2, 0]], lambda x: x[[0, 1, 1], [2, 2, 0]]),
    "tensor_index": (lambda t: t[:, mg.tensor([2, 2])], lambda x: x[:, [2, 2]]),
    "mask": (lambda t: t[t.data > 0], lambda x: x[x > 0]),
    "tensor_mask": (lambda t: t[(t > 0)], lambda x: x[x > 0]),
}


@pytest.mark.parametrize("name", sorted(SHAPE_OPS))
def test_shape_and_index_ops(name):
    op, reference = SHAPE_OPS[name]
    x = data(7, (2, 3, 4))
    np.testing.assert_array_equal(op(leaf(x)).data, reference(x))
    assert mg.gradcheck(op, (leaf(x),))


def test_repeated_index_accumulates():
    w = mg.zeros(3, requires_grad=True)
    w[mg.tensor([0, 0, 2, 0])].sum().backward()
    np.testing.assert_array_equal(w.grad, [3, 0, 1])


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_cat_stack(dim):
    a, b = data(1, (2, 3)), data(2, (2, 3))
    ta, tb = leaf(a), leaf(b)
    np.testing.assert_array_equal(mg.cat([ta, tb], dim).data, np.concatenate([a, b], axis=dim))
    np.testing.assert_array_equal(mg.stack([ta, tb], dim).data, np.stack([a, b], axis=dim))
    assert mg.gradcheck(lambda x, y: mg.cat([x, y * y], dim), (ta, tb))
    assert mg.gradcheck(lambda x, y: mg.stack([x, y * y], dim), (ta, tb))


def test_where():
    a, b = data(1, (2, 3)), data(2, (3,))
    cond = a > 0
    ta, tb = leaf(a), leaf(b)
    np.testing.assert_array_equal(mg.where(mg.tensor(cond), ta, tb).data, np.where(cond, a, b))
    assert mg.gradcheck(lambda x, y: mg.where(cond, x, y), (ta, tb))
    np.testing.assert_array_equal(mg.where(cond, ta, 0.0).data, np.where(cond, a, 0.0))


def test_comparisons_have_no_gradient():
    t = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    for result, expected in [(t < 2, [1, 0, 0]), (t <= 2, [1, 1, 0]), (t > 2, [0, 0, 1]), (t >= 2, [0, 1, 1]),
                             (t == 2, [0, 1, 0]), (t != 2, [1, 0, 1])]:
        assert result.dtype == mg.bool and not result.requires_grad
        np.testing.assert_array_equal(result.data, np.array(expected, dtype=bool))


def test_type_promotion_follows_pytorch():
    f32 = mg.tensor([1.0, 2.0])
    f64 = mg.tensor([1.0, 2.0], dtype=mg.float64)
    i64 = mg.tensor([1, 2])
    assert f32.dtype == mg.float32 and i64.dtype == mg.int64 and mg.tensor(True).dtype == mg.bool
    assert (f32 + f64).dtype == mg.float64
    assert (f32 * 2.5).dtype == mg.float32          # a Python float keeps the tensor's float type
    assert (i64 * 2.5).dtype == mg.float32          # int tensor with a Python float → default float
    assert (i64 + 1).dtype == mg.int64
    assert (i64 + f32).dtype == mg.float32          # int64 + float32 → float32 (NumPy would say float64)
    assert (f32 + mg.tensor(1.0, dtype=mg.float64)).dtype == mg.float32  # 0-d tensors do not widen
    assert (i64 / 2).dtype == mg.float32
    assert mg.tensor(np.zeros(2)).dtype == mg.float64  # NumPy arrays keep their dtype, like torch.tensor
    g = mg.tensor([1.0, 2.0], requires_grad=True)
    (g * f64).sum().backward()
    assert g.grad.dtype == mg.float32               # a leaf's gradient has the leaf's dtype


def test_reflected_and_numpy_operands():
    t = mg.tensor([1.0, 2.0], requires_grad=True)
    out = np.array([3.0, 4.0]) + 2 * t - 1
    np.testing.assert_allclose(out.data, [4, 7])
    out.sum().backward()
    np.testing.assert_array_equal(t.grad, [2, 2])
    np.testing.assert_allclose(np.asarray(t * 3), [3, 6])


def test_std_masked_fill_cast_and_argmax():
    x = data(11, (3, 4))
    t = leaf(x)
    np.testing.assert_allclose(t.std(1).data, x.std(axis=1), rtol=1e-12)
    assert mg.gradcheck(lambda t: t.std(1, unbiased=True), (t,))
    mask = x > 0
    np.testing.assert_array_equal(t.masked_fill(mask, 0.5).data, np.where(mask, 0.5, x))
    assert mg.gradcheck(lambda t: t.masked_fill(mask, 0.5), (t,))
    f32 = mg.tensor(x, dtype=mg.float32, requires_grad=True)
    (f32.double() * 3).sum().backward()        # the cast is differentiable; the gradient comes back in float32
    assert f32.grad.dtype == mg.float32 and np.all(f32.grad == 3)
    np.testing.assert_array_equal(t.argmax(1).data, x.argmax(axis=1))
    assert t.argmax().item() == x.argmax() and t.argmin().item() == x.argmin()
