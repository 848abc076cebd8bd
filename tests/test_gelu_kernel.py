"""The C GELU kernel (kernels/activation.c) against math.erfc and against minigrad's NumPy path."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad.nn import activation

# c_kernels_built honours MINIGRAD_CKERNELS_DIR, so the sanitizer test runs this file on its own build
pytestmark = pytest.mark.usefixtures("c_kernels_built")


def reference(x):
    phi = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))  # erfc keeps the left tail's relative accuracy
    return x * phi, phi + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-15), (np.float32, 2e-7)])
def test_c_gelu_matches_the_formula(dtype, tol):
    assert activation._compiled_gelu(np.zeros(1, dtype)) is not None
    x = np.concatenate([np.linspace(-9, 9, 1001), [0.0, -30.0, 30.0]]).astype(dtype)
    t = mg.tensor(x, requires_grad=True)
    y = F.gelu(t)
    y.backward(mg.tensor(np.ones_like(x)))
    value, slope = reference(x.astype(np.float64))
    assert y.dtype == dtype and t.grad.dtype == dtype
    np.testing.assert_allclose(y.data, value, rtol=tol, atol=tol)
    np.testing.assert_allclose(t.grad, slope, rtol=4 * tol, atol=4 * tol)


def test_c_gelu_keeps_relative_accuracy_in_the_left_tail():
    x = np.linspace(-12, -3, 50)
    np.testing.assert_allclose(F.gelu(mg.tensor(x)).data, reference(x)[0], rtol=1e-13, atol=0)


def test_c_gelu_agrees_with_the_numpy_path_and_gradchecks(monkeypatch):
    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 5, 7)), requires_grad=True)
    assert mg.gradcheck(F.gelu, (x,))
    compiled = F.gelu(x).data
    monkeypatch.setattr(activation, "_compiled_gelu", lambda xd: None)
    np.testing.assert_allclose(compiled, F.gelu(x).data, rtol=1e-14, atol=1e-15)


def test_c_gelu_takes_strided_and_empty_input():
    x = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    strided = mg.tensor(x)[:, ::2].T
    np.testing.assert_allclose(F.gelu(strided).data, reference(x[:, ::2].T.astype(np.float64))[0], rtol=2e-6, atol=1e-7)
    assert F.gelu(mg.zeros(0, 3)).shape == (0, 3)
