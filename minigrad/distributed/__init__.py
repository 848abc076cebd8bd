"""Multi-process training on MPI, `import minigrad.distributed as dist` (lesson `09_data_parallel`).

    mpiexec -n 2 python train.py

`process_group` has the processes and collectives (PyTorch's names), `ring` a from-scratch ring
all-reduce, `data` how a global batch is split over the ranks, `launch` how to start a job.
"""
from .data import DataParallelJob, check_global_batch, local_slice
from .launch import mpiexec_path, run_mpi
from .process_group import (ReduceOp, all_gather, all_gather_into, all_reduce, barrier, broadcast, get_rank,
                            get_world_size, init_process_group, irecv, is_initialized, isend, launched_by_mpi,
                            recv, reduce_scatter, reduce_scatter_into, send)
from .ring import ring_all_reduce, ring_cost

__all__ = ["ReduceOp", "init_process_group", "is_initialized", "get_rank", "get_world_size", "barrier",
           "all_reduce", "broadcast", "all_gather", "reduce_scatter", "send", "recv", "isend", "irecv",
           "all_gather_into", "reduce_scatter_into", "launched_by_mpi", "ring_all_reduce", "ring_cost",
           "check_global_batch", "local_slice", "DataParallelJob", "mpiexec_path", "run_mpi"]
