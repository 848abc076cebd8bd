"""Where a tensor's data lives: NumPy on the CPU, CuPy on a CUDA GPU."""
import numpy as np

_INSTALL_HINT = 'install it with `pip install -e ".[cuda]"` (CuPy for CUDA 13)'


def check_device(device):
    device = str(device)
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use 'cpu' or 'cuda'")
    return "cpu" if device == "cpu" else "cuda"


def require_cupy():
    """Return the cupy module if a CUDA GPU is usable, else raise an error that says what is missing.

    `import cupy` succeeds on a machine without a GPU; only a device call tells.
    """
    try:
        import cupy
    except ImportError:
        raise RuntimeError(f"device 'cuda' needs CuPy, which is not installed: {_INSTALL_HINT} "
                           "on a machine with an NVIDIA GPU. Without a GPU, the CUDA kernels still run "
                           "on the CPU through the simulator: mg.set_backend('cuda-sim').") from None
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        raise RuntimeError(f"CuPy is installed but no CUDA GPU is usable ({type(exc).__name__}: {exc}). "
                           "Check the NVIDIA driver with `nvidia-smi`, or run the CUDA kernels on the CPU "
                           "through the simulator: mg.set_backend('cuda-sim').") from None
    if count == 0:
        raise RuntimeError("CuPy is installed but found no CUDA GPU; run the CUDA kernels on the CPU "
                           "through the simulator: mg.set_backend('cuda-sim').")
    return cupy


def array_module(array):
    """numpy for host arrays, cupy for device arrays (without importing cupy when it is not needed)."""
    if isinstance(array, np.ndarray) or type(array).__module__.split(".")[0] != "cupy":
        return np
    import cupy
    return cupy
