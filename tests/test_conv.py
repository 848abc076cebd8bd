"""convolve2d, conv2d, max_pool2d and their modules against loops that spell out each sum."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def convolve_loop(x, k, mode):
    """y(m, n) = Σ_i Σ_j k(i, j) x(m − i, n − j), x taken as 0 outside the image; 'valid' keeps full overlap."""
    H, W = x.shape
    kh, kw = k.shape
    full = np.zeros((H + kh - 1, W + kw - 1))
    for m in range(H + kh - 1):
        for n in range(W + kw - 1):
            for i in range(kh):
                for j in range(kw):
                    if 0 <= m - i < H and 0 <= n - j < W:
                        full[m, n] += k[i, j] * x[m - i, n - j]
    return full if mode == "full" else full[kh - 1:H, kw - 1:W]


def conv2d_loop(x, w, b, stride, padding):
    """y[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q w[o, c, p, q] x_pad[n, c, i·s + p, j·s + q]."""
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    xp = np.zeros((N, C, H + 2 * padding, W + 2 * padding))
    xp[:, :, padding:padding + H, padding:padding + W] = x
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (W + 2 * padding - kw) // stride + 1
    y = np.zeros((N, O, Ho, Wo))
    for n in range(N):
        for o in range(O):
            for i in range(Ho):
                for j in range(Wo):
                    total = 0.0 if b is None else b[o]
                    for c in range(C):
                        for p in range(kh):
                            for q in range(kw):
                                total += w[o, c, p, q] * xp[n, c, i * stride + p, j * stride + q]
                    y[n, o, i, j] = total
    return y


def max_pool_loop(x, k, s):
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // s + 1, (W - k) // s + 1
    y = np.empty((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            y[:, :, i, j] = x[:, :, i * s:i * s + k, j * s:j * s + k].max(axis=(2, 3))
    return y


# ----- convolve2d: the true convolution sum ------------------------------------------------------
@pytest.mark.parametrize("mode", ["valid", "full"])
@pytest.mark.parametrize("shape,kshape", [((6, 7), (3, 2)), ((5, 5), (1, 1)), ((4, 6), (4, 3))])
def test_convolve2d_matches_the_written_out_sum(mode, shape, kshape):
    x, k = rng(1).standard_normal(shape), rng(2).standard_normal(kshape)
    y = F.convolve2d(t64(x, False), t64(k, False), mode=mode)
    np.testing.assert_allclose(y.data, convolve_loop(x, k, mode), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_convolve2d_matches_scipy(mode):
    signal = pytest.importorskip("scipy.signal")
    x, k = rng(3).standard_normal((3, 9, 8)), rng(4).standard_normal((3, 4))
    y = F.convolve2d(t64(x, False), t64(k, False), mode=mode)
    for n in range(3):
        np.testing.assert_allclose(y.data[n], signal.convolve2d(x[n], k, mode=mode), rtol=1e-12, atol=1e-12)


def test_convolve2d_is_commutative_in_full_mode():
    """Flipping the kernel is what makes x * k = k * x; cross-correlation would fail this."""
    x, k = rng(5).standard_normal((5, 4)), rng(6).standard_normal((3, 3))
    a = F.convolve2d(t64(x, False), t64(k, False), mode="full").data
    b = F.convolve2d(t64(k, False), t64(x, False), mode="full").data
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_convolve2d_of_an_impulse_returns_the_kernel():
    x = np.zeros((5, 5))
    x[2, 2] = 1.0
    k = np.arange(9.0).reshape(3, 3)
    # y(m, n) = k(m − 2, n − 2): the impulse at (2, 2) copies the kernel, unflipped, around it.
    full = F.convolve2d(t64(x, False), t64(k, False), mode="full").data
    np.testing.assert_array_equal(full[2:5, 2:5], k)
    np.testing.assert_array_equal(F.convolve2d(t64(x, False), t64(k, False), mode="valid").data, k)


@pytest.mark.parametrize("mode", ["valid", "full"])
def test_convolve2d_gradients(mode):
    x, k = t64(rng(7).standard_normal((2, 5, 4))), t64(rng(8).standard_normal((2, 3)))
    assert mg.gradcheck(lambda a, b: F.convolve2d(a, b, mode=mode), [x, k])


def test_convolve2d_bad_input():
    with pytest.raises(ValueError, match=r"mode must be 'valid' or 'full', got 'same'"):
        F.convolve2d(t64(np.ones((4, 4))), t64(np.ones((2, 2))), mode="same")
    with pytest.raises(ValueError, match=r"\(H, W\) or a batch \(N, H, W\), got shape \(1, 1, 4, 4\)"):
        F.convolve2d(t64(np.ones((1, 1, 4, 4))), t64(np.ones((2, 2))))
    with pytest.raises(ValueError, match=r"kernel \(5, 1\) to fit inside the image \(4, 4\)"):
        F.convolve2d(t64(np.ones((4, 4))), t64(np.ones((5, 1))))


# ----- conv2d: the NCHW layer ----------------------------------------------------------------------
@pytest.mark.parametrize("stride,padding", [(1, 0), (1, 1), (2, 0), (2, 1), (3, 2)])
def test_conv2d_matches_direct_loop(stride, padding):
    x, w, b = rng(9).standard_normal((2, 3, 7, 6)), rng(10).standard_normal((4, 3, 3, 2)), rng(11).standard_normal(4)
    y = F.conv2d(t64(x, False), t64(w, False), t64(b, False), stride=stride, padding=padding)
    np.testing.assert_allclose(y.data, conv2d_loop(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


def test_conv2d_without_bias_and_float32():
    x, w = rng(12).standard_normal((1, 2, 5, 5)), rng(13).standard_normal((3, 2, 3, 3))
    y = F.conv2d(mg.tensor(x.astype(np.float32)), mg.tensor(w.astype(np.float32)), padding=1)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data, conv2d_loop(x, w, None, 1, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,padding", [(1, 1), (2, 1)])
def test_conv2d_gradients(stride, padding):
    x = t64(rng(14).standard_normal((2, 2, 5, 5)))
    w, b = t64(rng(15).standard_normal((3, 2, 3, 3))), t64(rng(16).standard_normal(3))
    assert mg.gradcheck(lambda a, k, c: F.conv2d(a, k, c, stride=stride, padding=padding), [x, w, b])


def test_conv2d_accepts_one_unbatched_image():
    x, w = rng(30).standard_normal((2, 5, 5)), rng(31).standard_normal((3, 2, 3, 3))
    y = F.conv2d(t64(x, False), t64(w, False), padding=1)
    assert y.shape == (3, 5, 5)
    np.testing.assert_allclose(y.data, conv2d_loop(x[None], w, None, 1, 1)[0], rtol=1e-12, atol=1e-12)
    conv = nn.Conv2d(2, 3, 3)
    assert conv(mg.zeros(2, 5, 5)).shape == (3, 3, 3)


def test_conv2d_gradient_for_input_only():
    x, w = t64(rng(17).standard_normal((1, 2, 4, 4))), t64(rng(18).standard_normal((2, 2, 2, 2)), False)
    assert mg.gradcheck(lambda a: F.conv2d(a, w, stride=2), [x])


def test_conv2d_bad_input():
    w = t64(np.ones((4, 3, 3, 3)))
    with pytest.raises(ValueError, match=r"conv2d expected input with 3 channels \(N, 3, H, W\), got shape \(2, 4, 8, 8\)"):
        F.conv2d(t64(np.ones((2, 4, 8, 8))), w)
    with pytest.raises(ValueError, match=r"3 channels \(N, 3, H, W\), got shape \(4, 8, 8\)"):
        F.conv2d(t64(np.ones((4, 8, 8))), w)
    with pytest.raises(ValueError, match=r"3 channels \(N, 3, H, W\), got shape \(8, 8\)"):
        F.conv2d(t64(np.ones((8, 8))), w)
    with pytest.raises(ValueError, match=r"bias of shape \(4,\), got \(3,\)"):
        F.conv2d(t64(np.ones((1, 3, 8, 8))), w, t64(np.ones(3)))
    with pytest.raises(ValueError, match=r"kernel is larger than the padded input 2x2"):
        F.conv2d(t64(np.ones((1, 3, 2, 2))), w)


def test_conv2d_module_shapes_init_and_forward():
    mg.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=1, padding=1)
    assert [(n, p.shape) for n, p in conv.named_parameters()] == [("weight", (8, 3, 3, 3)), ("bias", (8,))]
    assert conv.weight.dtype == np.float32
    bound = 1 / np.sqrt(3 * 3 * 3)
    for p in conv.parameters():
        assert np.abs(p.data).max() <= bound
    # U(−b, b) has standard deviation b/√3: 216 draws land within 15%.
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.15 * bound / np.sqrt(3)
    x = rng(19).standard_normal((2, 3, 6, 6)).astype(np.float32)
    y = conv(mg.tensor(x))
    ref = conv2d_loop(x, conv.weight.data.astype(np.float64), conv.bias.data.astype(np.float64), 1, 1)
    np.testing.assert_allclose(y.data, ref, rtol=1e-4, atol=1e-5)


def test_conv2d_module_reports_wrong_channels():
    conv = nn.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match=r"Conv2d expected input with 3 channels \(N, 3, H, W\), got shape \(2, 4, 8, 8\)"):
        conv(mg.zeros(2, 4, 8, 8))


def test_conv2d_module_gradients_in_float64():
    mg.manual_seed(1)
    conv = nn.Conv2d(2, 3, (2, 3), stride=2, padding=1)
    w, b = t64(conv.weight.data), t64(conv.bias.data)
    x = t64(rng(20).standard_normal((2, 2, 5, 6)))
    assert mg.gradcheck(lambda a, k, c: F.conv2d(a, k, c, conv.stride, conv.padding), [x, w, b])


# ----- max pooling -------------------------------------------------------------------------------
@pytest.mark.parametrize("k,s,shape", [(2, 2, (2, 3, 8, 8)), (2, 2, (1, 2, 7, 9)), (3, 1, (2, 2, 6, 5)),
                                       (3, 2, (1, 3, 7, 7)), (2, 3, (1, 1, 8, 8))])
def test_max_pool2d_matches_loop(k, s, shape):
    x = rng(21).standard_normal(shape)
    y = F.max_pool2d(t64(x, False), k, s)
    np.testing.assert_array_equal(y.data, max_pool_loop(x, k, s))


@pytest.mark.parametrize("k,s", [(2, None), (3, 1), (3, 2)])
def test_max_pool2d_gradients(k, s):
    x = t64(rng(22).standard_normal((2, 2, 6, 7)))
    assert mg.gradcheck(lambda a: F.max_pool2d(a, k, s), [x])


def test_max_pool2d_gradient_goes_to_the_maximum():
    x = t64([[[[1.0, 5.0], [3.0, 2.0]]]])
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_max_pool2d_ties_send_the_gradient_to_the_first_maximum_only():
    """Like PyTorch: a window of equal values passes its gradient once, to its first (row-major) element."""
    x = t64(np.array([[[[2.0, 2.0, 0.0, 0.0], [2.0, 2.0, 0.0, 3.0]]]]))
    F.max_pool2d(x, 2).sum().backward()
    np.testing.assert_array_equal(x.grad, [[[[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]]]])
    overlapping = t64(np.ones((1, 1, 3, 3)))
    F.max_pool2d(overlapping, 2, 1).sum().backward()
    np.testing.assert_array_equal(overlapping.grad[0, 0], [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])


def test_max_pool2d_unbatched_and_module():
    x = rng(23).standard_normal((3, 4, 4))
    np.testing.assert_array_equal(F.max_pool2d(t64(x, False), 2).data, max_pool_loop(x[None], 2, 2)[0])
    pool = nn.MaxPool2d(2, 1)
    np.testing.assert_array_equal(pool(t64(x[None], False)).data, max_pool_loop(x[None], 2, 1))


def test_max_pool2d_bad_input():
    with pytest.raises(ValueError, match=r"max_pool2d expected input \(N, C, H, W\) or \(C, H, W\), got shape \(4, 4\)"):
        F.max_pool2d(t64(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match=r"the 5x5 window is larger than the input \(4, 4\)"):
        F.max_pool2d(t64(np.ones((1, 1, 4, 4))), 5)
