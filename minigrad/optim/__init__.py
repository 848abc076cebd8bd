"""Optimizers: gradient descent θ ← θ − η∇L and its refinements (lesson `01_gradient_descent`).

    opt = optim.AdamW(model.parameters(), lr=3e-4)
    loss.backward(); opt.step(); opt.zero_grad()
"""
from .adam import Adam, AdamW, adam_step, decoupled_weight_decay
from .optimizer import Optimizer
from .sgd import SGD, sgd_step
from .zero import ZeroRedundancyOptimizer, optimizer_state_bytes

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "sgd_step", "adam_step", "decoupled_weight_decay",
           "ZeroRedundancyOptimizer", "optimizer_state_bytes"]