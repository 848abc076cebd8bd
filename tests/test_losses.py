"""Losses against their formulas written out in NumPy, gradient checks, stability at ±1e4, and bad targets."""
import math

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn.functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


# ----- mse ---------------------------------------------------------------------------------------
def test_mse_loss_formula_and_gradients():
    a, b = rng(1).standard_normal((4, 3)), rng(2).standard_normal((4, 3))
    loss = F.mse_loss(t64(a, False), t64(b, False))
    assert loss.item() == pytest.approx(sum((x - y) ** 2 for x, y in zip(a.ravel(), b.ravel())) / 12, rel=1e-12)
    assert mg.gradcheck(F.mse_loss, [t64(a), t64(b)])


def test_mse_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"mse_loss expected target of the same shape as input \(4, 3\), got \(4, 1\)"):
        F.mse_loss(t64(np.ones((4, 3))), t64(np.ones((4, 1))))


# ----- cross entropy ---------------------------------------------------------------------------------
def cross_entropy_ref(z, y):
    """−mean over samples of log(e^{z_y} / Σ_c e^{z_c}), one sample at a time."""
    losses = [math.log(sum(math.exp(v) for v in row)) - row[t] for row, t in zip(z, y)]
    return sum(losses) / len(losses)


def test_cross_entropy_formula_and_gradient():
    z, y = rng(3).standard_normal((6, 4)), np.array([0, 3, 1, 1, 2, 3])
    assert F.cross_entropy(t64(z, False), y).item() == pytest.approx(cross_entropy_ref(z, y), rel=1e-12)
    assert F.cross_entropy(t64(z, False), mg.tensor(y)).item() == pytest.approx(cross_entropy_ref(z, y), rel=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, y), [t64(z)])


def test_cross_entropy_with_extra_dims_matches_the_flattened_form():
    """(N, C, d) logits with (N, d) targets, like PyTorch, equal the (N·d, C) form a GPT uses."""
    z, y = rng(4).standard_normal((2, 5, 3)), rng(5).integers(0, 5, size=(2, 3))
    flat_z, flat_y = np.moveaxis(z, 1, -1).reshape(-1, 5), y.reshape(-1)
    assert F.cross_entropy(t64(z, False), y).item() == pytest.approx(cross_entropy_ref(flat_z, flat_y), rel=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, y), [t64(z)])
    # (B, T, C) logits flattened to (B·T, C), the way sequence models call it.
    logits = t64(np.moveaxis(z, 1, -1))                              # (2, 3, 5)
    assert F.cross_entropy(logits.reshape(-1, 5), y.reshape(-1)).item() == pytest.approx(
        cross_entropy_ref(flat_z, flat_y), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_finite_for_huge_logits(dtype):
    z = mg.tensor(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4]], dtype=dtype), requires_grad=True)
    loss = F.cross_entropy(z, np.array([1, 1]))
    # Sample 1 puts 2e4 more on class 0 than on its target; sample 2 is certain and right.
    assert loss.item() == pytest.approx(2e4 / 2, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(z.grad, [[0.5, -0.5, 0.0], [0.0, 0.0, 0.0]], atol=1e-7)


def test_cross_entropy_bad_targets():
    z = t64(np.zeros((3, 4)))
    with pytest.raises(IndexError, match=r"target 4 is out of range for 4 classes \(expected 0 <= target < 4\)"):
        F.cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(IndexError, match=r"target -1 is out of range"):
        F.cross_entropy(z, np.array([0, -1, 1]))
    with pytest.raises(ValueError, match=r"targets of shape \(3,\) for logits of shape \(3, 4\), got \(2,\)"):
        F.cross_entropy(z, np.array([0, 1]))
    with pytest.raises(TypeError, match=r"integer class targets, got dtype float64"):
        F.cross_entropy(z, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"\(C,\) with a single target, got logits of shape \(4,\) and targets "
                       r"of shape \(2,\)"):
        F.cross_entropy(t64(np.zeros(4)), np.array([1, 2]))  # (C,) logits take one 0-d target, as in PyTorch


# ----- binary cross entropy ------------------------------------------------------------------------
def bce_ref(p, y):
    return -np.mean(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log(1 - p), -100))


def test_binary_cross_entropy_formula_and_gradients():
    p, y = rng(6).uniform(0.05, 0.95, (3, 4)), rng(7).uniform(0, 1, (3, 4))
    assert F.binary_cross_entropy(t64(p, False), t64(y, False)).item() == pytest.approx(bce_ref(p, y), rel=1e-12)
    assert mg.gradcheck(F.binary_cross_entropy, [t64(p), t64(y)])


def test_binary_cross_entropy_clamps_its_log():
    with np.errstate(divide="ignore"):
        p, y = np.array([0.0, 1.0, 0.0, 1.0]), np.array([1.0, 0.0, 0.0, 1.0])
        expected = bce_ref(p, y)
    # Two confident mistakes cost 100 each (the clamp), two confident hits cost 0: mean 50.
    assert expected == 50.0
    probs = t64(p)
    loss = F.binary_cross_entropy(probs, t64(y, False))
    assert loss.item() == 50.0
    loss.backward()
    assert np.isfinite(probs.grad).all()
    # PyTorch's rule (p − y) / max(p(1 − p), 1e-12) / n at p ∈ {0, 1}.
    np.testing.assert_allclose(probs.grad, [-1e12 / 4, 1e12 / 4, 0.0, 0.0])


def test_binary_cross_entropy_rejects_values_outside_0_1():
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\], got values from -0.5 to 0.5"):
        F.binary_cross_entropy(t64([-0.5, 0.5]), t64([0.0, 1.0]))


def test_binary_cross_entropy_with_logits_formula_and_gradients():
    z, y = rng(8).standard_normal((3, 4)) * 3, rng(9).uniform(0, 1, (3, 4))
    p = 1 / (1 + np.exp(-z))
    expected = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    assert F.binary_cross_entropy_with_logits(t64(z, False), t64(y, False)).item() == pytest.approx(expected, rel=1e-12)
    assert mg.gradcheck(F.binary_cross_entropy_with_logits, [t64(z), t64(y)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_with_logits_is_finite_for_huge_logits(dtype):
    z = mg.tensor(np.array([1e4, -1e4, 1e4, -1e4], dtype=dtype), requires_grad=True)
    y = mg.tensor(np.array([1.0, 0.0, 0.0, 1.0], dtype=dtype))
    loss = F.binary_cross_entropy_with_logits(z, y)
    # Right and certain: 0; wrong and certain by 1e4: 1e4 each, so the mean is 2e4 / 4.
    assert loss.item() == pytest.approx(5e3, rel=1e-6)
    loss.backward()
    np.testing.assert_allclose(z.grad, [0.0, 0.0, 0.25, -0.25], atol=1e-7)


def test_cross_entropy_ignore_index_averages_over_the_counted_targets_only():
    z, y = rng(11).standard_normal((7, 5)), np.array([0, -100, 4, -100, 2, 2, -100])
    counted = y != -100
    loss = F.cross_entropy(t64(z, False), y)
    assert loss.item() == pytest.approx(cross_entropy_ref(z[counted], y[counted]), rel=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(a, y), [t64(z)])
    logits = t64(z)
    F.cross_entropy(logits, y).backward()
    assert np.all(logits.grad[~counted] == 0)
    assert F.cross_entropy(t64(z, False), np.where(counted, y, 3), ignore_index=3).item() == pytest.approx(
        cross_entropy_ref(z[np.where(counted, y, 3) != 3], np.where(counted, y, 3)[np.where(counted, y, 3) != 3]),
        rel=1e-12)
    assert math.isnan(F.cross_entropy(t64(z, False), np.full(7, -100)).item())  # 0/0, as in PyTorch
    with pytest.raises(IndexError, match="target -5 is out of range.*ignore_index=-100"):
        F.cross_entropy(t64(z, False), np.array([0, -5, 1, 1, 1, 1, 1]))


def test_cross_entropy_ignore_index_matches_pytorch():
    torch = pytest.importorskip("torch", reason="PyTorch is the reference for ignore_index's semantics")
    z, y = rng(12).standard_normal((3, 6, 4)), np.array([[1, -100, 0, 5], [-100, -100, 2, 3], [4, 4, -100, 0]])
    logits = t64(z)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    tz = torch.tensor(z, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tz, torch.tensor(y))
    tloss.backward()
    assert loss.item() == pytest.approx(tloss.item(), rel=1e-12)
    np.testing.assert_allclose(logits.grad, tz.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert nn_loss_ignores(torch)


def nn_loss_ignores(torch):
    import minigrad.nn as nn
    z, y = rng(13).standard_normal((4, 3)), np.array([0, 7, 7, 2])
    ours = nn.CrossEntropyLoss(ignore_index=7)(t64(z, False), y).item()
    theirs = torch.nn.CrossEntropyLoss(ignore_index=7)(torch.tensor(z), torch.tensor(y)).item()
    return ours == pytest.approx(theirs, rel=1e-12)


def test_cross_entropy_ignore_index_on_the_c_kernel(c_kernels_built):
    z, y = rng(14).standard_normal((9, 5)).astype(np.float32), np.array([1, -100, 3, 3, -100, 0, 4, -100, 2])
    results = {}
    for backend in ("numpy", "c"):
        with mg.backend(backend):
            logits = mg.tensor(z, requires_grad=True)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            results[backend] = (loss.item(), logits.grad)
    assert results["c"][0] == pytest.approx(results["numpy"][0], rel=1e-6)
    np.testing.assert_allclose(results["c"][1], results["numpy"][1], rtol=1e-5, atol=1e-7)
    assert np.all(results["c"][1][y == -100] == 0)
