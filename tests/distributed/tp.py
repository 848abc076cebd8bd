"""Run under mpiexec -n W: the tensor-parallel GPT MLP and attention against the dense modules, in
forward and in every gradient (each rank compares its slice of the dense gradient); the global gradient
norm over sharded and replicated parameters. Prints `RESULT {json}` on rank 0."""
import json

import numpy as np
from mpi4py import MPI

import minigrad as mg
import minigrad.nn as nn
import minigrad.distributed as dist
from minigrad.nn.parallel import (ColumnParallelLinear, RowParallelLinear, TensorParallelAttention,
                                  TensorParallelMLP)

dist.init_process_group()
rank, world = dist.get_rank(), dist.get_world_size()
errors, counts = {}, {}
calls = []
_all_reduce = dist.all_reduce


def counting_all_reduce(t, op=dist.ReduceOp.SUM):
    calls.append(1)
    _all_reduce(t, op)


dist.all_reduce = counting_all_reduce  # the parallel layers call dist.all_reduce: count them


def record(name, got, want):
    errors[name] = max(errors.get(name, 0.0), float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30)))


B, T, d, H = 2, 5, 8, 4
x0 = np.random.default_rng(0).standard_normal((B, T, d))  # the same input on every rank
w_out = np.random.default_rng(1).standard_normal((B, T, d))  # loss = Σ out·w_out, a generic gradient

# column then row: the GPT MLP, float64 so the comparison is tight
mg.manual_seed(3)
block = nn.TransformerBlock(d, H)
dense_mlp, dense_attn = block.mlp, block.attn
for p in list(dense_mlp.parameters()) + list(dense_attn.parameters()):
    p.data = p.data.astype(np.float64)
for name, dense, parallel, call in (
        ("mlp", dense_mlp, TensorParallelMLP.from_dense(dense_mlp), lambda m, x: m(x)),
        ("attn", dense_attn, TensorParallelAttention.from_dense(dense_attn), lambda m, x: m(x, is_causal=True))):
    xd, xp = mg.tensor(x0, requires_grad=True), mg.tensor(x0, requires_grad=True)
    out_d = call(dense, xd)
    before = len(calls)
    out_p = call(parallel, xp)
    counts[f"{name}_forward"] = len(calls) - before
    record(f"{name}_forward", out_p.data, out_d.data)
    (out_d * mg.tensor(w_out)).sum().backward()
    before = len(calls)
    (out_p * mg.tensor(w_out)).sum().backward()
    counts[f"{name}_backward"] = len(calls) - before
    record(f"{name}_grad_input", xp.grad, xd.grad)
    if name == "mlp":
        h = 4 * d // world
        pairs = [(parallel.fc.weight, dense[0].weight.grad[rank * h:(rank + 1) * h]),
                 (parallel.fc.bias, dense[0].bias.grad[rank * h:(rank + 1) * h]),
                 (parallel.proj.weight, dense[2].weight.grad[:, rank * h:(rank + 1) * h]),
                 (parallel.proj.bias, dense[2].bias.grad)]
    else:
        n = d // world
        rows = np.concatenate([i * d + rank * n + np.arange(n) for i in range(3)])
        pairs = [(parallel.in_proj_weight, dense.in_proj_weight.grad[rows]),
                 (parallel.in_proj_bias, dense.in_proj_bias.grad[rows]),
                 (parallel.out_proj.weight, dense.out_proj.weight.grad[:, rank * n:(rank + 1) * n]),
                 (parallel.out_proj.bias, dense.out_proj.bias.grad)]
    for i, (p, want) in enumerate(pairs):
        record(f"{name}_grad_param{i}", p.grad, want)
    # the global norm counts the sharded slices of every rank and the replicated bias once
    dense_norm = np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in dense.parameters()))
    record(f"{name}_grad_norm", np.array(nn.utils.clip_grad_norm_(parallel.parameters(), 1e9)), dense_norm)

# the layers' shard layout: ColumnParallelLinear holds rows, RowParallelLinear columns (and the whole bias)
mg.manual_seed(7)
dense = nn.Linear(6, 4)
mg.manual_seed(7)
col = ColumnParallelLinear(6, 4)
mg.manual_seed(7)
row = RowParallelLinear(6, 4)
o = 4 // world
record("column_init_rows", col.weight.data, dense.weight.data[rank * o:(rank + 1) * o])
record("column_init_bias", col.bias.data, dense.bias.data[rank * o:(rank + 1) * o])
record("row_init_cols", row.weight.data, dense.weight.data[:, rank * 3:(rank + 1) * 3])
record("row_init_bias", row.bias.data, dense.bias.data)

gathered = MPI.COMM_WORLD.gather(errors, root=0)
if rank == 0:
    print("RESULT " + json.dumps(dict(world=world, errors={k: max(e[k] for e in gathered) for k in errors},
                                      all_reduces=counts)), flush=True)
