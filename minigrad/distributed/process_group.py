"""Processes and collectives on MPI (lesson `09_data_parallel`), with PyTorch's names.

    mpiexec -n 4 python train.py          # 4 processes ("ranks") 0…3, one world
    python train.py                       # 1 process: world size 1, every collective is the identity

A collective is a call every rank makes together. With n numbers per rank:

    all_reduce      every rank ends with Σ_r x_r (or the mean, or the max)
    broadcast       every rank ends with x_src
    all_gather      every rank ends with [x_0, …, x_{W−1}]
    reduce_scatter  rank r ends with (Σ_q x_q)[chunk r]
    send / recv     one rank's buffer is copied into another's

Arrays travel through mpi4py's buffer interface (the upper-case `Allreduce`, `Bcast`, …): MPI reads and
writes the NumPy memory directly, nothing is pickled. Tensors are handled through their `.data` array.
"""
import enum
import os
import sys
import traceback

import numpy as np

_LAUNCHER_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS")
_comm = None  # the MPI communicator once initialized; stays None in a plain `python script.py`
_initialized = False


class ReduceOp(enum.Enum):
    """How all_reduce / reduce_scatter combine the ranks' values: sum, mean (float only) or maximum."""
    SUM = "sum"
    AVG = "avg"
    MAX = "max"


def launched_by_mpi():
    """True when an MPI launcher (mpiexec, mpirun, srun --mpi) started this process."""
    return any(name in os.environ for name in _LAUNCHER_VARIABLES)


def init_process_group(backend="mpi"):
    """Join the world of processes mpiexec started (idempotent: later calls do nothing).

    Without a launcher it is a world of one and MPI is not even imported. Under mpiexec it also installs
    an excepthook: a rank that dies of an uncaught exception prints its traceback and aborts the whole
    job (MPI_Abort), instead of leaving the other ranks waiting forever in their next collective.
    """
    global _comm, _initialized
    if backend != "mpi":
        raise ValueError(f"init_process_group: minigrad.distributed runs on MPI only, got backend={backend!r}")
    if _initialized:
        return
    if launched_by_mpi():
        try:
            from mpi4py import MPI
        except ImportError:
            raise RuntimeError("this process was started by mpiexec but mpi4py is not installed: "
                               "pip install mpi4py mpich (or pip install -e '.[lessons]')") from None
        _comm = MPI.COMM_WORLD
        if _comm.Get_size() > 1:
            sys.excepthook = _abort_on_uncaught_exception
    _initialized = True


def _abort_on_uncaught_exception(exc_type, exc, tb):
    message = "".join(traceback.format_exception(exc_type, exc, tb))
    sys.stderr.write(f"[rank {get_rank()}] uncaught exception, aborting the MPI job:\n{message}")
    sys.stderr.flush()
    sys.stdout.flush()
    _comm.Abort(1)


def is_initialized():
    return _initialized


def _world():
    """The communicator (initializing on first use), or None for a world of one."""
    init_process_group()
    return _comm


def get_rank():
    comm = _world()
    return 0 if comm is None else comm.Get_rank()


def get_world_size():
    comm = _world()
    return 1 if comm is None else comm.Get_size()


def barrier():
    comm = _world()
    if comm is not None:
        comm.Barrier()


def _array(t, name):
    """The NumPy array behind a Tensor or array (the memory MPI reads and writes)."""
    array = getattr(t, "data", t) if not isinstance(t, np.ndarray) else t
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name}: expected a minigrad Tensor or a NumPy array, got {type(t).__name__}")
    return array


def _contiguous(array, name):
    """MPI reads a buffer as one block of memory, so in-place collectives need a C-contiguous array."""
    if not array.flags.c_contiguous or not array.flags.writeable:
        raise ValueError(f"{name}: needs a C-contiguous, writeable array (got shape {array.shape}, strides "
                         f"{array.strides}); pass np.ascontiguousarray(x) and copy the result back")
    return array


def _check_op(op, array, name):
    if not isinstance(op, ReduceOp):
        raise TypeError(f"{name}: op must be a dist.ReduceOp (SUM, AVG, MAX), got {op!r}")
    if op is ReduceOp.AVG and array.dtype.kind != "f":
        raise TypeError(f"{name}: ReduceOp.AVG needs a float array, got dtype {array.dtype}")


def _mpi_op(op, array, name):
    """MPI's op for a ReduceOp: AVG is a SUM followed by a division by the world size."""
    from mpi4py import MPI
    _check_op(op, array, name)
    return MPI.MAX if op is ReduceOp.MAX else MPI.SUM


def all_reduce(t, op=ReduceOp.SUM, async_op=False):
    """In place on every rank: t ← Σ_r t_r (SUM), (1/W) Σ_r t_r (AVG) or max_r t_r (MAX).

    With async_op=True it only starts the all-reduce (MPI_Iallreduce) and returns a request: work goes on
    while the bytes travel, and `.wait()` finishes it (data-parallel training overlaps backward with it).
    """
    array = _contiguous(_array(t, "all_reduce"), "all_reduce")
    comm = _world()
    if comm is None:
        _check_op(op, array, "all_reduce")
        return _Work(None) if async_op else None
    from mpi4py import MPI
    mpi_op = _mpi_op(op, array, "all_reduce")
    world = comm.Get_size()

    def finish():
        if op is ReduceOp.AVG:
            np.divide(array, world, out=array)
    if async_op:
        return _Work(comm.Iallreduce(MPI.IN_PLACE, array, op=mpi_op), finish)
    comm.Allreduce(MPI.IN_PLACE, array, op=mpi_op)
    finish()


def broadcast(t, src=0):
    """In place: every rank's t ← rank src's t."""
    array = _contiguous(_array(t, "broadcast"), "broadcast")
    _check_rank(src, "broadcast", "src")
    comm = _world()
    if comm is not None:
        comm.Bcast(array, root=src)


def all_gather(out_list, t):
    """out_list[r] ← rank r's t on every rank (out_list: W tensors or arrays of t's shape and dtype)."""
    array = np.ascontiguousarray(_array(t, "all_gather"))
    outs = [_array(o, "all_gather") for o in out_list]
    world = get_world_size()
    if len(outs) != world or any(o.shape != array.shape or o.dtype != array.dtype for o in outs):
        raise ValueError(f"all_gather: out_list needs {world} arrays of shape {array.shape} and dtype {array.dtype}, "
                         f"got {[(o.shape, str(o.dtype)) for o in outs]}")
    gathered = np.empty((world,) + array.shape, array.dtype)  # (W, …)
    all_gather_into(gathered.reshape(-1), array.reshape(-1))
    for o, part in zip(outs, gathered):
        o[...] = part


def all_gather_into(out, shard):
    """out (W·n,) ← the concatenation of every rank's shard (n,): the flat, copy-free form of all_gather."""
    comm = _world()
    if out.size != shard.size * get_world_size() or out.dtype != shard.dtype:
        raise ValueError(f"all_gather_into: out must hold world size × shard = {get_world_size()} × {shard.size} "
                         f"elements of {shard.dtype}, got {out.size} of {out.dtype}")
    if comm is None:
        out[...] = shard
    else:
        comm.Allgather(shard, _contiguous(out, "all_gather_into"))


def reduce_scatter(out, in_list, op=ReduceOp.SUM):
    """out ← Σ_q in_list[rank] of rank q: each rank gets the reduction of its own chunk only."""
    o = _contiguous(_array(out, "reduce_scatter"), "reduce_scatter")
    ins = [_array(i, "reduce_scatter") for i in in_list]
    world = get_world_size()
    if len(ins) != world or any(i.shape != o.shape or i.dtype != o.dtype for i in ins):
        raise ValueError(f"reduce_scatter: in_list needs {world} arrays of out's shape {o.shape} and dtype {o.dtype}, "
                         f"got {[(i.shape, str(i.dtype)) for i in ins]}")
    reduce_scatter_into(o.reshape(-1), np.concatenate([i.reshape(-1) for i in ins]), op)


def reduce_scatter_into(out, full, op=ReduceOp.SUM):
    """out (n,) ← chunk `rank` of Σ_q full_q, with full (W·n,): the flat, copy-free form of reduce_scatter."""
    world = get_world_size()
    if full.size != out.size * world or out.dtype != full.dtype:
        raise ValueError(f"reduce_scatter_into: full must hold world size × out = {world} × {out.size} elements of "
                         f"{out.dtype}, got {full.size} of {full.dtype}")
    comm = _world()
    if comm is None:
        _check_op(op, out, "reduce_scatter")
        out[...] = full.reshape(-1)
        return
    comm.Reduce_scatter_block(np.ascontiguousarray(full), _contiguous(out, "reduce_scatter"),
                              op=_mpi_op(op, out, "reduce_scatter"))
    if op is ReduceOp.AVG:
        out /= world


def _check_rank(peer, name, argument):
    world = get_world_size()
    if not isinstance(peer, (int, np.integer)) or not 0 <= peer < world:
        raise ValueError(f"{name}: {argument}={peer!r} is not a rank of this world of {world} process(es) "
                         f"(0…{world - 1})")


def _check_peer(peer, name, argument):
    _check_rank(peer, name, argument)
    if peer == get_rank():
        raise ValueError(f"{name}: {argument}={peer} is this process's own rank")


def send(t, dst):
    """Send t's array to rank dst (blocks until the buffer may be reused)."""
    _check_peer(dst, "send", "dst")
    _world().Send(np.ascontiguousarray(_array(t, "send")), dest=dst)


def recv(t, src):
    """Receive into t's array (in place) what rank src sends; returns src."""
    _check_peer(src, "recv", "src")
    _world().Recv(_contiguous(_array(t, "recv"), "recv"), source=src)
    return src


def isend(t, dst):
    """Start sending t to rank dst; returns a request whose `.wait()` returns once t may be reused."""
    _check_peer(dst, "isend", "dst")
    return _Work(_world().Isend(_contiguous(_array(t, "isend"), "isend"), dest=dst))


def irecv(t, src):
    """Start receiving into t from rank src; `.wait()` on the returned request before reading t."""
    _check_peer(src, "irecv", "src")
    return _Work(_world().Irecv(_contiguous(_array(t, "irecv"), "irecv"), source=src))


class _Work:
    """A pending operation (PyTorch's `Work`): `.wait()` blocks until it completes (then runs `finish`, e.g.
    the division of an average); `.is_completed()` asks without blocking, which also lets MPI progress it."""

    def __init__(self, request, finish=None):
        self._request, self._finish = request, finish

    def wait(self):
        if self._request is not None:
            while not self._request.Test():  # poll, giving the core away in between: on a machine with more
                os.sched_yield()             # processes than cores a spinning wait slows the ranks still computing
            self._request = None
            if self._finish is not None:
                self._finish()

    def is_completed(self):
        return self._request is None or self._request.Test()
