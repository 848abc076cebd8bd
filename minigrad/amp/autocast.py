"""autocast: which precision each op runs in, inside `with mg.autocast(dtype=...)` (lesson 12).

    matrix products (matmul, linear, conv2d, attention)   → the autocast dtype (float16 or bfloat16)
    softmax, log_softmax, layer_norm, losses               → float32
    everything else                                        → the dtype of its inputs (promotion as usual)

Only float32 inputs are lowered (float64 stays, as in PyTorch), and the casts are ops in the graph, so the
float32 parameters (master weights) receive float32 gradients. The state is per thread, like PyTorch's.
"""
import contextlib
import threading

from ..dtypes import HALF_FLOATS, as_dtype, float16, float32

__all__ = ["autocast", "is_autocast_enabled", "get_autocast_dtype", "lower_precision", "full_precision"]

_state = threading.local()


def get_autocast_dtype():
    """The dtype matrix products run in now, or None outside autocast."""
    return getattr(_state, "dtype", None)


def is_autocast_enabled():
    return get_autocast_dtype() is not None


class autocast(contextlib.ContextDecorator):
    """`with mg.autocast(dtype=mg.float16):` (or as a decorator): low precision for matrix products.

    dtype defaults to float16 (the contract in shared/API.md; PyTorch's CPU default is bfloat16, so pass
    dtype=mg.bfloat16 for that). device_type "cpu" or "cuda" is accepted for PyTorch's signature (the policy
    is the same), and a dtype given first, `mg.autocast(mg.bfloat16)`, is taken as the dtype.
    enabled=False turns autocast off inside the block.
    """

    def __init__(self, device_type="cpu", dtype=None, enabled=True, cache_enabled=None):
        if dtype is None and not isinstance(device_type, str):
            device_type, dtype = "cpu", device_type  # mg.autocast(mg.float16)
        if device_type not in ("cpu", "cuda"):
            raise ValueError(f"autocast: device_type must be 'cpu' or 'cuda', got {device_type!r}")
        try:
            resolved = float16 if dtype is None else as_dtype(dtype)
        except TypeError:
            resolved = None
        if resolved not in HALF_FLOATS:
            raise TypeError(f"autocast: dtype must be a 16-bit float, mg.float16 or mg.bfloat16; got {dtype!r} "
                            "(autocast lowers the precision of matrix products; other dtypes have no such mode)")
        self.dtype, self.enabled = resolved, bool(enabled)
        self._previous = []

    def __enter__(self):
        self._previous.append(get_autocast_dtype())
        _state.dtype = self.dtype if self.enabled else None
        return self

    def __exit__(self, *exc):
        _state.dtype = self._previous.pop()
        return False


def lower_precision(*tensors):
    """Inside autocast: the float32 tensors among `tensors` cast to the autocast dtype (others unchanged)."""
    dtype = getattr(_state, "dtype", None)
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if getattr(t, "dtype", None) == float32 and hasattr(t, "to") else t for t in tensors)


def full_precision(*tensors):
    """Inside autocast: the 16-bit float tensors among `tensors` cast to float32 (others unchanged)."""
    if getattr(_state, "dtype", None) is None:
        return tensors
    return tuple(t.to(float32) if getattr(t, "dtype", None) in HALF_FLOATS and hasattr(t, "to") else t
                 for t in tensors)
