"""Module: a container of parameters and sub-modules with a `forward`, like torch.nn.Module."""
from collections import OrderedDict

import numpy as np

from ..autograd import modified_in_place
from ..dtypes import bfloat16, float16, float32, float64, is_floating
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a Module trains: requires grad, float32 unless given otherwise."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, dtype=dtype, requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


class Module:
    """Base class of every layer and model.

    Assigning a Parameter or a Module to an attribute registers it, so
    `parameters()`, `state_dict()` and `train()/eval()` find it.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() before assigning "
                                 f"attributes like {name!r}")
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._modules, self._buffers):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_buffer(self, name, tensor):
        """A tensor that belongs to the module's state (saved, loaded) but is not trained."""
        object.__setattr__(self, name, tensor)
        self._buffers[name] = tensor

    def register_parameter(self, name, parameter):
        setattr(self, name, parameter)
        if parameter is None:
            self._parameters[name] = None

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # ----- walking the tree ---------------------------------------------------------------
    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_parameters(self, prefix=""):
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if param is not None and id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        return (param for _, param in self.named_parameters())

    def named_buffers(self):
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), buffer

    # ----- modes and gradients --------------------------------------------------------------
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for param in self.parameters():
            if set_to_none or param.grad is None:
                param.grad = None
            else:
                param.grad[...] = 0

    # ----- state ----------------------------------------------------------------------------
    def state_dict(self, prefix=""):
        """Name → Tensor of every parameter and buffer, with PyTorch's dotted names (`0.weight`, `fc.bias`).

        Like PyTorch, a shared (tied) parameter appears under every name that reaches it, so the dict
        of a model with tied weights has the same keys here as in PyTorch.
        """
        state = OrderedDict()
        for registry in (self._parameters, self._buffers):
            for name, tensor in registry.items():
                if tensor is not None:
                    state[prefix + name] = tensor
        for name, child in self._modules.items():
            state.update(child.state_dict(prefix + name + "."))
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into this module's parameters and buffers; every key and shape must match (strict)."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict for {type(self).__name__}: missing keys {missing}, "
                           f"unexpected keys {unexpected}; expected exactly {list(own)}")
        for name, target in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            array = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
            if array.shape != target.data.shape:
                raise ValueError(f"load_state_dict for {type(self).__name__}: {name!r} has shape {array.shape} "
                                 f"in the state dict, but the module expects {target.shape}")
            target.data[...] = array.astype(target.data.dtype, copy=False)
            modified_in_place(target, "load_state_dict()")
        return missing, unexpected

    # ----- dtype and device ------------------------------------------------------------------
    def to(self, target):
        """`model.to(mg.float16)` or `model.to("cpu")`: every parameter and floating buffer converted in place,
        like PyTorch's (integer buffers keep their dtype when the target is a dtype); returns the module."""
        for module in self.modules():
            for registry in (module._parameters, module._buffers):
                for name, t in registry.items():
                    if t is None or not (isinstance(target, str) and target.split(":")[0] in ("cpu", "cuda")
                                         or is_floating(t.dtype)):
                        continue
                    t.data = t.to(target).data
                    if t.grad is not None:
                        t.grad = None  # a gradient of the old dtype or device would not match
        return self

    def half(self):
        return self.to(float16)

    def bfloat16(self):
        return self.to(bfloat16)

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            lines.append(f"  ({name}): " + repr(child).replace("\n", "\n  "))
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"

    def extra_repr(self):
        return ""


class ModuleList(Module):
    """A list of modules whose parameters are registered (a plain Python list would hide them)."""

    def __init__(self, modules=()):
        super().__init__()
        for module in modules:
            self.append(module)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


class Sequential(ModuleList):
    """Modules applied one after another: Sequential(a, b)(x) == b(a(x))."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (OrderedDict, dict)):
            named = modules[0].items()
        else:
            named = ((str(i), m) for i, m in enumerate(modules))
        for name, module in named:
            setattr(self, name, module)

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x
