"""Gradient checking: is the backward rule the derivative of the forward computation?

For a scalar L(x) the central difference
    ∂L/∂x_i ≈ (L(x + ε e_i) − L(x − ε e_i)) / 2ε
has error O(ε²), against O(ε) for the one-sided difference. In float64 with
ε = 1e-6 the rounding error is ~1e-10, so analytic and numeric gradients
should agree to ~1e-8 relative; in float32 rounding alone would be ~1e-2.
A function with a non-scalar output is checked through L = Σ w ∘ f(x) for a
fixed random w (the vector-Jacobian product autograd really computes).
"""
import numpy as np

from . import autograd
from .dtypes import float64, is_floating
from .random import generator
from .tensor import Tensor

MAX_ELEMENTS_CHECKED = 200  # per input; larger inputs get a random sample plus random-direction checks
DIRECTIONS = 3


class GradcheckError(RuntimeError):
    """A gradient that autograd computed differs from the finite-difference estimate."""


def _scalar_loss(outputs, weights):
    total = 0.0
    for out, w in zip(outputs, weights):
        total = total + (out * Tensor(w)).sum()
    return total


def _outputs(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, Tensor) and is_floating(o.dtype)]


def _prepare(inputs):
    """float64 leaf copies of the inputs that need a gradient; everything else passes as it is."""
    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    prepared, checked = [], []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad:
            copy = Tensor(np.array(x.data, dtype=float64), requires_grad=True)
            prepared.append(copy)
            checked.append(i)
        else:
            prepared.append(x)
    if not checked:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check "
                         "(make the inputs with requires_grad=True)")
    return prepared, checked


def compare_gradients(fn, inputs, eps=1e-6):
    """Yield (input index, element index or 'direction k', analytic, numeric) for every checked value."""
    inputs, checked = _prepare(inputs)
    with autograd.enable_grad():
        outputs = _outputs(fn, inputs)
    if not outputs:
        raise ValueError("gradcheck: the function returned no floating-point tensor to differentiate")
    rng = generator()
    weights = [rng.standard_normal(o.shape) for o in outputs]
    with autograd.enable_grad():
        loss = _scalar_loss(outputs, weights)
        if not loss.requires_grad:
            raise ValueError("gradcheck: the output does not depend on any input that requires grad")
        loss.backward()

    def loss_at():
        with autograd.no_grad():
            return float(_scalar_loss(_outputs(fn, inputs), weights).item())

    for i in checked:
        x = inputs[i]
        analytic = x.grad if x.grad is not None else np.zeros_like(x.data)
        if x.data.size <= MAX_ELEMENTS_CHECKED:
            elements = range(x.data.size)
        else:
            elements = np.sort(rng.choice(x.data.size, MAX_ELEMENTS_CHECKED, replace=False))
        for j in elements:
            # perturbed through its index, not through reshape(-1): that copies a non-contiguous input
            # (a channels-last image), and fn would never see the change
            index = np.unravel_index(j, x.shape)
            original = x.data[index]
            x.data[index] = original + eps
            plus = loss_at()
            x.data[index] = original - eps
            minus = loss_at()
            x.data[index] = original
            yield i, index, analytic[index], (plus - minus) / (2 * eps)
        if x.data.size > MAX_ELEMENTS_CHECKED:
            original = x.data.copy()
            for k in range(DIRECTIONS):
                u = rng.standard_normal(x.shape)
                u /= np.linalg.norm(u)
                x.data[...] = original + eps * u
                plus = loss_at()
                x.data[...] = original - eps * u
                minus = loss_at()
                x.data[...] = original
                yield i, f"direction {k}", float((analytic * u).sum()), (plus - minus) / (2 * eps)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Check autograd's gradient of `fn(*inputs)` against central differences in float64.

    Returns True, or raises GradcheckError naming the input, the worst element, both values and the error.
    """
    worst = None
    for i, element, analytic, numeric in compare_gradients(fn, inputs, eps):
        error = abs(analytic - numeric)
        excess = error - (atol + rtol * abs(numeric))
        if excess > 0 and (worst is None or excess > worst[0]):
            worst = (excess, i, element, analytic, numeric, error)
    if worst is not None:
        _, i, element, analytic, numeric, error = worst
        where = element if isinstance(element, str) else f"element {tuple(int(e) for e in element)}"
        relative = error / max(abs(numeric), 1e-12)
        raise GradcheckError(
            f"Gradient check failed for input {i}, {where}: autograd gives {analytic:.10g} but central "
            f"differences give {numeric:.10g} (absolute error {error:.3g}, relative error {relative:.3g}; "
            f"allowed atol={atol} + rtol={rtol}·|numeric|). The backward rule of some op in this function "
            f"does not match its forward computation.")
    return True


def max_relative_error(fn, inputs, eps=1e-6):
    """The worst, over inputs, of ‖analytic − numeric‖ / max(‖analytic‖, ‖numeric‖): ≈1e-8 when the rule is right."""
    per_input = {}
    for i, _, analytic, numeric in compare_gradients(fn, inputs, eps):
        per_input.setdefault(i, []).append((analytic, numeric))
    worst = 0.0
    for pairs in per_input.values():
        analytic, numeric = np.array(pairs).T
        scale = max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-12)
        worst = max(worst, float(np.linalg.norm(analytic - numeric) / scale))
    return worst
