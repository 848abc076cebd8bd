"""Adam and AdamW, PyTorch's update rules and bias corrections (lesson `01_gradient_descent`)."""
import math

import numpy as np

from .. import kernels
from ..autograd import modified_in_place
from .optimizer import Optimizer


def adam_step(p, g, m, v, t, lr, beta1, beta2, eps):
    """One Adam step on arrays, in place (t counts steps from 1).

        m ← β₁ m + (1 − β₁) g
        v ← β₂ v + (1 − β₂) g²
        θ ← θ − η/(1 − β₁ᵗ) · m / (√v / √(1 − β₂ᵗ) + ε)
    """
    m *= beta1
    m += (1 - beta1) * g
    v *= beta2
    v += (1 - beta2) * (g * g)
    denom = np.sqrt(v)
    denom /= math.sqrt(1 - beta2 ** t)
    denom += eps
    step = m / denom
    step *= lr / (1 - beta1 ** t)
    p -= step


def decoupled_weight_decay(p, lr, weight_decay):
    """AdamW's decay, applied to θ before the Adam step and outside the moments:  θ ← θ (1 − η λ)."""
    p *= 1 - lr * weight_decay


class Adam(Optimizer):
    """Adam: gradient descent θ ← θ − η ∇L with the gradient replaced by its bias-corrected running
    mean over the root of its running mean square, as `torch.optim.Adam`. `weight_decay` λ adds the
    L2 gradient λθ to g before the moments (use AdamW for decoupled decay).
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        beta1, beta2 = group["betas"]
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"{type(self).__name__}: betas must lie in [0, 1), got {group['betas']}")
        if group["eps"] < 0:
            raise ValueError(f"{type(self).__name__}: eps must be >= 0, got {group['eps']}")

    def update(self, p, state, group):
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
        state["step"] += 1
        g = self.decay(p, group)
        beta1, beta2 = group["betas"]
        adam_step(p.data, g, state["exp_avg"], state["exp_avg_sq"], state["step"],
                  group["lr"], beta1, beta2, group["eps"])

    def decay(self, p, group):
        """Adam's weight decay is L2 regularisation: g ← g + λθ."""
        return p.grad + group["weight_decay"] * p.data if group["weight_decay"] else p.grad


class AdamW(Adam):
    """Adam with decoupled weight decay, as `torch.optim.AdamW`: θ ← θ(1 − ηλ), then the Adam step
    on the plain gradient. Default λ = 1e-2 like PyTorch.
    """

    _TORCH_FLAGS = {**Adam._TORCH_FLAGS, "decoupled_weight_decay": True}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def decay(self, p, group):
        if group["weight_decay"]:
            decoupled_weight_decay(p.data, group["lr"], group["weight_decay"])
        return p.grad

    def step(self, closure=None):
        """The AdamW step of every parameter with a gradient, all of a group's tensors of one dtype in one call
        of `minigrad.kernels.adamw_step`: on backend "c" one pass of kernels/adamw.c over all of them, on
        "numpy" the rules above (decoupled_weight_decay, then adam_step) tensor by tensor.
        """
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            batches = {}  # (dtype, contiguous) -> [(param, state)]: one kernel call takes one dtype
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(id(p), {})
                if not state:
                    state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
                state["step"] += 1
                batches.setdefault((p.data.dtype, p.data.flags.c_contiguous), []).append((p, state))
            beta1, beta2 = group["betas"]
            for (_, contiguous), members in batches.items():
                kernels.adamw_step([p.data for p, _ in members], [p.grad for p, _ in members],
                                   [s["exp_avg"] for _, s in members], [s["exp_avg_sq"] for _, s in members],
                                   [int(s["step"]) for _, s in members], group["lr"], beta1, beta2, group["eps"],
                                   group["weight_decay"], backend=None if contiguous else "numpy")  # C updates in place
                for p, _ in members:
                    modified_in_place(p, "AdamW.step()")
        return loss
