"""In-place safety: a tensor that backward reads, changed in place after the op used it, makes backward()
raise an error naming the op, the tensor and the change (PyTorch's version counter), never a silently
wrong gradient; inside no_grad too. Ops whose backward does not read a value still run after it changed."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim


def leaf(*values):
    return mg.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_a_leaf_changed_under_no_grad_after_mul_used_it():
    w, x = leaf(1.0, 2.0, 3.0), mg.tensor(np.array([4.0, 5.0, 6.0]))
    loss = (w * x).sum()
    with mg.no_grad():
        w[0] = 10.0
    with pytest.raises(RuntimeError, match=r"backward through mul: its input 0, a float64 tensor of shape \(3,\) "
                                           r"\(a leaf\), was modified in place by t\[index\] = value after mul "
                                           r"used it \(it is at version 1, mul saw version 0\)"):
        loss.backward()
    assert w.grad is None and w._version == 1


def test_an_output_that_backward_reads_changed_by_zero_():
    x = leaf(0.5, -1.0)
    y = x.exp()
    loss = y.sum()
    with mg.no_grad():
        y.zero_()
    with pytest.raises(RuntimeError, match=r"backward through exp: its own output, .* modified in place by zero_\(\)"):
        loss.backward()


def test_views_share_the_counter_of_the_memory():
    x = leaf(1.0, 2.0, 3.0, 4.0)
    h = x * 2                                       # an intermediate that the next mul reads
    loss = (h * h).sum()
    view = h.reshape(2, 2).transpose(0, 1)[0]       # a view of h's memory, three ops away
    with mg.no_grad():
        view[1] = 0.0                               # writes h[2]
    with pytest.raises(RuntimeError, match="modified in place by t\\[index\\] = value"):
        loss.backward()
    detached = x.detach()                           # detach shares memory, so the counter too
    loss = (x * x).sum()
    detached.zero_()
    with pytest.raises(RuntimeError, match="zero_"):
        loss.backward()


@pytest.mark.parametrize("make", [lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
                                  lambda ps: optim.Adam(ps, lr=0.1), lambda ps: optim.AdamW(ps, lr=0.1),
                                  lambda ps: optim.ZeroRedundancyOptimizer(ps, lr=0.1)])
def test_an_optimizer_step_between_forward_and_backward(make):
    mg.manual_seed(0)
    layer = nn.Linear(3, 2)
    opt = make(layer.parameters())
    x = mg.tensor(np.ones((4, 3), dtype=np.float32))
    layer(x).sum().backward()                       # gradients for a first step
    loss = layer(x).sum()                           # a graph that read the weights
    opt.step()
    name = type(opt).__name__
    with pytest.raises(RuntimeError, match=rf"backward through linear: its input 1, .* \(a leaf\), was modified in "
                                           rf"place by {name}.step\(\)"):
        loss.backward()


def test_load_state_dict_after_forward():
    layer = nn.Linear(2, 2)
    loss = layer(mg.ones(1, 2)).sum()
    layer.load_state_dict({k: v.numpy() * 2 for k, v in layer.state_dict().items()})
    with pytest.raises(RuntimeError, match=r"load_state_dict\(\)"):
        loss.backward()


def test_a_value_backward_does_not_read_may_change():
    """add's backward needs no input values (PyTorch allows this too); the gradient stays right."""
    a, b = leaf(1.0, 2.0), leaf(3.0, 4.0)
    loss = (a + b).sum() + (a * 3).sum()
    with mg.no_grad():
        b[0] = -1.0
    loss.backward()
    np.testing.assert_array_equal(a.grad, [4.0, 4.0])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_ordinary_training_never_raises_and_learns():
    mg.manual_seed(1)
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = optim.AdamW(model.parameters(), lr=0.05)
    x = mg.tensor(np.random.default_rng(0).standard_normal((32, 2)).astype(np.float32))
    y = (x.data[:, :1] * x.data[:, 1:]).astype(np.float32)
    losses = []
    for _ in range(60):
        loss = F.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert model[0].weight._version == 60


def test_a_second_backward_after_a_change_raises_too():
    x = leaf(1.0, 2.0)
    y = x.sigmoid()
    loss = (y * y).sum()
    loss.backward(retain_graph=True)
    first = x.grad.copy()
    with mg.no_grad():
        y[1] = 0.0
    with pytest.raises(RuntimeError, match="backward through mul"):
        loss.backward()
    np.testing.assert_array_equal(x.grad, first)   # nothing half-accumulated


# ----- raise exactly where PyTorch raises --------------------------------------------------------------
OPS = {
    "mul": lambda a, b: a * b, "div": lambda a, b: a / b, "add": lambda a, b: a + b, "sub": lambda a, b: a - b,
    "pow": lambda a, b: a ** b, "matmul": lambda a, b: a.reshape(1, 3) @ b.reshape(3, 1),
    "exp": lambda a, b: a.exp() * 1, "sigmoid": lambda a, b: a.sigmoid() * 1, "tanh": lambda a, b: a.tanh() * 1,
    "log": lambda a, b: a.log(), "relu": lambda a, b: a.relu(), "sum": lambda a, b: a.sum() + b.sum(),
    "reshape": lambda a, b: a.reshape(3, 1), "softmax": lambda a, b: a.softmax(0) * 1,
}


def run(op, changed, lib):
    """(raised, gradients of a and b) for OPS[op] on non-leaf copies of a and b, `changed` doubled in place
    after the op; lib is minigrad or torch."""
    if lib is mg:
        a, b = leaf(0.5, 1.5, 2.0), leaf(1.5, 2.5, 3.0)
    else:
        a = lib.tensor([0.5, 1.5, 2.0], dtype=lib.float64, requires_grad=True)
        b = lib.tensor([1.5, 2.5, 3.0], dtype=lib.float64, requires_grad=True)
    a2, b2 = a * 1, b * 1                                               # non-leaves: torch allows in-place on them
    out = OPS[op](a2, b2)
    if changed:
        with lib.no_grad():
            target = a2 if changed == "a" else b2
            target[...] = target * 2
    try:
        out.sum().backward()
    except RuntimeError as e:
        assert lib is not mg or "modified in place" in str(e)
        return True, None
    grads = [t.grad if lib is mg or t.grad is None else t.grad.numpy() for t in (a, b)]
    return False, [np.zeros(3) if g is None else g for g in grads]


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("changed", ["a", "b"])
def test_never_a_silently_wrong_gradient(op, changed):
    """Either backward raises, or the gradient is the one of the values the op really used."""
    raised, grads = run(op, changed, mg)
    if not raised:
        _, expected = run(op, None, mg)
        for got, want in zip(grads, expected):
            np.testing.assert_array_equal(got, want)


# minigrad's rule reads other values than PyTorch's: div's gradient in b is −g·out/b (the output, not a)
READS_OTHER_VALUES = {("div", "a")}


@pytest.mark.parametrize("op", sorted(OPS))
@pytest.mark.parametrize("changed", ["a", "b"])
def test_raises_exactly_where_torch_raises(op, changed):
    torch = pytest.importorskip("torch", reason="PyTorch is the reference of this comparison")
    if (op, changed) in READS_OTHER_VALUES:
        assert run(op, changed, torch)[0] and not run(op, changed, mg)[0]
    else:
        assert run(op, changed, mg)[0] == run(op, changed, torch)[0]
