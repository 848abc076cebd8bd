"""RNN cell, RNN and LSTM against step-by-step NumPy, gradient checks, PyTorch names and init, bad input."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def to_float64(module):
    """The module's parameters as float64 (gradient checks need double precision)."""
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


def params(module, k=0):
    return [getattr(module, f"{n}_l{k}").data for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]


def rnn_ref(x, h, w_ih, w_hh, b_ih, b_hh):
    """Step by step, batch first: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)."""
    outs = []
    for t in range(x.shape[1]):
        h = np.tanh(x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        outs.append(h)
    return np.stack(outs, axis=1), h


def lstm_ref(x, h, c, w_ih, w_hh, b_ih, b_hh):
    """Step by step with gates i, f, g, o stacked in that order."""
    H = h.shape[-1]
    outs = []
    for t in range(x.shape[1]):
        a = x[:, t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f, g, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), sigmoid(a[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
        outs.append(h)
    return np.stack(outs, axis=1), h, c


# ----- the cell ------------------------------------------------------------------------------------
def test_rnn_tanh_cell_formula_and_gradients():
    x, h = rng(1).standard_normal((3, 4)), rng(2).standard_normal((3, 5))
    w_ih, w_hh = rng(3).standard_normal((5, 4)) * 0.5, rng(4).standard_normal((5, 5)) * 0.5
    b_ih, b_hh = rng(5).standard_normal(5), rng(6).standard_normal(5)
    y = F.rnn_tanh_cell(*(t64(a, False) for a in (x, h, w_ih, w_hh, b_ih, b_hh)))
    np.testing.assert_allclose(y.data, np.tanh(x @ w_ih.T + b_ih + h @ w_hh.T + b_hh), rtol=1e-12)
    assert mg.gradcheck(F.rnn_tanh_cell, [t64(a) for a in (x, h, w_ih, w_hh, b_ih, b_hh)])
    no_bias = F.rnn_tanh_cell(t64(x, False), t64(h, False), t64(w_ih, False), t64(w_hh, False))
    np.testing.assert_allclose(no_bias.data, np.tanh(x @ w_ih.T + h @ w_hh.T), rtol=1e-12)


def test_rnn_cell_module():
    mg.manual_seed(0)
    cell = to_float64(nn.RNNCell(3, 4))
    assert [(n, p.shape) for n, p in cell.named_parameters()] == [
        ("weight_ih", (4, 3)), ("weight_hh", (4, 4)), ("bias_ih", (4,)), ("bias_hh", (4,))]
    x, h = rng(7).standard_normal((2, 3)), rng(8).standard_normal((2, 4))
    p = [cell.weight_ih.data, cell.weight_hh.data, cell.bias_ih.data, cell.bias_hh.data]
    np.testing.assert_allclose(cell(t64(x, False), t64(h, False)).data, rnn_ref(x[:, None], h, *p)[1], rtol=1e-12)
    np.testing.assert_allclose(cell(t64(x, False)).data, rnn_ref(x[:, None], 0 * h, *p)[1], rtol=1e-12)
    np.testing.assert_allclose(cell(t64(x[0], False)).data, rnn_ref(x[:1, None], 0 * h[:1], *p)[1][0], rtol=1e-12)
    with pytest.raises(ValueError, match=r"RNNCell expected input \(B, 3\) or unbatched \(3,\), got shape \(2, 5\)"):
        cell(mg.zeros(2, 5))


# ----- RNN -----------------------------------------------------------------------------------------
def test_rnn_matches_step_by_step_numpy():
    mg.manual_seed(1)
    rnn = to_float64(nn.RNN(3, 4))
    x, h0 = rng(9).standard_normal((2, 5, 3)), rng(10).standard_normal((1, 2, 4))
    out, h_n = rnn(t64(x, False), t64(h0, False))
    ref_out, ref_h = rnn_ref(x, h0[0], *params(rnn))
    assert out.shape == (2, 5, 4) and h_n.shape == (1, 2, 4)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-12)
    np.testing.assert_allclose(h_n.data[0], ref_h, rtol=1e-12)


def test_rnn_two_layers_and_time_first_layout():
    mg.manual_seed(2)
    rnn = to_float64(nn.RNN(3, 4, num_layers=2, batch_first=False))
    x = rng(11).standard_normal((5, 2, 3))                            # (T, B, input)
    out, h_n = rnn(t64(x, False))
    first, h1 = rnn_ref(np.swapaxes(x, 0, 1), np.zeros((2, 4)), *params(rnn, 0))
    second, h2 = rnn_ref(first, np.zeros((2, 4)), *params(rnn, 1))
    np.testing.assert_allclose(out.data, np.swapaxes(second, 0, 1), rtol=1e-12)
    np.testing.assert_allclose(h_n.data, np.stack([h1, h2]), rtol=1e-12)


def test_rnn_unbatched_input():
    mg.manual_seed(3)
    rnn = to_float64(nn.RNN(3, 4))
    x = rng(12).standard_normal((5, 3))
    out, h_n = rnn(t64(x, False))
    ref_out, ref_h = rnn_ref(x[None], np.zeros((1, 4)), *params(rnn))
    assert out.shape == (5, 4) and h_n.shape == (1, 4)
    np.testing.assert_allclose(out.data, ref_out[0], rtol=1e-12)


def test_rnn_gradients():
    mg.manual_seed(4)
    rnn = to_float64(nn.RNN(2, 3))
    x, h0 = t64(rng(13).standard_normal((2, 4, 2))), t64(rng(14).standard_normal((1, 2, 3)))
    assert mg.gradcheck(lambda a, h: rnn(a, h)[0], [x, h0])

    def through_parameters(w_ih, w_hh, b_ih, b_hh):
        h = mg.zeros(2, 3, dtype=mg.float64)
        outs = []
        for t in range(4):
            h = F.rnn_tanh_cell(x[:, t], h, w_ih, w_hh, b_ih, b_hh)
            outs.append(h)
        return mg.stack(outs, 1)
    assert mg.gradcheck(through_parameters, [t64(p) for p in params(rnn)])
    # The module's own backward reaches every parameter with the same gradient as the functional form.
    g = rng(15).standard_normal((2, 4, 3))
    rnn.zero_grad()  # the gradient checks above also reached the parameters
    rnn(x.detach())[0].backward(g)
    leaves = [t64(p) for p in params(rnn)]
    through_parameters(*leaves).backward(g)
    for name, leaf in zip(("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"), leaves):
        np.testing.assert_allclose(getattr(rnn, name).grad, leaf.grad, rtol=1e-12)


def test_rnn_bad_input():
    with pytest.raises(ValueError, match=r"nonlinearity='tanh'.*got 'relu'"):
        nn.RNN(3, 4, nonlinearity="relu")
    rnn = nn.RNN(3, 4)
    with pytest.raises(ValueError, match=r"RNN expected input \(B, T, 3\) or unbatched \(T, 3\), got shape \(2, 5, 2\)"):
        rnn(mg.zeros(2, 5, 2))
    with pytest.raises(ValueError, match=r"RNN expected an initial state of shape \(1, 2, 4\), got \(2, 4\)"):
        rnn(mg.zeros(2, 5, 3), mg.zeros(2, 4))
    with pytest.raises(ValueError, match=r"RNN expected input \(B, T, 3\)"):
        rnn(mg.zeros(1, 2, 5, 3))


# ----- LSTM ----------------------------------------------------------------------------------------
def test_lstm_names_shapes_and_init_are_pytorchs():
    mg.manual_seed(5)
    lstm = nn.LSTM(3, 8)
    assert [(n, p.shape) for n, p in lstm.named_parameters()] == [
        ("weight_ih_l0", (32, 3)), ("weight_hh_l0", (32, 8)), ("bias_ih_l0", (32,)), ("bias_hh_l0", (32,))]
    bound = 1 / np.sqrt(8)
    for p in lstm.parameters():
        assert p.dtype == np.float32 and np.abs(p.data).max() <= bound
    # 256 draws of U(−b, b): the standard deviation b/√3 to within 15%.
    assert abs(lstm.weight_hh_l0.data.std() - bound / np.sqrt(3)) < 0.15 * bound / np.sqrt(3)


def test_lstm_matches_step_by_step_numpy():
    mg.manual_seed(6)
    lstm = to_float64(nn.LSTM(3, 4))
    x = rng(16).standard_normal((2, 5, 3))
    h0, c0 = rng(17).standard_normal((1, 2, 4)), rng(18).standard_normal((1, 2, 4))
    out, (h_n, c_n) = lstm(t64(x, False), (t64(h0, False), t64(c0, False)))
    ref_out, ref_h, ref_c = lstm_ref(x, h0[0], c0[0], *params(lstm))
    assert out.shape == (2, 5, 4) and h_n.shape == c_n.shape == (1, 2, 4)
    np.testing.assert_allclose(out.data, ref_out, rtol=1e-12)
    np.testing.assert_allclose(h_n.data[0], ref_h, rtol=1e-12)
    np.testing.assert_allclose(c_n.data[0], ref_c, rtol=1e-12)
    zero_out, _ = lstm(t64(x, False))
    np.testing.assert_allclose(zero_out.data, lstm_ref(x, 0 * h0[0], 0 * c0[0], *params(lstm))[0], rtol=1e-12)


def test_lstm_gradients():
    mg.manual_seed(7)
    lstm = to_float64(nn.LSTM(2, 3))
    x = t64(rng(19).standard_normal((2, 3, 2)))
    h0, c0 = t64(rng(20).standard_normal((1, 2, 3))), t64(rng(21).standard_normal((1, 2, 3)))

    def outputs(a, h, c):
        out, (h_n, c_n) = lstm(a, (h, c))
        return out, c_n
    assert mg.gradcheck(outputs, [x, h0, c0])

    def through_cell(w_ih, w_hh, b_ih, b_hh):
        h, c = mg.zeros(2, 3, dtype=mg.float64), mg.zeros(2, 3, dtype=mg.float64)
        for t in range(3):
            h, c = F.lstm_cell(x[:, t], h, c, w_ih, w_hh, b_ih, b_hh)
        return h, c
    assert mg.gradcheck(through_cell, [t64(p) for p in params(lstm)])


@pytest.mark.slow  # importing torch alone takes seconds
def test_lstm_and_rnn_match_torch_if_installed():
    torch = pytest.importorskip("torch")
    mg.manual_seed(8)
    lstm = nn.LSTM(3, 4, num_layers=2)
    reference = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True)
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in lstm.state_dict().items()})
    x = rng(22).standard_normal((2, 5, 3)).astype(np.float32)
    out, (h_n, c_n) = lstm(mg.tensor(x))
    ref_out, (ref_h, ref_c) = reference(torch.tensor(x))
    np.testing.assert_allclose(out.data, ref_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_n.data, ref_c.detach().numpy(), rtol=1e-5, atol=1e-6)
    rnn = nn.RNN(3, 4, num_layers=2)
    reference = torch.nn.RNN(3, 4, num_layers=2, batch_first=True)
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in rnn.state_dict().items()})
    out, h_n = rnn(mg.tensor(x))
    ref_out, ref_h = reference(torch.tensor(x))
    np.testing.assert_allclose(out.data, ref_out.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_n.data, ref_h.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_lstm_bad_input():
    lstm = nn.LSTM(3, 4)
    with pytest.raises(ValueError, match=r"LSTM expected input \(B, T, 3\) or unbatched \(T, 3\), got shape \(2, 5, 4\)"):
        lstm(mg.zeros(2, 5, 4))
    with pytest.raises(ValueError, match=r"LSTM expected an initial state of shape \(1, 2, 4\), got \(1, 3, 4\)"):
        lstm(mg.zeros(2, 5, 3), (mg.zeros(1, 3, 4), mg.zeros(1, 3, 4)))


# ----- the fused layers: one op per layer, against the unfused composition of cells ----------------
def test_fused_layer_ops_gradcheck():
    from minigrad.nn.recurrent import lstm_layer, rnn_tanh_layer
    T, B, H = 4, 2, 3
    gx, h0, c0 = t64(rng(30).standard_normal((T, B, 4 * H))), t64(rng(31).standard_normal((B, H))), \
        t64(rng(32).standard_normal((B, H)))
    w_hh = t64(rng(33).standard_normal((4 * H, H)) * 0.5)
    assert mg.gradcheck(lstm_layer, [gx, h0, c0, w_hh])
    assert mg.gradcheck(rnn_tanh_layer, [t64(gx.data[..., :H]), h0, t64(w_hh.data[:H])])


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_fused_layers_equal_the_composition_of_cells(cell):
    """Values and every gradient of nn.RNN / nn.LSTM (fused) against a loop of F.rnn_tanh_cell / F.lstm_cell."""
    mg.manual_seed(9)
    layer = to_float64(nn.LSTM(3, 4, num_layers=2) if cell == "lstm" else nn.RNN(3, 4, num_layers=2))
    x = t64(rng(34).standard_normal((2, 6, 3)))
    h0, c0 = t64(rng(35).standard_normal((2, 2, 4))), t64(rng(36).standard_normal((2, 2, 4)))
    weights = t64(rng(37).standard_normal((2, 6, 4)), requires_grad=False)

    def loss_of(out, h_n, c_n=None):  # every output counts, with unequal weights
        total = (out * weights).sum() + (h_n * h_n).sum()
        return total if c_n is None else total + (c_n * c_n * c_n).sum()

    if cell == "lstm":
        out, (h_n, c_n) = layer(x, (h0, c0))
        fused = loss_of(out, h_n, c_n)
    else:
        out, h_n = layer(x, h0)
        fused = loss_of(out, h_n)
    fused.backward()
    fused_grads = [x.grad, h0.grad, c0.grad] + [p.grad for p in layer.parameters()]
    for t in [x, h0, c0] + list(layer.parameters()):
        t.grad = None

    steps = [x[:, t] for t in range(6)]
    finals_h, finals_c = [], []
    for k in range(2):
        w_ih, w_hh, b_ih, b_hh = (getattr(layer, f"{n}_l{k}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
        h, c = h0[k], c0[k]
        outs = []
        for x_t in steps:
            if cell == "lstm":
                h, c = F.lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh)
            else:
                h = F.rnn_tanh_cell(x_t, h, w_ih, w_hh, b_ih, b_hh)
            outs.append(h)
        steps = outs
        finals_h.append(h)
        finals_c.append(c)
    composed_out = mg.stack(steps, dim=1)
    composed = loss_of(composed_out, mg.stack(finals_h), mg.stack(finals_c) if cell == "lstm" else None)
    np.testing.assert_allclose(fused.data, composed.data, rtol=1e-12)
    composed.backward()
    composed_grads = [x.grad, h0.grad, c0.grad] + [p.grad for p in layer.parameters()]
    if cell == "rnn":
        assert fused_grads[2] is None and composed_grads[2] is None  # c0 is not an RNN input
        fused_grads, composed_grads = fused_grads[:2] + fused_grads[3:], composed_grads[:2] + composed_grads[3:]
    for got, want in zip(fused_grads, composed_grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", ["c", "numpy"])
def test_fused_lstm_saturated_gates_stay_exact(backend, request):
    """Pre-activations of ±30: σ (the reference's ½ + ½·tanh(x/2), the C kernel's from e^−|x|) still gives gates in
    [0, 1] and finite gradients."""
    if backend == "c":
        request.getfixturevalue("c_kernels_built")
    from minigrad.nn.recurrent import lstm_layer
    gx = t64(np.concatenate([np.full((3, 2, 4), 30.0), np.full((3, 2, 4), -30.0)], axis=-1))  # (T, B, 4H), H = 2
    h0, c0 = t64(np.zeros((2, 2))), t64(np.ones((2, 2)))
    with mg.backend(backend, ops=("lstm",)):
        out = lstm_layer(gx, h0, c0, t64(np.zeros((8, 2))))
        out.sum().backward()
    i, f, g, o = 1.0, 1.0, np.tanh(-30.0), 1 / (1 + np.exp(30.0))  # blocks i, f = +30; g, o = −30
    c = 1.0 + np.cumsum(np.full(3, i * g))                        # c_t = f c_{t−1} + i g
    np.testing.assert_allclose(out.data[1, :, 0, 0], c, rtol=1e-12)
    np.testing.assert_allclose(out.data[0, :, 0, 0], o * np.tanh(c), rtol=1e-6, atol=1e-15)
    assert np.all(np.isfinite(gx.grad)) and np.all(np.isfinite(c0.grad))
