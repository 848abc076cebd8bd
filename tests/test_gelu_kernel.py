"""The C GELU kernel (kernels/activation.c) against math.erfc, through the kernels' table and the Tensor op."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F
from minigrad import kernels

# c_kernels_built honours MINIGRAD_CKERNELS_DIR, so the sanitizer test runs this file on its own build
pytestmark = pytest.mark.usefixtures("c_kernels_built")


def reference(x):
    phi = 0.5 * np.vectorize(math.erfc)(-x / math.sqrt(2))  # erfc keeps the left tail's relative accuracy
    return x * phi, phi + x * np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-15), (np.float32, 2e-7)])
def test_c_gelu_matches_the_formula(dtype, tol):
    x = np.concatenate([np.linspace(-9, 9, 1001), [0.0, -30.0, 30.0]]).astype(dtype)
    t = mg.tensor(x, requires_grad=True)
    with mg.backend("c"):
        y = F.gelu(t)
        y.backward(mg.tensor(np.ones_like(x)))
    assert y._op == "gelu"
    value, slope = reference(x.astype(np.float64))
    assert y.dtype == dtype and t.grad.dtype == dtype
    np.testing.assert_allclose(y.data, value, rtol=tol, atol=tol)
    np.testing.assert_allclose(t.grad, slope, rtol=4 * tol, atol=4 * tol)


def test_c_gelu_keeps_relative_accuracy_in_the_left_tail():
    x = np.linspace(-12, -3, 50)
    np.testing.assert_allclose(kernels.gelu(x, backend="c")[0], reference(x)[0], rtol=1e-13, atol=0)


def test_c_gelu_gradchecks_through_the_tensor_op():
    x = mg.tensor(np.random.default_rng(0).standard_normal((3, 5, 7)), requires_grad=True)
    with mg.backend("c"):
        assert mg.gradcheck(F.gelu, (x,))


def test_c_gelu_takes_strided_and_empty_input():
    x = np.random.default_rng(1).standard_normal((6, 8)).astype(np.float32)
    strided = x[:, ::2].T
    out, cdf = kernels.gelu(strided, backend="c")
    np.testing.assert_allclose(out, reference(strided.astype(np.float64))[0], rtol=2e-6, atol=1e-7)
    dx = kernels.gelu_backward(strided, cdf, np.ones_like(strided)[::-1], backend="c")  # a reversed view too
    np.testing.assert_allclose(dx, reference(strided.astype(np.float64))[1], rtol=8e-7, atol=8e-7)
    assert kernels.gelu(np.zeros((0, 3), np.float32), backend="c")[0].shape == (0, 3)
