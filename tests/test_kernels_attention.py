"""The C attention kernels (kernels/attention.c, versions "naive" and "flash")
against independent references.

References: the NumPy composition softmax(q k^T / sqrt(d)) v of backend
"numpy", evaluated in float64; the gradient formulas through that reference;
central differences of a scalar loss, in float64, of a softmax-attention
written out inline here; and the sanitizers (AddressSanitizer + UBSan build).
"""
import functools
import math
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minigrad import kernels
from minigrad.kernels import c_backend, numpy_backend

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = c_backend.ATTENTION_VERSIONS
DTYPES = (np.float32, np.float64)


pytestmark = pytest.mark.usefixtures("c_kernels_built")


def random_qkv(seed, batch, tq, tk, d, dv, dtype):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, tq, d)).astype(dtype)  # (B, Tq, d)
    k = rng.standard_normal((batch, tk, d)).astype(dtype)  # (B, Tk, d)
    v = rng.standard_normal((batch, tk, dv)).astype(dtype)  # (B, Tk, dv)
    grad_out = rng.standard_normal((batch, tq, dv)).astype(dtype)  # (B, Tq, dv)
    return q, k, v, grad_out


def reference(q, k, v, grad_out, is_causal):
    """(out, lse, dq, dk, dv) of the NumPy composition in float64."""
    q, k, v, grad_out = (np.asarray(x, np.float64) for x in (q, k, v, grad_out))
    out, lse = numpy_backend.attention(q, k, v, is_causal=is_causal, return_lse=True)
    grads = numpy_backend.attention_backward(q, k, v, out, lse, grad_out, is_causal=is_causal)
    return (out, lse) + tuple(grads)


def tolerance(dtype, length):
    """Error allowed relative to the largest value: a few ulps times sqrt of the summed terms."""
    return 16 * np.finfo(dtype).eps * math.sqrt(length)


def assert_close(got, expected, dtype, length, what):
    assert got.shape == expected.shape and got.dtype == dtype, \
        f"{what}: got {got.dtype} {got.shape}, expected {np.dtype(dtype)} {expected.shape}"
    scale = max(np.abs(expected).max(), 1.0)
    error = np.abs(got.astype(np.float64) - expected).max() / scale
    assert error <= tolerance(dtype, length), \
        f"{what}: worst error {error:.3g} (relative to {scale:.3g}) > {tolerance(dtype, length):.3g}"


@functools.lru_cache(maxsize=8)
def problem(seed, batch, tq, tk, d, dv, dtype, is_causal):
    """Inputs and their reference results, shared by the versions (the reference is the slow part)."""
    inputs = random_qkv(seed, batch, tq, tk, d, dv, dtype)
    return inputs, reference(*inputs, is_causal)


def check_against_reference(version, dtype, batch, tq, tk, d, dv, is_causal, seed=0, **c_options):
    (q, k, v, grad_out), expected = problem(seed, batch, tq, tk, d, dv, dtype, is_causal)
    out_ref, lse_ref, dq_ref, dk_ref, dv_ref = expected
    case = f"{version} {np.dtype(dtype)} Tq={tq} Tk={tk} d={d} dv={dv} causal={is_causal}"
    out, lse = c_backend.attention(q, k, v, is_causal, return_lse=True, version=version, **c_options)
    assert_close(out, out_ref, dtype, tk + d, f"out, {case}")
    assert_close(lse, lse_ref, dtype, tk + d, f"lse, {case}")
    grads = c_backend.attention_backward(q, k, v, out, lse, grad_out, is_causal, version=version, **c_options)
    for name, got, expected in zip(("dq", "dk", "dv"), grads, (dq_ref, dk_ref, dv_ref)):
        assert_close(got, expected, dtype, tk + tq + d + dv, f"{name}, {case}")


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("d", [16, 64])
@pytest.mark.parametrize("t", [1, 7, 17, 33, 127, 257])
def test_square_problems_match_the_reference(t, d, is_causal, version, dtype):
    check_against_reference(version, dtype, 2, t, t, d, d, is_causal, seed=t)


# Tq != Tk, head dims off the vector width, dv != d, blocks of 64 crossed on both sides.
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("tq,tk,d,dv", [(5, 70, 24, 40), (70, 5, 16, 16), (130, 65, 100, 3),
                                        (65, 130, 1, 33), (64, 128, 32, 64), (3, 200, 128, 128)])
def test_rectangular_problems_match_the_reference(tq, tk, d, dv, is_causal, version, dtype):
    check_against_reference(version, dtype, 3, tq, tk, d, dv, is_causal, seed=tq * tk)


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("batch,threads", [(1, 1), (3, 2), (1, 2), (5, 4)])
def test_both_backward_schedules_match_the_reference(batch, threads, is_causal):
    """Few heads for the threads (1 on 2, 5 on 4) take the two sweeps over blocks; the others one sweep
    per head. (The problem is big enough for the kernel to use the threads it is given.)"""
    check_against_reference("flash", np.float32, batch, 300, 250, 64, 32, is_causal, num_threads=threads)


@pytest.mark.parametrize("d", [200, 256])
def test_large_head_dims(d):
    check_against_reference("flash", np.float32, 1, 70, 90, d, d, True)


@pytest.mark.parametrize("version", VERSIONS)
def test_large_scores_stay_finite(version):
    """Scores of size ~1e4: the running max keeps every exp in range (softmax near one-hot)."""
    q, k, v, grad_out = random_qkv(1, 2, 40, 90, 16, 16, np.float32)
    q *= 300
    out_ref, lse_ref = numpy_backend.attention(q.astype(np.float64), k.astype(np.float64),
                                               v.astype(np.float64), is_causal=True, return_lse=True)
    out, lse = c_backend.attention(q, k, v, True, return_lse=True, version=version)
    assert np.isfinite(out).all() and np.isfinite(lse).all()
    assert_close(out, out_ref, np.float32, 90, "out")
    assert np.abs(lse - lse_ref).max() <= 1e-6 * np.abs(lse_ref).max(), "lse"


def softmax_attention_loss(q, k, v, weights, is_causal):
    """sum(weights * softmax(q k^T / sqrt(d) + mask) v), written out here for the finite differences."""
    scores = np.einsum("btd,bsd->bts", q, k) / math.sqrt(q.shape[-1])  # (B, Tq, Tk)
    if is_causal:
        scores[:, np.triu(np.ones(scores.shape[1:], bool), 1)] = -np.inf
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return float((weights * np.einsum("bts,bsc->btc", probs, v)).sum())


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("is_causal", [False, True])
def test_backward_matches_central_differences(version, is_causal):
    q, k, v, weights = random_qkv(7, 2, 3, 4, 5, 3, np.float64)
    out, lse = c_backend.attention(q, k, v, is_causal, return_lse=True, version=version)
    grads = c_backend.attention_backward(q, k, v, out, lse, weights, is_causal, version=version)
    eps = 1e-6
    for name, x, grad in zip(("q", "k", "v"), (q, k, v), grads):
        numeric = np.zeros_like(x)
        for index in np.ndindex(*x.shape):
            saved = x[index]
            x[index] = saved + eps
            plus = softmax_attention_loss(q, k, v, weights, is_causal)
            x[index] = saved - eps
            minus = softmax_attention_loss(q, k, v, weights, is_causal)
            x[index] = saved
            numeric[index] = (plus - minus) / (2 * eps)
        worst = np.unravel_index(np.abs(grad - numeric).argmax(), x.shape)
        assert np.allclose(grad, numeric, rtol=1e-6, atol=1e-8), \
            (f"d loss / d {name}{list(worst)}: kernel {grad[worst]:.10g}, central difference "
             f"{numeric[worst]:.10g}, worst error {np.abs(grad - numeric).max():.3g}")


def test_causal_keys_after_the_queries_get_no_gradient():
    """Top-left alignment with Tk > Tq: keys j >= Tq are seen by no query."""
    q, k, v, grad_out = random_qkv(3, 2, 20, 150, 16, 16, np.float32)
    out, lse = c_backend.attention(q, k, v, True, return_lse=True)
    _, dk, dv = c_backend.attention_backward(q, k, v, out, lse, grad_out, True)
    assert not dk[:, 20:].any() and not dv[:, 20:].any()
    assert np.abs(dv[:, :20]).min() > 0


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_results_do_not_depend_on_the_thread_count(threads):
    """Each block is computed by one thread in a fixed order, so any thread count gives the same bits."""
    q, k, v, grad_out = random_qkv(5, 3, 150, 150, 32, 32, np.float32)
    out1, lse1 = c_backend.attention(q, k, v, True, return_lse=True, num_threads=1)
    grads1 = c_backend.attention_backward(q, k, v, out1, lse1, grad_out, True, num_threads=1)
    out, lse = c_backend.attention(q, k, v, True, return_lse=True, num_threads=threads)
    grads = c_backend.attention_backward(q, k, v, out, lse, grad_out, True, num_threads=threads)
    assert np.array_equal(out, out1) and np.array_equal(lse, lse1)
    assert all(np.array_equal(a, b) for a, b in zip(grads, grads1))


def test_thread_count_from_the_environment(monkeypatch):
    q, k, v, _ = random_qkv(2, 2, 70, 70, 16, 16, np.float32)
    expected = c_backend.attention(q, k, v, num_threads=1)
    monkeypatch.setenv("MINIGRAD_NUM_THREADS", "2")
    assert np.array_equal(kernels.attention(q, k, v, backend="c"), expected)
    monkeypatch.setenv("MINIGRAD_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="MINIGRAD_NUM_THREADS"):
        kernels.attention(q, k, v, backend="c")


@pytest.mark.parametrize("version", VERSIONS)
def test_strided_transposed_and_byteswapped_inputs(version):
    q, k, v, grad_out = random_qkv(4, 2, 33, 45, 16, 24, np.float32)
    expected = reference(q, k, v, grad_out, True)
    q_transposed = np.ascontiguousarray(q.transpose(0, 2, 1)).transpose(0, 2, 1)  # d-stride Tq
    q_swapped = q.astype(">f4")  # big-endian bytes
    k_strided = np.zeros((2, 45, 32), np.float32)[:, :, :16]  # rows 32 floats apart
    k_strided[...] = k
    v_fortran = np.asfortranarray(v)
    grad_reversed = grad_out[:, ::-1].copy()[:, ::-1]  # negative row stride
    out, lse = c_backend.attention(q_swapped, k_strided, v_fortran, True, return_lse=True, version=version)
    assert_close(out, expected[0], np.float32, 60, "out")
    assert_close(lse, expected[1], np.float32, 60, "lse")
    grads = c_backend.attention_backward(q_transposed, k_strided, v_fortran, out, lse, grad_reversed, True,
                                         version=version)
    for name, got, want in zip(("dq", "dk", "dv"), grads, expected[2:]):
        assert_close(got, want, np.float32, 120, name)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("is_causal", [False, True])
def test_nan_propagates_like_the_reference(version, is_causal):
    """A NaN key poisons exactly the rows that see it, as in the NumPy composition: never silently dropped."""
    q, k, v, _ = random_qkv(6, 1, 80, 80, 16, 16, np.float32)
    k[0, 70, 3] = np.nan
    with np.errstate(invalid="ignore"):
        expected = numpy_backend.attention(q, k, v, is_causal=is_causal)
    out = c_backend.attention(q, k, v, is_causal, version=version)
    assert np.isnan(expected).any()
    assert np.array_equal(np.isnan(out), np.isnan(expected))


def test_dispatcher_routes_backend_c_and_checks_arguments():
    q, k, v, grad_out = random_qkv(8, 2, 9, 11, 16, 8, np.float32)
    out, lse = kernels.attention(q, k, v, is_causal=True, return_lse=True, backend="c")
    assert_close(out, reference(q, k, v, grad_out, True)[0], np.float32, 30, "out")
    with pytest.raises(TypeError, match=r"floating-point arrays of one .*k float64"):
        kernels.attention(q, k.astype(np.float64), v, backend="c")
    with pytest.raises(TypeError, match=r"floating-point arrays .*q int32"):
        kernels.attention(q.astype(np.int32), k.astype(np.int32), v.astype(np.int32), backend="c")
    with pytest.raises(ValueError, match="3-D"):
        kernels.attention(q[0], k[0], v[0], backend="c")
    with pytest.raises(ValueError, match=r"q \(2, 9, 16\), k \(2, 11, 15\)"):
        kernels.attention(q, k[:, :, 1:], v, backend="c")
    with pytest.raises(ValueError, match="Tk = 0"):
        kernels.attention(q, k[:, :0], v[:, :0], backend="c")
    with pytest.raises(ValueError, match="lse must be"):
        kernels.attention_backward(q, k, v, out, lse[:, 1:], grad_out, backend="c")
    with pytest.raises(ValueError, match="out and grad_out"):
        kernels.attention_backward(q, k, v, out, lse, grad_out[:, :, 1:], backend="c")
    empty = kernels.attention(q[:, :0], k, v, backend="c")
    assert empty.shape == (2, 0, 8)


@pytest.mark.parametrize("is_causal", [False, True])
def test_tensor_attention_through_backend_c(is_causal):
    """F.scaled_dot_product_attention routed to the C kernels: same values and gradients as backend
    "numpy", and gradcheck (central differences in float64) passes."""
    import minigrad as mg
    import minigrad.nn.functional as F

    rng = np.random.default_rng(12)
    arrays = [rng.standard_normal((2, 2, 5, 4)) for _ in range(3)]  # (B, H, T, d)
    weights = rng.standard_normal((2, 2, 5, 4))
    results = {}
    for backend in ("numpy", "c"):
        with mg.backend(backend):
            q, k, v = (mg.tensor(a, requires_grad=True) for a in arrays)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # (B, H, T, d)
            (out * mg.tensor(weights)).sum().backward()
            results[backend] = (out.data, q.grad, k.grad, v.grad)
    for name, got, expected in zip(("out", "dq", "dk", "dv"), results["c"], results["numpy"]):
        assert_close(got, expected, np.float64, 20, f"{name} via backend c")
    with mg.backend("c"):
        inputs = [mg.tensor(a, requires_grad=True) for a in arrays]
        assert mg.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=is_causal), inputs)


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("batch,tq,dv", [(2, 0, 8), (0, 3, 8), (2, 3, 0)])
def test_empty_problems_called_directly(batch, tq, dv, version):
    """No query, no batch or no output feature: empty or zero results, and lse still log(sum exp) when dv = 0."""
    q, k = np.ones((batch, tq, 16), np.float32), np.ones((batch, 5, 16), np.float32)
    v = np.ones((batch, 5, dv), np.float32)
    out, lse = c_backend.attention(q, k, v, True, return_lse=True, version=version)
    assert out.shape == (batch, tq, dv) and lse.shape == (batch, tq)
    # q = k = ones: every score is 16 / sqrt(16) = 4, and causal query i sees i + 1 keys
    assert np.allclose(lse, 4 + np.log(np.arange(1, tq + 1)), rtol=1e-6)
    grads = c_backend.attention_backward(q, k, v, out, lse, np.ones_like(out), True, version=version)
    assert [g.shape for g in grads] == [q.shape, k.shape, v.shape] and not any(g.any() for g in grads)


def test_c_wrapper_rejects_bad_options():
    q, k, v, _ = random_qkv(9, 1, 4, 4, 16, 16, np.float32)
    with pytest.raises(ValueError, match="unknown C attention version 'fast'"):
        c_backend.attention(q, k, v, version="fast")
    with pytest.raises(ValueError, match="num_threads"):
        c_backend.attention(q, k, v, num_threads=-1)
    # called directly, the wrappers still check what C indexes by
    with pytest.raises(ValueError, match=r"k \(1, 4, 8\)"):
        c_backend.attention(q, k[:, :, :8], v)
    with pytest.raises(ValueError, match="shapes must be"):
        c_backend.attention(q, k[:, :3], v)
    with pytest.raises(ValueError, match=r"lse must be \(B, Tq\) = \(1, 4\)"):
        c_backend.attention_backward(q, k, v, q, q[:, :, 0].T, q)
    with pytest.raises(ValueError, match="grad_out must be"):
        c_backend.attention_backward(q, k, v, q, q[:, :, 0], q[:, :3])
    with pytest.raises(TypeError, match="same dtype"):
        c_backend.attention(q, k.astype(np.float64), v)
    with pytest.raises(TypeError, match="NumPy arrays"):
        c_backend.attention(q.tolist(), k, v)
    # the dispatcher's own check runs on direct calls too
    with pytest.raises(ValueError, match="Tk = 0"):
        c_backend.attention(q, k[:, :0], v[:, :0])
    with pytest.raises(ValueError, match="d = 0"):
        c_backend.attention_backward(q[..., :0], k[..., :0], v, q, q[..., 0], q, version="naive")


SANITIZED_RUN = textwrap.dedent("""
    import numpy as np
    from minigrad.kernels import c_backend, numpy_backend
    rng = np.random.default_rng(0)
    shapes = [(2, 1, 1, 1, 1), (1, 7, 70, 24, 40), (2, 130, 65, 16, 3), (1, 300, 250, 64, 32), (2, 200, 97, 32, 8)]
    for dtype in (np.float32, np.float64):
        for batch, tq, tk, d, dv in shapes:  # (1, 300, 250, ...) on 2 threads: the two-sweep backward
            q, k = rng.standard_normal((batch, tq, d)).astype(dtype), rng.standard_normal((batch, tk, d)).astype(dtype)
            v, g = rng.standard_normal((batch, tk, dv)).astype(dtype), rng.standard_normal((batch, tq, dv)).astype(dtype)
            for causal in (False, True):
                for version in c_backend.ATTENTION_VERSIONS:
                    for threads in (1, 2):
                        out, lse = c_backend.attention(q, k, v, causal, True, version=version, num_threads=threads)
                        grads = c_backend.attention_backward(q, k, v, out, lse, g, causal, version=version,
                                                             num_threads=threads)
                        ref = numpy_backend.attention(q.astype(float), k.astype(float), v.astype(float),
                                                      is_causal=causal)
                        assert np.abs(out - ref).max() < 1e-4, (dtype, tq, tk, d, dv, causal, version)
                        assert all(np.isfinite(x).all() for x in grads)
    print("sanitized attention ok")
""")


@pytest.mark.slow
def test_kernels_run_clean_under_address_and_undefined_behaviour_sanitizers(tmp_path):
    compiler = shutil.which("gcc")
    if compiler is None:
        pytest.skip("the sanitizer run needs gcc (for libasan)")
    libasan = subprocess.run([compiler, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    if not os.path.isabs(libasan):
        pytest.skip("gcc has no libasan.so here")
    build = subprocess.run([sys.executable, "build.py", "--sanitize", str(tmp_path)], cwd=ROOT,
                           capture_output=True, text=True)
    assert build.returncode == 0, f"sanitizer build failed:\n{build.stdout}\n{build.stderr}"
    env = dict(os.environ, MINIGRAD_CKERNELS_DIR=str(tmp_path), LD_PRELOAD=libasan,
               ASAN_OPTIONS="detect_leaks=0", PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", SANITIZED_RUN], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0 and "sanitized attention ok" in run.stdout, \
        f"sanitizers reported a problem (exit {run.returncode}):\n{run.stdout}\n{run.stderr[-4000:]}"
