"""minigrad.special against SciPy and math, and the C GELU's erfc coefficients against the Python fit."""
import math
import pathlib

import numpy as np
import pytest

from minigrad import special

scipy_special = pytest.importorskip("scipy.special", reason="SciPy is the independent reference here")

HEADER = pathlib.Path(__file__).resolve().parents[1] / "kernels" / "erfc_fit.h"


def test_the_c_kernels_erfc_coefficients_are_the_python_fit():
    """kernels/erfc_fit.h (included by kernels/activation.c) holds exactly the float32 fit of special.py."""
    text = HEADER.read_text()
    body = text[text.index("{") + 1:text.index("}")]
    in_c = np.array([float(v.strip().rstrip("f")) for v in body.split(",")], np.float32)
    fitted = special.ERFC_POLY[np.dtype(np.float32)][::-1]
    assert in_c.shape == fitted.shape, "regenerate kernels/erfc_fit.h with `python -m minigrad.special`"
    np.testing.assert_array_max_ulp(in_c, fitted, maxulp=1)
    assert f"#define ERFC_FIT_DEGREE {len(fitted) - 1}" in text
    assert '#include "erfc_fit.h"' in (HEADER.parent / "activation.c").read_text()


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-15), (np.float32, 2e-7)])
def test_erfc_and_normal_cdf_match_math(dtype, tol):
    x = np.linspace(-6, 6, 601).astype(dtype)
    np.testing.assert_allclose(special.erfc_abs(x), [math.erfc(abs(float(v))) for v in x], rtol=tol * 50, atol=tol)
    np.testing.assert_allclose(special.normal_cdf(x), scipy_special.ndtr(x.astype(np.float64)), rtol=tol * 50,
                               atol=tol)
    assert special.normal_cdf(x).dtype == dtype


def test_sigmoid_matches_scipy_and_never_overflows():
    x = np.array([-1e4, -50.0, -1.0, 0.0, 2.5, 50.0, 1e4])
    with np.errstate(over="raise"):
        np.testing.assert_allclose(special.sigmoid(x), scipy_special.expit(x), rtol=1e-15, atol=0)
        assert special.sigmoid(x.astype(np.float32)).dtype == np.float32


def test_softmax_family_matches_scipy_and_stays_finite():
    x = np.random.default_rng(0).standard_normal((3, 5)) * 1e3
    np.testing.assert_allclose(special.logsumexp(x, axis=1, keepdims=False), scipy_special.logsumexp(x, axis=1),
                               rtol=1e-14)
    np.testing.assert_allclose(special.softmax(x, 0), scipy_special.softmax(x, axis=0), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(special.log_softmax(x, 1), scipy_special.log_softmax(x, axis=1), rtol=1e-12)
    rows = np.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    np.testing.assert_array_equal(special.logsumexp(rows, keepdims=False), [-np.inf, 0.0])
