"""The fused C kernels (kernels/layernorm.c, cross_entropy.c, adamw.c, activation.c) against their NumPy
reference (minigrad/kernels/numpy_backend.py), their backward by float64 gradcheck, and bad input."""
import math

import numpy as np
import pytest

import minigrad as mg
from minigrad.kernels import c_backend, numpy_backend
from minigrad.tensor import Tensor

# c_kernels_built honours MINIGRAD_CKERNELS_DIR, so the sanitizer test runs this file on its own build
pytestmark = pytest.mark.usefixtures("c_kernels_built")

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}


def rand(*shape, dtype=np.float64, seed=0, scale=1.0, offset=0.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale + offset).astype(dtype)


# ----- LayerNorm -------------------------------------------------------------------------------

def c_layer_norm_op(x, weight, bias, eps=1e-5):
    """The C forward/backward pair as a Tensor op, so mg.gradcheck can check the C backward."""
    out, mean, rstd = c_backend.layer_norm(x.data, weight.data, bias.data, eps)

    def backward(grad):
        return c_backend.layer_norm_backward(x.data, weight.data, mean, rstd, grad)

    return Tensor.from_op(out, (x, weight, bias), backward, "c_layer_norm")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1, 1), (3, 5, 7), (64, 96), (5, 1000)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_matches_the_reference(dtype, shape, affine):
    x = rand(*shape, dtype=dtype, scale=3.0, offset=100.0)  # a large mean: no cancellation allowed
    c = shape[-1]
    weight = rand(c, dtype=dtype, seed=1) if affine else None
    bias = rand(c, dtype=dtype, seed=2) if affine else None
    grad = rand(*shape, dtype=dtype, seed=3)
    expected = numpy_backend.layer_norm(x.astype(np.float64), None if weight is None else weight.astype(np.float64),
                                        None if bias is None else bias.astype(np.float64), 1e-5)
    for threads in (1, 2):
        got = c_backend.layer_norm(x, weight, bias, 1e-5, num_threads=threads)
        for g, e in zip(got, expected):
            assert g.dtype == dtype and g.shape == e.shape
            # float32: the mean of ~100 is itself rounded by ~3e-6, so x̂ is good to ~1e-6 of its std
            np.testing.assert_allclose(g, e, **(dict(rtol=2e-5, atol=1e-5) if dtype == np.float32 else TOL[dtype]))
        mean, rstd = got[1], got[2]
        expected_grads = numpy_backend.layer_norm_backward(
            x.astype(np.float64), None if weight is None else weight.astype(np.float64),
            mean.astype(np.float64), rstd.astype(np.float64), grad.astype(np.float64))
        got_grads = c_backend.layer_norm_backward(x, weight, mean, rstd, grad, num_threads=threads)
        scale = {np.float32: 1e-4, np.float64: 1e-11}[dtype]
        for g, e in zip(got_grads, expected_grads):
            assert g.dtype == dtype and g.shape == e.shape
            np.testing.assert_allclose(g, e, rtol=scale, atol=scale * (1 + np.abs(e).max()))


def test_layer_norm_reference_is_the_formula_written_out():
    x = rand(4, 6)
    w, b = rand(6, seed=1), rand(6, seed=2)
    mu = x.sum(axis=1, keepdims=True) / 6
    var = ((x - mu) ** 2).sum(axis=1, keepdims=True) / 6
    out, mean, rstd = numpy_backend.layer_norm(x, w, b, 1e-5)
    np.testing.assert_allclose(out, (x - mu) / np.sqrt(var + 1e-5) * w + b, rtol=1e-13)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var[:, 0] + 1e-5), rtol=1e-13)


def test_layer_norm_c_backward_gradchecks():
    x = mg.tensor(rand(3, 4, 5), requires_grad=True)
    w = mg.tensor(rand(5, seed=1), requires_grad=True)
    b = mg.tensor(rand(5, seed=2), requires_grad=True)
    assert mg.gradcheck(lambda x, w, b: c_layer_norm_op(x, w, b) * mg.tensor(rand(3, 4, 5, seed=4)), (x, w, b))


def test_layer_norm_rejects_bad_input():
    x = rand(4, 6, dtype=np.float32)
    with pytest.raises(TypeError, match="same dtype"):
        c_backend.layer_norm(x, np.ones(6), None)  # float64 weight for float32 x
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        c_backend.layer_norm(x, np.ones(5, np.float32), None)
    with pytest.raises(ValueError, match="non-empty last dim"):
        c_backend.layer_norm(np.ones((3, 0), np.float32), None, None)
    with pytest.raises(TypeError, match="NumPy arrays"):
        c_backend.layer_norm([[1.0, 2.0]], None, None)
    out, mean, rstd = c_backend.layer_norm(x, None, None)
    with pytest.raises(ValueError, match=r"rstd must have shape \(4,\)"):
        c_backend.layer_norm_backward(x, None, mean, rstd[:3], x)


def test_layer_norm_takes_strided_input():
    x = rand(8, 12)[:, ::2]  # (8, 6), not contiguous
    np.testing.assert_allclose(c_backend.layer_norm(x, None, None)[0], numpy_backend.layer_norm(x, None, None)[0],
                               rtol=1e-12, atol=1e-13)


# ----- softmax + cross-entropy ---------------------------------------------------------------------

def c_cross_entropy_op(logits, targets):
    loss, lse = c_backend.cross_entropy(logits.data, targets)

    def backward(grad):
        return (c_backend.cross_entropy_backward(logits.data, targets, lse, float(grad)),)

    return Tensor.from_op(loss, (logits,), backward, "c_cross_entropy")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n,v", [(1, 1), (7, 3), (2048, 96), (33, 1000)])
def test_cross_entropy_matches_the_reference(dtype, n, v):
    logits = rand(n, v, dtype=dtype, scale=4.0)
    targets = np.random.default_rng(5).integers(0, v, n)
    loss_ref, lse_ref = numpy_backend.cross_entropy(logits.astype(np.float64), targets)
    dz_ref = numpy_backend.cross_entropy_backward(logits.astype(np.float64), targets, lse_ref, 0.5)
    for threads in (1, 2):
        loss, lse = c_backend.cross_entropy(logits, targets, num_threads=threads)
        assert loss.dtype == dtype and loss.shape == () and lse.dtype == dtype
        np.testing.assert_allclose(loss, loss_ref, **TOL[dtype])
        np.testing.assert_allclose(lse, lse_ref, **TOL[dtype])
        dz = c_backend.cross_entropy_backward(logits, targets, lse, 0.5, num_threads=threads)
        assert dz.dtype == dtype
        np.testing.assert_allclose(dz, dz_ref, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] / n)


def test_cross_entropy_reference_against_the_closed_form():
    # uniform logits over V classes: every row's loss is log V, and dz = (1/V - onehot)/N
    logits, targets = np.zeros((4, 5)), np.array([0, 1, 4, 2])
    loss, lse = numpy_backend.cross_entropy(logits, targets)
    assert abs(loss - math.log(5)) < 1e-15
    dz = numpy_backend.cross_entropy_backward(logits, targets, lse)
    expected = np.full((4, 5), 0.2 / 4)
    expected[np.arange(4), targets] -= 0.25
    np.testing.assert_allclose(dz, expected, atol=1e-16)


def test_cross_entropy_stays_finite_for_huge_logits():
    logits = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], np.float32)
    loss, lse = c_backend.cross_entropy(logits, np.array([1, 2]))
    assert np.isfinite(loss) and abs(loss - (2e4 + math.log(3)) / 2) < 1
    assert np.isfinite(c_backend.cross_entropy_backward(logits, np.array([1, 2]), lse)).all()


def test_cross_entropy_c_backward_gradchecks():
    logits = mg.tensor(rand(6, 5, scale=2.0), requires_grad=True)
    targets = np.array([0, 4, 2, 2, 1, 3])
    assert mg.gradcheck(lambda z: c_cross_entropy_op(z, targets) * 3.0, (logits,))


def test_cross_entropy_matches_torch_if_installed():
    torch = pytest.importorskip("torch", reason="PyTorch is optional: only this comparison needs it")
    logits, targets = rand(16, 10, scale=3.0), np.random.default_rng(1).integers(0, 10, 16)
    tz = torch.tensor(logits, requires_grad=True)
    tl = torch.nn.functional.cross_entropy(tz, torch.tensor(targets))
    tl.backward()
    loss, lse = c_backend.cross_entropy(logits, targets)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-13)
    np.testing.assert_allclose(c_backend.cross_entropy_backward(logits, targets, lse), tz.grad.numpy(), rtol=1e-12,
                               atol=1e-15)


def test_cross_entropy_rejects_bad_input():
    logits = rand(4, 3, dtype=np.float32)
    with pytest.raises(IndexError, match="target 3 is out of range for 3 classes"):
        c_backend.cross_entropy(logits, np.array([0, 1, 2, 3]))
    with pytest.raises(IndexError, match="target -1"):
        c_backend.cross_entropy(logits, np.array([0, -1, 2, 1]))
    with pytest.raises(TypeError, match="integer class indices"):
        c_backend.cross_entropy(logits, np.array([0.0, 1, 2, 1]))
    with pytest.raises(ValueError, match=r"targets must have shape \(4,\)"):
        c_backend.cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ValueError, match=r"logits must be \(N, V\)"):
        c_backend.cross_entropy(rand(4, dtype=np.float32), np.array([0, 1, 2, 1]))
    with pytest.raises(ValueError, match="lse must have shape"):
        c_backend.cross_entropy_backward(logits, np.array([0, 1, 2, 1]), np.zeros(3, np.float32))


# ----- AdamW ---------------------------------------------------------------------------------------

def adamw_problem(dtype, sizes=((3, 4), (1,), (1000,), (7, 9, 2))):
    rng = np.random.default_rng(0)
    params = [rng.standard_normal(s).astype(dtype) for s in sizes]
    grads = [rng.standard_normal(s).astype(dtype) for s in sizes]
    moments = [np.abs(rng.standard_normal(s)).astype(dtype) * 0.1 for s in sizes]
    squares = [np.abs(rng.standard_normal(s)).astype(dtype) * 0.01 for s in sizes]
    return params, grads, moments, squares


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_adamw_step_matches_the_reference_over_steps(dtype, threads):
    c_state = adamw_problem(dtype)
    ref_state = [[a.copy() for a in arrays] for arrays in c_state]
    for step in (1, 2, 3):
        steps = [step, step, step + 4, step]  # per-tensor step counts
        hyper = dict(lr=1e-2, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1)
        c_backend.adamw_step(*c_state, steps, **hyper, num_threads=threads)
        numpy_backend.adamw_step(*ref_state, steps, **hyper)
    tol = dict(rtol=3e-6, atol=3e-7) if dtype == np.float32 else dict(rtol=1e-13, atol=1e-15)
    for c_arrays, ref_arrays in zip(c_state, ref_state):
        for c, ref in zip(c_arrays, ref_arrays):
            assert c.dtype == dtype
            np.testing.assert_allclose(c, ref, **tol)


def test_adamw_reference_first_step_in_closed_form():
    # at step 1 with zero moments, m̂ = g and v̂ = g², so θ ← θ(1 − ηλ) − η g/(|g| + ε)
    p, g = np.array([1.0, -2.0, 3.0]), np.array([0.5, -4.0, 1e-3])
    expected = p * (1 - 0.1 * 0.01) - 0.1 * g / (np.abs(g) + 1e-8)
    m, v = np.zeros(3), np.zeros(3)
    numpy_backend.adamw_step([p], [g], [m], [v], [1], 0.1, 0.9, 0.999, 1e-8, 0.01)
    np.testing.assert_allclose(p, expected, rtol=1e-12)


def test_adamw_step_rejects_bad_input():
    params, grads, moments, squares = adamw_problem(np.float32, sizes=((3,), (2, 2)))
    hyper = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0)
    with pytest.raises(ValueError, match="same length"):
        c_backend.adamw_step(params, grads[:1], moments, squares, [1, 1], **hyper)
    with pytest.raises(ValueError, match=r"grads\[1\] must have shape \(2, 2\)"):
        c_backend.adamw_step(params, [grads[0], grads[1].ravel()], moments, squares, [1, 1], **hyper)
    with pytest.raises(TypeError, match="same dtype"):
        c_backend.adamw_step(params, [grads[0], grads[1].astype(np.float64)], moments, squares, [1, 1], **hyper)
    with pytest.raises(ValueError, match=r"params\[1\] must be a C-contiguous"):
        c_backend.adamw_step([params[0], params[1].T], grads, moments, squares, [1, 1], **hyper)
    with pytest.raises(ValueError, match="step counts must be >= 1"):
        c_backend.adamw_step(params, grads, moments, squares, [1, 0], **hyper)
    with pytest.raises(ValueError, match="separate arrays"):
        c_backend.adamw_step(params, grads, [moments[0], params[1]], squares, [1, 1], **hyper)
    with pytest.raises(ValueError, match="beta1"):
        c_backend.adamw_step(params, grads, moments, squares, [1, 1], **dict(hyper, beta1=1.0))


# ----- GELU ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_op_matches_the_reference(dtype):
    x = np.concatenate([np.linspace(-9, 9, 301), rand(5, 7).ravel()]).astype(dtype)
    grad = rand(x.size, seed=1).astype(dtype)
    out_ref, cdf_ref = numpy_backend.gelu(x.astype(np.float64))
    tol = dict(rtol=2e-6, atol=2e-7) if dtype == np.float32 else dict(rtol=1e-14, atol=1e-15)
    for threads in (1, 2):
        out, cdf = c_backend.gelu(x, num_threads=threads)
        np.testing.assert_allclose(out, out_ref, **tol)
        np.testing.assert_allclose(cdf, cdf_ref, **tol)
        np.testing.assert_allclose(c_backend.gelu_backward(x, cdf, grad, num_threads=threads),
                                   numpy_backend.gelu_backward(x.astype(np.float64), cdf_ref, grad.astype(np.float64)),
                                   **tol)



def test_gelu_c_backward_gradchecks():
    def c_gelu_op(x):
        out, cdf = c_backend.gelu(x.data)
        return Tensor.from_op(out, (x,), lambda grad: (c_backend.gelu_backward(x.data, cdf, grad),), "c_gelu")

    assert mg.gradcheck(c_gelu_op, (mg.tensor(rand(4, 5), requires_grad=True),))


def test_gelu_backward_rejects_mismatched_shapes():
    x = rand(4, 5, dtype=np.float32)
    with pytest.raises(ValueError, match=r"cdf must have shape \(4, 5\)"):
        c_backend.gelu_backward(x, x[:3], x)


# ----- threads -------------------------------------------------------------------------------------

def test_large_inputs_split_over_two_threads_give_the_one_thread_result_exactly():
    """Big enough for the kernels to wake a second thread (common.h: >= 2 ms of work); every sum is
    taken in a fixed order, so two threads must give the very same bits as one, and the reference's values."""
    x = rand(4096, 512, dtype=np.float32, seed=7)  # 2 M elements
    w, b, g = rand(512, dtype=np.float32, seed=8), rand(512, dtype=np.float32, seed=9), rand(4096, 512, dtype=np.float32)
    one = c_backend.layer_norm(x, w, b, num_threads=1)
    two = c_backend.layer_norm(x, w, b, num_threads=2)
    for a, c in zip(one, two):
        np.testing.assert_array_equal(a, c)
    np.testing.assert_allclose(one[0], numpy_backend.layer_norm(x, w, b)[0], rtol=1e-4, atol=1e-5)
    for a, c in zip(c_backend.layer_norm_backward(x, w, one[1], one[2], g, num_threads=1),
                    c_backend.layer_norm_backward(x, w, one[1], one[2], g, num_threads=2)):
        np.testing.assert_array_equal(a, c)

    targets = np.random.default_rng(3).integers(0, 512, 4096)
    loss1, lse1 = c_backend.cross_entropy(x, targets, num_threads=1)
    loss2, lse2 = c_backend.cross_entropy(x, targets, num_threads=2)
    assert loss1 == loss2
    np.testing.assert_array_equal(lse1, lse2)
    np.testing.assert_allclose(loss1, numpy_backend.cross_entropy(x.astype(np.float64), targets)[0], rtol=1e-6)
    np.testing.assert_array_equal(c_backend.cross_entropy_backward(x, targets, lse1, num_threads=1),
                                  c_backend.cross_entropy_backward(x, targets, lse1, num_threads=2))

    flat = x.ravel()
    out1, cdf1 = c_backend.gelu(flat, num_threads=1)
    out2, cdf2 = c_backend.gelu(flat, num_threads=2)
    np.testing.assert_array_equal(out1, out2)
    np.testing.assert_array_equal(c_backend.gelu_backward(flat, cdf1, g.ravel(), num_threads=1),
                                  c_backend.gelu_backward(flat, cdf1, g.ravel(), num_threads=2))

    states = [[[a.copy() for a in (x, w)], [np.zeros_like(x), np.zeros_like(w)], [np.zeros_like(x), np.zeros_like(w)]]
              for _ in range(2)]
    for threads, (params, moments, squares) in zip((1, 2), states):
        c_backend.adamw_step(params, [g, b], moments, squares, [1, 1], 1e-2, 0.9, 0.999, 1e-8, 0.1,
                             num_threads=threads)
    for a, c in zip(sum(states[0], []), sum(states[1], [])):
        np.testing.assert_array_equal(a, c)
