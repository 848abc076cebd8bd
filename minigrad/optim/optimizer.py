"""The Optimizer base class: parameter groups, per-parameter state, zero_grad.

Every optimizer applies some form of gradient descent (lesson
`01_gradient_descent`):

    θ ← θ − η ∇L(θ)

with θ the parameters, η the learning rate and ∇L the gradient left in
`p.grad` by `loss.backward()`. Subclasses only say how one parameter moves,
in `update(p, state, group)`.
"""
import numpy as np


class Optimizer:
    """Holds `param_groups` (a list of dicts, each with "params" and its hyperparameters) like PyTorch.

    `params` is an iterable of Parameters, or of dicts `{"params": [...], "lr": ...}` whose missing
    keys take the optimizer's defaults. Change a hyperparameter during training with
    `opt.param_groups[0]["lr"] = 1e-4`.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # id(param) -> dict of that parameter's buffers; params outlive it via param_groups
        params = list(params.values()) if isinstance(params, dict) else list(params)
        if not params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        seen = set()
        for group in groups:
            self.add_param_group(group, seen)

    def add_param_group(self, group, seen=None):
        if not isinstance(group, dict) or "params" not in group:
            raise TypeError(f"{type(self).__name__}: a parameter group must be a dict with a 'params' key, "
                            f"got {type(group).__name__}")
        unknown = set(group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)} in a parameter "
                             f"group; expected some of {sorted(self.defaults)}")
        group = {**self.defaults, **group}
        params = group["params"]
        group["params"] = [params] if hasattr(params, "data") else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]} if seen is None else seen
        for p in group["params"]:
            if not hasattr(p, "data") or not getattr(p, "requires_grad", False):
                raise ValueError(f"{type(self).__name__} can only optimize tensors with requires_grad=True, "
                                 f"got {type(p).__name__} (requires_grad={getattr(p, 'requires_grad', None)})")
            if id(p) in seen:
                raise ValueError(f"{type(self).__name__}: a parameter of shape {tuple(p.shape)} appears in "
                                 "more than one place in the parameter list")
            seen.add(id(p))
        self.check_hyperparameters(group)
        self.param_groups.append(group)

    def check_hyperparameters(self, group):
        if group["lr"] < 0:
            raise ValueError(f"{type(self).__name__}: learning rate must be >= 0, got lr={group['lr']}")
        if group.get("weight_decay", 0.0) < 0:
            raise ValueError(f"{type(self).__name__}: weight_decay must be >= 0, got {group['weight_decay']}")

    def zero_grad(self, set_to_none=True):
        """Forget the gradients before the next backward (None, like PyTorch's default)."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad[...] = 0

    def step(self, closure=None):
        """Move every parameter that has a gradient one step; `closure` re-evaluates and returns the loss."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.update(p, self.state.setdefault(id(p), {}), group)
        return loss

    def update(self, p, state, group):
        raise NotImplementedError(f"{type(self).__name__} must define update(p, state, group)")

    def __repr__(self):
        hyper = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        sizes = [sum(int(np.prod(p.shape)) for p in g["params"]) for g in self.param_groups]
        return f"{type(self).__name__}({hyper}; {len(sizes)} group(s) of {sizes} numbers)"
