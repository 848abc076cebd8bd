"""Recurrent networks (lesson `03_rnn`): the tanh RNN step, the LSTM step, and the layers that unroll them.

Parameter names, shapes, gate order (i, f, g, o) and initialisation
U(−1/√hidden, 1/√hidden) are PyTorch's, so state dicts move both ways.
"""
import functools
import math

import numpy as np

from .. import kernels
from ..tensor import Tensor, as_tensor, stack
from .activation import sigmoid, tanh
from .linear import linear, uniform_parameter
from .module import Module


def rnn_tanh_cell(x, h, w_ih, w_hh, b_ih=None, b_hh=None):
    """h_t = tanh(W x_t + U h_{t−1} + b)   (lesson 03_rnn)

    In PyTorch's layout: h_t = tanh(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh),
    x_t (B, input_size), h_{t−1} (B, hidden), W_ih (hidden, input_size), W_hh (hidden, hidden).
    """
    return tanh(linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh))


def lstm_cell(x, h, c, w_ih, w_hh, b_ih=None, b_hh=None):
    """One LSTM step (lesson 03_rnn), gates stacked in PyTorch's order i, f, g, o:

        [i, f, g, o] = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh      (B, 4·hidden)
        c_t = σ(f) ⊙ c_{t−1} + σ(i) ⊙ tanh(g)
        h_t = σ(o) ⊙ tanh(c_t)

    Returns (h_t, c_t).
    """
    gates = linear(x, w_ih, b_ih) + linear(h, w_hh, b_hh)              # (B, 4H)
    H = gates.shape[-1] // 4
    i, f = sigmoid(gates[..., :H]), sigmoid(gates[..., H:2 * H])
    g, o = tanh(gates[..., 2 * H:3 * H]), sigmoid(gates[..., 3 * H:])
    c = f * c + i * g
    return o * tanh(c), c


@functools.lru_cache(maxsize=16)
def _gate_scale(H, dtype):
    """(4H,) ½ on the σ gates i, f, o and 1 on the tanh gate g (see lstm_gate_activations); read-only, shared."""
    scale = np.full(4 * H, 0.5, dtype=dtype)
    scale[2 * H:3 * H] = 1
    scale.flags.writeable = False
    return scale


def lstm_gate_activations(a):
    """σ on the i, f, o blocks and tanh on the g block of pre-activations a (B, 4H), in place; returns a.

    σ(x) = ½ + ½·tanh(x/2), so all four blocks take one tanh over the whole row: scale the σ blocks by ½,
    tanh, then ½·u + ½ on the σ blocks (exact up to rounding in absolute terms; gates lie in [0, 1]).
    """
    scale = _gate_scale(a.shape[-1] // 4, a.dtype)
    a *= scale
    np.tanh(a, out=a)
    a *= scale
    a += 1 - scale                                                     # + ½ on i, f, o; + 0 on g
    return a


def rnn_step_forward(gx, h, w_hh, matmul=np.matmul):
    """One tanh RNN step with the input part precomputed: h_t = tanh(gx_t + h_{t−1} W_hhᵀ) (lesson 03_rnn).

    gx_t = x_t W_ihᵀ + b_ih + b_hh (B, H), h_{t−1} (B, H), W_hh (H, H) → h_t (B, H).
    """
    out = matmul(h, w_hh.T)                                            # (B, H)
    out += gx
    return np.tanh(out, out=out)


def rnn_step_backward(dh, h_new, w_hh, matmul=np.matmul):
    """The step's backward from dL/dh_t: dz = dh ∘ (1 − h_t²) (the gradient of gx_t), dh_{t−1} = dz W_hh.

    Returns (dz, dh_{t−1}); dW_hh = Σ_t dz_tᵀ h_{t−1} is summed over all steps at once by the caller.
    """
    dz = h_new * h_new
    np.subtract(1, dz, out=dz)
    dz *= dh                                                           # (B, H)
    return dz, matmul(dz, w_hh)


def lstm_step_forward(gx, h, c, w_hh, gates, c_new, tanh_c, h_new, matmul=np.matmul):
    """One LSTM step with the input part precomputed (lesson 03_rnn), gates in PyTorch's order i, f, g, o:

        [i, f, g, o] = σ, σ, tanh, σ of (gx_t + h_{t−1} W_hhᵀ)    gx_t = x_t W_ihᵀ + b_ih + b_hh  (B, 4H)
        c_t = f ⊙ c_{t−1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)

    Writes the gates (B, 4H), c_t, tanh(c_t) and h_t (B, H) into the arrays given (the backward step
    reads the gates again, so the layer keeps them for every step).
    """
    H = c.shape[-1]
    np.add(gx, matmul(h, w_hh.T), out=gates)                           # (B, 4H)
    lstm_gate_activations(gates)
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    np.multiply(f, c, out=c_new)
    c_new += i * g
    np.tanh(c_new, out=tanh_c)
    np.multiply(o, tanh_c, out=h_new)


def lstm_step_backward(dh, dc, c_prev, gates, tanh_c, w_hh, dgates, matmul=np.matmul):
    """The step's backward from dL/dh_t and dL/dc_t (dc from step t+1 and from c_t itself); updates dc in place:

        dc ← dc + dh ⊙ o ⊙ (1 − tanh²c_t)
        d[i, f, g, o] = [dc ⊙ g, dc ⊙ c_{t−1}, dc ⊙ i, dh ⊙ tanh c_t] ⊙ [σ′, σ′, tanh′, σ′],  σ′ = σ − σ², tanh′ = 1 − g²
        dc_{t−1} = dc ⊙ f,   dh_{t−1} = d[i, f, g, o] W_hh

    Writes d[i, f, g, o] (B, 4H), the gradient of gx_t, into dgates; returns (dh_{t−1}, dc_{t−1}).
    """
    H = c_prev.shape[-1]
    i, f, g, o = gates[:, :H], gates[:, H:2 * H], gates[:, 2 * H:3 * H], gates[:, 3 * H:]
    through_h = tanh_c * tanh_c                                        # (B, H)
    np.subtract(1, through_h, out=through_h)
    through_h *= o
    through_h *= dh
    dc += through_h
    np.multiply(dc, g, out=dgates[:, :H])
    np.multiply(dc, c_prev, out=dgates[:, H:2 * H])
    np.multiply(dc, i, out=dgates[:, 2 * H:3 * H])
    np.multiply(dh, tanh_c, out=dgates[:, 3 * H:])
    square = gates * gates                                             # (B, 4H)
    slope = gates - square                                             # σ′ = σ − σ²
    np.subtract(1, square[:, 2 * H:3 * H], out=slope[:, 2 * H:3 * H])  # tanh′ = 1 − g²
    dgates *= slope
    dc *= f
    return matmul(dgates, w_hh), dc


def rnn_tanh_layer(gx, h0, w_hh):
    """All T steps of h_t = tanh(gx_t + h_{t−1} W_hhᵀ) as one op (lesson 03_rnn): gx (T, B, H) → hs (T, B, H).

    gx = x W_ihᵀ + b for every step at once (one big matmul instead of T small ones). Backward through time
    runs `rnn_step_backward` from t = T−1 down to 0, then sums dW_hh = Σ_t dz_tᵀ h_{t−1} in one matmul.
    """
    gx, h0, w_hh = _same_float(gx, h0, w_hh)
    gxd, wd = gx.data, w_hh.data
    matmul = step_matmul(gxd.dtype)
    hs = np.empty_like(gxd)                                            # (T, B, H)
    h = h0.data
    for t in range(gxd.shape[0]):
        h = hs[t] = rnn_step_forward(gxd[t], h, wd, matmul)

    def backward(grad):                                                # grad: dL/dhs (T, B, H)
        dz = np.empty_like(hs)
        dh = np.zeros_like(h0.data)
        for t in reversed(range(hs.shape[0])):
            dz[t], dh = rnn_step_backward(grad[t] + dh, hs[t], wd, matmul)
        h_prev = np.concatenate([h0.data[None], hs[:-1]])              # (T, B, H)
        H = wd.shape[0]
        return dz, dh, kernels.matmul(dz.reshape(-1, H).T, h_prev.reshape(-1, H))
    return Tensor.from_op(hs, (gx, h0, w_hh), backward, "rnn_tanh_layer")


def lstm_layer(gx, h0, c0, w_hh):
    """All T LSTM steps as one op (lesson 03_rnn): gx (T, B, 4H) → (2, T, B, H), every h_t then every c_t.

    gx = x W_ihᵀ + b_ih + b_hh for every step at once (one big matmul instead of T small ones). The steps run
    in `kernels.lstm` (kernels/lstm.c on backend "c"; on "numpy", `lstm_step_forward` from t = 0 up), and back
    through time in `kernels.lstm_backward` (`lstm_step_backward` from t = T−1 down, then dW_hh = Σ_t dgates_tᵀ
    h_{t−1} in one matmul).
    """
    gx, h0, c0, w_hh = _same_float(gx, h0, c0, w_hh)
    out, gates = kernels.lstm(gx.data, h0.data, c0.data, w_hh.data)   # (2, T, B, H), (T, B, 4H)

    def backward(grad):                                                # grad: (2, T, B, H)
        return kernels.lstm_backward(h0.data, c0.data, w_hh.data, out, gates, grad)
    return Tensor.from_op(out, (gx, h0, c0, w_hh), backward, "lstm_layer")


def step_matmul(dtype):
    """The product for one time step, (B, H) by (H, gates·H): too small to share between threads, and called
    2·T times per layer. So one thread, on the C kernels when the backend table sends matmul there;
    NumPy's BLAS otherwise (with 2 threads, its pool woken 2·T times made a step ~5x slower)."""
    if kernels.resolve("matmul", None, dtype) == "c":
        c_matmul = kernels.backend_module("c").matmul
        return lambda a, b: c_matmul(a, b, num_threads=1)
    return np.matmul


def _same_float(*tensors):
    """The tensors in the first one's dtype (the states and weights follow the input projection)."""
    dtype = tensors[0].dtype
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


def _check_state(name, state, expected):
    if tuple(state.shape) != expected:
        raise ValueError(f"{name} expected an initial state of shape {expected}, got {tuple(state.shape)}")


def _zeros(shape, like):
    return Tensor(np.zeros(shape, dtype=like.dtype))


class RNNCell(Module):
    """h' = tanh(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh) for one time step; forward(x, h=None) with x (B, input_size)."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        bound = 1 / math.sqrt(hidden_size)
        self.weight_ih = uniform_parameter((hidden_size, input_size), bound)
        self.weight_hh = uniform_parameter((hidden_size, hidden_size), bound)
        self.bias_ih = uniform_parameter((hidden_size,), bound) if bias else None
        self.bias_hh = uniform_parameter((hidden_size,), bound) if bias else None

    def forward(self, x, h=None):
        x = as_tensor(x)
        if x.ndim not in (1, 2) or x.shape[-1] != self.input_size:
            raise ValueError(f"RNNCell expected input (B, {self.input_size}) or unbatched ({self.input_size},), "
                             f"got shape {x.shape}")
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)                                         # (1, input_size)
        if h is None:
            h = _zeros((x.shape[0], self.hidden_size), x)
        else:
            h = as_tensor(h)
            h = h.unsqueeze(0) if unbatched else h
            _check_state("RNNCell", h, (x.shape[0], self.hidden_size))
        h = rnn_tanh_cell(x, h, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)  # (B, hidden)
        return h.squeeze(0) if unbatched else h

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}"


class _Recurrent(Module):
    """What RNN and LSTM share: per-layer parameters weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}
    (gates stacked along dim 0), the input checks, and the loop over layers and time steps."""

    gates = 1

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=True):
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"{type(self).__name__} expected num_layers >= 1, got {num_layers}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        bound = 1 / math.sqrt(hidden_size)
        rows = self.gates * hidden_size
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            setattr(self, f"weight_ih_l{k}", uniform_parameter((rows, layer_input), bound))
            setattr(self, f"weight_hh_l{k}", uniform_parameter((rows, hidden_size), bound))
            if bias:
                setattr(self, f"bias_ih_l{k}", uniform_parameter((rows,), bound))
                setattr(self, f"bias_hh_l{k}", uniform_parameter((rows,), bound))

    def layer_parameters(self, k):
        """(w_ih, w_hh, b_ih, b_hh) of layer k (biases None without bias)."""
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        return tuple(getattr(self, f"{n}_l{k}", None) for n in names)

    def _sequence(self, x):
        """The input time-major (T, B, input_size), and whether it came unbatched."""
        name, I = type(self).__name__, self.input_size
        x = as_tensor(x)
        layout = f"(B, T, {I})" if self.batch_first else f"(T, B, {I})"
        if x.ndim not in (2, 3) or x.shape[-1] != I:
            raise ValueError(f"{name} expected input {layout} or unbatched (T, {I}), got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            return x.unsqueeze(1), True                                # (T, 1, I)
        return (x.transpose(0, 1) if self.batch_first else x), False   # (T, B, I)

    def _input_projection(self, x, k):
        """gx = x W_ihᵀ + b_ih + b_hh for every time step of layer k at once: (T, B, in) → (T, B, gates·H)."""
        w_ih, _, b_ih, b_hh = self.layer_parameters(k)
        return linear(x, w_ih, None if b_ih is None else b_ih + b_hh)  # the two biases summed before the big add

    def _initial(self, state, batch, unbatched, like):
        """An initial state (num_layers, B, hidden) (zeros when None), as a list of per-layer (B, hidden)."""
        expected = (self.num_layers, batch, self.hidden_size)
        if state is None:
            return [_zeros(expected[1:], like) for _ in range(self.num_layers)]
        state = as_tensor(state)
        if unbatched:
            _check_state(type(self).__name__, state, (self.num_layers, self.hidden_size))
            state = state.unsqueeze(1)
        _check_state(type(self).__name__, state, expected)
        return [state[k] for k in range(self.num_layers)]

    def _output(self, out, unbatched):
        """The last layer's hs (T, B, H) in the caller's layout: (B, T, H), (T, B, H) or unbatched (T, H)."""
        if unbatched:
            return out.squeeze(1)
        return out.transpose(0, 1) if self.batch_first else out

    def extra_repr(self):
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"batch_first={self.batch_first}")


class RNN(_Recurrent):
    """Elman RNN with tanh, unrolled over time: forward(x, h0=None) → (output, h_n) like PyTorch.

    x (B, T, input_size) with batch_first=True (the default here), output (B, T, hidden) holds the last
    layer's h_t at every step, h_n (num_layers, B, hidden) the last step of every layer.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True, batch_first=True):
        if nonlinearity != "tanh":
            raise ValueError(f"RNN supports nonlinearity='tanh' (the lesson's h_t = tanh(W x_t + U h_t-1 + b)), "
                             f"got {nonlinearity!r}")
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first)

    def forward(self, x, h0=None):
        x, unbatched = self._sequence(x)                               # (T, B, input_size)
        h_last = self._initial(h0, x.shape[1], unbatched, x)
        for k in range(self.num_layers):
            x = rnn_tanh_layer(self._input_projection(x, k), h_last[k], self.layer_parameters(k)[1])  # (T, B, hidden)
            h_last[k] = x[-1]
        h_n = stack(h_last, dim=0)                                     # (num_layers, B, hidden)
        return self._output(x, unbatched), h_n.squeeze(1) if unbatched else h_n


class LSTM(_Recurrent):
    """LSTM unrolled over time: forward(x, (h0, c0)=None) → (output, (h_n, c_n)) like PyTorch.

    Parameters stack the four gates i, f, g, o: weight_ih_l0 (4·hidden, input_size), weight_hh_l0
    (4·hidden, hidden), bias_ih_l0 and bias_hh_l0 (4·hidden,). Shapes as for RNN.
    """

    gates = 4

    def forward(self, x, state=None):
        x, unbatched = self._sequence(x)                               # (T, B, input_size)
        h0, c0 = (None, None) if state is None else state
        h_last = self._initial(h0, x.shape[1], unbatched, x)
        c_last = self._initial(c0, x.shape[1], unbatched, x)
        for k in range(self.num_layers):
            hc = lstm_layer(self._input_projection(x, k), h_last[k], c_last[k], self.layer_parameters(k)[1])  # (2, T, B, H)
            x, h_last[k], c_last[k] = hc[0], hc[0, -1], hc[1, -1]
        h_n, c_n = stack(h_last, dim=0), stack(c_last, dim=0)          # (num_layers, B, hidden)
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._output(x, unbatched), (h_n, c_n)
