"""A CUDA simulator: the same .cu kernels that CuPy runs on a GPU, run thread by thread on the CPU.

    from minigrad.cuda import SimModule
    kernel = SimModule(code=SOURCE).get_function("vec_add")   # like cupy.RawModule (or SimRawKernel)
    kernel((blocks,), (threads,), (x, y, out, np.int32(n)))    # like cupy.RawKernel, on NumPy arrays

The source is compiled as C (cached by content hash); every CUDA thread is a fiber,
so __syncthreads() and warp shuffles are real barriers. Threads between barriers run
in forward, reverse or seeded random order (SimModule(order=...), kernel(...,
order=...) or $MINIGRAD_CUDA_SIM_ORDER) and shared memory starts every block as NaN,
which together expose a missing __syncthreads(). What a GPU would do silently or
with a hang becomes a Python error that names block, thread and line:
    BarrierDivergenceError  a thread returned, or waits at another __syncthreads(),
                            while the rest of its block waits at a barrier
    WarpDivergenceError     a lane named in a shuffle's mask never reaches it
    KernelFaultError        an index out of bounds (by any amount, either side) of an
                            argument, of the dynamic or a static shared array; a pointer
                            that belongs to none of them; a stack overflow, an integer
                            division by zero, or a failed assert() - with the kernel line
    DataRaceError           kernel(..., race_check=True): two threads of a block touch one
                            element between barriers (or of two blocks at all), one writing
    OrderDependenceError    with order "compare": the outputs differ between forward
                            and reverse thread order (a race, a missing barrier)
    TypeError / ValueError  a launch argument a GPU would misread (dtype, Python
                            scalar, non-contiguous array) or beyond CUDA's limits
kernel(..., count=True) returns a LaunchStats: elements read and written per array.
Ctrl-C stops a launch at the next barrier, a second Ctrl-C a thread stuck in a loop.
Nothing is compiled at import. Linux only.
"""
from .checks import ArrayTraffic, LaunchStats
from .errors import (BarrierDivergenceError, CompileError, CompileWarning, CudaSimError, DataRaceError,
                     KernelFaultError, OrderDependenceError, WarpDivergenceError)
from .simulator import SimKernel, SimModule, SimRawKernel

__all__ = ["SimModule", "SimKernel", "SimRawKernel", "LaunchStats", "ArrayTraffic", "CudaSimError", "CompileError",
           "CompileWarning", "BarrierDivergenceError", "WarpDivergenceError", "KernelFaultError",
           "OrderDependenceError", "DataRaceError"]
