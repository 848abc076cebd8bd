"""Megatron-style tensor parallelism: one layer's matrices split over the ranks (lesson `09_data_parallel`).

For the MLP y = GELU(x A) B (A: d → h, B: h → d, written here as PyTorch weights Wᵀ):

    column split   A = [A_0 | … | A_{W−1}]      rank r computes z_r = GELU(x A_r)  (its h/W columns)
    row split      B = [B_0; …; B_{W−1}]        rank r computes y_r = z_r B_r
                   y = Σ_r y_r                   one all-reduce gives the full output on every rank

GELU acts elementwise, so it needs no communication between the two splits: one all-reduce in forward.
In backward the mirror image holds: ∂L/∂x = Σ_r (∂L/∂z_r) A_rᵀ needs one all-reduce of the gradient
at the block's input, and nothing else. The two conjugate operators that place them:

    copy_to_tensor_parallel(x)      forward: identity        backward: all-reduce (sum) of the gradient
    reduce_from_tensor_parallel(y)  forward: all-reduce      backward: identity

Attention splits the same way along heads: each rank owns H/W heads (their rows of W_q, W_k, W_v: a
column split) and the matching columns of the output projection (a row split).
"""
import numpy as np

from ... import distributed as dist
from ...tensor import Tensor, as_tensor
from ..activation import GELU
from ..attention import MultiheadAttention, scaled_dot_product_attention
from ..linear import Linear, linear, uniform_parameter
from ..module import Module, Parameter, Sequential
from .sharded import ShardedParameter


def copy_to_tensor_parallel(x):
    """Identity in forward; the gradient is summed over ranks in backward (each rank used x for its slice)."""
    x = as_tensor(x)

    def backward(grad):
        grad = np.array(grad, order="C")  # a fresh buffer: the all-reduce writes in place
        dist.all_reduce(grad)
        return (grad,)
    return Tensor.from_op(x.data, (x,), backward, "copy_to_tensor_parallel")


def reduce_from_tensor_parallel(x):
    """y = Σ_r x_r (all-reduce) in forward; every rank's x_r gets the gradient of y unchanged in backward."""
    x = as_tensor(x)
    out = np.array(x.data, order="C")  # (…), summed in place below
    dist.all_reduce(out)
    return Tensor.from_op(out, (x,), lambda grad: (grad,), "reduce_from_tensor_parallel")


def _shard(n, name, what):
    world = dist.get_world_size()
    if n % world:
        raise ValueError(f"{name}: {what} = {n} does not divide by the world size {world}; each rank needs an "
                         "equal slice")
    return n // world, dist.get_rank()


class ColumnParallelLinear(Module):
    """The rows r·out/W … (r+1)·out/W of Linear(in, out)'s weight (out, in) and that slice of its bias.

    Takes the full input (…, in), returns this rank's output slice (…, out/W). Initialised as the slice
    of the same U(−1/√in, 1/√in) matrix Linear would draw, so with one seed the ranks' slices make up
    exactly the dense layer. The input's gradient is all-reduced in backward (copy_to_tensor_parallel).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        local, rank = _shard(out_features, "ColumnParallelLinear", "out_features")
        rows = slice(rank * local, (rank + 1) * local)
        bound = 1 / np.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = ShardedParameter(uniform_parameter((out_features, in_features), bound).data[rows].copy())  # (out/W, in)
        self.bias = ShardedParameter(uniform_parameter((out_features,), bound).data[rows].copy()) if bias else None

    @classmethod
    def from_dense(cls, dense):
        """This rank's slice of a dense Linear (copies, in the dense layer's dtype)."""
        layer = cls(dense.in_features, dense.out_features, bias=dense.bias is not None)
        local = layer.weight.shape[0]
        rows = slice(dist.get_rank() * local, (dist.get_rank() + 1) * local)
        layer.weight = ShardedParameter(dense.weight.data[rows].copy())
        if dense.bias is not None:
            layer.bias = ShardedParameter(dense.bias.data[rows].copy())
        return layer

    def forward(self, x):
        return linear(copy_to_tensor_parallel(x), self.weight, self.bias)  # (…, out/W)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features} (local {self.weight.shape[0]})"


class RowParallelLinear(Module):
    """The columns r·in/W … (r+1)·in/W of Linear(in, out)'s weight (out, in), and the whole bias.

    Takes this rank's input slice (…, in/W), returns the full output (…, out) on every rank: the partial
    products are all-reduced, then the bias is added once.
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        local, rank = _shard(in_features, "RowParallelLinear", "in_features")
        cols = slice(rank * local, (rank + 1) * local)
        bound = 1 / np.sqrt(in_features) if in_features > 0 else 0.0
        self.weight = ShardedParameter(uniform_parameter((out_features, in_features), bound).data[:, cols].copy())  # (out, in/W)
        self.bias = uniform_parameter((out_features,), bound) if bias else None  # replicated

    @classmethod
    def from_dense(cls, dense):
        """This rank's columns of a dense Linear and its whole bias (copies, in the dense layer's dtype)."""
        layer = cls(dense.in_features, dense.out_features, bias=dense.bias is not None)
        local = layer.weight.shape[1]
        layer.weight = ShardedParameter(dense.weight.data[:, dist.get_rank() * local:(dist.get_rank() + 1) * local].copy())
        if dense.bias is not None:
            layer.bias = Parameter(dense.bias.data.copy())
        return layer

    def forward(self, x):
        y = reduce_from_tensor_parallel(linear(x, self.weight))  # (…, out), summed over ranks
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return f"in_features={self.in_features} (local {self.weight.shape[1]}), out_features={self.out_features}"


class TensorParallelMLP(Module):
    """The GPT MLP Linear(d, h) → GELU → Linear(h, d) split as column → GELU → row: one all-reduce each way."""

    def __init__(self, d_model, hidden):
        super().__init__()
        self.fc = ColumnParallelLinear(d_model, hidden)
        self.act = GELU()
        self.proj = RowParallelLinear(hidden, d_model)

    @classmethod
    def from_dense(cls, mlp):
        """This rank's part of a TransformerBlock's `mlp` (Sequential: Linear, GELU, Linear)."""
        if not (isinstance(mlp, Sequential) and len(mlp) == 3 and isinstance(mlp[0], Linear)
                and isinstance(mlp[2], Linear)):
            raise TypeError("TensorParallelMLP.from_dense expects Sequential(Linear(d, h), GELU(), Linear(h, d))")
        layer = cls(mlp[0].in_features, mlp[0].out_features)
        layer.fc, layer.act, layer.proj = (ColumnParallelLinear.from_dense(mlp[0]), mlp[1],
                                           RowParallelLinear.from_dense(mlp[2]))
        return layer

    def forward(self, x):  # x: (B, T, d), the same on every rank
        return self.proj(self.act(self.fc(x)))  # (B, T, h/W) inside, (B, T, d) out


class TensorParallelAttention(Module):
    """Causal-capable multi-head self-attention with the heads split over ranks (H/W heads per rank).

    `in_proj_weight` (3E/W, E) holds this rank's rows of W_q, then of W_k, then of W_v (a column split
    of each), `out_proj` is a RowParallelLinear(E, E). Forward: one all-reduce (in out_proj); backward:
    one all-reduce (of the input's gradient).
    """

    def __init__(self, embed_dim, num_heads, bias=True):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"TensorParallelAttention: embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        local_heads, rank = _shard(num_heads, "TensorParallelAttention", "num_heads")
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.local_heads = local_heads
        dense = MultiheadAttention(embed_dim, num_heads, bias=bias)  # the same init as the dense module
        self._take(dense)

    @classmethod
    def from_dense(cls, mha):
        """This rank's heads of a MultiheadAttention (copies its weights)."""
        layer = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None)
        layer._take(mha)
        return layer

    def _take(self, mha):
        E, local = self.embed_dim, self.local_heads * self.head_dim
        rows = np.concatenate([i * E + dist.get_rank() * local + np.arange(local) for i in range(3)])  # q, k, v rows
        self.in_proj_weight = ShardedParameter(mha.in_proj_weight.data[rows])  # (3E/W, E)
        self.in_proj_bias = None if mha.in_proj_bias is None else ShardedParameter(mha.in_proj_bias.data[rows])
        self.out_proj = RowParallelLinear.from_dense(mha.out_proj)

    def forward(self, x, is_causal=False):
        x = copy_to_tensor_parallel(as_tensor(x))
        B, T, E = x.shape
        H, hd = self.local_heads, self.head_dim
        W, b, n = self.in_proj_weight, self.in_proj_bias, H * hd
        q, k, v = (linear(x, W[i * n:(i + 1) * n], None if b is None else b[i * n:(i + 1) * n])
                   .reshape(B, T, H, hd).transpose(1, 2) for i in range(3))  # (B, H/W, T, hd) each
        y = scaled_dot_product_attention(q, k, v, is_causal=is_causal)  # (B, H/W, T, hd)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, n))  # (B, T, E), summed over ranks

    def extra_repr(self):
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads} (local {self.local_heads})"
