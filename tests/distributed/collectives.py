"""Run under mpiexec -n W: every collective against its closed form, the ring all-reduce against MPI's.

Prints one line `RESULT {json}` on rank 0 with the largest error of each check.
"""
import json

import numpy as np
from mpi4py import MPI

import minigrad as mg
import minigrad.distributed as dist

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
errors = {}


def record(name, got, want):
    errors[name] = max(errors.get(name, 0.0), float(np.max(np.abs(np.asarray(got, np.float64) - want), initial=0)))


# ring all-reduce == MPI_Allreduce, sizes that do and do not divide by W, float and int, every op
for n in (1, 2, 3, 7, 1000, 1001, 4099):
    for dtype in (np.float32, np.float64, np.int64):
        x = (np.random.default_rng(100 * rank + n).standard_normal(n) * 100).astype(dtype)
        for op, mpi_op in ((dist.ReduceOp.SUM, MPI.SUM), (dist.ReduceOp.MAX, MPI.MAX)):
            ring, ref = x.copy(), np.empty_like(x)
            dist.ring_all_reduce(ring, op=op)
            MPI.COMM_WORLD.Allreduce(x, ref, op=mpi_op)
            key = f"ring_{op.name}_{np.dtype(dtype).name}"
            scale = 1 if dtype == np.int64 else np.abs(ref).max() + 1
            record(key, ring / scale, ref / scale)
        if dtype != np.int64:
            ring, ref = x.copy(), MPI.COMM_WORLD.allreduce(x.astype(np.float64)) / world
            dist.ring_all_reduce(ring, op=dist.ReduceOp.AVG)
            record(f"ring_AVG_{np.dtype(dtype).name}", ring / (np.abs(ref).max() + 1), ref / (np.abs(ref).max() + 1))

# all_reduce on a Tensor, in place: x_r = r + 1 → Σ = W(W+1)/2, mean (W+1)/2, max W
t = mg.full((3, 4), float(rank + 1))
dist.all_reduce(t)
record("all_reduce_sum", t.data, world * (world + 1) / 2)
t = mg.full((5,), float(rank + 1))
dist.all_reduce(t, op=dist.ReduceOp.AVG)
record("all_reduce_avg", t.data, (world + 1) / 2)
t = np.full(1000, float(rank + 1))
work = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)  # started; finished (and divided) by wait()
work.wait()
record("all_reduce_async_avg", t, (world + 1) / 2)
a = np.full(6, rank + 1, np.int32)
dist.all_reduce(a, op=dist.ReduceOp.MAX)
record("all_reduce_max", a, world)

b = np.arange(10, dtype=np.float32) * (rank + 1)
dist.broadcast(b, src=world - 1)
record("broadcast", b, np.arange(10) * world)

out = [np.empty((2, 3), np.float64) for _ in range(world)]
dist.all_gather(out, np.full((2, 3), 10.0 * rank))
record("all_gather", np.stack(out), np.arange(world)[:, None, None] * 10.0)

# reduce_scatter: in_list[q] on rank r is r·100 + q → out on rank q is Σ_r (r·100 + q)
ins = [mg.full((4,), float(rank * 100 + q)) for q in range(world)]
o = mg.zeros(4)
dist.reduce_scatter(o, ins)
record("reduce_scatter", o.data, 100 * world * (world - 1) / 2 + world * rank)

# send / recv around the ring
msg = np.full(7, rank, np.float64)
got = np.empty(7)
if rank % 2 == 0:
    dist.send(msg, (rank + 1) % world)
    dist.recv(got, (rank - 1) % world)
else:
    dist.recv(got, (rank - 1) % world)
    dist.send(msg, (rank + 1) % world)
record("send_recv", got, (rank - 1) % world)

gathered = MPI.COMM_WORLD.gather(errors, root=0)
if rank == 0:
    merged = {k: max(e[k] for e in gathered) for k in errors}
    print("RESULT " + json.dumps(dict(world=world, errors=merged)), flush=True)
