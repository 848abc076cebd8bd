"""Starting an MPI job from Python (a test, a benchmark, a notebook cell): `mpiexec -n N python ...`.

A notebook kernel or a pytest process is one process; the ranks of a job are new processes, started
by MPI's launcher. Across machines the same command takes a host list:

    mpiexec -n 2 python train.py                    # 2 ranks on this machine
    mpiexec -hosts a,b -n 8 python train.py         # 8 ranks over hosts a and b (MPICH's Hydra)
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .process_group import _LAUNCHER_VARIABLES


def mpiexec_path():
    """The mpiexec installed beside this Python (the `mpich` wheel puts it in the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "mpiexec"
    found = str(beside) if beside.exists() else shutil.which("mpiexec")
    if found is None:
        raise RuntimeError("mpiexec was not found: install MPI with `pip install mpi4py mpich` "
                           "(both are in minigrad's `lessons` and `test` extras)")
    return found


def job_environment(threads=1, extra=None):
    """This environment for a fresh job: one BLAS/kernel thread per rank unless told otherwise, and
    without the variables of an MPI job this process may itself belong to."""
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARIABLES}
    if threads is not None:
        env.update(OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MINIGRAD_NUM_THREADS=str(threads))
    return {**env, **(extra or {})}


def run_mpi(args, n=2, timeout=None, threads=1, env=None, cwd=None):
    """Run `mpiexec -n n python *args` and return the CompletedProcess (stdout and stderr as text)."""
    command = [mpiexec_path(), "-n", str(n), sys.executable] + [str(a) for a in args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=job_environment(threads, env), cwd=cwd)
