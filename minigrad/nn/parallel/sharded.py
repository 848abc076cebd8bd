"""ShardedParameter: a parameter of which each rank holds a different piece (lesson `09_data_parallel`).

A tensor-parallel weight slice or a ZeRO optimizer shard. Anything that sums over the whole model —
the gradient norm in `nn.utils.clip_grad_norm_` — must add up the pieces of every rank for these, but
count a replicated parameter (the same on every rank) only once.
"""
from ..module import Parameter


class ShardedParameter(Parameter):
    """A Parameter whose values differ across ranks: together the W pieces make the full tensor."""

    __slots__ = ()
