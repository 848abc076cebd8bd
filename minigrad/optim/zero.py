"""ZeRO stage 1: the optimizer state sharded over the ranks (lesson `09_data_parallel`).

Adam keeps two numbers per parameter (m and v), so with N parameters in float32 every rank of plain
data parallelism holds 4N bytes of weights, 4N of gradients and 8N of optimizer state. ZeRO-1 keeps the
state of 1/W of the parameters on each rank (8N/W bytes), and one step becomes

    reduce-scatter   rank r receives the mean over ranks of its shard r of the flat gradient
    update           the wrapped optimizer updates shard r of the flat parameters (elementwise rules
                     like SGD and Adam give the same numbers as on the whole vector)
    all-gather       every rank receives every updated shard: the full parameters again

The reduce-scatter plus the all-gather move as many bytes as the one all-reduce of plain data
parallelism, so the memory saving is free in communication.
"""
import numpy as np

from .. import distributed as dist
from ..nn.parallel.sharded import ShardedParameter
from ..autograd import modified_in_place
from .adam import AdamW


def optimizer_state_bytes(optimizer):
    """Bytes of arrays held in optimizer.state (e.g. Adam's m and v): what ZeRO divides by W."""
    return sum(v.nbytes for state in optimizer.state.values() for v in state.values() if isinstance(v, np.ndarray))


class _FlatGroup:
    """One parameter group flattened into a vector padded to a multiple of W; this rank's shard of it."""

    def __init__(self, params, world, rank):
        dtypes = {p.data.dtype for p in params}
        if len(dtypes) != 1 or next(iter(dtypes)).kind != "f":
            raise TypeError(f"ZeroRedundancyOptimizer: a parameter group must hold parameters of one float dtype, "
                            f"got {sorted(map(str, dtypes))}")
        self.params = params
        self.offsets = np.concatenate([[0], np.cumsum([p.data.size for p in params])])
        n = int(self.offsets[-1])
        self.shard_size = -(-n // world)  # ceil(n / W)
        self.flat = np.zeros(self.shard_size * world, dtype=params[0].data.dtype)  # (W·S,), the tail is padding
        for p, lo, hi in zip(params, self.offsets[:-1], self.offsets[1:]):
            self.flat[lo:hi] = p.data.ravel()
        self.shard = ShardedParameter(self.flat[rank * self.shard_size:(rank + 1) * self.shard_size].copy())  # (S,)

    def gather_gradients(self):
        for i, (p, lo, hi) in enumerate(zip(self.params, self.offsets[:-1], self.offsets[1:])):
            if p.grad is None:
                raise RuntimeError(f"ZeroRedundancyOptimizer: parameter {i} of shape {tuple(p.shape)} has no gradient; "
                                   "every rank must update every parameter of the flat shards together")
            self.flat[lo:hi] = p.grad.ravel()
        self.flat[self.offsets[-1]:] = 0
        return self.flat

    def scatter_parameters(self):
        for p, lo, hi in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p.data[...] = self.flat[lo:hi].reshape(p.data.shape)
            modified_in_place(p, "ZeroRedundancyOptimizer.step()")  # a graph that used p is stale now


class ZeroRedundancyOptimizer:
    """`optimizer_class(**kw)` run on this rank's 1/W shard of the parameters (ZeRO stage 1).

    Call it like any optimizer after a plain local backward (no DDP needed: step() averages the
    gradients itself; under DDP they are averaged already and the mean of equal values changes nothing).
    After step() every rank holds the parameters an unsharded optimizer would hold. `param_groups` are
    the wrapped optimizer's (change "lr" there as usual); `.optim` is the wrapped optimizer.
    """

    def __init__(self, params, optimizer_class=AdamW, **kw):
        dist.init_process_group()
        world, rank = dist.get_world_size(), dist.get_rank()
        params = list(params)
        if not params:
            raise ValueError("ZeroRedundancyOptimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.groups = []
        inner_groups = []
        for group in groups:
            members = list(group["params"])
            for p in members:
                dist.broadcast(p.data, src=0)  # start from rank 0's values, as DDP does
            flat = _FlatGroup(members, world, rank)
            self.groups.append(flat)
            inner_groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": [flat.shard]})
        self.optim = optimizer_class(inner_groups, **kw)
        self._reduced = False

    @property
    def param_groups(self):
        return self.optim.param_groups

    @property
    def state(self):
        return self.optim.state

    def zero_grad(self, set_to_none=True):
        for group in self.groups:
            for p in group.params:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0
        self._reduced = False

    def reduce_gradients(self):
        """Reduce-scatter: this rank's shard.grad ← the mean over ranks of its shard of the flat gradient."""
        if self._reduced:
            return
        for group in self.groups:
            group.shard.grad = np.empty_like(group.shard.data)  # (S,)
            dist.reduce_scatter_into(group.shard.grad, group.gather_gradients(), op=dist.ReduceOp.AVG)
        self._reduced = True

    def clip_grad_norm_(self, max_norm):
        """Clip by the global gradient norm before step(): the norm of the reduced gradient, summed over shards."""
        from ..nn.utils import clip_grad_norm_
        self.reduce_gradients()
        return clip_grad_norm_([g.shard for g in self.groups], max_norm)

    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self.reduce_gradients()
        self.optim.step()
        for group in self.groups:
            dist.all_gather_into(group.flat, group.shard.data)  # every rank's updated shard
            group.scatter_parameters()
        self._reduced = False
        return loss

    def __repr__(self):
        sizes = [g.shard.numel() for g in self.groups]
        return f"ZeroRedundancyOptimizer({self.optim!r}; this rank's shards of {sizes} numbers)"
