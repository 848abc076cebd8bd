"""Fuzzing the kernel wrappers: random shapes, dtypes, strides and bad arguments.

Every call must either match NumPy or raise a TypeError / ValueError that
names the problem; it must never crash, hang or return a wrong answer.
"""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigrad import kernels
from minigrad.kernels import c_backend

FUZZ = settings(max_examples=120, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FUZZ_ATTENTION = settings(FUZZ, max_examples=40)  # each example runs a float64 NumPy reference


pytestmark = pytest.mark.usefixtures("c_kernels_built")


LAYOUTS = ("contiguous", "transposed", "fortran", "every other", "reversed", "broadcast", "misaligned")


def laid_out(x, layout):
    """An array equal to x whose memory layout is `layout` (a view wherever NumPy allows)."""
    if layout == "transposed":
        return np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)
    if layout == "fortran":
        return np.asfortranarray(x)
    if layout == "every other":
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    if layout == "reversed":
        return np.ascontiguousarray(x[..., ::-1, :])[..., ::-1, :]
    if layout == "broadcast" and x.ndim >= 3 and x.shape[0] > 1:
        # the same matrix repeated along the first dim, stride 0
        return np.broadcast_to(x[:1], x.shape)
    if layout == "misaligned":
        raw = np.frombuffer(bytearray(x.nbytes + 1), dtype=np.uint8)[1:]
        y = raw.view(x.dtype).reshape(x.shape)
        y[...] = x
        return y
    return np.ascontiguousarray(x)


@st.composite
def matmul_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    m, k, n = (draw(st.integers(0, 40)) for _ in range(3))
    batch = draw(st.lists(st.integers(0, 3), max_size=2))

    def operand_batch():
        """A suffix of the batch shape, with some sizes replaced by 1 (broadcast)."""
        suffix = batch[draw(st.integers(0, len(batch))):]
        return tuple(draw(st.sampled_from([1, size])) for size in suffix)
    batch_a, batch_b = operand_batch(), operand_batch()
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch_a + (m, k)).astype(dtype)
    b = rng.standard_normal(batch_b + (k, n)).astype(dtype)
    a = laid_out(a, draw(st.sampled_from(LAYOUTS)))
    b = laid_out(b, draw(st.sampled_from(LAYOUTS)))
    version = draw(st.sampled_from(c_backend.MATMUL_VERSIONS))
    return a, b, version


def assert_close(out, expected, dtype, k, what):
    assert out.shape == expected.shape, f"{what}: shape {out.shape}, expected {expected.shape}"
    assert out.dtype == dtype, f"{what}: dtype {out.dtype}, expected {np.dtype(dtype)}"
    scale = max(np.abs(expected).max(initial=0.0), 1.0)
    error = np.abs(out - expected).max(initial=0.0) / scale
    allowed = 64 * np.finfo(dtype).eps * math.sqrt(max(k, 1))
    assert error <= allowed, f"{what}: worst relative error {error:.3g} > {allowed:.3g}"


@FUZZ
@given(matmul_problems())
def test_random_valid_matmuls_match_numpy(problem):
    a, b, version = problem
    a_before, b_before = a.copy(), b.copy()
    k = a.shape[-1]
    expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
    what = f"{version}: a {a.shape} {a.dtype} strides {a.strides} @ b {b.shape} strides {b.strides}"
    if 0 in expected.shape or k == 0:
        out = kernels.matmul(a, b, backend="c")
    else:
        out = c_backend.matmul(a, b, version=version)
    assert_close(out, expected, a.dtype, k, what)

    grad_out = np.random.default_rng(0).standard_normal(expected.shape).astype(a.dtype)
    grad_a, grad_b = kernels.matmul_backward(a, b, grad_out, backend="c")
    ref_a, ref_b = kernels.matmul_backward(a.astype(np.float64), b.astype(np.float64),
                                           grad_out.astype(np.float64), backend="numpy")
    reduced = math.prod(expected.shape[:-2]) or 1
    assert_close(grad_a, ref_a, a.dtype, expected.shape[-1] * reduced, "grad_a of " + what)
    assert_close(grad_b, ref_b, a.dtype, expected.shape[-2] * reduced, "grad_b of " + what)
    np.testing.assert_array_equal(a, a_before, err_msg="matmul modified a")
    np.testing.assert_array_equal(b, b_before, err_msg="matmul modified b")


ODD_VALUES = [None, 3.0, [[1.0, 2.0]], "a", np.float32(2.0)]
ODD_DTYPES = [np.float16, np.int32, np.int64, np.bool_, np.complex64, object, ">f4", "<f8"]


@st.composite
def dubious_arguments(draw):
    """Arrays of any rank and dtype with shapes that may or may not agree, or not arrays at all."""
    def operand():
        if draw(st.integers(0, 9)) == 0:
            return draw(st.sampled_from(ODD_VALUES))
        shape = tuple(draw(st.lists(st.integers(0, 4), min_size=0, max_size=4)))
        dtype = draw(st.sampled_from([np.float32, np.float64, *ODD_DTYPES]))
        return np.ones(shape, dtype=dtype)
    return operand(), operand(), draw(st.sampled_from(["numpy", "c"]))


@FUZZ
@given(dubious_arguments())
def test_bad_arguments_raise_or_match_numpy(arguments):
    a, b, backend = arguments
    try:
        out = kernels.matmul(a, b, backend=backend)
    except (TypeError, ValueError) as exc:
        assert "matmul" in str(exc), f"the error does not name the op: {exc}"
        return
    # Accepted: then it was a valid problem on numbers of one native-order dtype, and the answer is NumPy's
    # (dtypes without a C kernel, such as float16 or int64, run on the reference).
    assert isinstance(a, np.ndarray) and a.dtype.kind in "biuf" and a.dtype.isnative and a.dtype == b.dtype
    expected = np.matmul(a, b)
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out, expected, rtol=1e-3 if a.dtype == np.float16 else 1e-5, atol=1e-5)


@FUZZ
@given(st.sampled_from(["a", "b", "a view", "b.T"]), st.booleans(), st.booleans())
def test_gemm_refuses_outputs_that_overlap_inputs(which, trans_a, trans_b):
    base = np.ones((8, 8))
    a, b = base[:6, :6], np.ones((6, 6))
    c = {"a": a, "b": b, "a view": base[2:, 2:], "b.T": b.T}[which]
    with pytest.raises(ValueError, match="shares memory"):
        c_backend.gemm(a, b, c, trans_a=trans_a, trans_b=trans_b)


@st.composite
def attention_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    batch, tq, tk = draw(st.integers(1, 3)), draw(st.integers(1, 70)), draw(st.integers(1, 70))
    d, dv = draw(st.sampled_from([1, 3, 16, 64])), draw(st.sampled_from([1, 5, 16, 64]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0]))
    q = laid_out((scale * rng.standard_normal((batch, tq, d))).astype(dtype), draw(st.sampled_from(LAYOUTS)))
    k = laid_out((scale * rng.standard_normal((batch, tk, d))).astype(dtype), draw(st.sampled_from(LAYOUTS)))
    v = laid_out(rng.standard_normal((batch, tk, dv)).astype(dtype), draw(st.sampled_from(LAYOUTS)))
    return q, k, v, draw(st.booleans())


@FUZZ_ATTENTION
@given(attention_problems())
def test_random_attention_matches_the_numpy_reference(problem):
    q, k, v, is_causal = problem
    what = f"q {q.shape} k {k.shape} v {v.shape} {q.dtype} causal={is_causal}"
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    out, lse = kernels.attention(q, k, v, is_causal=is_causal, return_lse=True, backend="c")
    ref_out, ref_lse = kernels.attention(q64, k64, v64, is_causal=is_causal, return_lse=True, backend="numpy")
    tol = 2e-4 if q.dtype == np.float32 else 1e-10
    assert out.shape == ref_out.shape and lse.shape == ref_lse.shape, what
    assert np.abs(out - ref_out).max() <= tol * max(1.0, np.abs(ref_out).max()), f"out of {what}"
    assert np.abs(lse - ref_lse).max() <= tol * max(1.0, np.abs(ref_lse).max()), f"lse of {what}"
    grad_out = np.random.default_rng(1).standard_normal(out.shape).astype(q.dtype)
    grads = kernels.attention_backward(q, k, v, out, lse, grad_out, is_causal=is_causal, backend="c")
    refs = kernels.attention_backward(q64, k64, v64, ref_out, ref_lse, grad_out.astype(np.float64),
                                      is_causal=is_causal, backend="numpy")
    for name, grad, ref in zip(("dq", "dk", "dv"), grads, refs):
        assert grad.shape == ref.shape, f"{name} of {what}"
        error = np.abs(grad - ref).max() / max(1.0, np.abs(ref).max())
        assert error <= 10 * tol, f"{name} of {what}: worst relative error {error:.3g}"
