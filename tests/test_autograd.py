"""The engine: reuse, accumulation, deep graphs, no_grad, graph release, and the errors it raises."""
import gc
import threading
import weakref

import numpy as np
import pytest

import minigrad as mg


def test_node_used_twice_accumulates():
    x = mg.tensor(3.0, requires_grad=True)
    y = x * x + x          # dy/dx = 2x + 1
    y.backward()
    assert x.grad == pytest.approx(7.0)


def test_diamond_graph():
    x = mg.tensor([0.5, -1.0], dtype=mg.float64, requires_grad=True)
    a = x.exp()
    b = a * x
    c = a + b              # c = e^x (1 + x), dc/dx = e^x (2 + x)
    c.sum().backward()
    np.testing.assert_allclose(x.grad, np.exp([0.5, -1.0]) * (2 + np.array([0.5, -1.0])))


def test_gradients_accumulate_across_backward_calls():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [5, 5])
    x.grad = None
    (x * 3).sum().backward()
    np.testing.assert_array_equal(x.grad, [3, 3])


def test_leaf_gradients_never_alias():
    a = mg.ones(3, requires_grad=True)
    b = mg.ones(3, requires_grad=True)
    (a + b).sum().backward()
    a.grad += 1
    np.testing.assert_array_equal(b.grad, [1, 1, 1])


def test_chain_of_ten_thousand_ops():
    x = mg.tensor(1.0, dtype=mg.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.backward()
    assert x.grad == pytest.approx(1.0001 ** 10_000, rel=1e-9)
    del y
    gc.collect()


def test_no_grad_builds_no_graph():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    with mg.no_grad():
        y = (x * 2).exp()
    assert not y.requires_grad and y._parents == () and y._backward is None

    @mg.no_grad()
    def f(t):
        return t * 2
    assert not f(x).requires_grad
    assert (x * 2).requires_grad  # the mode is restored afterwards
    assert mg.is_grad_enabled()


def run_in_threads(*functions):
    """Run each function in its own thread at the same time; re-raise the first exception."""
    errors = []

    def guarded(function):
        try:
            function()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test's thread
            errors.append(exc)
    threads = [threading.Thread(target=guarded, args=(f,)) for f in functions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    if errors:
        raise errors[0]


def test_grad_mode_belongs_to_its_thread():
    """As in PyTorch: no_grad in one thread does not stop another thread from building its graph,
    even when both threads sit inside their regions at the same moment (the barrier)."""
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    meet = threading.Barrier(2, timeout=30)
    seen = {}

    @mg.no_grad()
    def decorated():
        meet.wait()
        return x * 2

    def without_grad():
        with mg.no_grad():
            meet.wait()  # the other thread is now inside set_grad_enabled(True) / outside any region
            seen["no_grad"] = (x * 2).requires_grad, mg.is_grad_enabled()
            meet.wait()
        seen["after"] = mg.is_grad_enabled()

    def with_grad():
        with mg.set_grad_enabled(True):
            meet.wait()
            seen["grad"] = (x * 2).requires_grad, mg.is_grad_enabled()
            meet.wait()

    run_in_threads(without_grad, with_grad)
    assert seen == {"no_grad": (False, False), "grad": (True, True), "after": True}

    results = {}  # one decorated function in two threads: each restores its own mode

    def call(name, enabled):
        with mg.set_grad_enabled(enabled):
            results[name] = (decorated().requires_grad, mg.is_grad_enabled())
    run_in_threads(lambda: call("a", True), lambda: call("b", False))
    assert results == {"a": (False, True), "b": (False, False)}
    assert mg.is_grad_enabled() and (x * 2).requires_grad


def test_graph_is_released_after_backward():
    x = mg.randn(100, requires_grad=True)
    hidden = x.exp()
    ref = weakref.ref(hidden)
    loss = (hidden * 2).sum()
    del hidden
    gc.collect()
    assert ref() is not None    # kept alive by the graph until backward
    loss.backward()
    gc.collect()
    assert ref() is None        # backward dropped the graph and its buffers
    with pytest.raises(RuntimeError, match="second time"):
        loss.backward()


def test_retain_graph_allows_a_second_backward():
    x = mg.tensor(2.0, requires_grad=True)
    y = x * x
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad == pytest.approx(8.0)


def test_detach_cuts_the_graph():
    x = mg.tensor([1.0], requires_grad=True)
    y = x.detach() * x
    y.sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0])


def test_backward_with_explicit_gradient():
    x = mg.tensor([1.0, 2.0], requires_grad=True)
    (x * x).backward(mg.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2, 40])


def test_manual_seed_makes_draws_reproducible():
    mg.manual_seed(3)
    a = mg.randn(4), mg.rand(2)
    mg.manual_seed(3)
    b = mg.randn(4), mg.rand(2)
    np.testing.assert_array_equal(a[0].data, b[0].data)
    np.testing.assert_array_equal(a[1].data, b[1].data)
    assert a[0].dtype == mg.float32 and ((a[1].data >= 0) & (a[1].data < 1)).all()


def test_factories_and_attributes():
    assert mg.zeros(2, 3).shape == (2, 3) and mg.ones((2,)).data.sum() == 2
    assert mg.arange(5).dtype == mg.int64 and mg.arange(0, 1, 0.25).shape == (4,)
    t = mg.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert mg.zeros_like(t).shape == (2, 2) and mg.ones_like(t).dtype == mg.float32
    assert t.ndim == 2 and t.device == "cpu" and t.T.shape == (2, 2) and t[1, 0].item() == 3.0
    assert isinstance(t.numpy(), np.ndarray) and t.to("cpu") is t
    assert t.requires_grad_().requires_grad


# ----- errors that teach ---------------------------------------------------------------------

def test_shape_mismatch_names_op_and_shapes():
    a, b = mg.ones(2, 3), mg.ones(4, 5)
    with pytest.raises(ValueError, match=r"matmul.*\(2, 3\).*\(4, 5\)"):
        a @ b
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        a.reshape(4, 2)
    with pytest.raises(ValueError, match=r"cat.*\(2, 3\).*\(4, 5\)"):
        mg.cat([a, b], 0)


def test_broadcast_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"add.*\(2, 3\).*\(4,\)"):
        mg.ones(2, 3) + mg.ones(4)


def test_backward_on_non_scalar_says_why():
    y = mg.ones(3, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match=r"scalar.*\(3,\)"):
        y.backward()


def test_requires_grad_on_integers_raises():
    with pytest.raises(RuntimeError, match="int64"):
        mg.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="floating"):
        mg.arange(3).requires_grad_()


def test_cuda_without_cupy_or_gpu_says_what_is_missing():
    with pytest.raises(RuntimeError, match=r"(CuPy is not installed|not installed|no CUDA GPU).*"):
        mg.tensor([1.0], device="cuda")


def test_bad_op_leaves_no_half_built_graph():
    x = mg.ones(2, 3, requires_grad=True)
    with pytest.raises(ValueError):
        (x * 2) @ mg.ones(2, 3)
    (x * 2).sum().backward()  # the failed call left nothing behind that breaks the next backward
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 2.0))


def test_zero_dim_results_stay_arrays_on_the_cpu():
    x = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    m = x.mean()
    assert isinstance(m.data, np.ndarray) and m.device == "cpu"
    (m * 2).backward(mg.tensor(1.0))
    np.testing.assert_allclose(x.grad, [2 / 3] * 3)


def test_post_accumulate_grad_hook_sees_the_final_gradient_once_per_backward():
    x = mg.tensor([1.0, 2.0], dtype=mg.float64, requires_grad=True)
    seen = []
    handle = x.register_post_accumulate_grad_hook(lambda leaf: seen.append(leaf.grad.copy()))
    (x * x + 3 * x).sum().backward()  # x used twice: the hook sees the sum 2x + 3, not a partial term
    assert len(seen) == 1
    np.testing.assert_allclose(seen[0], [5.0, 7.0])
    (2 * x).sum().backward()  # accumulation: the hook sees the running total
    np.testing.assert_allclose(seen[1], [7.0, 9.0])
    handle.remove()
    x.sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="leaf"):
        (x * 2).register_post_accumulate_grad_hook(print)


def test_queue_callback_runs_after_every_leaf_has_its_gradient():
    from minigrad import autograd
    a = mg.tensor(2.0, requires_grad=True)
    b = mg.tensor(3.0, requires_grad=True)
    grads_at_end = []
    a.register_post_accumulate_grad_hook(
        lambda leaf: autograd.queue_callback(lambda: grads_at_end.append((float(a.grad), float(b.grad)))))
    (a * b).backward()
    assert grads_at_end == [(3.0, 2.0)]
    (a * b).backward()  # the queue was emptied: one callback per queueing backward
    assert grads_at_end == [(3.0, 2.0), (6.0, 4.0)]


def test_parameter_gradients_are_complete_as_early_as_the_graph_allows():
    # three layers: backward reaches layer 3's parameters first; each parameter's hook must fire before the
    # backward pass goes on to the layer below (a data-parallel all-reduce starts there), not all at the end
    import minigrad.nn as nn
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    events = []
    for name, p in model.named_parameters():
        p.register_post_accumulate_grad_hook(lambda leaf, name=name: events.append(name))
    x = mg.randn(5, 3, requires_grad=True)
    model(x).sum().backward()
    layers = [int(name.split(".")[0]) for name in events]
    assert layers == [4, 4, 2, 2, 0, 0], events
