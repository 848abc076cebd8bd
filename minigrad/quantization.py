"""Dynamic int8 quantization for inference (lesson `12_memory_and_precision`).

    weights, once:       s_w[j] = max_k |W[j, k]| / 127,   W_q[j, k] = round(W[j, k] / s_w[j])   int8 (out, in)
    activations, per call: s_x[i] = max_k |x[i, k]| / 127,  x_q[i, k] = round(x[i, k] / s_x[i])   int8 (rows, in)
    output:              y[i, j] = s_x[i] · s_w[j] · Σ_k x_q[i, k] W_q[j, k]  + b[j]

Symmetric (zero maps to zero, no offsets), one scale per output channel of the weight and one per row of
the activation, the int32 dot products exact. `quantize_dynamic(model)` swaps every `nn.Linear` for a
`QuantizedLinear` holding int8 weights (4× fewer bytes than float32), and MultiheadAttention's fused
projection for a `QuantizedWeight`; the products run on the C kernel
of kernels/qmatmul.c (AVX-512 VNNI where the CPU has it) or on the NumPy reference `int8_matmul_reference`.
"""
import copy

import numpy as np

from .autograd import no_grad
from .dtypes import as_dtype, int8, is_floating
from .tensor import Tensor, as_tensor

__all__ = ["quantize_dynamic", "QuantizedLinear", "QuantizedWeight", "quantize_symmetric", "int8_matmul",
           "int8_matmul_reference", "vnni_available"]

QMATMUL_VERSIONS = ("portable", "vnni")


def quantize_symmetric(x, bits=8):
    """Per-row symmetric quantization of a 2-D float array x (rows, k): (q, scale) with x ≈ q · scale[:, None].

        scale[i] = max_k |x[i, k]| / (2^(bits−1) − 1),   q[i, k] = round(x[i, k] / scale[i]) ∈ [−qmax, qmax]

    A row of zeros gets scale 1 (any scale represents it exactly). q is int8 for bits ≤ 8, else int32.
    Used per output channel for weights (rows of W) and per row for activations. Lesson 12.
    """
    x = np.asarray(x)
    if x.ndim != 2 or not is_floating(x.dtype):
        raise ValueError(f"quantize_symmetric: expected a 2-D float array (rows, k), got {x.dtype} {x.shape}")
    if not 2 <= bits <= 16:
        raise ValueError(f"quantize_symmetric: bits must lie in 2 … 16, got {bits}")
    if not np.isfinite(x).all():
        raise ValueError("quantize_symmetric: the array holds inf or NaN, which no scale can represent")
    qmax = 2 ** (bits - 1) - 1
    x = x.astype(np.float32, copy=False)
    absmax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(x.shape[0], np.float32)  # (rows,)
    scale = np.where(absmax > 0, absmax / qmax, 1.0).astype(np.float32)  # (rows,)
    q = np.clip(np.rint(x / scale[:, None]), -qmax, qmax)  # (rows, k)
    return q.astype(np.int8 if bits <= 8 else np.int32), scale


def int8_matmul_reference(a, b):
    """C[i, j] = Σ_k a[i, k] · b[j, k] for int8 a (m, k), b (n, k), exactly, in int32 (the NumPy reference)."""
    return a.astype(np.int32) @ b.astype(np.int32).T


def _check_int8_operands(a, b):
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, np.ndarray) or x.dtype != np.int8 or x.ndim != 2:
            raise TypeError(f"int8_matmul: {name} must be a 2-D int8 NumPy array, got "
                            f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"int8_matmul: a (m, k) and b (n, k) need the same k, got a {a.shape} and b {b.shape}")
    if a.shape[1] >= 2 ** 16:
        raise ValueError(f"int8_matmul: k = {a.shape[1]} is too long for exact int32 sums (k < 65536)")


def vnni_available():
    """Whether the compiled kernels exist and this CPU runs their AVX-512 VNNI version (checked at run time)."""
    try:
        _, lib = _kernels()
    except RuntimeError:
        return False
    return hasattr(lib, "qmatmul_has_vnni") and bool(lib.qmatmul_has_vnni())


def _kernels():
    from .kernels import c_backend
    return c_backend.load()


def int8_matmul(a, b, backend="c", version=None, num_threads=None):
    """C = a @ bᵀ in int32 for int8 a (m, k) and b (n, k) (b like a Linear weight).

    backend "numpy" is the reference; "c" runs kernels/qmatmul.c, version "vnni" (default where the CPU
    has it) or "portable".
    """
    _check_int8_operands(a, b)
    if backend == "numpy":
        return int8_matmul_reference(a, b)
    if backend != "c":
        raise ValueError(f"int8_matmul: backend must be 'c' or 'numpy', got {backend!r}")
    ffi, lib = _kernels()
    if version is None:
        version = "vnni" if lib.qmatmul_has_vnni() else "portable"
    if version not in QMATMUL_VERSIONS:
        raise ValueError(f"int8_matmul: version must be one of {QMATMUL_VERSIONS}, got {version!r}")
    if version == "vnni" and not lib.qmatmul_has_vnni():
        raise RuntimeError("int8_matmul: version 'vnni' needs a CPU with AVX-512 VNNI (and a compiler that "
                           "built it); this one has none. Use version='portable'")
    from .kernels.c_backend import num_threads as default_threads
    m, k = a.shape
    n = b.shape[0]
    out = np.empty((m, n), np.int32)
    if m == 0 or n == 0:
        return out
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    status = lib.qmatmul_s8(ffi.from_buffer("int8_t[]", a), ffi.from_buffer("int8_t[]", b),
                            ffi.from_buffer("int32_t[]", out), m, n, k, QMATMUL_VERSIONS.index(version),
                            default_threads() if num_threads is None else int(num_threads))
    if status != 0:
        raise RuntimeError(f"int8_matmul: the C kernel refused version {version!r}")
    return out


def _default_backend():
    """"c" when the int8 kernel is built (an older build lacks it: the NumPy reference then), else "numpy"."""
    try:
        return "c" if hasattr(_kernels()[1], "qmatmul_s8") else "numpy"
    except RuntimeError:
        return "numpy"


def dynamic_quantized_linear(x, weight_q, weight_scale, bias=None, backend=None):
    """y = s_x[i] · s_w[j] · Σ_k x_q[i, k] W_q[j, k] + b[j] for float x (…, in): the module docstring's formula.

    x is quantized per row on the fly; the output has x's float dtype (float32 math inside). No gradient:
    this is for inference.
    """
    x = as_tensor(x)
    if not is_floating(x.dtype):
        raise TypeError(f"quantized linear: expected a float input, got dtype {x.dtype}")
    in_features = weight_q.shape[1]
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(f"quantized linear: expected input (…, {in_features}), got shape {x.shape}")
    rows = x.data.reshape(-1, in_features).astype(np.float32)  # (N, in)
    x_q, x_scale = quantize_symmetric(rows)
    acc = int8_matmul(x_q, weight_q, backend=backend or _default_backend())  # (N, out) int32
    y = acc.astype(np.float32)
    y *= x_scale[:, None]
    y *= weight_scale[None, :]
    if bias is not None:
        y += bias.data if isinstance(bias, Tensor) else bias
    return Tensor(y.reshape(x.shape[:-1] + (weight_q.shape[0],)).astype(x.dtype, copy=False))


from .nn.attention import MultiheadAttention  # noqa: E402  (nn imports tensor; this module sits beside it)
from .nn.linear import Linear  # noqa: E402
from .nn.module import Module  # noqa: E402


class QuantizedWeight(Tensor):
    """An int8 weight (out, in) with one float32 scale per row (`.scale`, a Tensor (out,)).

    `nn.functional.linear(x, w, b)` with such a w runs `dynamic_quantized_linear`. Slicing rows keeps each
    row's scale (w[0:E] is the q projection of a fused (3E, E) weight), as per-row scales allow.
    """

    __slots__ = ("scale",)
    is_quantized = True

    def __init__(self, q, scale):
        super().__init__(q)
        self.scale = scale if isinstance(scale, Tensor) else Tensor(scale)

    @classmethod
    def from_float(cls, weight):
        return cls(*quantize_symmetric(weight.data if isinstance(weight, Tensor) else weight))

    def __getitem__(self, rows):
        if not isinstance(rows, slice):
            raise TypeError(f"QuantizedWeight: only row slices (w[a:b]) keep the per-row scales; got {rows!r}")
        return QuantizedWeight(self.data[rows], self.scale.data[rows])

    def linear(self, x, bias=None):
        return dynamic_quantized_linear(x, self.data, self.scale.data, bias)

    def dequantize(self):
        """The float32 weight the int8 one stands for: W_q · s_w (out, in)."""
        return self.data.astype(np.float32) * self.scale.data[:, None]


class QuantizedLinear(Module):
    """`nn.Linear` with int8 weights, one float32 scale per output channel: y ≈ x Wᵀ + b (inference only).

    state_dict: `weight` int8 (out, in), `weight_scale` float32 (out,), `bias` float32 (out,) if any.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        weight = QuantizedWeight(np.zeros((out_features, in_features), np.int8), np.ones(out_features, np.float32))
        self.register_buffer("weight", weight)
        self.register_buffer("weight_scale", weight.scale)
        if bias:
            self.register_buffer("bias", Tensor(np.zeros(out_features, np.float32)))
        else:
            self.bias = None

    @classmethod
    def from_float(cls, linear):
        """Quantize a float nn.Linear's weight per output channel (its rows)."""
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        q.weight.data[...], q.weight_scale.data[...] = quantize_symmetric(linear.weight.data)
        if linear.bias is not None:
            q.bias.data[...] = linear.bias.data
        return q

    def forward(self, x):
        return self.weight.linear(x, self.bias)

    def dequantize(self):
        return self.weight.dequantize()

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype=int8, "
                f"bias={self.bias is not None}")


def quantize_attention_projection(mha):
    """MultiheadAttention's fused (3E, E) in_proj_weight → a QuantizedWeight buffer (+ in_proj_weight_scale):
    its forward slices the rows of q, k and v and calls linear, which then runs the int8 product."""
    weight = QuantizedWeight.from_float(mha.in_proj_weight)
    del mha.in_proj_weight
    mha.register_buffer("in_proj_weight", weight)
    mha.register_buffer("in_proj_weight_scale", weight.scale)


def _swap_linears(module):
    """Replace every nn.Linear below `module` by a QuantizedLinear (and quantize attention's fused
    projection); returns how many weights were quantized."""
    count = 0
    if isinstance(module, MultiheadAttention) and not isinstance(module.in_proj_weight, QuantizedWeight):
        quantize_attention_projection(module)
        count += 1
    for name, child in list(module.named_children()):
        if isinstance(child, Linear):
            module._modules[name] = QuantizedLinear.from_float(child)  # same slot: Sequential keeps its order
            object.__setattr__(module, name, module._modules[name])
            count += 1
        else:
            count += _swap_linears(child)
    return count


@no_grad()
def quantize_dynamic(model, qconfig_spec=None, dtype=int8, inplace=False):
    """A copy of `model` (or the model itself with inplace=True) whose nn.Linear layers (and the fused q/k/v
    projection of MultiheadAttention) hold int8 weights, like
    `torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)`.

    Weights are quantized once, per output channel; activations per row at each call; products in int32.
    Embeddings and norms stay in float.
    """
    if as_dtype(dtype) != int8:
        raise TypeError(f"quantize_dynamic: only dtype=mg.int8 is supported, got {dtype!r}")
    if qconfig_spec is not None and set(qconfig_spec) != {Linear}:
        raise ValueError(f"quantize_dynamic: qconfig_spec may only name nn.Linear, got {qconfig_spec!r}")
    if not isinstance(model, Module):
        raise TypeError(f"quantize_dynamic: expected an nn.Module, got {type(model).__name__}")
    if not any(isinstance(m, (Linear, MultiheadAttention)) for m in model.modules()):
        raise ValueError(f"quantize_dynamic: {type(model).__name__} has no nn.Linear layer to quantize "
                         "(dynamic quantization replaces Linear layers only)")
    if isinstance(model, Linear):
        return QuantizedLinear.from_float(model)
    if not inplace:
        model = copy.deepcopy(model)
    _swap_linears(model)
    return model
