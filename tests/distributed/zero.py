"""Run under mpiexec -n W: ZeRO-1 against plain AdamW on the global batch, its state memory, and the
global gradient norm with sharded state. Prints `RESULT {json}` on rank 0."""
import json

import numpy as np
from mpi4py import MPI

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
import minigrad.distributed as dist

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
B = 4 * world


def make_model():
    mg.manual_seed(0)  # 5·7+7 + 7·3 = 63 numbers: not a multiple of W = 2, so the flat vector is padded
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3, bias=False))


def loss_of(model, x, y):
    return F.cross_entropy(model(mg.tensor(x)), y)


reference, model = make_model(), make_model()
kw = dict(lr=0.05, weight_decay=0.1)
ref_opt = optim.AdamW(reference.parameters(), **kw)
zero = optim.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optim.AdamW, **kw)
norms = []
for step in range(4):
    rng = np.random.default_rng(step)
    x, y = rng.standard_normal((B, 5)).astype(np.float32), rng.integers(0, 3, B)
    ref_opt.zero_grad()
    loss_of(reference, x, y).backward()
    ref_norm = nn.utils.clip_grad_norm_(reference.parameters(), max_norm=0.3)  # clipping is active: every norm here is > 0.3
    ref_opt.step()
    zero.zero_grad()
    loss_of(model, x[dist.local_slice(B)], y[dist.local_slice(B)]).backward()  # no DDP: ZeRO averages
    norms.append((zero.clip_grad_norm_(0.3), ref_norm))
    zero.step()

flat = lambda m: np.concatenate([p.data.ravel() for p in m.parameters()])  # noqa: E731
diff = float(np.abs(flat(model) - flat(reference)).max())
moved = float(np.abs(flat(reference) - flat(make_model())).max())
sharded_bytes, full_bytes = optim.optimizer_state_bytes(zero.optim), optim.optimizer_state_bytes(ref_opt)
results = MPI.COMM_WORLD.gather(dict(diff=diff, norms=norms, state_bytes=sharded_bytes), root=0)
if rank == 0:
    print("RESULT " + json.dumps(dict(world=world, moved=moved, full_state_bytes=full_bytes, ranks=results)), flush=True)
