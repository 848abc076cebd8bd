"""minigrad.distributed, DDP, ZeRO-1 and tensor parallelism on real MPI jobs (`mpiexec -n 2`, with a timeout).

Each multi-rank check is a script in tests/distributed/ that computes its own reference inside the job
(one process training on the whole global batch, the dense layer, MPI's own Allreduce) and prints
`RESULT {json}` from rank 0; the tests assert on those numbers.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minigrad as mg
import minigrad.distributed as dist
import minigrad.nn as nn
import minigrad.optim as optim

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent / "distributed"
PYTHONPATH = str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")
TIMEOUT = 120  # seconds for one job on a loaded machine; a hang fails instead of blocking the suite


def run(args, n=2, timeout=TIMEOUT):
    pytest.importorskip("mpi4py", reason="mpi4py not installed: pip install -e '.[test,lessons]'")
    try:
        dist.mpiexec_path()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    return dist.run_mpi(args, n=n, timeout=timeout, env=dict(PYTHONPATH=PYTHONPATH))


def result_of(script, n=2):
    proc = run([SCRIPTS / script], n=n)
    assert proc.returncode == 0, f"{script} failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(lines) == 1, f"{script} printed no RESULT line (only rank 0 prints one):\n{proc.stdout}"
    result = json.loads(lines[0][len("RESULT "):])
    assert result["world"] == n
    return result


@pytest.mark.parametrize("n", [2, pytest.param(3, marks=pytest.mark.slow)])
def test_collectives_and_ring_all_reduce_against_mpi(n):
    errors = result_of("collectives.py", n=n)["errors"]
    exact = [k for k in errors if "int64" in k or k.startswith(("all_", "broadcast", "reduce_scatter", "send"))
             or "MAX" in k]
    for key in exact:
        assert errors[key] == 0, (key, errors[key])
    for key in set(errors) - set(exact):  # float sums: only the order of the additions differs
        assert errors[key] < (1e-6 if "float32" in key else 1e-14), (key, errors[key])
    assert {"ring_SUM_float32", "ring_AVG_float64", "reduce_scatter", "send_recv"} <= set(errors)


def test_ddp_equals_one_process_on_the_global_batch_sgd_adamw_and_no_sync():
    result = result_of("ddp.py")
    for key, diff in result["diff"].items():
        assert result["moved"][key] > 1e-2, f"{key}: the parameters barely moved, the comparison says nothing"
        assert diff < 1e-6, f"{key}: DDP parameters differ from the single-process run by {diff}"
    for key, spread in result["no_sync_spread"].items():  # no_sync kept the first micro-batch's gradient local
        assert spread > 1e-3, key
    accumulated, leaves = result["first_launch"]  # the first bucket went out while backward was still running
    assert 0 < accumulated < leaves


def test_zero1_equals_adamw_with_sharded_state_and_global_norm():
    result = result_of("zero.py")
    assert result["moved"] > 1e-2
    for rank in result["ranks"]:
        assert rank["diff"] < 1e-6
        for zero_norm, dense_norm in rank["norms"]:  # the true global norm, and clipping was active (> 0.3)
            assert zero_norm == pytest.approx(dense_norm, rel=1e-6) and dense_norm > 0.3
        # AdamW keeps m and v: 63 float32 numbers padded to 64 → 32 per rank
        assert rank["state_bytes"] == 2 * 4 * 32
    assert result["full_state_bytes"] == 2 * 4 * 63


def test_tensor_parallel_mlp_and_attention_equal_the_dense_modules_with_one_all_reduce_each_way():
    result = result_of("tp.py")
    assert result["all_reduces"] == {"mlp_forward": 1, "mlp_backward": 1, "attn_forward": 1, "attn_backward": 1}
    errors = result["errors"]
    assert len([k for k in errors if "_grad_param" in k]) == 8
    for key, error in errors.items():
        assert error < 1e-12, (key, error)


def test_an_uncaught_exception_on_one_rank_aborts_the_job():
    proc = run([SCRIPTS / "abort.py"], timeout=60)
    assert proc.returncode != 0
    assert "planted failure on rank 1" in proc.stderr and "[rank 1]" in proc.stderr
    assert "passed the all-reduce" not in proc.stdout


def test_single_process_is_world_size_one_and_every_collective_is_the_identity():
    env = dist.launch.job_environment(extra=dict(PYTHONPATH=PYTHONPATH))
    code = """
import numpy as np, minigrad as mg, minigrad.distributed as dist
dist.init_process_group(); dist.init_process_group()  # idempotent
assert dist.is_initialized() and dist.get_rank() == 0 and dist.get_world_size() == 1
x = np.arange(5.0); t = mg.tensor([1.0, -2.0])
for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX):
    dist.all_reduce(x, op=op); dist.ring_all_reduce(t, op=op)
dist.broadcast(x, src=0); dist.barrier()
out = [np.zeros(5)]; dist.all_gather(out, x)
rs = np.zeros(5); dist.reduce_scatter(rs, [x])
assert (x == np.arange(5.0)).all() and (t.data == [1, -2]).all() and (out[0] == x).all() and (rs == x).all()
import sys; print("mpi4py" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"  # a plain `python script.py` does not even load MPI


def test_single_process_ddp_and_zero_are_the_plain_model_and_optimizer():
    mg.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    mg.manual_seed(0)
    twin = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    ddp = nn.parallel.DistributedDataParallel(model)
    assert ddp.module is model and list(ddp.state_dict())[0] == "module.0.weight"
    zero = optim.ZeroRedundancyOptimizer(model.parameters(), optimizer_class=optim.AdamW, lr=0.1)
    plain = optim.AdamW(twin.parameters(), lr=0.1)
    x = mg.randn(6, 3)
    for _ in range(3):
        for m, opt in ((ddp, zero), (twin, plain)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(p.data, q.data, rtol=1e-6, atol=1e-7)
    assert optim.optimizer_state_bytes(zero.optim) == optim.optimizer_state_bytes(plain)


def test_clip_grad_norm_against_numpy():
    params = [nn.Parameter(np.zeros((2, 3), np.float32)), nn.Parameter(np.zeros(4, np.float64)),
              nn.Parameter(np.zeros(2, np.float32))]
    rng = np.random.default_rng(0)
    for p in params[:2]:
        p.grad = rng.standard_normal(p.shape).astype(p.data.dtype)
    before = [p.grad.copy() for p in params[:2]]
    want = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in before))
    assert nn.utils.clip_grad_norm_(params, max_norm=1e3) == pytest.approx(want)  # below max: unchanged
    np.testing.assert_array_equal(params[0].grad, before[0])
    assert nn.utils.clip_grad_norm_(params, max_norm=0.5) == pytest.approx(want)
    after = np.sqrt(sum((p.grad.astype(np.float64) ** 2).sum() for p in params[:2]))
    assert after == pytest.approx(0.5, rel=1e-5)
    np.testing.assert_allclose(params[1].grad, before[1] * 0.5 / (want + 1e-6))
    with pytest.raises(ValueError, match="max_norm"):
        nn.utils.clip_grad_norm_(params, -1.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="global batch size 5 does not divide by the world size 2"):
        dist.check_global_batch(5, world_size=2)
    with pytest.raises(TypeError, match="ReduceOp.AVG needs a float"):
        dist.all_reduce(np.ones(3, np.int64), op=dist.ReduceOp.AVG)
    with pytest.raises(TypeError, match="ReduceOp"):
        dist.all_reduce(np.ones(3), op="sum")
    with pytest.raises(ValueError, match="dst=1 is not a rank of this world of 1"):
        dist.send(np.ones(3), 1)
    with pytest.raises(ValueError, match="C-contiguous"):
        dist.all_reduce(np.ones((4, 4))[:, ::2])
    with pytest.raises(ValueError, match="all_gather: out_list needs 1 arrays of shape"):
        dist.all_gather([np.zeros(2), np.zeros(2)], np.zeros(2))
    with pytest.raises(ValueError, match="bucket_cap_mb"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2), bucket_cap_mb=0)


def test_ring_cost_model():
    # 2(W−1) messages of n/W bytes: for W = 4, n = 1 MB, α = 1 µs, β = 1 ns/B: 6 µs + 1.5 ms
    assert dist.ring_cost(1e6, 4, 1e-6, 1e-9) == pytest.approx(6e-6 + 1.5e-3)
    assert dist.ring_cost(1e6, 1, 1e-6, 1e-9) == 0


CLI_ARGS = ["gpt", "--tokenizer", "char", "--steps", "5", "--batch-size", "4", "--block-size", "16", "--n-layer", "1",
            "--n-head", "2", "--d-model", "16", "--eval-seconds", "0", "--sample-tokens", "5", "--backend", "numpy", "--lr", "1e-2",
            "--dropout", "0"]  # no dropout: each rank draws its own masks, so only then are the runs equal


def loss_lines(stdout):
    return [line for line in stdout.splitlines() if "loss" in line]


def test_cli_two_ranks_reach_the_losses_and_weights_of_one_rank(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def add(a, b):\n    return a + b\n\nclass Point:\n    x = 0\n" * 60)
    args = CLI_ARGS + ["--corpus", corpus]
    one = subprocess.run([sys.executable, "-m", "minigrad"] + [str(a) for a in args + ["--checkpoint", tmp_path / "one.npz"]],
                         capture_output=True, text=True, timeout=TIMEOUT,
                         env=dist.launch.job_environment(extra=dict(PYTHONPATH=PYTHONPATH)))
    two = run(["-m", "minigrad"] + args + ["--checkpoint", tmp_path / "two.npz"])
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    assert len(loss_lines(two.stdout)) == 5 + 1  # rank 0 alone prints: one report per step and the summary
    assert [line.split("tok/s")[1] for line in loss_lines(one.stdout)[:-1]] == \
           [line.split("tok/s")[1] for line in loss_lines(two.stdout)[:-1]]
    assert loss_lines(one.stdout)[-1].split(";")[1] == loss_lines(two.stdout)[-1].split(";")[1]
    a, b = mg.load(tmp_path / "one.npz"), mg.load(tmp_path / "two.npz")
    mg.manual_seed(0)  # the CLI's default --seed: the initial weights of both runs
    start = nn.GPT(vocab_size=int(a["config.vocab_size"].item()), block_size=16, n_layer=1, n_head=2, d_model=16)
    moved = 0.0
    for name, p in start.state_dict().items():
        np.testing.assert_allclose(b[name].data, a[name].data, rtol=1e-5, atol=1e-6, err_msg=name)
        moved = max(moved, float(np.abs(a[name].data - p.data).max()))
    assert moved > 1e-3  # the runs trained: equal weights are not just the initial ones


def test_cli_global_batch_not_divisible_by_world_size_exits_2_on_every_rank(tmp_path):
    proc = run(["-m", "minigrad", "gpt", "--batch-size", "3", "--steps", "1", "--checkpoint", tmp_path / "x.npz"])
    assert proc.returncode == 2
    assert proc.stderr.count("global batch size 3 does not divide by the world size 2") == 2
    assert "corpus" not in proc.stdout  # stopped before training
