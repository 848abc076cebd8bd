"""Gradients at singular points (0·∞, 0/0, ties, NaN, ±∞), with PyTorch's conventions.

Two kinds of reference: conventions written out by hand in NumPy (always run), and PyTorch itself on
every combination of special values (skipped only where PyTorch is not installed, because it is the
reference). The conventions, from PyTorch's derivative rules:

- x**0 has gradient 0 everywhere (also at x = 0 and NaN); for a^b the gradient in b is 0 where a = 0 and
  b >= 0, and a^b·ln a elsewhere (NaN for a < 0).
- abs: sign(x), 0 at 0 and at NaN; relu: passes the gradient where not x <= 0 (so at NaN too), relu(−∞) = 0.
- clamp passes the gradient where min <= x <= max (at the bounds too, not at NaN).
- sqrt at 0 and log at 0: +∞ (1/(2·0), 1/0); std at a constant: 0 (PyTorch masks the 0 in 1/(2σ)).
- max()/min() over all elements: the gradient is shared evenly by every element equal to the result
  (every NaN, when the result is NaN); max(dim)/min(dim): all of it to the one index argmax/argmin
  returns (the first); amax/amin(dim): shared evenly by the ties.
- var with n − 1 = 0 (unbiased, one element): NaN, not an exception.
"""
import warnings

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F

inf, nan = np.inf, np.nan
SPECIALS = np.array([0.0, -0.0, 1.0, -1.0, 2.0, 0.5, -3.0, inf, -inf, nan])


def grad_of(fn, *arrays, dtype=np.float64):
    """Value and gradients of fn(*tensors).sum() at the given arrays."""
    xs = [mg.tensor(np.array(a, dtype=dtype), requires_grad=True) for a in arrays]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the special values make NumPy warn; that is the point
        y = fn(*xs)
        y.sum().backward()
    return y.data, [x.grad for x in xs]


def same(got, want):
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0, equal_nan=True)


# ----- hand-written references ---------------------------------------------------------------------
def test_power_zero_has_zero_gradient_everywhere():
    for dtype in (np.float64, np.float32):
        value, (grad,) = grad_of(lambda x: x ** 0, SPECIALS, dtype=dtype)
        same(value, np.ones(SPECIALS.size))
        same(grad, np.zeros(SPECIALS.size))


def test_power_with_tensor_exponent_at_base_zero():
    a = np.array([0.0, 0.0, 0.0, 0.0, 2.0, -1.0])
    b = np.array([0.0, 1.0, 2.0, -1.0, 0.0, 0.5])
    value, (da, db) = grad_of(lambda x, y: x ** y, a, b)
    same(value, [1.0, 0.0, 0.0, inf, 1.0, nan])
    same(da, [0.0, 1.0, 0.0, -inf, 0.0, nan])                # b·a^(b−1), and 0 where b = 0
    same(db, [0.0, 0.0, 0.0, -inf, np.log(2.0), nan])        # a^b·ln a, and 0 where a = 0, b >= 0
    _, (db,) = grad_of(lambda y: 0.0 ** y, [0.0, 1.0, -1.0])  # the reflected form follows the same rule
    same(db, [0.0, 0.0, -inf])


def test_abs_relu_clamp_at_their_kinks_and_at_nan():
    x = np.array([0.0, -0.0, 1.0, -1.0, inf, -inf, nan])
    _, (grad,) = grad_of(lambda t: t.abs(), x)
    same(grad, [0.0, 0.0, 1.0, -1.0, 1.0, -1.0, 0.0])
    value, (grad,) = grad_of(lambda t: t.relu(), x)
    same(value, [0.0, 0.0, 1.0, 0.0, inf, 0.0, nan])
    same(grad, [0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    value, (grad,) = grad_of(lambda t: t.clamp(-1.0, 1.0), x)
    same(value, [0.0, 0.0, 1.0, -1.0, 1.0, -1.0, nan])
    same(grad, [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_sqrt_log_division_at_zero_and_std_of_a_constant():
    _, (grad,) = grad_of(lambda t: t.sqrt(), [0.0, 4.0])
    same(grad, [inf, 0.25])
    _, (grad,) = grad_of(lambda t: t.log(), [0.0, 4.0])
    same(grad, [inf, 0.25])
    _, (da, db) = grad_of(lambda a, b: a / b, [1.0, 0.0, -1.0], [0.0, 0.0, 0.0])
    same(da, [inf, inf, inf])
    same(db, [-inf, nan, inf])                               # −a/b²: 0/0 is NaN, as in PyTorch
    value, (grad,) = grad_of(lambda t: t.std(), [3.0, 3.0, 3.0])
    same(value, 0.0)
    same(grad, [0.0, 0.0, 0.0])
    value, (grad,) = grad_of(lambda t: t.var(dim=0, unbiased=True), [[1.0, 2.0]])
    same(value, [nan, nan])
    same(grad, [[nan, nan]])


def test_max_and_min_ties_follow_pytorchs_three_rules():
    x = np.array([[1.0, 3.0, 3.0, 2.0], [2.0, 2.0, 2.0, 2.0]])
    _, (grad,) = grad_of(lambda t: t.max(), x)                 # over all elements: shared by the ties
    same(grad, [[0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.0, 0.0]])
    _, (grad,) = grad_of(lambda t: t.min(), x)
    same(grad, [[1.0, 0, 0, 0], [0, 0, 0, 0]])
    _, (grad,) = grad_of(lambda t: t.max(dim=1), x)            # along a dim: all to the first index
    same(grad, [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    _, (grad,) = grad_of(lambda t: t.min(dim=0, keepdim=True), x)
    same(grad, [[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])
    _, (grad,) = grad_of(lambda t: t.amax(dim=1), x)           # amax: shared by the ties
    same(grad, [[0.0, 0.5, 0.5, 0.0], [0.25, 0.25, 0.25, 0.25]])
    _, (grad,) = grad_of(lambda t: t.amin(dim=(0, 1)), x + [[1.0, 0, 0, 0], [0, 0, 1.0, 0]])  # five 2s
    same(grad, [[0.2, 0.0, 0.0, 0.2], [0.2, 0.2, 0.0, 0.2]])


def test_max_with_nan_gives_nan_and_sends_the_gradient_to_the_nans():
    x = np.array([[1.0, nan, 3.0, nan], [2.0, 2.0, 2.0, 2.0]])
    value, (grad,) = grad_of(lambda t: t.max(), x)
    same(value, nan)
    same(grad, [[0.0, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]])
    value, (grad,) = grad_of(lambda t: t.max(dim=1), x)
    same(value, [nan, 2.0])
    same(grad, [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


# ----- PyTorch as the reference, on every combination of special values -----------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="PyTorch is the reference of these comparisons")


def against_torch(torch, mg_fn, torch_fn, arrays, dtype=np.float64):
    value, grads = grad_of(mg_fn, *arrays, dtype=dtype)
    ts = [torch.tensor(np.array(a, dtype=dtype), requires_grad=True) for a in arrays]
    y = torch_fn(*ts)
    y.sum().backward()
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-6)  # float32: ULPs of exp/tanh
    tol["equal_nan"] = True
    np.testing.assert_allclose(value, y.detach().numpy(), **tol, err_msg="value")
    for i, (got, t) in enumerate(zip(grads, ts)):
        np.testing.assert_allclose(got, t.grad.numpy(), **tol, err_msg=f"gradient of input {i}")


UNARY = {
    "exp": (lambda t: t.exp(), lambda t: t.exp()),
    "log": (lambda t: t.log(), lambda t: t.log()),
    "sqrt": (lambda t: t.sqrt(), lambda t: t.sqrt()),
    "tanh": (lambda t: t.tanh(), lambda t: t.tanh()),
    "sigmoid": (lambda t: t.sigmoid(), lambda t: t.sigmoid()),
    "relu": (lambda t: t.relu(), lambda t: t.relu()),
    "abs": (lambda t: t.abs(), lambda t: t.abs()),
    "neg": (lambda t: -t, lambda t: -t),
    "clamp": (lambda t: t.clamp(-1.0, 1.0), lambda t: t.clamp(-1.0, 1.0)),
    "clamp_min": (lambda t: t.clamp(min=0.0), lambda t: t.clamp(min=0.0)),
    "clamp_max": (lambda t: t.clamp(max=0.5), lambda t: t.clamp(max=0.5)),
    "pow0": (lambda t: t ** 0, lambda t: t ** 0),
    "pow1": (lambda t: t ** 1, lambda t: t ** 1),
    "pow2": (lambda t: t ** 2, lambda t: t ** 2),
    "pow3": (lambda t: t ** 3, lambda t: t ** 3),
    "pow-1": (lambda t: t ** -1, lambda t: t ** -1),
    "pow-2": (lambda t: t ** -2, lambda t: t ** -2),
    "rpow2": (lambda t: 2.0 ** t, lambda t: 2.0 ** t),
    "rpow0": (lambda t: 0.0 ** t, lambda t: 0.0 ** t),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_unary_ops_at_special_values_match_torch(torch, name, dtype):
    mg_fn, torch_fn = UNARY[name]
    if torch_fn is None:
        torch_fn = lambda t: torch.nn.functional.gelu(t, approximate="tanh")  # noqa: E731
    against_torch(torch, mg_fn, torch_fn, [SPECIALS], dtype)


def test_fractional_powers_at_special_values_match_torch(torch):
    # −0 and −∞ left out: PyTorch's pow gradient there differs from IEEE pow(−0, −½) = +∞ by a sign
    x = np.array([0.0, 1.0, -1.0, 2.0, 0.5, -3.0, inf, nan])
    for e in (0.5, 1.5, -0.5):
        against_torch(torch, lambda t: t ** e, lambda t: t ** e, [x])


BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "pow": lambda a, b: a ** b,
}


@pytest.mark.parametrize("name", sorted(BINARY))
def test_binary_ops_on_every_pair_of_special_values_match_torch(torch, name):
    a, b = np.meshgrid(SPECIALS, SPECIALS, indexing="ij")  # every (a, b) pair, 100 of them
    against_torch(torch, BINARY[name], BINARY[name], [a, b])


REDUCTIONS = {
    "sum": (lambda t: t.sum(), lambda t: t.sum()),
    "mean_dim": (lambda t: t.mean(dim=1), lambda t: t.mean(dim=1)),
    "max": (lambda t: t.max(), lambda t: t.max()),
    "min": (lambda t: t.min(), lambda t: t.min()),
    "max_dim": (lambda t: t.max(dim=1), lambda t: t.max(dim=1).values),
    "min_dim0": (lambda t: t.min(dim=0), lambda t: t.min(dim=0).values),
    "amax_dim": (lambda t: t.amax(dim=1), lambda t: t.amax(dim=1)),
    "amin_dim": (lambda t: t.amin(dim=0, keepdim=True), lambda t: t.amin(dim=0, keepdim=True)),
    "var": (lambda t: t.var(dim=1), lambda t: t.var(dim=1, unbiased=False)),
    "std": (lambda t: t.std(dim=1), lambda t: t.std(dim=1, unbiased=False)),
    "softmax": (lambda t: t.softmax(1), lambda t: t.softmax(1)),
    "log_softmax": (lambda t: t.log_softmax(1), lambda t: t.log_softmax(1)),
}


@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_reductions_with_ties_nan_and_infinities_match_torch(torch, name):
    rows = np.array([[1.0, 3.0, 3.0, 2.0],      # a tie at the max
                     [2.0, 2.0, 2.0, 2.0],      # all equal (std 0)
                     [1.0, nan, 3.0, nan],      # NaNs
                     [inf, 1.0, inf, -inf],     # infinities, tied
                     [-inf, -inf, 0.0, 0.0],
                     [0.0, -0.0, 0.0, 5.0]])
    mg_fn, torch_fn = REDUCTIONS[name]
    finite_only = name in ("var", "std", "softmax", "log_softmax")
    data = rows[[0, 1, 5]] if finite_only else rows  # ∞ − ∞ inside var/softmax: NaN on both sides, not a rule
    against_torch(torch, mg_fn, torch_fn, [data])
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import given, settings, strategies as st
    from hypothesis.extra.numpy import arrays

    values = st.sampled_from([0.0, 1.0, -1.0, 2.0] if finite_only else [0.0, 1.0, -1.0, 2.0, inf, -inf, nan])

    @settings(max_examples=25, deadline=None, derandomize=True)
    @given(arrays(np.float64, (3, 4), elements=values))
    def property_holds(x):
        against_torch(torch, mg_fn, torch_fn, [x])
    property_holds()
