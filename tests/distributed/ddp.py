"""Run under mpiexec -n W: DistributedDataParallel against one process training on the global batch.

Every rank also trains a private copy of the model on the whole global batch, without any
communication: the reference. Prints `RESULT {json}` on rank 0 with the largest parameter differences.
"""
import json

import numpy as np
from mpi4py import MPI

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
import minigrad.distributed as dist
from minigrad.nn.parallel import DistributedDataParallel

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
B, STEPS = 4 * world, 4


def make_model(seed):
    mg.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def batch(step):
    rng = np.random.default_rng(1000 + step)  # the same global batch on every rank
    return rng.standard_normal((B, 5)).astype(np.float32), rng.integers(0, 3, B)


def loss_of(model, x, y):
    return F.cross_entropy(model(mg.tensor(x)), y)


def params_of(model):
    return np.concatenate([p.data.ravel() for p in model.parameters()])


def train(optimizer_class, kw, accumulate):
    """DDP on this rank's slice vs the reference on the whole batch; with accumulate, the slice runs as
    two micro-batches, the first under no_sync()."""
    reference = make_model(0)
    model = DistributedDataParallel(make_model(rank), bucket_cap_mb=0.0005)  # rank 0 has the reference init; 3+ buckets
    assert len(model._buckets) >= 3 or world == 1
    ref_opt, opt = optimizer_class(reference.parameters(), **kw), optimizer_class(model.parameters(), **kw)
    mine = dist.local_slice(B)
    local_spread = 0.0
    for step in range(STEPS):
        x, y = batch(step)
        ref_opt.zero_grad()
        loss_of(reference, x, y).backward()
        ref_opt.step()
        opt.zero_grad()
        xs, ys = x[mine], y[mine]
        if accumulate:
            half = len(xs) // 2
            with model.no_sync():
                (loss_of(model, xs[:half], ys[:half]) * 0.5).backward()
            first = np.concatenate([p.grad.ravel() for p in model.parameters()])
            (loss_of(model, xs[half:], ys[half:]) * 0.5).backward()
            # no_sync kept the first micro-batch local: the ranks' gradients still differed before the sync
            lo, hi = first.copy(), first.copy()
            MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, lo, op=MPI.MIN)
            MPI.COMM_WORLD.Allreduce(MPI.IN_PLACE, hi, op=MPI.MAX)
            local_spread = max(local_spread, float(np.abs(hi - lo).max()))
        else:
            loss_of(model, xs, ys).backward()
        opt.step()
    diff = np.abs(params_of(model.module) - params_of(reference)).max()
    moved = np.abs(params_of(reference) - params_of(make_model(0))).max()
    return float(diff), float(moved), local_spread


def launches_during_backward():
    """(leaf gradients accumulated when the first bucket's all-reduce started, leaves in all): DDP starts
    communicating before backward is over."""
    model = DistributedDataParallel(make_model(rank), bucket_cap_mb=0.0005)
    fired, first_launch = [], []
    for p in model.parameters():
        p.register_post_accumulate_grad_hook(lambda leaf: fired.append(1))  # runs after DDP's own hook
    launch = model._launch_ready

    def recording_launch(force=False):
        before = model._launched
        launch(force)
        if model._launched > before and not first_launch:
            first_launch.append(len(fired))
    model._launch_ready = recording_launch
    x, y = batch(0)
    loss_of(model, x[dist.local_slice(B)], y[dist.local_slice(B)]).backward()
    return first_launch[0], len(list(model.parameters()))


results = {}
for name, cls, kw in (("sgd", optim.SGD, dict(lr=0.5, momentum=0.9)), ("adamw", optim.AdamW, dict(lr=1e-2))):
    for accumulate in (False, True):
        results[f"{name}{'_no_sync' if accumulate else ''}"] = train(cls, kw, accumulate)

overlap = launches_during_backward()
all_results = MPI.COMM_WORLD.gather(results, root=0)
if rank == 0:
    worst = {k: max(r[k][0] for r in all_results) for k in results}
    moved = {k: results[k][1] for k in results}
    no_sync_spread = {k: results[k][2] for k in results if k.endswith("no_sync")}
    print("RESULT " + json.dumps(dict(world=world, diff=worst, moved=moved, no_sync_spread=no_sync_spread,
                                      first_launch=overlap)), flush=True)
