"""Every instruction set's copy of the C kernels (kernels/instantiate.h, kernels/isa.c) on this CPU.

The build holds a portable copy of every kernel and, on x86-64, AVX2 and AVX-512 copies; the one
this CPU runs best is chosen at load time, and MINIGRAD_ISA or c_backend.set_isa picks another.
Each copy must agree with the float64 NumPy reference, and the portable fallback is always run here.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minigrad.kernels import c_backend, numpy_backend

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("c_kernels_built")


@pytest.fixture(params=["portable", "avx2", "avx512"])
def isa(request):
    """Run the test on one copy, then restore the copy chosen at load time."""
    if request.param not in c_backend.supported_isas():
        pytest.skip(f"this CPU does not run {request.param} code (it runs {', '.join(c_backend.supported_isas())})")
    chosen = c_backend.isa()
    c_backend.set_isa(request.param)
    assert c_backend.isa() == request.param
    yield request.param
    c_backend.set_isa(chosen)


def test_the_portable_fallback_is_always_there():
    assert c_backend.supported_isas()[0] == "portable"
    assert c_backend.isa() in c_backend.supported_isas()


def close(got, expected, dtype, scale=1.0):
    tol = (3e-5 if dtype == np.float32 else 1e-11) * scale
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_copies_agree_with_numpy(isa, dtype):
    rng = np.random.default_rng(0)
    for m, k, n in [(1, 1, 1), (7, 13, 5), (97, 131, 67), (300, 260, 301)]:  # edges of every tile size
        a, b = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
        expected = a.astype(np.float64) @ b
        for version in ("packed", "simd", "parallel"):
            close(c_backend.matmul(a, b, version=version), expected, dtype, scale=np.sqrt(k))
        c = rng.standard_normal((n, m)).astype(dtype)  # transposes and beta through gemm
        expected = 0.5 * (b.T.astype(np.float64) @ a.T) - 2.0 * c
        close(c_backend.gemm(b, a, c.copy(), alpha=0.5, beta=-2.0, trans_a=True, trans_b=True), expected, dtype,
              scale=np.sqrt(k))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_attention_copies_agree_with_numpy(isa, dtype, causal):
    rng = np.random.default_rng(1)
    q, k, v, g = (rng.standard_normal((2, 131, 24)).astype(dtype) for _ in range(4))  # (B, T, d), T not a block multiple
    out, lse = c_backend.attention(q, k, v, causal, return_lse=True)
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    out_ref, lse_ref = numpy_backend.attention(q64, k64, v64, is_causal=causal, return_lse=True)
    close(out, out_ref, dtype)
    close(lse, lse_ref, dtype)
    grads = c_backend.attention_backward(q, k, v, out, lse, g, causal)
    for got, expected in zip(grads, numpy_backend.attention_backward(q64, k64, v64, out_ref, lse_ref,
                                                                     g.astype(np.float64), is_causal=causal)):
        close(got, expected, dtype, scale=10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_copies_agree_with_numpy(isa, dtype):
    rng = np.random.default_rng(2)
    x, w, b, g = (rng.standard_normal(s).astype(dtype) for s in ((37, 77), (77,), (77,), (37, 77)))
    f64 = [a.astype(np.float64) for a in (x, w, b, g)]
    out, mean, rstd = c_backend.layer_norm(x, w, b)
    for got, expected in zip((out, mean, rstd), numpy_backend.layer_norm(*f64[:3])):
        close(got, expected, dtype)
    for got, expected in zip(c_backend.layer_norm_backward(x, w, mean, rstd, g),
                             numpy_backend.layer_norm_backward(f64[0], f64[1], mean.astype(np.float64),
                                                               rstd.astype(np.float64), f64[3])):
        close(got, expected, dtype, scale=10)

    targets = rng.integers(0, 77, 37)
    loss, lse = c_backend.cross_entropy(x * 5, targets)
    loss_ref, lse_ref = numpy_backend.cross_entropy(f64[0] * 5, targets)
    close(loss, loss_ref, dtype)
    close(lse, lse_ref, dtype)
    close(c_backend.cross_entropy_backward(x * 5, targets, lse),
          numpy_backend.cross_entropy_backward(f64[0] * 5, targets, lse_ref), dtype)

    cdf_out = c_backend.gelu(x)
    for got, expected in zip(cdf_out, numpy_backend.gelu(f64[0])):
        close(got, expected, dtype)
    close(c_backend.gelu_backward(x, cdf_out[1], g), numpy_backend.gelu_backward(f64[0], cdf_out[1].astype(np.float64),
                                                                                  f64[3]), dtype)

    params, moments = [x.copy(), w.copy()], [np.zeros_like(x), np.zeros_like(w)]
    squares = [np.zeros_like(x), np.zeros_like(w)]
    ref = [[a.astype(np.float64) for a in arrays] for arrays in (params, moments, squares)]
    for _ in range(3):
        c_backend.adamw_step(params, [g, b], moments, squares, [1, 1], 1e-2, 0.9, 0.999, 1e-8, 0.1)
        numpy_backend.adamw_step(ref[0], [f64[3], f64[2]], ref[1], ref[2], [1, 1], 1e-2, 0.9, 0.999, 1e-8, 0.1)
    for got, expected in zip(params + moments + squares, sum(ref, [])):
        close(got, expected, dtype)


def run_python(code, **env):
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=full_env,
                          timeout=120)


def test_minigrad_isa_picks_the_copy_at_load_time():
    result = run_python("from minigrad.kernels import c_backend; print(c_backend.isa())", MINIGRAD_ISA="portable")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "portable"


def test_minigrad_isa_rejects_unknown_names():
    result = run_python("from minigrad.kernels import c_backend; c_backend.load()", MINIGRAD_ISA="sse9")
    assert result.returncode != 0
    assert "MINIGRAD_ISA='sse9': choose one of portable, avx2, avx512" in result.stderr
    with pytest.raises(ValueError, match="choose one of portable, avx2, avx512"):
        c_backend.set_isa("avx1024")


def test_an_isa_this_cpu_lacks_is_refused_with_what_it_runs():
    missing = [name for name in c_backend.ISAS if name not in c_backend.supported_isas()]
    if not missing:
        pytest.skip("this CPU runs every copy in the build, so none can be refused")
    with pytest.raises(RuntimeError, match=f"cannot run the {missing[0]} kernels; it runs portable"):
        c_backend.set_isa(missing[0])


def test_openmp_waits_passively_unless_told_otherwise():
    code = "import os; from minigrad.kernels import c_backend; c_backend.load(); print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                            env=dict(env, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])))
    assert result.stdout.strip() == "PASSIVE", result.stderr
    assert run_python(code, OMP_WAIT_POLICY="ACTIVE").stdout.strip() == "ACTIVE"
