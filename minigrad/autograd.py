"""The reverse-mode engine: grad mode, topological order, the backward pass.

Every op records its inputs (`_parents`) and a `_backward(grad)` closure that
turns the gradient of its output into one gradient per input. `backward()`
walks the graph once, in reverse topological order, applying the chain rule.
"""
import contextlib
import threading
import weakref

import numpy as np


class _GradMode(threading.local):
    """Per thread, as in PyTorch: `no_grad()` in one thread leaves every other thread's graphs alone.
    Each thread starts with grad enabled; `previous` stacks the modes that `with` blocks restore."""
    enabled = True

    def __init__(self):
        self.previous = []


_mode = _GradMode()
_post_accumulate_grad_hooks = {}  # id(leaf) -> [hook(leaf)], see register_post_accumulate_grad_hook
_backward_end_callbacks = []  # run once when the current backward pass ends, see queue_callback


def is_grad_enabled():
    """Whether ops in this thread record the graph that backward() walks."""
    return _mode.enabled


class set_grad_enabled(contextlib.ContextDecorator):
    """Switch graph building on or off (in this thread) for a `with` block or a decorated function, then restore it."""

    def __init__(self, mode):
        self.mode = bool(mode)

    def __enter__(self):
        _mode.previous.append(_mode.enabled)
        _mode.enabled = self.mode

    def __exit__(self, *exc):
        _mode.enabled = _mode.previous.pop()
        return False


class no_grad(set_grad_enabled):
    """Inside `with mg.no_grad():` (or a function decorated with `@mg.no_grad()` or `@mg.no_grad`) no graph is built."""

    def __new__(cls, func=None):
        # the bare `@mg.no_grad` hands over the function itself, as PyTorch allows: decorate it at once
        return super().__new__(cls) if func is None else cls()(func)

    def __init__(self, func=None):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """Turns graph building back on inside a `no_grad` region."""

    def __init__(self):
        super().__init__(True)


# ----- in-place safety: PyTorch's version counter ---------------------------------------------------
# Every tensor counts the in-place changes to its memory (views share the count). An op records the count
# of each tensor its backward reads; backward() compares, and refuses to use a value that has changed since.

NOTHING_SAVED = ((), (), None)


def saved_versions(tensors, output=None):
    """What an op records: the tensors its backward reads, their versions now, and the output's if it reads it."""
    if not tensors and output is None:
        return NOTHING_SAVED
    return tensors, tuple(t._version_counter[0] for t in tensors), None if output is None else output._version_counter[0]


def modified_in_place(tensor, how):
    """Count an in-place change of `tensor`'s memory (`how` names it for the error message)."""
    counter = tensor._version_counter
    counter[0] += 1
    counter[1] = how


def check_saved_versions(node):
    """Raise if a tensor node's backward reads was changed in place after the op used it."""
    tensors, versions, output_version = node._saved
    for t, version in zip(tensors, versions):
        if t._version_counter[0] != version:
            index = next(i for i, p in enumerate(node._parents) if p is t)  # `in` would compare elementwise
            _raise_modified(node, t, version, f"input {index}")
    if output_version is not None and node._version_counter[0] != output_version:
        _raise_modified(node, node, output_version, "own output")


def _raise_modified(node, tensor, version, which):
    counter = tensor._version_counter
    kind = "a leaf" if tensor._backward is None else "the output of " + (tensor._op or "an op")
    raise RuntimeError(
        f"backward through {node._op or 'an op'}: its {which}, a {tensor.data.dtype} tensor of shape "
        f"{tuple(tensor.data.shape)} ({kind}), was modified in place by {counter[1]} after {node._op or 'the op'} "
        f"used it (it is at version {counter[0]}, {node._op or 'the op'} saw version {version}), so the gradient "
        f"would be computed from the wrong values. Change it only after backward(), or compute from a copy.")


def _released(grad):
    raise RuntimeError("Trying to backward through the graph a second time: its intermediate values were "
                       "freed after the first backward(). Call backward(retain_graph=True) the first time "
                       "if you need to go through it again.")


def topological_order(root):
    """Nodes that need a gradient, each after all of its inputs (iterative DFS, so deep graphs are fine).

    Of a node's inputs the one with the longest path below it is visited first, so in the reversed
    order that backward follows, a short branch ending in a parameter (W → Wᵀ → matmul) comes right
    after the op that uses it, before the long branch towards the input: each parameter's gradient
    is complete, and its post-accumulate hook fires, as early as the graph allows (data-parallel
    training sends it while backward goes on).
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        parents = [p for p in node._parents if p._requires_grad and id(p) not in visited]
        # stacked lowest first, so the highest is explored first (heights: Tensor.from_op)
        if len(parents) == 2:  # the common case (binary ops), without sort's overhead
            low, high = parents if parents[0]._height <= parents[1]._height else parents[::-1]
            stack.append((low, False))
            stack.append((high, False))
            continue
        if len(parents) > 2:
            parents.sort(key=_height)
        for parent in parents:
            stack.append((parent, False))
    return order


def _height(node):
    return node._height


class RemovableHandle:
    """Returned by a hook registration; `.remove()` unregisters the hook."""

    def __init__(self, hooks, hook):
        self._hooks, self._hook = hooks, hook

    def remove(self):
        if self._hook in self._hooks:
            self._hooks.remove(self._hook)


def register_post_accumulate_grad_hook(leaf, hook):
    """Call hook(leaf) each time backward has finished accumulating this backward's gradient into leaf.grad.

    A leaf's contributions are summed before it is reached, so the hook fires once per backward with the
    leaf's final gradient: data-parallel training launches its gradient all-reduce from here, while the
    rest of the backward pass is still running (lesson `09_data_parallel`).
    """
    if leaf._backward is not None:
        raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors (parameters, inputs) accumulate "
                           "a .grad; this tensor is the output of an op")
    if id(leaf) not in _post_accumulate_grad_hooks:  # keyed by id (Tensor == is elementwise), dropped with the leaf
        _post_accumulate_grad_hooks[id(leaf)] = []
        weakref.finalize(leaf, _post_accumulate_grad_hooks.pop, id(leaf), None)
    hooks = _post_accumulate_grad_hooks[id(leaf)]
    hooks.append(hook)
    return RemovableHandle(hooks, hook)


def queue_callback(callback):
    """Run callback() once, when the backward pass that is running now has finished (e.g. to wait for the
    gradient all-reduces that hooks launched). Only valid inside a backward pass."""
    _backward_end_callbacks.append(callback)


def run_backward(root, gradient, retain_graph=False):
    """Chain rule over the graph: d(root)/d(leaf) accumulated into every leaf's `.grad`."""
    try:
        _chain_rule(root, gradient, retain_graph)
        while _backward_end_callbacks:
            _backward_end_callbacks.pop(0)()
    finally:
        _backward_end_callbacks.clear()


def _chain_rule(root, gradient, retain_graph):
    grads = {id(root): gradient}
    for node in reversed(topological_order(root)):
        grad = grads.pop(id(node), None)
        if grad is None:
            continue
        if node._backward is None:  # a leaf: keep the gradient, in the leaf's own dtype
            if node.grad is None:
                node.grad = np.array(grad, dtype=node.data.dtype, copy=True)
            else:
                node.grad += grad
            for hook in _post_accumulate_grad_hooks.get(id(node), ()):
                hook(node)
            continue
        if node._saved is not NOTHING_SAVED:
            check_saved_versions(node)
        parent_grads = node._backward(grad)
        for parent, parent_grad in zip(node._parents, parent_grads):
            if parent_grad is None or not parent._requires_grad:
                continue
            if parent_grad.shape != parent.data.shape:
                raise RuntimeError(f"internal error in the backward rule of {node._op or 'an op'}: it returned a "
                                   f"gradient of shape {parent_grad.shape} for an input of shape {parent.data.shape}")
            key = id(parent)
            grads[key] = grads[key] + parent_grad if key in grads else parent_grad
        if not retain_graph:
            node._parents = ()
            node._backward = _released
            node._saved = NOTHING_SAVED
