"""LoRA, low-rank adaptation (Hu et al. 2021; lesson `11_fine_tuning`): fine-tune a Linear layer by
learning a rank-r correction to its frozen weight instead of the weight itself.

    y = x Wᵀ + b + (α/r) · x Aᵀ Bᵀ          W (out, in) frozen; A (r, in), B (out, r) trained

The update ΔW = (α/r)·B A has rank ≤ r and r·(in + out) parameters instead of in·out. B starts at
zero, so the adapted model starts as the pretrained one; α/r keeps the update's scale the same when r
changes. After training, merge_lora folds ΔW into W: the model is a plain one again, just as fast.
"""
import numbers

import numpy as np

from ..autograd import no_grad
from ..random import generator
from .linear import Linear, linear
from .module import Module, Parameter


def lora_linear(x, weight, bias, lora_A, lora_B, scaling):
    """y = x Wᵀ + b + scaling · (x Aᵀ) Bᵀ, x (…, in) → y (…, out)   (lesson 11_fine_tuning)

    Computed as two thin products, x Aᵀ (…, r) then Bᵀ: O(r·(in + out)) per row instead of forming
    B A (out, in). Backward (autograd through `linear`): dA = scaling · (g B)ᵀ x, dB = scaling · gᵀ (x Aᵀ),
    summed over rows, with g = dL/dy; W and b get none when they are frozen.
    """
    return linear(x, weight, bias) + linear(linear(x, lora_A), lora_B) * scaling


def check_rank(r, alpha, who):
    if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r <= 0:
        raise ValueError(f"{who}: r (the rank) must be a positive integer, got {r!r}")
    if not isinstance(alpha, numbers.Real) or not np.isfinite(alpha):
        raise ValueError(f"{who}: alpha must be a finite number, got {alpha!r}")


def lora_factors(out_features, in_features, r, dtype):
    """A (r, in) from U(−1/√in, 1/√in) and B (out, r) = 0 (PEFT's initialisation): B A = 0 at first."""
    bound = 1 / np.sqrt(max(in_features, 1))
    return (Parameter(generator().uniform(-bound, bound, size=(r, in_features)).astype(dtype)),
            Parameter(np.zeros((out_features, r), dtype=dtype)))


class LoRALinear(Module):
    """A frozen nn.Linear plus a trainable low-rank update: forward(x) = base(x) + (alpha/r) · x Aᵀ Bᵀ.

    Parameters: base.weight (out, in) and base.bias, frozen (requires_grad False); lora_A (r, in) drawn
    from U(−1/√in, 1/√in) and lora_B (out, r) = 0, trainable (PEFT's initialisation).
    """

    def __init__(self, base, r=8, alpha=16):
        super().__init__()
        if not isinstance(base, Linear):
            raise ValueError(f"LoRALinear: base must be an nn.Linear, got {type(base).__name__}")
        check_rank(r, alpha, "LoRALinear")
        self.r, self.alpha, self.scaling = int(r), alpha, alpha / r
        self.base = base
        for p in base.parameters():
            p.requires_grad = False
        self.lora_A, self.lora_B = lora_factors(base.out_features, base.in_features, r, base.weight.dtype)

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        return lora_linear(x, self.base.weight, self.base.bias, self.lora_A, self.lora_B, self.scaling)

    def delta_weight(self):
        """ΔW = (alpha/r) · B A, (out, in): what merging adds to base.weight."""
        return self.scaling * (self.lora_B.data @ self.lora_A.data)

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}"


class LoRAWeight(Module):
    """The low-rank update of a weight that belongs to no Linear: MultiheadAttention's fused in_proj_weight
    (3E, E), whose rows are W_q, W_k and W_v. The attention adds delta() = (alpha/r)·B A to it in forward,
    so adapting it changes where every head looks (the LoRA paper adapts W_q and W_v)."""

    def __init__(self, out_features, in_features, r=8, alpha=16, dtype=np.float32):
        super().__init__()
        check_rank(r, alpha, "LoRAWeight")
        self.r, self.alpha, self.scaling = int(r), alpha, alpha / r
        self.lora_A, self.lora_B = lora_factors(out_features, in_features, r, dtype)

    def delta(self):
        return (self.lora_B @ self.lora_A) * self.scaling  # (out, in)

    def extra_repr(self):
        return f"r={self.r}, alpha={self.alpha}"


def _set_child(parent, name, module):
    """Put `module` in the slot of parent's child `name`, keeping the children's order (a Sequential
    applies them in that order; setattr would move the slot to the end)."""
    parent._modules[name] = module
    object.__setattr__(parent, name, module)


def _matching_layers(model, targets):
    """(parent, child name, qualified name) of each submodule whose name is a target or ends in "." + target;
    a MultiheadAttention's fused projection goes by "<its name>.in_proj"."""
    from .attention import MultiheadAttention
    found, used = [], set()
    for qualified, module in list(model.named_modules()):
        children = list(module._modules.items())
        if isinstance(module, MultiheadAttention):
            children.append(("in_proj", module))
        for name, child in children:
            full = f"{qualified}.{name}" if qualified else name
            hits = [t for t in targets if full == t or full.endswith("." + t)]
            if not hits:
                continue
            if not isinstance(child, (Linear, MultiheadAttention)):
                raise ValueError(f"apply_lora: targets {hits} match {full!r}, a {type(child).__name__}; LoRA "
                                 "adapts nn.Linear layers (and attention's in_proj) only")
            used.update(hits)
            found.append((module, name, full))
    missing = [t for t in targets if t not in used]
    if missing:
        raise ValueError(f"apply_lora: targets {missing} match no submodule of the model")
    return found


def apply_lora(model, r=8, alpha=16, targets=("attn.in_proj", "attn.out_proj", "mlp.0", "mlp.2")):
    """Freeze every parameter of model, then replace each nn.Linear named by `targets` (a module name, or
    the end of one: "mlp.0" matches blocks.3.mlp.0) with a LoRALinear around it; returns the model.
    "attn.in_proj" gives each MultiheadAttention a LoRAWeight on its fused q, k, v projection.

    The defaults adapt every weight matrix inside a GPT's blocks. Only the LoRA parameters train afterwards.
    """
    if isinstance(targets, str):
        targets = (targets,)
    if not targets:
        raise ValueError("apply_lora: targets is empty; name the Linear layers to adapt")
    found = _matching_layers(model, tuple(targets))
    check_rank(r, alpha, "apply_lora")
    for p in model.parameters():
        p.requires_grad = False
    for parent, name, _ in found:
        if name == "in_proj":  # parent is the MultiheadAttention itself
            W = parent.in_proj_weight
            parent.in_proj_lora = LoRAWeight(W.shape[0], W.shape[1], r=r, alpha=alpha, dtype=W.dtype)
        else:
            _set_child(parent, name, LoRALinear(parent._modules[name], r=r, alpha=alpha))
    return model


@no_grad()
def merge_lora(model):
    """Fold every LoRALinear's update into its base weight, W ← W + (alpha/r)·B A, and put the base
    Linear back in its place: the same outputs, no extra cost per forward. Returns the model."""
    for qualified, module in list(model.named_modules()):
        for name, child in list(module._modules.items()):
            if isinstance(child, LoRALinear):
                child.base.weight.data += child.delta_weight().astype(child.base.weight.dtype)
                _set_child(module, name, child.base)
            elif isinstance(child, LoRAWeight) and name == "in_proj_lora":
                module.in_proj_weight.data += child.delta().data.astype(module.in_proj_weight.dtype)
                delattr(module, name)
    return model
