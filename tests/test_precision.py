"""Half precision: GradScaler against torch.amp.GradScaler, autocast's policy, bfloat16 bit-exact against
PyTorch, dtype preservation of every op, PyTorch's promotion table, and the bad-input errors."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.amp import GradScaler

try:
    import torch
except ImportError:  # only the comparisons with PyTorch skip; everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: this test compares against it")


# ----------------------------------------------------------------------------- GradScaler

def test_grad_scaler_defaults_are_pytorchs():
    scaler = GradScaler()
    assert scaler.get_scale() == 2.0 ** 16
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (2.0, 0.5, 2000)
    if torch is not None:
        ref = torch.amp.GradScaler("cpu")
        assert ref.get_scale() == scaler.get_scale()
        assert (ref.get_growth_factor(), ref.get_backoff_factor(), ref.get_growth_interval()) == (2.0, 0.5, 2000)


def scaler_run(bad_steps, steps, growth_interval, make):
    """Train y = x·w with SGD through a GradScaler; the loss is multiplied by inf on bad_steps.
    Returns the scale before each step and the final weights. `make` gives the library's pieces."""
    lib, w, opt, scaler, forward = make(growth_interval)
    scales = []
    rng = np.random.default_rng(0)
    for step in range(steps):
        x = rng.standard_normal((8, 3)).astype(np.float32)
        y = rng.standard_normal((8, 1)).astype(np.float32)
        scales.append(float(scaler.get_scale()))
        opt.zero_grad()
        loss = forward(x, y)
        if step in bad_steps:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return scales, np.array(w.detach().numpy() if lib == "torch" else w.data, dtype=np.float64)


def minigrad_pieces(growth_interval):
    w = mg.tensor(np.linspace(-1, 1, 3, dtype=np.float32).reshape(3, 1), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    scaler = GradScaler(growth_interval=growth_interval)
    return "minigrad", w, opt, scaler, lambda x, y: F.mse_loss(mg.tensor(x) @ w, mg.tensor(y))


def torch_pieces(growth_interval):
    w = torch.tensor(np.linspace(-1, 1, 3, dtype=np.float32).reshape(3, 1), requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", growth_interval=growth_interval)
    return "torch", w, opt, scaler, lambda x, y: torch.nn.functional.mse_loss(torch.tensor(x) @ w, torch.tensor(y))


@needs_torch
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the planted inf losses
def test_grad_scaler_sequence_equals_pytorchs():
    bad = {1, 4, 5, 11}
    scales, w = scaler_run(bad, 16, 3, minigrad_pieces)
    ref_scales, ref_w = scaler_run(bad, 16, 3, torch_pieces)
    assert scales == ref_scales
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_grad_scaler_backs_off_skips_and_grows():
    """Closed form: halve and skip on an overflow, double after growth_interval clean steps in a row."""
    scales, _ = scaler_run({0, 2}, 8, 2, minigrad_pieces)
    s = 2.0 ** 16
    assert scales == [s, s / 2, s / 2, s / 4, s / 4, s / 2, s / 2, s]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_skipped_step_leaves_parameters_and_a_clean_step_equals_the_unscaled_one():
    lib, w, opt, scaler, forward = minigrad_pieces(2000)
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    before = w.data.copy()
    scaler.scale(forward(x, y) * float("inf")).backward()
    assert scaler.step(opt) is None
    scaler.update()
    np.testing.assert_array_equal(w.data, before)
    # a clean step: the gradient the optimizer sees is the plain one
    opt.zero_grad()
    plain = mg.tensor(before, requires_grad=True)
    F.mse_loss(mg.tensor(x) @ plain, mg.tensor(y)).backward()
    scaler.scale(forward(x, y)).backward()
    scaler.unscale_(opt)
    np.testing.assert_allclose(w.grad, plain.grad, rtol=1e-6)
    scaler.step(opt)  # after unscale_, step must not unscale a second time
    np.testing.assert_allclose(w.data, before - 0.1 * plain.grad, rtol=1e-6)


def test_grad_scaler_bad_use_is_named():
    _, w, opt, scaler, forward = minigrad_pieces(2000)
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    with pytest.raises(RuntimeError, match=r"scale\(\) was not called since the last update\(\)"):
        scaler.step(opt)
    forward(x, y).backward()  # gradients exist, but the loss was never scaled
    with pytest.raises(RuntimeError, match=r"scale\(\) was not called"):
        scaler.step(opt)
    opt.zero_grad()
    scaler.scale(forward(x, y))  # scaled, but backward was never called
    with pytest.raises(RuntimeError, match="the optimizer's parameters have no gradients"):
        scaler.step(opt)
    scaler.scale(forward(x, y)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"unscale_\(\) has already been called"):
        scaler.unscale_(opt)
    with pytest.raises(TypeError, match="expected a Tensor .* got str"):
        scaler.scale("loss")
    with pytest.raises(ValueError, match="backoff_factor must lie in"):
        GradScaler(backoff_factor=2.0)


def test_disabled_scaler_is_a_pass_through():
    _, w, opt, _, forward = minigrad_pieces(2000)
    scaler = GradScaler(enabled=False)
    loss = forward(np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32))
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0
