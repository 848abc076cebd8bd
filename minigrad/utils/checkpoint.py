"""Activation checkpointing: trade compute for memory (lesson `12_memory_and_precision`).

A plain forward pass keeps every intermediate array a backward rule needs, so memory grows with depth ×
activations per layer. `checkpoint(fn, *args)` runs fn without recording a graph and keeps only its
inputs; in the backward pass it runs fn again, this time recording, and backpropagates through that
copy. Each checkpointed segment costs one extra forward; the memory of its intermediates is needed only
while that one segment is being differentiated.

The random generator's state (and the autocast precision) are saved before the forward and restored for the
recomputation, so dropout draws the same masks and the gradients equal those of the plain run exactly.
"""
from .. import autograd
from ..amp.autocast import autocast, get_autocast_dtype
from ..random import generator
from ..tensor import Tensor

__all__ = ["checkpoint"]


def _random_state():
    return generator().bit_generator.state


def _set_random_state(state):
    generator().bit_generator.state = state


def checkpoint(fn, *args, **kwargs):
    """fn(*args, **kwargs), with its intermediates recomputed in backward instead of stored, like
    `torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False)`.

    fn must return a Tensor or a tuple/list of Tensors and must be deterministic given the random state
    (the state is restored for the recomputation). Tensor arguments that require grad get their gradients;
    parameters fn uses (e.g. a module's weights) accumulate theirs while the recomputation is differentiated.
    When fn is a Module its parameters count as inputs, so they get gradients even if no argument needs
    one; a plain function that closes over weights needs at least one argument that requires grad.
    """
    if not callable(fn):
        raise TypeError(f"checkpoint: the first argument must be a callable (a module or function), "
                        f"got {type(fn).__name__}")
    if not autograd.is_grad_enabled():
        return fn(*args, **kwargs)  # no graph would be kept anyway
    state, precision = _random_state(), get_autocast_dtype()
    with autograd.no_grad():
        outputs = fn(*args, **kwargs)
    single = isinstance(outputs, Tensor)
    outputs_tuple = (outputs,) if single else outputs
    if not isinstance(outputs_tuple, (tuple, list)) or not all(isinstance(o, Tensor) for o in outputs_tuple):
        raise TypeError(f"checkpoint: fn must return a Tensor or a tuple of Tensors, got {type(outputs).__name__}")
    parents = tuple(a for a in args if isinstance(a, Tensor))
    if hasattr(fn, "parameters"):  # a module: its weights need gradients even when no input does
        parents += tuple(p for p in fn.parameters() if p.requires_grad)
    recomputed = {}  # the graph rebuilt in backward, shared by the outputs, dropped once all are done

    def recompute():
        """fn again on detached copies of the inputs, from the saved random state, recording the graph."""
        after = _random_state()
        _set_random_state(state)
        try:
            inputs = [a.detach().requires_grad_(a.requires_grad) if isinstance(a, Tensor) else a for a in args]
            with autograd.enable_grad(), autocast(dtype=precision, enabled=precision is not None):
                result = fn(*inputs, **kwargs)
        finally:
            _set_random_state(after)  # draws after this backward are those the plain run would make
        recomputed["inputs"] = [x for x in inputs if isinstance(x, Tensor)]
        recomputed["outputs"] = (result,) if single else tuple(result)
        recomputed["pending"] = sum(o.requires_grad for o in wrapped)

    def backward_of(i):
        def backward(grad):
            if not recomputed:
                recompute()
            inputs, out = recomputed["inputs"], recomputed["outputs"][i]
            for x in inputs:
                x.grad = None
            recomputed["pending"] -= 1
            if out.requires_grad:
                autograd._chain_rule(out, grad, retain_graph=recomputed["pending"] > 0)
            grads = tuple(x.grad for x in inputs) + (None,) * (len(parents) - len(inputs))  # weights: done
            if recomputed["pending"] <= 0:
                recomputed.clear()
            return grads
        return backward

    wrapped = tuple(Tensor.from_op(o.data, parents, backward_of(i), "checkpoint")
                    for i, o in enumerate(outputs_tuple))
    return wrapped[0] if single else type(outputs)(wrapped) if isinstance(outputs, tuple) else list(wrapped)
