"""Gradient clipping by the global norm (lesson `09_data_parallel`).

    ‖g‖ = √(Σ_p Σ_i g_{p,i}²)          over every parameter p (the whole model as one vector)
    g ← g · min(1, max_norm / (‖g‖ + 1e-6))

With sharded parameters (a ZeRO shard, a tensor-parallel slice) each rank holds part of the vector:
the sum of squares of those parts is all-reduced before the root, while a replicated parameter (the
same on every rank) is counted once.
"""
import math

import numpy as np

from ... import distributed as dist
from ..parallel.sharded import ShardedParameter


def clip_grad_norm_(parameters, max_norm, norm_type=2.0):
    """Scale the gradients in place so that their global 2-norm is at most max_norm; return that norm
    (before clipping) as a NumPy float64 scalar: a Python float that also has `.item()`, so code written for
    `torch.nn.utils.clip_grad_norm_`'s 0-d tensor reads it too. Parameters without .grad are skipped.
    """
    if norm_type != 2.0:
        raise ValueError(f"clip_grad_norm_: only the 2-norm is implemented, got norm_type={norm_type}")
    if max_norm < 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0, got {max_norm}")
    params = [parameters] if hasattr(parameters, "data") else list(parameters)
    grads = [(p, p.grad) for p in params if p.grad is not None]
    squares = np.zeros(2)  # [replicated, sharded] sums of squares, in float64
    for p, g in grads:
        squares[int(isinstance(p, ShardedParameter))] += np.vdot(g.ravel().astype(np.float64), g.ravel())
    sharded = squares[1:].copy()
    dist.all_reduce(sharded)
    total = math.sqrt(squares[0] + sharded[0])
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        for _, g in grads:
            g *= g.dtype.type(coef)
    return np.float64(total)
