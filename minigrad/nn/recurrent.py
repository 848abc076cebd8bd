"""Recurrent networks (lesson `03_rnn`): the tanh RNN step, the LSTM step, and the layers that unroll them.

Parameter names, shapes, gate order (i, f, g, o) and initialisation
U(−1/√hidden, 1/√hidden) are PyTorch's, so state dicts move both ways.
"""
import math

import numpy as np

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
        """The input as a list of T steps (B, input_size), and whether it came unbatched."""
        name, I = type(self).__name__, self.input_size
        x = as_tensor(x)
        layout = f"(B, T, {I})" if self.batch_first else f"(T, B, {I})"
        if x.ndim not in (2, 3) or x.shape[-1] != I:
            raise ValueError(f"{name} expected input {layout} or unbatched (T, {I}), got shape {x.shape}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(0 if self.batch_first else 1)
        time_dim = 1 if self.batch_first else 0
        steps = [x[:, t] if self.batch_first else x[t] for t in range(x.shape[time_dim])]
        return steps, x.shape[1 - time_dim], unbatched

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

    def _stack_output(self, steps, unbatched):
        out = stack(steps, dim=1 if self.batch_first else 0)          # (B, T, hidden) or (T, B, hidden)
        return out.squeeze(0 if self.batch_first else 1) if unbatched else out

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
        steps, batch, unbatched = self._sequence(x)
        h_last = self._initial(h0, batch, unbatched, steps[0])
        for k in range(self.num_layers):
            h, params = h_last[k], self.layer_parameters(k)
            outputs = []
            for x_t in steps:
                h = rnn_tanh_cell(x_t, h, *params)                     # (B, hidden)
                outputs.append(h)
            steps, h_last[k] = outputs, h
        h_n = stack(h_last, dim=0)                                     # (num_layers, B, hidden)
        return self._stack_output(steps, unbatched), h_n.squeeze(1) if unbatched else h_n


class LSTM(_Recurrent):
    """LSTM unrolled over time: forward(x, (h0, c0)=None) → (output, (h_n, c_n)) like PyTorch.

    Parameters stack the four gates i, f, g, o: weight_ih_l0 (4·hidden, input_size), weight_hh_l0
    (4·hidden, hidden), bias_ih_l0 and bias_hh_l0 (4·hidden,). Shapes as for RNN.
    """

    gates = 4

    def forward(self, x, state=None):
        steps, batch, unbatched = self._sequence(x)
        h0, c0 = (None, None) if state is None else state
        h_last = self._initial(h0, batch, unbatched, steps[0])
        c_last = self._initial(c0, batch, unbatched, steps[0])
        for k in range(self.num_layers):
            h, c, params = h_last[k], c_last[k], self.layer_parameters(k)
            outputs = []
            for x_t in steps:
                h, c = lstm_cell(x_t, h, c, *params)                   # (B, hidden) each
                outputs.append(h)
            steps, h_last[k], c_last[k] = outputs, h, c
        h_n, c_n = stack(h_last, dim=0), stack(c_last, dim=0)          # (num_layers, B, hidden)
        if unbatched:
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return self._stack_output(steps, unbatched), (h_n, c_n)
