"""The C matmul (every version) against NumPy, the kernel dispatcher's checks,
and the NumPy reference attention against loops.

References: `np.matmul` in float64 (or the same dtype), the gemm formula
alpha op(A) op(B) + beta C written out in NumPy, the reference's backward
(itself checked against central differences in test_backends.py).
"""
import math

import numpy as np
import pytest

from minigrad import kernels
from minigrad.kernels import c_backend, numpy_backend

VERSIONS = c_backend.MATMUL_VERSIONS
DTYPES = (np.float32, np.float64)


def requires_c(test):
    test.requires_c = True
    return test


@pytest.fixture(autouse=True)
def c_kernels(request):
    callspec = getattr(request.node, "callspec", None)
    if getattr(request.function, "requires_c", False) or (callspec and callspec.params.get("backend") == "c"):
        request.getfixturevalue("c_kernels_built")


BACKENDS = ["numpy", "c"]


def rtol(dtype, k):
    """Relative error allowed for a length-k dot product: a few ulps per sqrt(k) terms."""
    return 8 * np.finfo(dtype).eps * math.sqrt(max(k, 1)) * 4


def assert_matmul_close(out, expected, dtype, k, what):
    """|out - expected| <= rtol * (|A| |B|) elementwise scale, with the worst error in the message."""
    scale = max(np.abs(expected).max(), 1.0)
    error = np.abs(out.astype(np.float64) - expected).max() / scale
    assert error <= rtol(dtype, k), f"{what}: worst relative error {error:.3g} > {rtol(dtype, k):.3g}"


def random(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


@requires_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("size", [1, 7, 17, 33, 127, 257])
def test_square_sizes_match_numpy(size, version, dtype):
    rng = np.random.default_rng(size)
    a, b = random(rng, (size, size), dtype), random(rng, (size, size), dtype)
    out = c_backend.matmul(a, b, version=version)
    assert out.dtype == dtype and out.shape == (size, size)
    assert_matmul_close(out, a.astype(np.float64) @ b, dtype, size, f"{version} {size}^3")


# Shapes that cross every block edge: MR = 6, NR = 16 / 8 (32 / 16 wide), KC = 384 (256 wide),
# MC = 144 / 72, NC = 4096 / 2048.
NON_SQUARE = [(1, 300, 5), (33, 1, 17), (257, 17, 1), (7, 129, 65), (150, 520, 50), (3, 5, 4100), (145, 2, 9)]


@requires_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("m,k,n", NON_SQUARE)
def test_non_square_shapes_match_numpy(m, k, n, version, dtype):
    rng = np.random.default_rng(m * k * n)
    a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
    out = c_backend.matmul(a, b, version=version)
    assert_matmul_close(out, a.astype(np.float64) @ b, dtype, k, f"{version} ({m}, {k}) @ ({k}, {n})")


@requires_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("beta", [0.0, 1.5])
@pytest.mark.parametrize("m", [37, 1, 5])  # 1 and 5: fewer rows than a micro-tile, the unpacked "thin" path
def test_gemm_formula_with_transposes_alpha_beta(m, beta, trans_b, trans_a, version, dtype):
    rng = np.random.default_rng(7)
    k, n = 300, 21
    a = random(rng, (k, m) if trans_a else (m, k), dtype)
    b = random(rng, (n, k) if trans_b else (k, n), dtype)
    c = random(rng, (m, n), dtype)
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    expected = 0.5 * (op_a.astype(np.float64) @ op_b) + beta * c.astype(np.float64)
    out = c_backend.gemm(a, b, c.copy(), alpha=0.5, beta=beta, trans_a=trans_a, trans_b=trans_b, version=version)
    assert_matmul_close(out, expected, dtype, k, f"{version} gemm trans_a={trans_a} trans_b={trans_b} beta={beta}")


@requires_c
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("m", [9, 2])
@pytest.mark.parametrize("trans_b", [False, True])
def test_beta_zero_never_reads_c(trans_b, m, version):
    a, b = np.ones((m, 5)), np.ones((20, 5) if trans_b else (5, 20))
    c = np.full((m, 20), np.nan)
    c_backend.gemm(a, b, c, beta=0.0, trans_b=trans_b, version=version)
    np.testing.assert_array_equal(c, np.full((m, 20), 5.0))


def strided_views(rng, dtype):
    """(name, view) pairs of 2-D views the wrapper must pass by stride or copy, never misread."""
    big = random(rng, (80, 90), dtype)
    unaligned = np.frombuffer(bytearray(40 * 30 * np.dtype(dtype).itemsize + 1), dtype=np.uint8)[1:]
    unaligned = unaligned.view(dtype).reshape(40, 30)
    unaligned[...] = random(rng, (40, 30), dtype)
    return [
        ("row slice", big[3:43, 5:35]),
        ("step slices", big[::2, 1::3]),
        ("transposed", big[:30, :40].T),
        ("fortran order", np.asfortranarray(big[:40, :30])),
        ("negative steps", big[40:0:-1, 30:0:-1]),
        ("broadcast rows", np.broadcast_to(big[0, :30], (40, 30))),
        ("misaligned", unaligned),
        ("single column of a slice", big[:40, 7:8]),
    ]


@requires_c
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("version", VERSIONS)
def test_strided_and_transposed_inputs(version, dtype):
    rng = np.random.default_rng(3)
    for name, a in strided_views(rng, dtype):
        b = random(rng, (a.shape[1], 13), dtype)
        before = a.copy()
        out = c_backend.matmul(a, b, version=version)
        assert_matmul_close(out, a.astype(np.float64) @ b, dtype, a.shape[1], f"{version} a {name}")
        out = c_backend.matmul(b.T.copy(), a.T, version=version)
        assert_matmul_close(out, b.T.astype(np.float64) @ a.T, dtype, a.shape[0], f"{version} b {name}.T")
        np.testing.assert_array_equal(a, before, err_msg=f"{version} modified its input ({name})")


@requires_c
@pytest.mark.parametrize("version", VERSIONS)
def test_strided_output_arrays(version):
    """c as a view of a bigger array: written through its strides, nothing outside it touched."""
    rng = np.random.default_rng(4)
    a, b = random(rng, (20, 30), np.float64), random(rng, (30, 25), np.float64)
    views = {"wider rows": lambda x: x[:20, 10:35], "step slices": lambda x: x[::2, ::3][:20, :25],
             "transposed": lambda x: x[:25, :20].T}
    for name, view in views.items():
        big = random(rng, (50, 80), np.float64)
        before = big.copy()
        c = view(big)
        expected = a @ b + 2.0 * c
        assert c_backend.gemm(a, b, c, beta=2.0, version=version) is c
        assert_matmul_close(c, expected, np.float64, 30, f"{version} output {name}")
        outside = np.ones(big.shape, bool)
        view(outside)[...] = False
        np.testing.assert_array_equal(big[outside], before[outside],
                                      err_msg=f"{version} wrote outside the output view ({name})")


@requires_c
@pytest.mark.parametrize("beta", [0.0, 2.0])
def test_misaligned_output_array(beta):
    """An output 1 byte off its dtype's alignment is computed in an aligned buffer and copied back."""
    rng = np.random.default_rng(6)
    a, b = random(rng, (9, 11), np.float32), random(rng, (11, 10), np.float32)
    c = np.frombuffer(bytearray(9 * 10 * 4 + 1), dtype=np.uint8)[1:].view(np.float32).reshape(9, 10)
    assert not c.flags.aligned
    c[...] = random(rng, (9, 10), np.float32)
    expected = a.astype(np.float64) @ b + beta * c
    c_backend.gemm(a, b, c, beta=beta)
    assert_matmul_close(c, expected, np.float32, 11, f"misaligned output, beta={beta}")


@requires_c
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("m,k,n", [(300, 70, 16), (5, 70, 300), (145, 260, 100)])
def test_parallel_thread_counts(m, k, n, threads):
    """Wide C splits columns between threads, narrow C splits row blocks; both must cover C exactly once."""
    rng = np.random.default_rng(threads)
    for dtype in DTYPES:
        a, b = random(rng, (m, k), dtype), random(rng, (k, n), dtype)
        out = c_backend.matmul(a, b, version="parallel", num_threads=threads)
        assert_matmul_close(out, a.astype(np.float64) @ b, dtype, k, f"parallel x{threads} ({m},{k},{n})")


@requires_c
def test_thread_count_from_the_environment(monkeypatch):
    a = np.arange(12.0).reshape(3, 4)
    monkeypatch.setenv("MINIGRAD_NUM_THREADS", "2")
    np.testing.assert_allclose(kernels.matmul(a, a.T, backend="c"), a @ a.T)
    monkeypatch.setenv("MINIGRAD_NUM_THREADS", "two")
    with pytest.raises(ValueError, match="MINIGRAD_NUM_THREADS"):
        kernels.matmul(a, a.T, backend="c")


BATCHED = [((2, 3, 5, 7), (3, 7, 4)), ((4, 5, 7), (7, 2)), ((1, 5, 7), (3, 7, 4)), ((5, 7), (2, 7, 3)),
           ((2, 1, 5, 7), (1, 3, 7, 4)), ((3, 5, 7), (3, 7, 4))]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape_a,shape_b", BATCHED)
def test_batched_broadcasting_through_the_dispatcher(shape_a, shape_b, backend):
    rng = np.random.default_rng(len(shape_a) * 10 + len(shape_b))
    a, b = random(rng, shape_a, np.float64), random(rng, shape_b, np.float64)
    out = kernels.matmul(a, b, backend=backend)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    a_all, b_all = np.broadcast_to(a, batch + a.shape[-2:]), np.broadcast_to(b, batch + b.shape[-2:])
    expected = np.einsum("...mk,...kn->...mn", a_all, b_all)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


@requires_c
@pytest.mark.parametrize("version", VERSIONS)
def test_matmul_backward_with_every_version(version):
    rng = np.random.default_rng(5)
    a, b = random(rng, (3, 40, 50), np.float32), random(rng, (50, 30), np.float32)
    grad_out = random(rng, (3, 40, 30), np.float32)
    grad_a, grad_b = c_backend.matmul_backward(a, b, grad_out, version=version)
    expected_a, expected_b = numpy_backend.matmul_backward(a.astype(np.float64), b.astype(np.float64),
                                                          grad_out.astype(np.float64))
    assert_matmul_close(grad_a, expected_a, np.float32, 30, f"{version} grad_a")
    assert_matmul_close(grad_b, expected_b, np.float32, 120, f"{version} grad_b")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape_a,shape_b", [((0, 4), (4, 3)), ((3, 0), (0, 5)), ((2, 0, 3, 4), (4, 5)),
                                             ((3, 4), (4, 0)), ((0, 3, 4), (1, 4, 2))])
def test_empty_dims_give_zeros(shape_a, shape_b, backend):
    a, b = np.ones(shape_a, np.float32), np.ones(shape_b, np.float32)
    out = kernels.matmul(a, b, backend=backend)
    assert out.shape == np.matmul(a, b).shape and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.matmul(a, b))
    grad_a, grad_b = kernels.matmul_backward(a, b, np.ones(out.shape, np.float32), backend=backend)
    np.testing.assert_array_equal(grad_a, np.zeros(shape_a))
    np.testing.assert_array_equal(grad_b, np.zeros(shape_b))


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_arguments_raise_clear_errors(backend):
    a32, b64 = np.ones((2, 3), np.float32), np.ones((3, 4), np.float64)
    with pytest.raises(TypeError, match=r"matmul: .*a float32 \(2, 3\), b float64 \(3, 4\)"):
        kernels.matmul(a32, b64, backend=backend)
    with pytest.raises(TypeError, match=r"numeric arrays .*complex64"):
        kernels.matmul(np.ones((2, 3), np.complex64), np.ones((3, 4), np.complex64), backend=backend)
    with pytest.raises(TypeError, match="must be a NumPy or CuPy array, got list"):
        kernels.matmul([[1.0]], np.ones((1, 1)), backend=backend)
    with pytest.raises(ValueError, match=r"inner dims differ: a \(2, 3\) .* b \(4, 4\)"):
        kernels.matmul(np.ones((2, 3)), np.ones((4, 4)), backend=backend)
    with pytest.raises(ValueError, match="at least 2 dims"):
        kernels.matmul(np.ones(3), np.ones((3, 4)), backend=backend)
    with pytest.raises(ValueError, match=r"batch dims of a \(2, 2, 3\) and b \(3, 3, 4\) do not broadcast"):
        kernels.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 4)), backend=backend)
    with pytest.raises(ValueError, match=r"grad_out \(2, 5\) must have the shape of a @ b = \(2, 4\)"):
        kernels.matmul_backward(np.ones((2, 3)), np.ones((3, 4)), np.ones((2, 5)), backend=backend)
    with pytest.raises(TypeError, match=r">f8"):
        kernels.matmul(np.ones((2, 3), ">f8"), np.ones((3, 4), ">f8"), backend=backend)
    with pytest.raises(ValueError, match="unknown backend"):
        kernels.matmul(np.ones((2, 3)), np.ones((3, 4)), backend="fortran")


@requires_c
def test_c_wrapper_rejects_bad_gemm_calls():
    a, b = np.ones((4, 4)), np.ones((4, 4))
    with pytest.raises(ValueError, match="shares memory"):
        c_backend.gemm(a, b, a, beta=1.0)
    with pytest.raises(ValueError, match="shares memory"):
        c_backend.gemm(a, b, b.T)
    with pytest.raises(ValueError, match=r"op\(a\) is \(4, 4\) but op\(b\) is \(3, 4\)"):
        c_backend.gemm(a, np.ones((3, 4)))
    with pytest.raises(ValueError, match="read-only"):
        c = np.zeros((4, 4))
        c.flags.writeable = False
        c_backend.gemm(a, b, c)
    with pytest.raises(ValueError, match="unknown C matmul version 'fastest'"):
        c_backend.matmul(a, b, version="fastest")


@requires_c
def test_simd_kernel_is_reported():
    assert c_backend.simd_kernel() in ("avx512", "avx2", "portable")
    assert c_backend.simd_kernel() == c_backend.isa()


def test_missing_build_names_the_fix(monkeypatch, tmp_path):
    """A machine without the compiled kernels gets an error that says how to build them."""
    monkeypatch.setenv("MINIGRAD_CKERNELS_DIR", str(tmp_path))
    monkeypatch.setattr(c_backend, "_lib", None)
    with pytest.raises(RuntimeError, match=r"C compiler.*python build\.py"):
        kernels.matmul(np.ones((2, 2)), np.ones((2, 2)), backend="c")


def test_importing_the_dispatcher_compiles_and_loads_nothing():
    import subprocess
    import sys
    code = ("import sys, minigrad.kernels; "
            "print(any(m.startswith(('minigrad._ckernels', 'minigrad.kernels.c_backend', 'cffi')) "
            "for m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ----------------------------------------------------------- the NumPy attention reference

def attention_by_loops(q, k, v, is_causal):
    """out[b, i] = sum_j p_ij v[b, j], p_i = softmax_j(q_i . k_j / sqrt(d)) over the visible j; lse_i = log sum_j exp(.)."""
    batch, tq, d = q.shape
    out = np.zeros((batch, tq, v.shape[2]))
    lse = np.zeros((batch, tq))
    for b in range(batch):
        for i in range(tq):
            visible = range(min(i + 1, k.shape[1])) if is_causal else range(k.shape[1])
            scores = np.array([q[b, i] @ k[b, j] / math.sqrt(d) for j in visible])
            lse[b, i] = math.log(sum(math.exp(s) for s in scores))
            weights = np.exp(scores - lse[b, i])
            out[b, i] = sum(w * v[b, j] for w, j in zip(weights, visible))
    return out, lse


@pytest.mark.parametrize("is_causal", [False, True])
@pytest.mark.parametrize("tq,tk", [(5, 5), (3, 6), (6, 3), (1, 1)])
def test_reference_attention_matches_loops(tq, tk, is_causal):
    rng = np.random.default_rng(tq * 7 + tk)
    q, k, v = random(rng, (2, tq, 4), np.float64), random(rng, (2, tk, 4), np.float64), random(rng, (2, tk, 3), np.float64)
    out, lse = kernels.attention(q, k, v, is_causal=is_causal, return_lse=True, backend="numpy")
    expected_out, expected_lse = attention_by_loops(q, k, v, is_causal)
    np.testing.assert_allclose(out, expected_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lse, expected_lse, rtol=1e-12, atol=1e-12)


def test_attention_arguments_are_checked():
    q = np.ones((2, 3, 4))
    with pytest.raises(ValueError, match=r"q \(2, 3, 4\), k \(2, 3, 5\)"):
        kernels.attention(q, np.ones((2, 3, 5)), q, backend="numpy")
    with pytest.raises(ValueError, match="3-D"):
        kernels.attention(q[0], q[0], q[0], backend="numpy")
    with pytest.raises(TypeError, match="is_causal must be True or False"):
        kernels.attention(q, q, q, is_causal="yes", backend="numpy")
    with pytest.raises(ValueError, match="Tk = 0"):
        kernels.attention(q, np.ones((2, 0, 4)), np.ones((2, 0, 4)), backend="numpy")
    with pytest.raises(ValueError, match=r"lse must be \(B, Tq\) = \(2, 3\)"):
        kernels.attention_backward(q, q, q, q, np.ones((2, 4)), q, backend="numpy")
    out, lse = kernels.attention(np.ones((2, 0, 4)), q, q, return_lse=True, backend="numpy")
    assert out.shape == (2, 0, 4) and lse.shape == (2, 0)


# ----------------------------------------------------------- Tensor code routed through backend "c"

@requires_c
@pytest.mark.parametrize("shape_a,shape_b", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (3, 4, 2))])
def test_tensor_matmul_gradients_through_backend_c(shape_a, shape_b):
    """Tensor @ under mg.backend("c"): gradcheck passes, and values and gradients equal backend "numpy"."""
    import minigrad as mg
    rng = np.random.default_rng(8)
    a_data, b_data = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    weights = rng.standard_normal(np.matmul(a_data, b_data).shape)

    def loss(a, b):
        return ((a @ b) * mg.tensor(weights)).sum()

    results = {}
    for backend in ("numpy", "c"):
        with mg.backend(backend):
            a = mg.tensor(a_data, dtype=mg.float64, requires_grad=True)
            b = mg.tensor(b_data, dtype=mg.float64, requires_grad=True)
            assert mg.gradcheck(loss, [a, b])
            value = loss(a, b)
            value.backward()
            results[backend] = (value.item(), a.grad, b.grad)
    for expected, got in zip(results["numpy"], results["c"]):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
