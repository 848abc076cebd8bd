"""Splitting one global batch over the ranks (lesson `09_data_parallel`).

Every rank draws the same global batch of B examples (same seed) and keeps rows r·B/W … (r+1)·B/W.
Each rank's loss is the mean over its B/W rows, and averaging the W gradients gives the gradient of
the mean over all B rows:  ∇ (1/B) Σ_i ℓ_i = (1/W) Σ_r ∇ (W/B) Σ_{i ∈ rank r} ℓ_i.
So W ranks take exactly the optimizer steps of one process on the whole batch.
"""
import os
import sys

import numpy as np

from .process_group import ReduceOp, all_reduce, broadcast, get_rank, get_world_size


def check_global_batch(batch_size, world_size=None):
    """Raise ValueError unless the global batch splits evenly over the ranks (equal shares keep the mean exact)."""
    world_size = get_world_size() if world_size is None else world_size
    if batch_size % world_size:
        raise ValueError(f"the global batch size {batch_size} does not divide by the world size {world_size}: "
                         f"every rank needs the same number of examples; use a multiple of {world_size}")
    return batch_size // world_size


def local_slice(batch_size):
    """The rows of the global batch this rank trains on: slice(r·B/W, (r+1)·B/W)."""
    per_rank = check_global_batch(batch_size)
    rank = get_rank()
    return slice(rank * per_rank, (rank + 1) * per_rank)


class DataParallelJob:
    """What a training loop changes to run data-parallel under mpiexec (used by `python -m minigrad gpt`).

    Every rank draws the same global batch and trains on `local(x, y)`, its rows; `wrap(model)` adds
    DistributedDataParallel; `is_main` (rank 0) alone prints, evaluates and saves — other ranks' stdout
    goes to /dev/null; `agree(flag)` makes every rank follow rank 0's decision (a time budget ends on
    different steps on different clocks); `mean(x)` is a number averaged over ranks. In a world of one
    each of these is the identity.
    """

    def __init__(self, batch_size):
        self.rows = local_slice(batch_size)  # raises ValueError on a batch that does not split evenly
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        if not self.is_main:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the whole life of this rank

    def wrap(self, model):
        from ..nn.parallel import DistributedDataParallel
        return DistributedDataParallel(model) if self.world_size > 1 else model

    def local(self, x, y):
        return x[self.rows], y[self.rows]

    def agree(self, flag):
        decision = np.array([bool(flag)])
        broadcast(decision, src=0)
        return bool(decision[0])

    def mean(self, value):
        value = np.array([float(value)])
        all_reduce(value, op=ReduceOp.AVG)
        return float(value[0])
