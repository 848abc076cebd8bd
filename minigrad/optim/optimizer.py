"""The Optimizer base class: parameter groups, per-parameter state, zero_grad.

Every optimizer applies some form of gradient descent (lesson
`01_gradient_descent`):

    θ ← θ − η ∇L(θ)

with θ the parameters, η the learning rate and ∇L the gradient left in
`p.grad` by `loss.backward()`. Subclasses only say how one parameter moves,
in `update(p, state, group)`.
"""
import numpy as np

from ..autograd import modified_in_place


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
                    modified_in_place(p, f"{type(self).__name__}.step()")  # a graph that used p is stale now
        return loss

    def update(self, p, state, group):
        raise NotImplementedError(f"{type(self).__name__} must define update(p, state, group)")

    # ----- state, in PyTorch's layout ------------------------------------------------------------
    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{"state": {index: {name: array or number}}, "param_groups": [{hyperparameters, "params":
        [indices]}]}, as `torch.optim.Optimizer.state_dict()`: parameters are numbered in the order of
        the groups, so the dict can be loaded into a new optimizer over the same model. Arrays are copies.
        """
        state = {}
        for index, p in enumerate(self._indexed_params()):
            if self.state.get(id(p)):
                state[index] = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in self.state[id(p)].items()}
        groups, start = [], 0
        for group in self.param_groups:
            count = len(group["params"])
            groups.append({**{k: v for k, v in group.items() if k != "params"},
                           "params": list(range(start, start + count))})
            start += count
        return {"state": state, "param_groups": groups}

    # PyTorch's implementation switches, accepted in a loaded dict while they keep their default meaning.
    _TORCH_FLAGS = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                    "differentiable": False, "fused": None, "nesterov": False, "dampening": 0,
                    "decoupled_weight_decay": False}

    def load_state_dict(self, state_dict):
        """Restore what `state_dict()` (this class's or PyTorch's same optimizer) returned."""
        name = type(self).__name__
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError(f"{name}.load_state_dict expects a dict with keys 'state' and 'param_groups', "
                             f"got {sorted(state_dict) if isinstance(state_dict, dict) else type(state_dict).__name__}")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: the dict has {len(groups)} parameter groups, "
                             f"this optimizer {len(self.param_groups)}")
        new_groups = []
        for i, (saved, group) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} has {len(saved['params'])} parameters "
                                 f"in the dict, {len(group['params'])} in this optimizer")
            hyper = {}
            for key, value in saved.items():
                if key == "params":
                    continue
                if key in self.defaults:
                    hyper[key] = tuple(value) if isinstance(self.defaults[key], tuple) else value
                elif key in self._TORCH_FLAGS:
                    if value != self._TORCH_FLAGS[key] and value not in (None, False):
                        raise ValueError(f"{name}.load_state_dict: group {i} sets {key}={value!r}, "
                                         f"which minigrad's {name} does not implement")
                else:
                    raise ValueError(f"{name}.load_state_dict: group {i} has unknown hyperparameter {key!r}; "
                                     f"expected some of {sorted(self.defaults)}")
            new_group = {**group, **hyper}
            self.check_hyperparameters(new_group)
            new_groups.append(new_group)
        index_of = {}
        for saved, group in zip(groups, self.param_groups):
            index_of.update({int(k): p for k, p in zip(saved["params"], group["params"])})
        new_state = {}
        for key, entry in state_dict["state"].items():
            if int(key) not in index_of:
                raise ValueError(f"{name}.load_state_dict: state for parameter {key}, but the groups list "
                                 f"only {sorted(index_of)}")
            p = index_of[int(key)]
            new_state[id(p)] = {k: self._state_value(k, v, p, key) for k, v in entry.items()}
        for i, group in enumerate(new_groups):
            self.param_groups[i].update({k: v for k, v in group.items() if k != "params"})
        self.state = new_state

    def _state_value(self, key, value, p, index):
        """A saved state entry as this optimizer keeps it: arrays shaped and typed like the parameter."""
        if value is None:
            return None
        if hasattr(value, "detach"):  # a minigrad or torch tensor
            value = value.detach().numpy()
        array = np.asarray(value)
        if key == "step":
            return int(array.item())
        if array.shape != p.data.shape:
            raise ValueError(f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {index} has "
                             f"shape {array.shape}, the parameter {tuple(p.data.shape)}")
        return array.astype(p.data.dtype, copy=True)

    def __repr__(self):
        hyper = ", ".join(f"{k}={v}" for k, v in self.defaults.items())
        sizes = [sum(int(np.prod(p.shape)) for p in g["params"]) for g in self.param_groups]
        return f"{type(self).__name__}({hyper}; {len(sizes)} group(s) of {sizes} numbers)"
