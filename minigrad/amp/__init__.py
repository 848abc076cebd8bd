"""Mixed precision (lesson `12_memory_and_precision`): `GradScaler` scales the loss so that float16
gradients do not underflow."""
from .grad_scaler import GradScaler

__all__ = ["GradScaler"]
