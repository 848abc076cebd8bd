"""im2col, col2im (im2col_backward) and max pooling of minigrad.kernels on every CPU backend, and conv2d /
max_pool2d on top of them.

The references are loops that spell out each formula (one pixel at a time), the adjoint identity
<im2col(x), G> = <x, col2im(G)>, float64 central differences, and PyTorch where it is installed.
Inputs are awkward on purpose: batch 1, odd sizes, strides that skip pixels, padding, kernels as large
as the padded image, and images in other memory layouts (channels-last, every other column, flipped).
The C kernels run on every instruction-set copy this CPU has, and on two threads for large images.
"""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
from minigrad import kernels
from minigrad.kernels import c_backend

try:
    import torch
except ImportError:  # only the PyTorch comparisons are skipped
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed (pip install torch): the "
                                                       "comparisons with it are skipped, the rest runs")


@pytest.fixture(params=["numpy", "c"])
def backend(request):
    if request.param == "c":
        request.getfixturevalue("c_kernels_built")
    return request.param


@pytest.fixture(params=["portable", "avx2", "avx512"])
def isa(request, c_kernels_built):
    """One instruction-set copy of the C kernels for the test, then the copy chosen at load time again."""
    if request.param not in c_backend.supported_isas():
        pytest.skip(f"this CPU does not run {request.param} code (it runs {', '.join(c_backend.supported_isas())})")
    chosen = c_backend.isa()
    c_backend.set_isa(request.param)
    yield request.param
    c_backend.set_isa(chosen)


def laid_out(x, how):
    """x (N, C, H, W) itself, or an equal array laid out otherwise in memory (a view)."""
    if how == "nchw":
        return np.ascontiguousarray(x)
    if how == "channels_last":
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    if how == "every_other_column":
        wide = np.zeros(x.shape[:3] + (2 * x.shape[3],), x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    if how == "flipped":  # negative strides: copied before C sees them
        return np.ascontiguousarray(x[:, ::-1, ::-1])[:, ::-1, ::-1]
    raise ValueError(how)


LAYOUTS = ["nchw", "channels_last", "every_other_column", "flipped"]
# (N, C, H, W), kernel, stride, padding
WINDOWS = [((1, 1, 1, 1), (1, 1), (1, 1), (0, 0)),
           ((2, 3, 5, 7), (3, 3), (1, 1), (1, 1)),
           ((1, 2, 6, 5), (3, 2), (2, 1), (1, 0)),
           ((3, 4, 7, 7), (2, 2), (2, 2), (0, 0)),
           ((2, 5, 4, 6), (4, 3), (3, 2), (2, 1)),   # padding wider than what some windows read
           ((1, 1, 3, 3), (5, 5), (1, 1), (1, 1)),   # the kernel spans the whole padded image
           ((2, 16, 8, 8), (3, 3), (1, 1), (1, 1))]  # the digits CNN's second layer, smaller batch


def out_size(shape, kernel, stride, padding):
    return ((shape[2] + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (shape[3] + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def im2col_loop(x, kernel, stride, padding):
    """cols[(n, i, j), (p, q, c)] = x[n, c, i·sh + p − ph, j·sw + q − pw], 0 outside the image."""
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = out_size(x.shape, kernel, stride, padding)
    cols = np.zeros((N, Ho, Wo, kh, kw, C), x.dtype)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for p in range(kh):
                    for q in range(kw):
                        h, w = i * sh + p - ph, j * sw + q - pw
                        if 0 <= h < H and 0 <= w < W:
                            cols[n, i, j, p, q] = x[n, :, h, w]
    return cols.reshape(N * Ho * Wo, kh * kw * C)


def col2im_loop(grad_cols, shape, kernel, stride, padding):
    """Each entry of grad_cols added onto the pixel im2col_loop read it from."""
    N, C, H, W = shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    Ho, Wo = out_size(shape, kernel, stride, padding)
    g = grad_cols.reshape(N, Ho, Wo, kh, kw, C)
    dx = np.zeros(shape)
    for n in range(N):
        for i in range(Ho):
            for j in range(Wo):
                for p in range(kh):
                    for q in range(kw):
                        h, w = i * sh + p - ph, j * sw + q - pw
                        if 0 <= h < H and 0 <= w < W:
                            dx[n, :, h, w] += g[n, i, j, p, q]
    return dx


def max_pool_loop(x, kernel, stride):
    """(out, argmax): the first maximum of each window in row-major order, a NaN counting as the maximum."""
    N, C, H, W = x.shape
    Ho, Wo = out_size(x.shape, kernel, stride, (0, 0))
    out, argmax = np.empty((N, C, Ho, Wo), x.dtype), np.empty((N, C, Ho, Wo), np.int64)
    for n in range(N):
        for c in range(C):
            for i in range(Ho):
                for j in range(Wo):
                    best, at = None, None
                    for p in range(kernel[0]):
                        for q in range(kernel[1]):
                            h, w = i * stride[0] + p, j * stride[1] + q
                            v = x[n, c, h, w]
                            if best is None or v > best or (np.isnan(v) and not np.isnan(best)):
                                best, at = v, h * W + w
                    out[n, c, i, j], argmax[n, c, i, j] = best, at
    return out, argmax


def tol(dtype):
    return 1e-5 if dtype == np.float32 else 1e-12


# ----------------------------------------------------------------- im2col and col2im

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("shape,kernel,stride,padding", WINDOWS)
def test_im2col_and_its_backward_match_the_loops(backend, dtype, how, shape, kernel, stride, padding):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    cols = kernels.im2col(laid_out(x, how), kernel, stride, padding, backend=backend)
    assert cols.dtype == dtype and cols.flags.c_contiguous
    np.testing.assert_array_equal(cols, im2col_loop(x, kernel, stride, padding))  # a copy: exact
    with_ones = kernels.im2col(laid_out(x, how), kernel, stride, padding, bias_column=True, backend=backend)
    np.testing.assert_array_equal(with_ones, np.concatenate([cols, np.ones((len(cols), 1), dtype)], axis=1))

    grad_cols = rng.standard_normal(cols.shape).astype(dtype)
    dx = kernels.im2col_backward(grad_cols, shape, kernel, stride, padding, backend=backend)
    assert dx.dtype == dtype and dx.shape == shape
    np.testing.assert_allclose(dx, col2im_loop(grad_cols, shape, kernel, stride, padding),
                               rtol=tol(dtype), atol=tol(dtype))


@pytest.mark.parametrize("shape,kernel,stride,padding", WINDOWS)
def test_col2im_is_the_adjoint_of_im2col(backend, shape, kernel, stride, padding):
    """<im2col(x), G> = <x, col2im(G)> for every x and G: the defining property of the backward."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    grad_cols = rng.standard_normal(kernels.im2col(x, kernel, stride, padding, backend=backend).shape)
    left = np.sum(kernels.im2col(x, kernel, stride, padding, backend=backend) * grad_cols)
    right = np.sum(x * kernels.im2col_backward(grad_cols, shape, kernel, stride, padding, backend=backend))
    assert abs(left - right) <= 1e-12 * max(1.0, abs(left)), f"<im2col(x), G> = {left!r} but <x, col2im(G)> = {right!r}"


def test_im2col_of_empty_batches_and_channels(backend):
    for shape in [(0, 3, 5, 5), (2, 0, 5, 5)]:
        x = np.zeros(shape, np.float32)
        cols = kernels.im2col(x, (3, 3), (1, 1), (1, 1), backend=backend)
        assert cols.shape == (shape[0] * 25, 9 * shape[1])
        with_ones = kernels.im2col(x, (3, 3), (1, 1), (1, 1), bias_column=True, backend=backend)
        assert with_ones.shape == (shape[0] * 25, 9 * shape[1] + 1) and (with_ones[:, -1] == 1).all()
        dx = kernels.im2col_backward(cols, shape, (3, 3), (1, 1), (1, 1), backend=backend)
        assert dx.shape == shape and not dx.any()


def test_im2col_bad_arguments(backend):
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"im2col: the 4x7 window is larger than the padded input 6x6"):
        kernels.im2col(x, (4, 7), (1, 1), (1, 1), backend=backend)
    with pytest.raises(ValueError, match=r"im2col: stride must be a pair of ints >= 1, got \(0, 1\)"):
        kernels.im2col(x, (3, 3), (0, 1), (0, 0), backend=backend)
    with pytest.raises(ValueError, match=r"im2col: padding must be a pair of ints >= 0, got 1"):
        kernels.im2col(x, (3, 3), (1, 1), 1, backend=backend)
    with pytest.raises(TypeError, match=r"im2col: bias_column must be True or False, got 1"):
        kernels.im2col(x, (3, 3), (1, 1), (0, 0), bias_column=1, backend=backend)
    with pytest.raises(ValueError, match=r"im2col: expected an image batch \(N, C, H, W\), got shape \(2, 4, 4\)"):
        kernels.im2col(x[0], (3, 3), (1, 1), (0, 0), backend=backend)
    with pytest.raises(ValueError, match=r"im2col_backward: grad_cols must have shape \(4, 18\), got \(4, 9\)"):
        kernels.im2col_backward(np.zeros((4, 9), np.float32), (1, 2, 4, 4), (3, 3), (1, 1), (0, 0), backend=backend)
    with pytest.raises(ValueError, match=r"im2col_backward: x_shape must be \(N, C, H, W\)"):
        kernels.im2col_backward(np.zeros((4, 18), np.float32), (1, 2, 4), (3, 3), (1, 1), (0, 0), backend=backend)


# ----------------------------------------------------------------- max pooling

POOLS = [((1, 1, 1, 1), (1, 1), (1, 1)), ((2, 3, 8, 8), (2, 2), (2, 2)), ((1, 2, 7, 9), (2, 2), (2, 2)),
         ((2, 2, 6, 5), (3, 3), (1, 1)), ((1, 3, 7, 7), (3, 2), (2, 3)), ((3, 16, 8, 8), (2, 2), (2, 2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("shape,kernel,stride", POOLS)
def test_max_pool2d_and_its_backward_match_the_loops(backend, dtype, how, shape, kernel, stride):
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(dtype)
    x[..., 0, :] = x[..., min(1, shape[2] - 1), :]  # ties between rows 0 and 1: the first (row 0) must win
    out, argmax = kernels.max_pool2d(laid_out(x, how), kernel, stride, backend=backend)
    expected_out, expected_argmax = max_pool_loop(x, kernel, stride)
    assert out.dtype == dtype and argmax.dtype == np.int64
    np.testing.assert_array_equal(out, expected_out)
    np.testing.assert_array_equal(argmax, expected_argmax)

    grad = laid_out(rng.standard_normal(out.shape).astype(dtype), how)
    dx = kernels.max_pool2d_backward(argmax, grad, shape, backend=backend)
    expected = np.zeros((shape[0] * shape[1], shape[2] * shape[3]))
    for row, (where, g) in enumerate(zip(expected_argmax.reshape(len(expected), -1), grad.reshape(len(expected), -1))):
        for pixel, value in zip(where, g):
            expected[row, pixel] += value  # overlapping windows add up
    np.testing.assert_allclose(dx, expected.reshape(shape), rtol=tol(dtype), atol=tol(dtype))


def test_max_pool2d_nan_is_the_maximum_and_gets_the_gradient(backend):
    x = np.array([[[[1.0, np.nan, 3.0, 4.0], [np.nan, 2.0, 0.0, -1.0]]]])
    out, argmax = kernels.max_pool2d(x, (2, 2), (2, 2), backend=backend)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0, 0, 1] == 4.0
    np.testing.assert_array_equal(argmax[0, 0, 0], [1, 3])  # the first NaN, at (0, 1)
    dx = kernels.max_pool2d_backward(argmax, np.ones(out.shape), x.shape, backend=backend)
    np.testing.assert_array_equal(dx[0, 0], [[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]])


def test_max_pool2d_backward_bad_arguments(backend):
    grad = np.ones((1, 1, 2, 2))
    with pytest.raises(IndexError, match=r"argmax must lie in \[0, H·W\) = \[0, 16\), got values in \[0, 16\]"):
        kernels.max_pool2d_backward(np.array([[[[0, 1], [2, 16]]]]), grad, (1, 1, 4, 4), backend=backend)
    with pytest.raises(IndexError, match=r"got values in \[-1, 2\]"):
        kernels.max_pool2d_backward(np.array([[[[0, 1], [2, -1]]]]), grad, (1, 1, 4, 4), backend=backend)
    with pytest.raises(TypeError, match=r"argmax must be an int64 array like grad_out, got ndarray float64"):
        kernels.max_pool2d_backward(grad, grad, (1, 1, 4, 4), backend=backend)
    with pytest.raises(ValueError, match=r"argmax must have shape \(1, 1, 2, 2\), got \(1, 1, 2, 1\)"):
        kernels.max_pool2d_backward(np.zeros((1, 1, 2, 1), np.int64), grad, (1, 1, 4, 4), backend=backend)
    with pytest.raises(ValueError, match=r"grad_out must be \(N, C, Ho, Wo\) = \(1, 2\) \+ \(Ho, Wo\)"):
        kernels.max_pool2d_backward(np.zeros((1, 1, 2, 2), np.int64), grad, (1, 2, 4, 4), backend=backend)


# ----------------------------------------------------------------- the C kernels: copies, threads, direct calls

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_instruction_set_copy_matches_the_reference(isa, dtype):
    rng = np.random.default_rng(3)
    for shape, kernel, stride, padding in WINDOWS[1:5]:
        x = laid_out(rng.standard_normal(shape).astype(dtype), "channels_last")
        cols = c_backend.im2col(x, kernel, stride, padding)
        np.testing.assert_array_equal(cols, im2col_loop(x, kernel, stride, padding))
        np.testing.assert_array_equal(c_backend.im2col(x, kernel, stride, padding, bias_column=True)[:, :-1], cols)
        np.testing.assert_allclose(c_backend.im2col_backward(cols, shape, kernel, stride, padding),
                                   col2im_loop(cols, shape, kernel, stride, padding), rtol=tol(dtype), atol=tol(dtype))
        out, argmax = c_backend.max_pool2d(x, kernel, stride)
        expected_out, expected_argmax = max_pool_loop(x, kernel, stride)
        np.testing.assert_array_equal(out, expected_out)
        np.testing.assert_array_equal(argmax, expected_argmax)


def test_two_threads_give_the_one_thread_bits(c_kernels_built):
    """Large enough (> 2^20 elements) for the kernels to wake a second thread; each image stays on one thread,
    so the sums are the same sums in the same order."""
    rng = np.random.default_rng(4)
    x = laid_out(rng.standard_normal((8, 16, 64, 64)).astype(np.float32), "channels_last")
    one = c_backend.im2col(x, (3, 3), (1, 1), (1, 1), num_threads=1)
    np.testing.assert_array_equal(c_backend.im2col(x, (3, 3), (1, 1), (1, 1), num_threads=2), one)
    np.testing.assert_array_equal(c_backend.im2col_backward(one, x.shape, (3, 3), (1, 1), (1, 1), num_threads=2),
                                  c_backend.im2col_backward(one, x.shape, (3, 3), (1, 1), (1, 1), num_threads=1))
    out, argmax = c_backend.max_pool2d(x, (3, 3), (2, 2), num_threads=1)
    for got, expected in zip(c_backend.max_pool2d(x, (3, 3), (2, 2), num_threads=2), (out, argmax)):
        np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(c_backend.max_pool2d_backward(argmax, out, x.shape, num_threads=2),
                                  c_backend.max_pool2d_backward(argmax, out, x.shape, num_threads=1))


def test_direct_calls_check_their_arguments_before_c(c_kernels_built):
    """The c_backend functions are public too: they check shapes and indices themselves."""
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match=r"the 5x5 window is larger than the padded input 4x4"):
        c_backend.im2col(x, (5, 5), (1, 1), (0, 0))
    with pytest.raises(ValueError, match=r"grad_cols must have shape \(4, 18\), got \(4, 17\)"):
        c_backend.im2col_backward(np.zeros((4, 17), np.float32), (1, 2, 4, 4), (3, 3), (1, 1), (0, 0))
    with pytest.raises(TypeError, match=r"float32 or float64"):
        c_backend.max_pool2d(x.astype(np.int32), (2, 2), (2, 2))
    with pytest.raises(IndexError, match=r"argmax must lie in \[0, H·W\) = \[0, 16\)"):
        c_backend.max_pool2d_backward(np.full((1, 2, 2, 2), 99, np.int64), np.ones((1, 2, 2, 2), np.float32),
                                      (1, 2, 4, 4))


def test_16_bit_images_run_through_float32_and_keep_their_dtype(backend):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float16)
    cols = kernels.im2col(x, (3, 3), (1, 1), (1, 1), backend=backend)
    assert cols.dtype == np.float16
    np.testing.assert_array_equal(cols, im2col_loop(x, (3, 3), (1, 1), (1, 1)))
    out, argmax = kernels.max_pool2d(mg.tensor(x, dtype=mg.bfloat16).data, (2, 2), (2, 2), backend=backend)
    assert out.dtype == mg.bfloat16 and argmax.dtype == np.int64


# ----------------------------------------------------------------- conv2d and max_pool2d as Tensor ops

def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


@pytest.mark.parametrize("shape,kernel,stride,padding", WINDOWS[:6])
def test_conv2d_gradients_on_every_backend(backend, shape, kernel, stride, padding):
    rng = np.random.default_rng(6)
    x = t64(laid_out(rng.standard_normal(shape), "every_other_column"))
    w = t64(rng.standard_normal((3, shape[1]) + kernel))
    b = t64(rng.standard_normal(3))
    with mg.backend(backend):
        assert mg.gradcheck(lambda a, k, c: F.conv2d(a, k, c, stride=stride, padding=padding), [x, w, b])


@pytest.mark.parametrize("shape,kernel,stride", POOLS[:5])
def test_max_pool2d_gradients_on_every_backend(backend, shape, kernel, stride):
    x = t64(laid_out(np.random.default_rng(7).standard_normal(shape), "channels_last"))
    with mg.backend(backend):
        assert mg.gradcheck(lambda a: F.max_pool2d(a, kernel, stride), [x])


def test_a_first_layer_skips_the_input_gradient(backend):
    """Images that do not require grad get none, and the weight and bias gradients are still right."""
    rng = np.random.default_rng(8)
    x = t64(rng.standard_normal((2, 1, 6, 6)), requires_grad=False)
    w, b = t64(rng.standard_normal((4, 1, 3, 3))), t64(rng.standard_normal(4))
    with mg.backend(backend):
        assert mg.gradcheck(lambda k, c: F.conv2d(x, k, c, padding=1), [w, b])
        F.conv2d(x, w, b, padding=1).sum().backward()
    assert x.grad is None


def test_bias_and_weight_gradients_each_on_their_own(backend):
    """The bias gradient comes out of the weight gradient's product ([dW db] = dYᵀ[cols 1]): right also when only
    one of the two is trained, and without a bias at all."""
    rng = np.random.default_rng(11)
    x = t64(rng.standard_normal((2, 3, 5, 4)))
    w, b = rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)
    with mg.backend(backend):
        assert mg.gradcheck(lambda c: F.conv2d(x, t64(w, False), c, stride=2, padding=1), [t64(b)])
        assert mg.gradcheck(lambda k: F.conv2d(x, k, t64(b, False), stride=2, padding=1), [t64(w)])
        assert mg.gradcheck(lambda a, k: F.conv2d(a, k, None, stride=(1, 2), padding=(2, 0)), [x, t64(w)])


def cnn(framework):
    """The digits CNN of benchmarks/bench_cnn_step.py."""
    m = framework.nn
    return m.Sequential(m.Conv2d(1, 16, 3, padding=1), m.ReLU(), m.MaxPool2d(2),
                        m.Conv2d(16, 32, 3, padding=1), m.ReLU(), m.MaxPool2d(2), m.Flatten(), m.Linear(128, 10))


@needs_torch
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kernel,stride,padding", WINDOWS)
def test_conv2d_and_pooling_match_pytorch(backend, dtype, shape, kernel, stride, padding):
    rng = np.random.default_rng(9)
    x = laid_out(rng.standard_normal(shape).astype(dtype), "every_other_column")
    w, b = rng.standard_normal((5, shape[1]) + kernel).astype(dtype), rng.standard_normal(5).astype(dtype)
    xs, ws, bs = (mg.tensor(a, requires_grad=True) for a in (x, w, b))
    tx, tw, tb = (torch.tensor(np.ascontiguousarray(a), requires_grad=True) for a in (x, w, b))
    with mg.backend(backend):
        y = F.conv2d(xs, ws, bs, stride=stride, padding=padding)
        pooled = F.max_pool2d(y, 2, 1) if min(y.shape[2:]) >= 2 else y
        g = rng.standard_normal(pooled.shape).astype(dtype)
        pooled.backward(g)
    ty = torch.nn.functional.conv2d(tx, tw, tb, stride=stride, padding=padding)
    tpooled = torch.nn.functional.max_pool2d(ty, 2, 1) if min(ty.shape[2:]) >= 2 else ty
    tpooled.backward(torch.from_numpy(g))
    scale = 1e-4 if dtype == np.float32 else 1e-10
    for name, ours, theirs in (("output", pooled.data, tpooled), ("dx", xs.grad, tx.grad), ("dw", ws.grad, tw.grad),
                               ("db", bs.grad, tb.grad)):
        theirs = theirs.detach().numpy()
        error = np.abs(ours - theirs).max() / max(1.0, np.abs(theirs).max())
        assert error <= scale, f"{name}: worst error {error:.3g} against PyTorch (allowed {scale:g})"


@needs_torch
def test_the_digits_cnn_step_matches_pytorch(backend):
    """The benchmark's model: loss and every parameter gradient, float32, one batch of 64 8x8 images."""
    mg.manual_seed(0)
    ours = cnn(mg)
    theirs = cnn(torch)
    theirs.load_state_dict({k: torch.from_numpy(v.data.copy()) for k, v in ours.state_dict().items()})
    rng = np.random.default_rng(10)
    images, labels = rng.random((64, 1, 8, 8), dtype=np.float32) * 16, rng.integers(0, 10, 64)
    with mg.backend(backend):
        loss = F.cross_entropy(ours(mg.tensor(images)), labels)
        loss.backward()
    tloss = torch.nn.functional.cross_entropy(theirs(torch.from_numpy(images)), torch.from_numpy(labels))
    tloss.backward()
    assert abs(loss.item() - tloss.item()) <= 1e-5 * max(1.0, abs(tloss.item()))
    for (name, p), tp in zip(ours.named_parameters(), theirs.parameters()):
        error = np.abs(p.grad - tp.grad.numpy()).max() / max(1e-3, np.abs(tp.grad.numpy()).max())
        assert error <= 1e-4, f"{name}: worst relative error {error:.3g} against PyTorch"
