"""Tensor: a NumPy array that remembers how it was computed.

Every op below computes its output with NumPy and, right beside it, defines
`backward(grad)`: the gradient of its output turned into one gradient per
input (the chain rule for that op). `Tensor.from_op` links the output to its
inputs; `minigrad.autograd` walks those links backwards.
"""
import numbers

import numpy as np

from . import autograd, kernels, special
from .amp.autocast import is_autocast_enabled, lower_precision
from .device import array_module, check_device, require_cupy
from .kernels.halfconv import cast
from .dtypes import (HALF_FLOATS, as_dtype, bfloat16, bool_, float16, float32, float64, int32, int64, is_floating,
                     is_number, promote_types, result_dtype)
from .shapes import expand_reduced, normalize_dims, shape_args, sum_to_shape


def _to_array(data, dtype=None, device="cpu"):
    """Whatever the user passed → a NumPy (or CuPy) array; Python floats default to float32 like PyTorch."""
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        data = data.data
    xp = np
    if device == "cuda":
        xp = require_cupy()
    elif array_module(data) is not np:
        data = data.get()
    if isinstance(data, (np.ndarray, np.generic)) or xp is not np:
        array = xp.asarray(data, dtype=dtype)
    else:
        array = np.asarray(data, dtype=dtype)
        if dtype is None and array.dtype == np.float64:
            array = array.astype(np.float32)  # Python floats default to float32, like PyTorch
        if xp is not np:
            array = xp.asarray(array)
    if not is_number(array.dtype):
        raise TypeError(f"minigrad tensors hold numbers; cannot make a tensor from data of dtype {array.dtype}")
    return array


def as_tensor(x, like=None):
    """A Tensor as is; anything else (number, list, array) as a constant tensor."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (numbers.Number, np.generic)) and not isinstance(x, np.ndarray):
        return Tensor._constant(x, like)
    return Tensor(x)


def _operands(a, b):
    """Two Tensors of one dtype for a binary op (Python numbers keep the tensor's dtype, like PyTorch)."""
    if isinstance(b, Tensor):
        if a.data.dtype == b.data.dtype:
            return a, b
    else:
        if isinstance(b, float) and not is_floating(a.data.dtype):
            a = a.to(float32)
        elif isinstance(b, int) and not isinstance(b, bool) and a.data.dtype.kind == "b":
            a = a.to(int64)
        if isinstance(b, (bool, int, float)):
            return a, Tensor._constant(b, a)
        b = Tensor(np.asarray(b) if not isinstance(b, (list, tuple)) else b)
        if a.data.dtype == b.data.dtype:
            return a, b
    dtype = result_dtype(a, b)
    return a.to(dtype), b.to(dtype)


def _elementwise(name, ufunc, a, b):
    """ufunc(a, b) on the data, with a broadcasting failure reported in the op's own terms."""
    try:
        return ufunc(a.data, b.data)
    except ValueError:
        raise ValueError(f"{name}: shapes {a.shape} and {b.shape} do not broadcast (dims must be equal or 1, "
                         f"compared from the right)") from None


def _index_data(idx):
    if isinstance(idx, Tensor):
        return idx.data
    if isinstance(idx, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    if isinstance(idx, list):
        return np.asarray(idx)
    return idx


def _is_basic_index(idx):
    parts = idx if isinstance(idx, tuple) else (idx,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) for p in parts)


class Tensor:
    """An n-dimensional array with an optional gradient, PyTorch-shaped (see shared/API.md)."""

    __slots__ = ("data", "grad", "_requires_grad", "_parents", "_backward", "_op", "_version_counter", "_saved", "_height",
                 "__weakref__")
    __array_ufunc__ = None  # `ndarray + Tensor` defers to Tensor.__radd__ instead of looping elementwise

    def __init__(self, data, dtype=None, requires_grad=False, device="cpu"):
        self.data = _to_array(data, dtype, check_device(device))
        self.grad = None
        self._requires_grad = False
        self._parents = ()
        self._backward = None
        self._op = ""
        self._version_counter = [0, ""]  # [in-place changes so far, the last one]: see autograd.modified_in_place
        self._saved = autograd.NOTHING_SAVED
        self._height = 0
        if requires_grad:
            self.requires_grad_(True)

    # ----- building the graph -------------------------------------------------------------
    @staticmethod
    def from_op(data, parents, backward, op="", saved=None, saves_output=False, view_of=None):
        """The output of an op: `data` computed from `parents`, with `backward(grad) -> grads per parent`.

        No graph is recorded under `no_grad`, when no parent needs a gradient, or for integer outputs.
        `saved` are the inputs whose values backward reads (all parents unless the op says fewer) and
        `saves_output` says it reads the output too: their versions are recorded, so that changing one in
        place before backward raises instead of giving a wrong gradient. `view_of`: the output shares that
        tensor's memory, and so its version counter.
        """
        out = Tensor.__new__(Tensor)
        if not isinstance(data, np.ndarray) and isinstance(data, np.generic):
            data = np.asarray(data)  # NumPy returns scalars from 0-d arithmetic; a tensor always holds an array
        out.data = data
        out.grad = None
        out._op = op
        out._version_counter = [0, ""] if view_of is None else view_of._version_counter
        height = -1  # the longest path down to a leaf, among inputs that need a gradient (autograd's order)
        if autograd._mode.enabled and is_floating(data.dtype):
            for p in parents:  # a plain loop: any() over a generator costs more than the rest of this call
                if p._requires_grad and p._height > height:
                    height = p._height
        if height >= 0:
            out._requires_grad, out._parents, out._backward, out._height = True, parents, backward, height + 1
            out._saved = (autograd.NOTHING_SAVED if saved == () and not saves_output else
                          autograd.saved_versions(parents if saved is None else saved, out if saves_output else None))
        else:
            out._requires_grad, out._parents, out._backward, out._height = False, (), None, 0
            out._saved = autograd.NOTHING_SAVED
        return out

    @staticmethod
    def _constant(value, like):
        out = Tensor.__new__(Tensor)
        xp = array_module(like.data)
        out.data = xp.asarray(value, dtype=like.data.dtype)
        out.grad, out._requires_grad, out._parents, out._backward, out._op = None, False, (), None, ""
        out._version_counter, out._saved, out._height = [0, ""], autograd.NOTHING_SAVED, 0
        return out

    @property
    def _version(self):
        """How many times this tensor's memory was changed in place (shared with its views), as in PyTorch."""
        return self._version_counter[0]

    def backward(self, gradient=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into `.grad` of every leaf that requires grad."""
        if not self._requires_grad:
            raise RuntimeError("backward() was called on a tensor that does not require grad: no input of the "
                               "computation had requires_grad=True (or it ran under mg.no_grad()).")
        if gradient is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a single-element (scalar) output, but this "
                                   f"tensor has shape {self.shape}; reduce it first (e.g. y.sum().backward()) or pass "
                                   f"gradient= an array of shape {self.shape}")
            gradient = np.ones_like(self.data)
        else:
            gradient = _to_array(gradient, self.data.dtype, self.device)
            if gradient.shape != self.data.shape:
                raise RuntimeError(f"backward(gradient) needs a gradient of the output's shape {self.shape}, "
                                   f"got {tuple(gradient.shape)}")
        autograd.run_backward(self, gradient, retain_graph)

    def register_post_accumulate_grad_hook(self, hook):
        """hook(self) runs when backward has accumulated this leaf's gradient into .grad (see autograd)."""
        return autograd.register_post_accumulate_grad_hook(self, hook)

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        self.requires_grad_(flag)

    def requires_grad_(self, requires_grad=True):
        if requires_grad and not is_floating(self.data.dtype):
            raise RuntimeError(f"only floating-point tensors can require gradients; this tensor has dtype "
                               f"{self.data.dtype} (convert it first, e.g. t.float())")
        if not requires_grad and self._backward is not None:
            raise RuntimeError("requires_grad can only be switched off on a leaf tensor; use .detach() instead")
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self):
        return self._backward is None

    def detach(self):
        """The same data, cut from the graph (and sharing its version counter, like the memory)."""
        return Tensor.from_op(self.data, (), None, view_of=self)

    def zero_(self):
        self.data[...] = 0
        autograd.modified_in_place(self, "zero_()")
        return self

    # ----- attributes ---------------------------------------------------------------------
    shape = property(lambda self: tuple(self.data.shape))
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)
    device = property(lambda self: "cpu" if isinstance(self.data, np.ndarray) else "cuda")

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.data.ndim

    def numel(self):
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def item(self):
        if self.data.size != 1:
            raise ValueError(f"item() needs a tensor with exactly one element, this one has shape {self.shape}")
        return self.data.reshape(()).item()

    def numpy(self):
        """The data as a host NumPy array (copied from the GPU if it lives there)."""
        return self.data if isinstance(self.data, np.ndarray) else self.data.get()

    def tolist(self):
        return self.numpy().tolist()

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        if dtype is not None and array.dtype != dtype:
            return array.astype(dtype)
        return array.copy() if copy else array

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise ValueError(f"the truth value of a tensor with {self.data.size} elements is ambiguous; "
                             "use .any() or .all()")
        return bool(self.item())

    __hash__ = object.__hash__

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="tensor(", precision=4)
        extras = []
        if self.data.dtype not in (float32, int64, bool_):
            extras.append(f"dtype={self.data.dtype}")
        if self.device != "cpu":
            extras.append(f"device='{self.device}'")
        if self._requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + ", ".join([body] + extras) + ")"

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # ----- dtype and device ---------------------------------------------------------------
    def to(self, *args, device=None, dtype=None):
        """`t.to("cuda")`, `t.to(mg.float64)`, `t.to("cpu", mg.float16)` or `t.to(dtype=..., device=...)`, the
        forms PyTorch takes; gradients flow back through the move and the cast."""
        if len(args) > 2:
            raise TypeError(f"Tensor.to() takes a device, a dtype or one of each, got {len(args)} arguments {args}")
        for arg in args:
            if isinstance(arg, str) and arg.split(":")[0] in ("cpu", "cuda"):
                device = arg
            else:
                dtype = arg
        moved = self if device is None else self._to_device(device)
        return moved if dtype is None else moved._to_dtype(dtype)

    def _to_device(self, target):
        device = check_device(target)
        if device == self.device:
            return self
        data = require_cupy().asarray(self.data) if device == "cuda" else self.data.get()
        source = self.device

        def backward(grad):
            return (require_cupy().asarray(grad) if source == "cuda" else grad.get(),)
        return Tensor.from_op(data, (self,), backward, "to", saved=())

    def _to_dtype(self, target):
        dtype = as_dtype(target)
        if dtype == self.data.dtype:
            return self
        source_dtype = self.data.dtype

        def backward(grad):
            return (cast(grad, source_dtype),)
        return Tensor.from_op(cast(self.data, dtype), (self,), backward, "to", saved=())

    def float(self):
        return self.to(float32)

    def half(self):
        return self.to(float16)

    def bfloat16(self):
        return self.to(bfloat16)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def int(self):
        return self.to(int32)

    def bool(self):
        return self.to(bool_)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    # ----- arithmetic ---------------------------------------------------------------------
    def __add__(self, other):
        a, b = _operands(self, other)

        def backward(grad):
            return sum_to_shape(grad, a.data.shape), sum_to_shape(grad, b.data.shape)
        return Tensor.from_op(_elementwise("add", np.add, a, b), (a, b), backward, "add", saved=())

    def __sub__(self, other):
        a, b = _operands(self, other)

        def backward(grad):
            return sum_to_shape(grad, a.data.shape), sum_to_shape(-grad, b.data.shape)
        return Tensor.from_op(_elementwise("sub", np.subtract, a, b), (a, b), backward, "sub", saved=())

    def __mul__(self, other):
        a, b = _operands(self, other)

        def backward(grad):
            return (sum_to_shape(grad * b.data, a.data.shape) if a._requires_grad else None,
                    sum_to_shape(grad * a.data, b.data.shape) if b._requires_grad else None)
        return Tensor.from_op(_elementwise("mul", np.multiply, a, b), (a, b), backward, "mul")

    def __truediv__(self, other):
        a, b = _operands(self, other)
        if not is_floating(a.data.dtype):
            a, b = a.to(float32), b.to(float32)  # true division of integers gives floats, like PyTorch
        out = _elementwise("div", np.true_divide, a, b)

        def backward(grad):
            return (sum_to_shape(grad / b.data, a.data.shape) if a._requires_grad else None,
                    sum_to_shape(-grad * out / b.data, b.data.shape) if b._requires_grad else None)
        return Tensor.from_op(out, (a, b), backward, "div", saved=(b,), saves_output=b._requires_grad)

    def __pow__(self, exponent):
        a, b = _operands(self, exponent)
        out = _elementwise("pow", np.power, a, b)

        def backward(grad):
            grad_a = grad_b = None
            with np.errstate(divide="ignore", invalid="ignore"):  # 0^−1 and ln 0 are ±∞, ln(−1) is NaN: as PyTorch
                if a._requires_grad:  # d(a^b)/da = b·a^(b−1), taken as 0 where b = 0 (also at a = 0: 0·∞)
                    grad_a = sum_to_shape(np.where(b.data == 0, 0, grad * b.data * a.data ** (b.data - 1)),
                                         a.data.shape)
                if b._requires_grad:  # d(a^b)/db = a^b·ln a, taken as 0 where a = 0 and b >= 0 (0·(−∞))
                    grad_b = sum_to_shape(np.where((a.data == 0) & (b.data >= 0), 0, grad * out * np.log(a.data)),
                                         b.data.shape)
            return grad_a, grad_b
        return Tensor.from_op(out, (a, b), backward, "pow", saves_output=b._requires_grad)

    def __matmul__(self, other):
        a, b = _operands(self, other)
        return matmul(a, b)

    def __neg__(self):
        return Tensor.from_op(-self.data, (self,), lambda grad: (-grad,), "neg", saved=())

    def __radd__(self, other):
        return self + other

    def __rsub__(self, other):
        return as_tensor(other, like=self) - self

    def __rmul__(self, other):
        return self * other

    def __rtruediv__(self, other):
        return as_tensor(other, like=self) / self

    def __rpow__(self, other):
        return as_tensor(other, like=self) ** self

    def __rmatmul__(self, other):
        return as_tensor(other) @ self

    # ----- comparisons (no gradient) ------------------------------------------------------
    def _compare(self, other, compare):
        a, b = _operands(self, other)
        return Tensor.from_op(_elementwise(compare.__name__, compare, a, b), (), None, "compare")

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __invert__(self):
        return Tensor.from_op(~self.data, (), None, "not")

    def __and__(self, other):
        return self._compare(other, np.logical_and)

    def __or__(self, other):
        return self._compare(other, np.logical_or)

    # ----- elementwise functions ----------------------------------------------------------
    def exp(self):
        out = np.exp(self.data)
        return Tensor.from_op(out, (self,), lambda grad: (grad * out,), "exp", saved=(), saves_output=True)

    def log(self):
        x = self.data
        return Tensor.from_op(np.log(x), (self,), lambda grad: (grad / x,), "log")

    def sqrt(self):
        out = np.sqrt(self.data)
        return Tensor.from_op(out, (self,), lambda grad: (grad / (2 * out),), "sqrt", saved=(), saves_output=True)

    def tanh(self):
        out = np.tanh(self.data)
        return Tensor.from_op(out, (self,), lambda grad: (grad * (1 - out * out),), "tanh", saved=(),
                              saves_output=True)

    def sigmoid(self):
        """σ(x) = 1/(1+e^−x) (minigrad.special.sigmoid); dσ/dx = σ(1 − σ)."""
        out = special.sigmoid(self.data)
        return Tensor.from_op(out, (self,), lambda grad: (grad * out * (1 - out),), "sigmoid", saved=(),
                              saves_output=True)

    def relu(self):
        """max(x, 0), NaN staying NaN; the gradient passes where not x <= 0 (at NaN too, as in PyTorch)."""
        out = np.maximum(self.data, 0)  # out <= 0 exactly where x <= 0, so backward reads the output only
        return Tensor.from_op(out, (self,), lambda grad: (grad * ~(out <= 0),), "relu", saved=(), saves_output=True)

    def abs(self):
        """|x|, with gradient sign(x): 0 at 0 and at NaN (as in PyTorch)."""
        x = self.data
        return Tensor.from_op(np.abs(x), (self,), lambda grad: (grad * np.sign(np.nan_to_num(x)),), "abs")

    def clamp(self, min=None, max=None):
        """Limit values to [min, max]; the gradient passes where the input lies inside the range."""
        if min is None and max is None:
            raise ValueError("clamp needs at least one of min and max")
        x = self.data
        out = np.clip(x, min, max)
        inside = np.ones(x.shape, dtype=bool)
        if min is not None:
            inside &= x >= min
        if max is not None:
            inside &= x <= max
        return Tensor.from_op(out.astype(x.dtype, copy=False), (self,), lambda grad: (grad * inside,), "clamp",
                              saved=())

    clip = clamp

    # ----- reductions ---------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False):
        axes = normalize_dims(dim, self.data.ndim)
        shape = self.data.shape
        if self.data.dtype in HALF_FLOATS:  # accumulate in float32, round once (as PyTorch)
            out = self.data.sum(axis=axes, keepdims=keepdim, dtype=float32).astype(self.data.dtype)
        else:
            out = self.data.sum(axis=axes, keepdims=keepdim)
        if self.data.dtype.kind == "b":
            out = out.astype(int64)
        return Tensor.from_op(np.asarray(out), (self,),
                              lambda grad: (expand_reduced(grad, shape, axes, keepdim),), "sum", saved=())

    def mean(self, dim=None, keepdim=False):
        if not is_floating(self.data.dtype):
            raise TypeError(f"mean() needs a floating-point tensor, got dtype {self.data.dtype} (use .float())")
        axes = normalize_dims(dim, self.data.ndim)
        count = int(np.prod([self.data.shape[a] for a in axes])) if self.data.ndim else 1
        return self.sum(dim, keepdim) / count

    def max(self, dim=None, keepdim=False):
        """Largest value: over all elements (the gradient shared by every element equal to it, or by every
        NaN when it is NaN), or along one dim (values only; the gradient to the one index argmax gives),
        as PyTorch's max() and max(dim).values."""
        return self._extreme(np.max, np.argmax, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return self._extreme(np.min, np.argmin, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        """Largest value over dim (all by default); ties share the gradient equally, as PyTorch's amax."""
        return self._reduce_extreme(np.max, dim, keepdim, "amax")

    def amin(self, dim=None, keepdim=False):
        return self._reduce_extreme(np.min, dim, keepdim, "amin")

    def _extreme(self, reduce, arg, dim, keepdim):
        if dim is None:
            return self._reduce_extreme(reduce, dim, keepdim, "max", nan_ties=True)
        if not isinstance(dim, (int, np.integer)):
            return self._reduce_extreme(reduce, dim, keepdim, "max")
        if self.data.size == 0:
            raise ValueError(f"max/min of an empty tensor of shape {self.shape} has no value")
        (axis,) = normalize_dims(dim, self.data.ndim)
        x = self.data
        index = np.expand_dims(arg(x, axis=axis), axis) if x.ndim else np.zeros((), dtype=np.intp)  # first hit
        out = np.take_along_axis(x, index, axis) if x.ndim else x

        def backward(grad):
            full = np.zeros(x.shape, dtype=grad.dtype)
            if not x.ndim:
                return (grad + full,)
            np.put_along_axis(full, index, grad if keepdim else np.expand_dims(grad, axis), axis)
            return (full,)
        return Tensor.from_op(out if keepdim or not x.ndim else out.squeeze(axis), (self,), backward, "max",
                              saved=())

    def _reduce_extreme(self, reduce, dim, keepdim, op, nan_ties=False):
        if self.data.size == 0:
            raise ValueError(f"max/min of an empty tensor of shape {self.shape} has no value")
        axes = normalize_dims(dim, self.data.ndim)
        x = self.data
        out = np.asarray(reduce(x, axis=axes, keepdims=True))

        def backward(grad):
            hits = np.isnan(x) if nan_ties and np.isnan(out).any() else x == out
            grad = grad if keepdim else np.expand_dims(grad, axes) if x.ndim else grad
            return (hits * (grad / hits.sum(axis=axes, keepdims=True)),)
        return Tensor.from_op(out if keepdim else out.reshape([n for i, n in enumerate(x.shape) if i not in axes]),
                              (self,), backward, op, saves_output=True)

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(np.asarray(np.argmax(self.data)))
        return Tensor(np.argmax(self.data, axis=dim, keepdims=keepdim))

    def argmin(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(np.asarray(np.argmin(self.data)))
        return Tensor(np.argmin(self.data, axis=dim, keepdims=keepdim))

    def var(self, dim=None, keepdim=False, unbiased=False):
        """Var(x) = Σ (x − mean)² / (n − δ), with δ = 1 when unbiased (Bessel's correction)."""
        axes = normalize_dims(dim, self.data.ndim)
        x = self.data
        n = int(np.prod([x.shape[a] for a in axes])) if x.ndim else 1
        denominator = n - (1 if unbiased else 0)
        centered = x - x.mean(axis=axes, keepdims=True)
        out = np.asarray((centered ** 2).sum(axis=axes, keepdims=keepdim) / denominator)

        def backward(grad):  # with n − δ = 0 the variance is NaN (0/0) and so is its gradient, as in PyTorch
            scale = 2 / denominator if denominator else np.inf  # a Python float keeps x's dtype (also bfloat16)
            return (expand_reduced(grad, x.shape, axes, keepdim) * scale * centered,)
        return Tensor.from_op(out.astype(x.dtype, copy=False), (self,), backward, "var", saved=())

    def std(self, dim=None, keepdim=False, unbiased=False):
        """√Var(x); d√v/dv = 1/(2√v) is taken as 0 where √v = 0 (a constant input), as PyTorch does."""
        variance = self.var(dim, keepdim, unbiased)
        out = np.sqrt(variance.data)

        def backward(grad):
            with np.errstate(divide="ignore", invalid="ignore"):
                return (np.where(out == 0, 0, grad / (2 * out)),)
        return Tensor.from_op(out, (variance,), backward, "std", saved=(), saves_output=True)

    def softmax(self, dim=-1):
        """softmax(x)_i = exp(x_i − max x) / Σ_j exp(x_j − max x) (minigrad.special.softmax)."""
        if self.data.dtype in HALF_FLOATS and is_autocast_enabled():
            return self.float().softmax(dim)  # autocast keeps softmax in float32
        out = special.softmax(self.data, dim)

        def backward(grad):  # J = diag(y) − y yᵀ, so Jᵀg = y ∘ (g − ⟨g, y⟩)
            return (out * (grad - (grad * out).sum(axis=dim, keepdims=True)),)
        return Tensor.from_op(out, (self,), backward, "softmax", saved=(), saves_output=True)

    def log_softmax(self, dim=-1):
        """log softmax(x)_i = x_i − log Σ_j exp(x_j) (minigrad.special.log_softmax)."""
        if self.data.dtype in HALF_FLOATS and is_autocast_enabled():
            return self.float().log_softmax(dim)
        out = special.log_softmax(self.data, dim)

        def backward(grad):  # g − softmax(x) · Σ g
            return (grad - np.exp(out) * grad.sum(axis=dim, keepdims=True),)
        return Tensor.from_op(out, (self,), backward, "log_softmax", saved=(), saves_output=True)

    # ----- shape --------------------------------------------------------------------------
    def reshape(self, *shape):
        shape = shape_args(shape)
        source = self.data.shape
        try:
            out = self.data.reshape(shape)
        except ValueError:
            raise ValueError(f"reshape: cannot view a tensor of shape {tuple(source)} ({self.data.size} elements) "
                             f"as shape {shape}") from None
        return Tensor.from_op(out, (self,), lambda grad: (grad.reshape(source),), "reshape", saved=(), view_of=self)

    view = reshape

    def transpose(self, dim0, dim1):
        d0, d1 = normalize_dims((dim0, dim1), self.data.ndim)
        return Tensor.from_op(np.swapaxes(self.data, d0, d1), (self,),
                              lambda grad: (np.swapaxes(grad, d0, d1),), "transpose", saved=(), view_of=self)

    def permute(self, *dims):
        dims = normalize_dims(shape_args(dims), self.data.ndim)
        if sorted(dims) != list(range(self.data.ndim)):
            raise ValueError(f"permute needs each of the {self.data.ndim} dims exactly once, got {dims}")
        inverse = np.argsort(dims)
        return Tensor.from_op(self.data.transpose(dims), (self,),
                              lambda grad: (grad.transpose(inverse),), "permute", saved=(), view_of=self)

    @property
    def T(self):
        return self.permute(*reversed(range(self.data.ndim)))

    @property
    def mT(self):
        return self.transpose(-2, -1)

    def unsqueeze(self, dim):
        if not -self.data.ndim - 1 <= dim <= self.data.ndim:
            raise IndexError(f"unsqueeze: dim {dim} is out of range for a tensor with {self.data.ndim} dimensions")
        dim = dim % (self.data.ndim + 1)
        return self.reshape(self.data.shape[:dim] + (1,) + self.data.shape[dim:])

    def squeeze(self, dim=None):
        shape = self.data.shape
        axes = normalize_dims(dim, self.data.ndim) if self.data.ndim else ()
        new = tuple(n for i, n in enumerate(shape) if not (i in axes and n == 1))
        return self.reshape(new)

    def flatten(self, start_dim=0, end_dim=-1):
        if self.data.ndim == 0:
            return self.reshape(1)
        start, end = normalize_dims((start_dim, end_dim), self.data.ndim)
        shape = self.data.shape
        return self.reshape(shape[:start] + (int(np.prod(shape[start:end + 1])),) + shape[end + 1:])

    def expand(self, *sizes):
        sizes = shape_args(sizes)
        extra = len(sizes) - self.data.ndim
        target = tuple(self.data.shape[i - extra] if s == -1 else s for i, s in enumerate(sizes))
        source = self.data.shape
        return Tensor.from_op(np.broadcast_to(self.data, target), (self,),
                              lambda grad: (sum_to_shape(grad, source),), "expand", saved=(), view_of=self)

    def contiguous(self):
        return self

    def __getitem__(self, idx):
        idx = _index_data(idx)
        source_shape, dtype = self.data.shape, self.data.dtype
        out = self.data[idx]
        basic = _is_basic_index(idx)

        def backward(grad):
            full = np.zeros(source_shape, dtype=grad.dtype)
            if basic:
                full[idx] = grad
            else:  # integer arrays may repeat an index: add.at sums every use
                np.add.at(full, idx, grad)
            return (full,)
        return Tensor.from_op(np.asarray(out) if basic else out, (self,), backward, "index", saved=(),
                              view_of=self if basic else None)

    def __setitem__(self, idx, value):
        if self._requires_grad and autograd._mode.enabled:
            raise RuntimeError("in-place assignment into a tensor that requires grad would break its gradient; "
                               "do it under mg.no_grad(), or build a new tensor (e.g. with mg.where)")
        self.data[_index_data(idx)] = value.data if isinstance(value, Tensor) else value
        autograd.modified_in_place(self, "t[index] = value")

    def masked_fill(self, mask, value):
        mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
        return where(mask, Tensor._constant(value, self), self)

    # ----- aliases the functional API also has --------------------------------------------
    def matmul(self, other):
        return self @ other

    def add(self, other):
        return self + other

    def sub(self, other):
        return self - other

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def pow(self, exponent):
        return self ** exponent

    def neg(self):
        return -self


def matmul(a, b):
    """a @ b with NumPy's batching: (…, n, k) @ (…, k, m) → (…, n, m); 1-D operands as in numpy.matmul.

    Backward: dA = dC · Bᵀ and dB = Aᵀ · dC, summed over broadcast batch dims.
    """
    a, b = _operands(*lower_precision(as_tensor(a), as_tensor(b)))  # autocast: a 16-bit product
    if a.data.ndim == 0 or b.data.ndim == 0:
        raise ValueError(f"matmul: both operands need at least 1 dimension, got shapes {a.shape} and {b.shape}")
    a2 = a.data if a.data.ndim > 1 else a.data[None, :]
    b2 = b.data if b.data.ndim > 1 else b.data[:, None]
    if a2.shape[-1] != b2.shape[-2]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit: the last dim of the first "
                         f"({a2.shape[-1]}) must equal the second-to-last dim of the second ({b2.shape[-2]})")
    try:
        np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul: batch dims of shapes {a.shape} and {b.shape} do not broadcast") from None
    out_shape = np.broadcast_shapes(a2.shape[:-2], b2.shape[:-2]) + (a2.shape[-2], b2.shape[-1])
    if b2.ndim == 2 and a2.ndim > 2:  # (…, n, k) @ (k, m) is one (…·n, k) @ (k, m) product, not many small ones
        a2 = a2.reshape(-1, a2.shape[-1])
    backend = kernels.resolve("matmul", None, a2.dtype)  # the thread's choice, or the reference for this dtype
    out = kernels.matmul(a2, b2, backend=backend)
    product_shape = out.shape
    out = out.reshape(out_shape)
    if b.data.ndim == 1:
        out = out[..., 0]
    if a.data.ndim == 1:
        out = out[..., 0, :] if b.data.ndim > 1 else out[..., 0]

    def backward(grad):
        grad = grad.reshape(product_shape)  # undo the reshapes above: the gradient of a2 @ b2
        grad_a, grad_b = kernels.matmul_backward(a2, b2, np.ascontiguousarray(grad), backend=backend)
        return grad_a.reshape(a.data.shape), grad_b.reshape(b.data.shape)
    return Tensor.from_op(out, (a, b), backward, "matmul")


def _same_dtype(tensors, op):
    tensors = [as_tensor(t) for t in tensors]
    if not tensors:
        raise ValueError(f"{op} needs a non-empty sequence of tensors")
    dtype = tensors[0].data.dtype
    for t in tensors[1:]:
        dtype = promote_types(dtype, t.data.dtype)
    return [t.to(dtype) for t in tensors]


def cat(tensors, dim=0):
    """Join tensors along an existing dim; each input gets back its own slice of the gradient."""
    tensors = _same_dtype(tensors, "cat")
    ndim = tensors[0].data.ndim
    axis = normalize_dims(dim, ndim)[0]
    for t in tensors[1:]:
        if t.data.ndim != ndim or any(t.data.shape[i] != tensors[0].data.shape[i] for i in range(ndim) if i != axis):
            raise ValueError(f"cat along dim {dim}: shapes {[t.shape for t in tensors]} differ outside that dim")
    out = np.concatenate([t.data for t in tensors], axis=axis)
    splits = np.cumsum([t.data.shape[axis] for t in tensors])[:-1]
    return Tensor.from_op(out, tuple(tensors), lambda grad: tuple(np.split(grad, splits, axis=axis)), "cat",
                          saved=())


def stack(tensors, dim=0):
    """Join same-shaped tensors along a new dim."""
    tensors = _same_dtype(tensors, "stack")
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack needs tensors of one shape, got {[t.shape for t in tensors]}")
    axis = dim % (tensors[0].data.ndim + 1)
    out = np.stack([t.data for t in tensors], axis=axis)
    return Tensor.from_op(out, tuple(tensors),
                          lambda grad: tuple(np.moveaxis(grad, axis, 0)), "stack", saved=())


def where(condition, a, b):
    """Elementwise choice: a where condition holds, else b; each side gets the gradient where it was chosen."""
    cond = condition.data if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != bool:
        cond = cond.astype(bool)
    if isinstance(a, Tensor):
        a, b = _operands(a, b)
    else:
        b, a = _operands(as_tensor(b), a)
    try:
        out = np.where(cond, a.data, b.data)
    except ValueError:
        raise ValueError(f"where: condition {cond.shape}, a {a.shape} and b {b.shape} do not broadcast") from None

    def backward(grad):
        zero = np.zeros((), dtype=grad.dtype)
        return (sum_to_shape(np.where(cond, grad, zero), a.data.shape),
                sum_to_shape(np.where(cond, zero, grad), b.data.shape))
    return Tensor.from_op(out, (a, b), backward, "where", saved=())
