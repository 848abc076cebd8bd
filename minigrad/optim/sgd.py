"""Stochastic gradient descent with momentum and weight decay, PyTorch's rule (lesson `01_gradient_descent`)."""
from .optimizer import Optimizer


def sgd_step(p, g, buf, lr, momentum, weight_decay):
    """One SGD step on arrays, in place; returns the momentum buffer.

        g ← g + λ θ                       (weight decay as L2)
        b ← g                  on the first step,
        b ← μ b + g            afterwards  (momentum)
        θ ← θ − η b            (θ ← θ − η g without momentum)
    """
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if buf is None:
            buf = g.copy()
        else:
            buf *= momentum
            buf += g
        g = buf
    p -= lr * g
    return buf


class SGD(Optimizer):
    """θ ← θ − η ∇L, optionally with momentum μ and L2 weight decay λ, exactly as `torch.optim.SGD`
    (dampening 0, no Nesterov).

    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)   # doctest: +SKIP
    """

    def __init__(self, params, lr, momentum=0.0, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        if group["momentum"] < 0:
            raise ValueError(f"SGD: momentum must be >= 0, got {group['momentum']}")

    def update(self, p, state, group):
        state["momentum_buffer"] = sgd_step(p.data, p.grad, state.get("momentum_buffer"),
                                            group["lr"], group["momentum"], group["weight_decay"])
