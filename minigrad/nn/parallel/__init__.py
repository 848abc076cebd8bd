"""Training on several processes (lesson `09_data_parallel`): data parallel (`DistributedDataParallel`)
and Megatron-style tensor parallel (`ColumnParallelLinear`, `RowParallelLinear`, and the GPT MLP and
attention built from them)."""
from .data_parallel import DistributedDataParallel
from .sharded import ShardedParameter
from .tensor_parallel import (ColumnParallelLinear, RowParallelLinear, TensorParallelAttention, TensorParallelMLP,
                              copy_to_tensor_parallel, reduce_from_tensor_parallel)

__all__ = ["DistributedDataParallel", "ShardedParameter", "ColumnParallelLinear", "RowParallelLinear",
           "TensorParallelMLP", "TensorParallelAttention", "copy_to_tensor_parallel", "reduce_from_tensor_parallel"]
