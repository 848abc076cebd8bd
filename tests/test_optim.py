"""Optimizers against their update rules written out by hand in float64, step after step."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.optim as optim


def make_params(seed=0, shapes=((3, 4), (4,))):
    rng = np.random.default_rng(seed)
    return [nn.Parameter(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def grad_sequence(params, steps, seed=1):
    """A fixed list of gradients per step, so minigrad and the hand-written rule see the same ones."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(p.shape).astype(np.float32) for p in params] for _ in range(steps)]


def run(opt, params, grads):
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.copy()
        opt.step()
    return [p.data.astype(np.float64) for p in params]


def sgd_by_hand(theta, grads, lr, momentum=0.0, weight_decay=0.0):
    theta = [t.astype(np.float64) for t in theta]
    bufs = [None] * len(theta)
    for step_grads in grads:
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64) + weight_decay * theta[i]
            if momentum:
                bufs[i] = g if bufs[i] is None else momentum * bufs[i] + g
                g = bufs[i]
            theta[i] = theta[i] - lr * g
    return theta


def adam_by_hand(theta, grads, lr, betas, eps, weight_decay=0.0, decoupled=False):
    theta = [t.astype(np.float64) for t in theta]
    m = [np.zeros_like(t) for t in theta]
    v = [np.zeros_like(t) for t in theta]
    b1, b2 = betas
    for t, step_grads in enumerate(grads, start=1):
        for i, g in enumerate(step_grads):
            g = g.astype(np.float64)
            if decoupled:
                theta[i] = theta[i] - lr * weight_decay * theta[i]
            else:
                g = g + weight_decay * theta[i]
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            m_hat = m[i] / (1 - b1 ** t)
            v_hat = v[i] / (1 - b2 ** t)
            theta[i] = theta[i] - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def assert_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("momentum, weight_decay", [(0.0, 0.0), (0.9, 0.0), (0.0, 0.1), (0.8, 0.05)])
def test_sgd_matches_rule_by_hand(momentum, weight_decay):
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = grad_sequence(params, steps=6)
    got = run(optim.SGD(params, lr=0.05, momentum=momentum, weight_decay=weight_decay), params, grads)
    assert_close(got, sgd_by_hand(start, grads, 0.05, momentum, weight_decay))


def test_sgd_first_momentum_step_is_plain_gradient_step():
    # PyTorch starts the buffer at the gradient itself, not at (1 - μ)·g or μ·0 + g scaled otherwise
    (p,) = make_params(shapes=((5,),))
    start = p.data.copy()
    opt = optim.SGD([p], lr=0.1, momentum=0.9)
    p.grad = np.ones(5, dtype=np.float32)
    opt.step()
    np.testing.assert_allclose(p.data, start - 0.1, rtol=1e-6)
    p.grad = np.ones(5, dtype=np.float32)
    opt.step()
    np.testing.assert_allclose(p.data, start - 0.1 - 0.1 * 1.9, rtol=1e-6)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_matches_rule_by_hand(weight_decay):
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = grad_sequence(params, steps=8)
    opt = optim.Adam(params, lr=1e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    assert_close(run(opt, params, grads), adam_by_hand(start, grads, 1e-2, (0.8, 0.95), 1e-6, weight_decay))


def test_adamw_decay_is_decoupled():
    params = make_params()
    start = [p.data.copy() for p in params]
    grads = grad_sequence(params, steps=8)
    opt = optim.AdamW(params, lr=1e-2, weight_decay=0.3)
    expected = adam_by_hand(start, grads, 1e-2, (0.9, 0.999), 1e-8, 0.3, decoupled=True)
    assert_close(run(opt, params, grads), expected)
    coupled = adam_by_hand(start, grads, 1e-2, (0.9, 0.999), 1e-8, 0.3, decoupled=False)
    assert max(np.abs(e - c).max() for e, c in zip(expected, coupled)) > 1e-3  # the two rules really differ


def test_adamw_default_weight_decay_is_pytorchs():
    assert optim.AdamW(make_params()).param_groups[0]["weight_decay"] == 1e-2
    assert optim.Adam(make_params()).param_groups[0]["weight_decay"] == 0.0


def test_adam_first_step_moves_each_weight_by_lr():
    # with bias correction, m̂ = g and v̂ = g² on step 1, so every weight moves by lr·sign(g) (up to ε)
    (p,) = make_params(shapes=((6,),))
    start = p.data.copy()
    p.grad = np.array([3.0, -0.5, 1e-3, -20.0, 0.7, 2.0], dtype=np.float32)
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.data, start - 0.01 * np.sign(p.grad), rtol=1e-5, atol=1e-6)


def test_param_groups_with_own_lr_and_lr_changed_mid_training():
    a, b = make_params(shapes=((3,), (2,)))
    start_a, start_b = a.data.copy(), b.data.copy()
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.5]
    a.grad, b.grad = np.ones(3, np.float32), np.ones(2, np.float32)
    opt.step()
    opt.param_groups[0]["lr"] = 0.01
    a.grad, b.grad = np.ones(3, np.float32), np.ones(2, np.float32)
    opt.step()
    np.testing.assert_allclose(a.data, start_a - 0.1 - 0.01, rtol=1e-6)
    np.testing.assert_allclose(b.data, start_b - 1.0, rtol=1e-6)


def test_zero_grad_sets_none_and_step_skips_params_without_grad():
    a, b = make_params(shapes=((3,), (2,)))
    start_b = b.data.copy()
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(3, np.float32)
    opt.step()
    np.testing.assert_array_equal(b.data, start_b)
    assert id(b) not in opt.state
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_step_after_real_backward_descends_a_quadratic():
    # L = ½‖Wx − y‖², whose minimiser is known; 200 SGD steps with momentum must reach it
    rng = np.random.default_rng(3)
    x = rng.standard_normal((16, 3)).astype(np.float32)
    w_true = rng.standard_normal((3, 2)).astype(np.float32)
    w = nn.Parameter(np.zeros((3, 2), np.float32))
    opt = optim.SGD([w], lr=0.02, momentum=0.9)
    for _ in range(200):
        loss = (((mg.tensor(x) @ w) - mg.tensor(x @ w_true)) ** 2).sum() * 0.5
        opt.zero_grad()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.data, w_true, atol=1e-3)


def test_parameters_from_a_module_generator():
    model = nn.Linear(4, 3)
    opt = optim.SGD(model.parameters(), lr=0.1)
    assert len(opt.param_groups[0]["params"]) == 2


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD([], lr=0.1), "empty"),
    (lambda p: optim.SGD(p, lr=-1.0), "lr=-1.0"),
    (lambda p: optim.SGD(p, lr=0.1, momentum=-0.5), "momentum"),
    (lambda p: optim.Adam(p, betas=(0.9, 1.0)), "betas"),
    (lambda p: optim.Adam(p, weight_decay=-1), "weight_decay"),
    (lambda p: optim.SGD([{"params": p, "betas": (0.9, 0.9)}], lr=0.1), "betas"),
    (lambda p: optim.SGD(p + p[:1], lr=0.1), "more than one place"),
    (lambda p: optim.SGD([mg.tensor([1.0, 2.0])], lr=0.1), "requires_grad"),
])
def test_bad_arguments_raise_clear_errors(make, message):
    with pytest.raises(ValueError, match=message):
        make(make_params())


@pytest.mark.slow  # importing torch alone takes seconds
def test_against_torch_when_installed():
    torch = pytest.importorskip("torch")
    params = make_params()
    grads = grad_sequence(params, steps=5)
    for mine_cls, torch_cls, kw in [(optim.SGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, weight_decay=0.1)),
                                    (optim.Adam, torch.optim.Adam, dict(lr=1e-2, weight_decay=0.1)),
                                    (optim.AdamW, torch.optim.AdamW, dict(lr=1e-2, weight_decay=0.3))]:
        mine = make_params()
        theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in mine]
        got = run(mine_cls(mine, **kw), mine, grads)
        topt = torch_cls(theirs, **kw)
        for step_grads in grads:
            for t, g in zip(theirs, step_grads):
                t.grad = torch.from_numpy(g.copy())
            topt.step()
        assert_close(got, [t.detach().numpy().astype(np.float64) for t in theirs])
