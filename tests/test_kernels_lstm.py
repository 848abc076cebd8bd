"""The LSTM layer kernel (kernels/lstm.c) against its NumPy reference (numpy_backend.lstm): float64 gradient
checks of both through nn.LSTM's math (x, h0, c0, weights, biases), values on awkward shapes and layouts in
float32 and float64 on every instruction set's copy, the float32 σ and tanh against float64, PyTorch's LSTM,
empty problems and bad input."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
from minigrad import kernels
from minigrad.kernels import c_backend, numpy_backend
from minigrad.nn.linear import linear
from minigrad.nn.recurrent import lstm_layer
from test_kernels_isa import isa  # noqa: F401  (the fixture that runs a test on each instruction set's copy)

# c_kernels_built honours MINIGRAD_CKERNELS_DIR, so the sanitizer test runs this file on its own build
pytestmark = pytest.mark.usefixtures("c_kernels_built")


def rand(*shape, dtype=np.float64, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def problem(T, B, H, dtype=np.float64, seed=0):
    """gx (T, B, 4H), h0, c0 (B, H), w_hh (4H, H) and a grad_out (2, T, B, H), pre-activations of order 1."""
    w_scale = 1 / np.sqrt(max(H, 1))
    return (rand(T, B, 4 * H, dtype=dtype, seed=seed, scale=1.5), rand(B, H, dtype=dtype, seed=seed + 1),
            rand(B, H, dtype=dtype, seed=seed + 2), rand(4 * H, H, dtype=dtype, seed=seed + 3, scale=w_scale),
            rand(2, T, B, H, dtype=dtype, seed=seed + 4))


def layer(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    """One LSTM layer as nn.LSTM runs it: x (T, B, I) → (2, T, B, H), one input projection, then one op."""
    return lstm_layer(linear(x, w_ih, b_ih + b_hh), h0, c0, w_hh)


# ----- gradients ---------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("T, B, I, H", [(4, 3, 2, 3), (3, 5, 4, 9)])
def test_gradcheck_of_every_input(backend, T, B, I, H):
    """Central differences in float64 for x, h0, c0, W_ih, W_hh, b_ih, b_hh (B = 5, 4H = 36: tiles with
    remainders in the C product)."""
    shapes = [(T, B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]
    inputs = [mg.tensor(rand(*s, seed=i, scale=0.8), requires_grad=True) for i, s in enumerate(shapes)]
    with mg.backend(backend, ops=("lstm",)):
        assert kernels.resolve("lstm", None, np.dtype(np.float64)) == backend
        assert mg.gradcheck(layer, inputs)


def test_the_reference_backward_matches_central_differences():
    """numpy_backend.lstm_backward against finite differences of numpy_backend.lstm along random directions,
    for every input of the op (gx, h0, c0, w_hh) and both outputs (every h_t and every c_t)."""
    inputs = list(problem(3, 2, 4)[:4])
    grad_out = rand(2, 3, 2, 4, seed=9)
    out, gates = numpy_backend.lstm(*inputs)
    grads = numpy_backend.lstm_backward(*inputs[1:], out, gates, grad_out)
    rng = np.random.default_rng(5)
    for index, grad in enumerate(grads):
        u = rng.standard_normal(inputs[index].shape)

        def loss(t):
            moved = list(inputs)
            moved[index] = inputs[index] + t * u
            return np.sum(grad_out * numpy_backend.lstm(*moved)[0])
        numeric = (loss(1e-6) - loss(-1e-6)) / 2e-6
        analytic = np.sum(grad * u)
        assert abs(numeric - analytic) < 1e-7 * max(1.0, abs(numeric)), \
            f"input {index}: finite differences {numeric!r}, backward formula {analytic!r}"


# ----- values: C against the reference -----------------------------------------------------------

SHAPES = [(1, 1, 1), (3, 1, 5), (2, 5, 1), (5, 7, 17), (4, 16, 128), (2, 3, 40)]
TOL = {np.float32: 3e-6, np.float64: 1e-13}


def assert_close(got, expected, dtype, what):
    """Worst error relative to the largest reference value, a few ulps × √(terms summed)."""
    assert got.dtype == dtype and got.shape == expected.shape, f"{what}: {got.dtype} {got.shape}"
    scale = max(1.0, float(np.abs(expected).max()))
    error = float(np.abs(got.astype(np.float64) - expected).max()) / scale
    allowed = TOL[dtype] * np.sqrt(max(expected.shape))
    assert error <= allowed, f"{what}: worst error {error:.3g} > {allowed:.3g}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}-B{}-H{}".format(*s))
def test_c_matches_the_reference(isa, dtype, shape):  # noqa: F811  (isa: the imported fixture)
    gx, h0, c0, w_hh, grad_out = problem(*shape, dtype=dtype)
    wide = problem(*shape)  # the reference in float64 from the same values
    out, gates = c_backend.lstm(gx, h0, c0, w_hh)
    ref_out, ref_gates = numpy_backend.lstm(*wide[:4])
    assert_close(out, ref_out, dtype, f"{isa} {shape} out")
    assert_close(gates, ref_gates, dtype, f"{isa} {shape} gates")
    # the backward from the same saved values on both sides
    got = c_backend.lstm_backward(h0, c0, w_hh, ref_out.astype(dtype), ref_gates.astype(dtype), grad_out)
    expected = numpy_backend.lstm_backward(*wide[1:4], ref_out.astype(dtype).astype(np.float64),
                                           ref_gates.astype(dtype).astype(np.float64), wide[4])
    for name, g, e in zip(("dgx", "dh0", "dc0", "dw_hh"), got, expected):
        assert_close(g, e, dtype, f"{isa} {shape} {name}")


def test_non_contiguous_inputs():
    """Strided, transposed and byte-swapped views reach C as contiguous copies: the same values as contiguous."""
    gx, h0, c0, w_hh, grad_out = problem(6, 5, 7)
    wide = np.zeros(gx.shape[:-1] + (2 * gx.shape[-1],))
    wide[..., ::2] = gx
    views = (wide[..., ::2], np.asfortranarray(h0), c0, np.asfortranarray(w_hh))  # (T, B, 4H), (B, H), ., (4H, H)
    swapped = (views[0], views[1], c0.astype(c0.dtype.newbyteorder(">")), views[3])
    expected_out, expected_gates = numpy_backend.lstm(gx, h0, c0, w_hh)
    expected = numpy_backend.lstm_backward(h0, c0, w_hh, expected_out, expected_gates, grad_out)
    for name, forward, backward in (("dispatcher", lambda *a: kernels.lstm(*a, backend="c"),
                                     lambda *a: kernels.lstm_backward(*a, backend="c")),
                                    ("c_backend", c_backend.lstm, c_backend.lstm_backward)):
        inputs = views if name == "dispatcher" else swapped  # the dispatcher takes native byte order only
        out, gates = forward(*inputs)
        assert_close(out, expected_out, np.float64, f"{name} out")
        assert_close(gates, expected_gates, np.float64, f"{name} gates")
        got = backward(*inputs[1:], np.asfortranarray(out), np.asfortranarray(gates), np.asfortranarray(grad_out))
        for what, g, e in zip(("dgx", "dh0", "dc0", "dw_hh"), got, expected):
            assert_close(g, e, np.float64, f"{name} {what}")


def test_float32_sigmoid_and_tanh_against_float64(isa):  # noqa: F811
    """With h0 = c0 = 0 and W_hh = 0 the gates are σ(x) and tanh(x) of gx itself, so the kernel's float32 σ and
    tanh (exp_f32-based, with a series near 0) show up directly: within 3 ulps of the float64 values."""
    x = np.concatenate([np.logspace(-8, np.log10(80), 400), [0.125, np.nextafter(0.125, 0), 1.0]])
    x = np.concatenate([x, -x, [0.0]]).astype(np.float32)              # (n,)
    H = x.size
    gx = np.tile(x, 4)[None, None]                                   # (1, 1, 4H): every gate sees every x
    zeros = np.zeros((1, H), np.float32)
    _, gates = c_backend.lstm(gx, zeros, zeros, np.zeros((4 * H, H), np.float32))
    x64 = x.astype(np.float64)
    exact = {"i": 1 / (1 + np.exp(-x64)), "g": np.tanh(x64)}
    for name, got in (("i", gates[0, 0, :H]), ("g", gates[0, 0, 2 * H:3 * H])):
        ulps = np.abs(got - exact[name]) / np.spacing(np.abs(exact[name]).astype(np.float32)).astype(np.float64)
        worst = int(np.argmax(ulps))
        assert ulps[worst] <= 3, f"{name} at x = {x[worst]!r}: {got[worst]!r} vs {exact[name][worst]!r} " \
                                 f"({ulps[worst]:.1f} ulps)"
    saturated = np.array([-200, -100, 100, 200, np.inf, -np.inf], np.float32)
    gx = np.tile(saturated, 4)[None, None]
    zeros = np.zeros((1, saturated.size), np.float32)
    _, gates = c_backend.lstm(gx, zeros, zeros, np.zeros((4 * saturated.size, saturated.size), np.float32))
    np.testing.assert_array_equal(gates[0, 0, :6], [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(gates[0, 0, 12:18], [-1, -1, 1, 1, 1, -1])


def test_16_bit_inputs_run_on_float32_and_keep_float32_gates():
    gx, h0, c0, w_hh, grad_out = problem(3, 2, 5, dtype=np.float16)
    out, gates = kernels.lstm(gx, h0, c0, w_hh, backend="c")
    assert out.dtype == np.float16 and gates.dtype == np.float32
    ref_out, _ = numpy_backend.lstm(*(a.astype(np.float64) for a in (gx, h0, c0, w_hh)))
    np.testing.assert_allclose(out, ref_out, atol=2e-3)
    grads = kernels.lstm_backward(h0, c0, w_hh, out, gates, grad_out, backend="c")
    assert [g.dtype for g in grads] == [np.float16] * 4


@pytest.mark.parametrize("shape", [(0, 2, 3), (3, 0, 3), (3, 2, 0)], ids=["T0", "B0", "H0"])
def test_empty_problems(shape):
    """No step, no sample or no unit: empty outputs and zero gradients, from the dispatcher and from C itself."""
    gx, h0, c0, w_hh, grad_out = problem(*shape)
    for run in (lambda *a: kernels.lstm(*a, backend="c"), c_backend.lstm):
        out, gates = run(gx, h0, c0, w_hh)
        assert out.shape == (2,) + shape and gates.shape == gx.shape
    for run in (lambda *a: kernels.lstm_backward(*a, backend="c"), c_backend.lstm_backward):
        dgx, dh0, dc0, dw_hh = run(h0, c0, w_hh, out, gates, grad_out)
        assert dgx.shape == gx.shape and dw_hh.shape == w_hh.shape
        assert not (dh0.any() or dc0.any() or dw_hh.any())


# ----- the module against PyTorch -----------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nn_lstm_matches_torch_values_and_gradients(dtype):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed: the comparison with torch.nn.LSTM needs it")
    mg.manual_seed(3)
    ours = nn.LSTM(5, 33, num_layers=2)
    for p in ours.parameters():
        p.data = p.data.astype(dtype)
    theirs = torch.nn.LSTM(5, 33, num_layers=2, batch_first=True).to(torch.float32 if dtype == np.float32
                                                                      else torch.float64)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    x = rand(3, 11, 5, dtype=dtype, seed=1)                                            # (B, T, I)
    h0, c0 = rand(2, 3, 33, dtype=dtype, seed=2), rand(2, 3, 33, dtype=dtype, seed=3)  # (layers, B, H)
    weights = rand(3, 11, 33, dtype=dtype, seed=4)
    ours_in = [mg.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    out, (h_n, c_n) = ours(ours_in[0], (ours_in[1], ours_in[2]))
    ((out * mg.tensor(weights)).sum() + (h_n * c_n).sum()).backward()
    theirs_in = [torch.tensor(a, requires_grad=True) for a in (x, h0, c0)]
    t_out, (t_h, t_c) = theirs(theirs_in[0], (theirs_in[1], theirs_in[2]))
    ((t_out * torch.tensor(weights)).sum() + (t_h * t_c).sum()).backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-12)
    for name, a, b in [("output", out.data, t_out), ("h_n", h_n.data, t_h), ("c_n", c_n.data, t_c)]:
        np.testing.assert_allclose(a, b.detach().numpy(), **tol, err_msg=name)
    for name, a, b in zip(("x", "h0", "c0"), ours_in, theirs_in):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), **tol, err_msg=f"d{name}")
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad, named[name].grad.numpy(), **tol, err_msg=f"d{name}")


# ----- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("run", [kernels.lstm, c_backend.lstm], ids=["dispatcher", "c_backend"])
def test_bad_forward_input_is_refused_before_c(run):
    gx, h0, c0, w_hh, _ = problem(3, 2, 4)
    with pytest.raises(ValueError, match=r"w_hh must be \(4·H, H\).*got shape \(16, 3\)"):
        run(gx, h0, c0, w_hh[:, :3])
    with pytest.raises(ValueError, match=r"gx must have shape \(3, 2, 16\) .*got \(3, 2, 12\)"):
        run(gx[..., :12], h0, c0, w_hh)
    with pytest.raises(ValueError, match=r"c0 must have shape \(2, 4\) .*got \(3, 4\)"):
        run(gx, h0, np.zeros((3, 4)), w_hh)
    with pytest.raises(ValueError, match=r"gx must be \(T, B, 4·H\), got shape \(2, 16\)"):
        run(gx[0], h0, c0, w_hh)
    with pytest.raises(TypeError, match=r"float32.*float64|one native-order dtype"):
        run(gx.astype(np.float32), h0, c0, w_hh)
    with pytest.raises(TypeError):
        run(gx.astype(np.int64), h0.astype(np.int64), c0.astype(np.int64), w_hh.astype(np.int64))


@pytest.mark.parametrize("run", [kernels.lstm_backward, c_backend.lstm_backward], ids=["dispatcher", "c_backend"])
def test_bad_backward_input_is_refused_before_c(run):
    gx, h0, c0, w_hh, grad_out = problem(3, 2, 4)
    out, gates = numpy_backend.lstm(gx, h0, c0, w_hh)
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 3, 2, 4\) .*got \(2, 2, 2, 4\)"):
        run(h0, c0, w_hh, out, gates, grad_out[:, :2])
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 2, 4\) .*got \(3, 2, 4\)"):
        run(h0, c0, w_hh, out[0], gates, grad_out)
    with pytest.raises(TypeError, match="gates"):
        run(h0, c0, w_hh, out, gates.astype(np.float32), grad_out)


def test_a_build_older_than_lstm_c_says_rebuild(monkeypatch):
    monkeypatch.setattr(c_backend, "load", lambda: (None, object()))  # a compiled module without the LSTM kernels
    with pytest.raises(RuntimeError, match=r"no lstm_forward_f64: they are older than kernels/lstm.c.*python build.py"):
        c_backend.lstm(*problem(2, 1, 1)[:4])
