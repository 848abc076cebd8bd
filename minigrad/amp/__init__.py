"""Mixed precision (lesson `12_memory_and_precision`): `autocast` runs matrix products and attention in
float16 or bfloat16 while reductions, softmax, norms and losses stay in float32 and the parameters (the
master weights) stay float32; `GradScaler` scales the loss so float16 gradients do not underflow."""
from .autocast import autocast, get_autocast_dtype, is_autocast_enabled
from .grad_scaler import GradScaler

__all__ = ["autocast", "GradScaler", "is_autocast_enabled", "get_autocast_dtype"]
