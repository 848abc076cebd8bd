"""Splitting one global batch over the ranks (lesson `09_data_parallel`).

Every rank draws the same global batch of B examples (same seed) and keeps rows r·B/W … (r+1)·B/W.
Each rank's loss is the mean over its B/W rows, and averaging the W gradients gives the gradient of
the mean over all B rows:  ∇ (1/B) Σ_i ℓ_i = (1/W) Σ_r ∇ (W/B) Σ_{i ∈ rank r} ℓ_i.
So W ranks take exactly the optimizer steps of one process on the whole batch.
"""
from .process_group import get_rank, get_world_size


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
