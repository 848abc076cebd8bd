"""What can go wrong in the CUDA simulator that a GPU would not tell you clearly."""


class CudaSimError(RuntimeError):
    """Base class of the simulator's own errors (bad arguments raise TypeError / ValueError)."""


class CompileError(CudaSimError):
    """The kernel source does not compile as C; the message holds the compiler's diagnostics."""


class BarrierDivergenceError(CudaSimError):
    """Threads of one block did not all reach the same __syncthreads() (a GPU would hang or misbehave)."""


class WarpDivergenceError(CudaSimError):
    """Lanes named in a warp operation's mask did not all reach that operation."""


class KernelFaultError(CudaSimError):
    """The kernel touched memory it may not (a GPU's illegal address) or divided an integer by zero."""


class CompileWarning(UserWarning):
    """The compiler found something suspicious in a kernel, such as a variable used before it is set."""


class OrderDependenceError(CudaSimError):
    """order='compare': the kernel's output differs between forward and reverse thread order."""


class DataRaceError(CudaSimError):
    """race_check=True: two threads touched one element between barriers, one writing, neither atomically."""
