"""Run under mpiexec -n 2: rank 1 raises while rank 0 waits in a collective. The job must end (MPI_Abort
from the excepthook of init_process_group) with a non-zero exit and rank 1's error text."""
import numpy as np

import minigrad.distributed as dist

dist.init_process_group()
if dist.get_rank() == 1:
    raise ValueError("planted failure on rank 1")
dist.all_reduce(np.ones(3))  # rank 0 would wait here forever without the abort
print("rank 0 passed the all-reduce", flush=True)
