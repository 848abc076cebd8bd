"""Loss scaling for half-precision training (lesson `12_memory_and_precision`).

float16 flushes magnitudes below 2⁻²⁴ ≈ 6e-8 to zero, and small gradients live there. Multiplying the loss
by S multiplies every gradient by S (the chain rule is linear), lifting them into float16's range; the
gradients are divided by S again before the optimizer sees them:

    backward on S·L  →  g_S = S·∇L          unscale: g = g_S / S          step only if every g is finite

S adapts as in `torch.amp.GradScaler`: start at 2¹⁶; an inf or NaN in any gradient skips that step and
halves S (backoff 0.5); every 2000 clean steps in a row double it (growth 2.0).
"""
import math

import numpy as np

from .. import tensor as tensor_module  # the module, not the class: minigrad.tensor imports this package

__all__ = ["GradScaler"]


def next_scale(scale, growth_tracker, found_inf, growth_factor, backoff_factor, growth_interval):
    """(scale, growth_tracker) after one step: S·backoff and 0 after an overflow, S·growth and 0 after
    growth_interval clean steps in a row, else S and tracker + 1."""
    if found_inf:
        return scale * backoff_factor, 0
    growth_tracker += 1
    if growth_tracker == growth_interval:
        return scale * growth_factor, 0
    return scale, growth_tracker


def unscale_gradients(grads, inv_scale):
    """g ← g · (1/S) in place for every array; returns True if any of them holds an inf or NaN."""
    found_inf = False
    for g in grads:
        g *= g.dtype.type(inv_scale)
        found_inf = found_inf or not bool(np.isfinite(g).all())
    return found_inf


class GradScaler:
    """`scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()`, PyTorch's semantics.

    unscale_(optimizer) divides the gradients by the scale in place (call it before clipping them);
    step() does it if you did not, then skips optimizer.step() when a gradient is inf or NaN.
    """

    def __init__(self, device="cpu", init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5,
                 growth_interval=2000, enabled=True):
        if not (init_scale > 0 and math.isfinite(init_scale)):
            raise ValueError(f"GradScaler: init_scale must be a finite number > 0, got {init_scale}")
        if not growth_factor > 1.0:
            raise ValueError(f"GradScaler: growth_factor must be > 1, got {growth_factor}")
        if not 0.0 < backoff_factor < 1.0:
            raise ValueError(f"GradScaler: backoff_factor must lie in (0, 1), got {backoff_factor}")
        if not (isinstance(growth_interval, int) and growth_interval > 0):
            raise ValueError(f"GradScaler: growth_interval must be a positive int, got {growth_interval!r}")
        self.device = device
        self._enabled = bool(enabled)
        self._scale = float(np.float32(init_scale))  # PyTorch keeps S in a float32 tensor
        self._growth_factor, self._backoff_factor = growth_factor, backoff_factor
        self._growth_interval, self._growth_tracker = growth_interval, 0
        self._scaled = False  # scale() was called since the last update()
        self._per_optimizer = {}  # id(optimizer) -> {"unscaled": bool, "found_inf": bool, "stepped": bool}

    def is_enabled(self):
        return self._enabled

    def get_scale(self):
        return self._scale if self._enabled else 1.0

    def get_growth_factor(self):
        return self._growth_factor

    def get_backoff_factor(self):
        return self._backoff_factor

    def get_growth_interval(self):
        return self._growth_interval

    def scale(self, outputs):
        """outputs · S: a Tensor, or a list/tuple of them (the same structure back)."""
        if not self._enabled:
            return outputs
        if isinstance(outputs, tensor_module.Tensor):
            self._scaled = True
            return outputs * float(self._scale)
        if isinstance(outputs, (list, tuple)):
            return type(outputs)(self.scale(o) for o in outputs)
        raise TypeError(f"GradScaler.scale: expected a Tensor (the loss) or a list/tuple of Tensors, "
                        f"got {type(outputs).__name__}")

    def _state(self, optimizer):
        return self._per_optimizer.setdefault(id(optimizer), {"unscaled": False, "found_inf": False,
                                                              "stepped": False})

    def _gradients(self, optimizer, caller):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        if not self._scaled or not grads:
            missing = "the optimizer's parameters have no gradients" if self._scaled else "scale() was not called"
            raise RuntimeError(f"GradScaler.{caller}: {missing} since the last update(). The order is: "
                               "scaler.scale(loss).backward(), then scaler.step(optimizer), then scaler.update()")
        half = sorted({str(g.dtype) for g in grads if g.dtype.itemsize < 4})
        if half:
            raise ValueError(f"GradScaler.{caller}: gradients of dtype {', '.join(half)} cannot be unscaled "
                             "safely; keep float32 master parameters (autocast computes in half precision "
                             "without changing them)")
        return grads

    def unscale_(self, optimizer):
        """Divide optimizer's gradients by the scale, in place, once per step (e.g. before clipping them)."""
        if not self._enabled:
            return
        state = self._state(optimizer)
        if state["unscaled"]:
            raise RuntimeError("GradScaler.unscale_() has already been called on this optimizer since the last "
                               "update()")
        if state["stepped"]:
            raise RuntimeError("GradScaler.unscale_() is being called after step(); call update() first")
        state["found_inf"] = unscale_gradients(self._gradients(optimizer, "unscale_"), 1.0 / self._scale)
        state["unscaled"] = True

    def step(self, optimizer, *args, **kwargs):
        """Unscale the gradients (unless unscale_ did), then optimizer.step() if all of them are finite."""
        if not self._enabled:
            return optimizer.step(*args, **kwargs)
        state = self._state(optimizer)
        if state["stepped"]:
            raise RuntimeError("GradScaler.step() has already been called since the last update()")
        if not state["unscaled"]:
            self.unscale_(optimizer)
        state["stepped"] = True
        if state["found_inf"]:
            return None  # skipped: the scale was too large for these gradients
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale=None):
        """Set the scale for the next iteration: new_scale if given, else back off or grow (see module docs)."""
        if not self._enabled:
            return
        if new_scale is not None:
            self._scale = float(np.float32(new_scale.item() if isinstance(new_scale, tensor_module.Tensor) else new_scale))
        else:
            if not any(s["stepped"] or s["unscaled"] for s in self._per_optimizer.values()):
                raise RuntimeError("GradScaler.update(): no optimizer was stepped (or unscaled) since the last "
                                   "update(); call scaler.step(optimizer) first")
            found_inf = any(s["found_inf"] for s in self._per_optimizer.values())
            scale, self._growth_tracker = next_scale(self._scale, self._growth_tracker, found_inf,
                                                     self._growth_factor, self._backoff_factor,
                                                     self._growth_interval)
            self._scale = float(np.float32(scale))
        self._per_optimizer.clear()
        self._scaled = False

    def state_dict(self):
        if not self._enabled:
            return {}
        return {"scale": self._scale, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
                "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if not state_dict:
            raise RuntimeError("GradScaler.load_state_dict: the state dict is empty (it came from a disabled "
                               "scaler)")
        self._scale = float(state_dict["scale"])
        self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
        self._growth_interval, self._growth_tracker = state_dict["growth_interval"], state_dict["_growth_tracker"]
