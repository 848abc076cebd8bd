"""DistributedDataParallel: the same model on every rank, gradients averaged in buckets (lesson `09_data_parallel`).

Every rank runs forward and backward on its own slice of the global batch, then

    g ← (1/W) Σ_r g_r          the gradient of the mean loss over the whole global batch

so every rank's optimizer takes the same step, and the replicas never drift apart. The average runs
during backward: parameters are grouped into buckets of ~bucket_cap_mb MiB in reverse order of
registration (the order backward completes them), the first one capped at 1 MiB so that communication
starts early (as in PyTorch); when the last gradient of a bucket has been
accumulated (a post-accumulate-grad hook of the engine) the bucket's non-blocking all-reduce starts,
while backward computes the gradients of earlier layers. At the end of backward (a queued callback)
DDP waits for the buckets and writes the averages back into `.grad`.
"""
import contextlib
import time

import numpy as np

from ... import autograd
from ... import distributed as dist
from ...autograd import no_grad
from ..module import Module

FIRST_BUCKET_BYTES = 2 ** 20  # the last layers' gradients, ready first, leave in a small bucket right away


class _Bucket:
    """Consecutive parameters of one dtype sharing one flat buffer and one all-reduce."""

    def __init__(self, params):
        self.params = params
        sizes = [p.data.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.buffer = np.zeros(self.offsets[-1], dtype=params[0].data.dtype)  # (Σ sizes,)
        self.ready = set()
        self.work = None

    def view(self, i):
        return self.buffer[self.offsets[i]:self.offsets[i + 1]].reshape(self.params[i].data.shape)


class DistributedDataParallel(Module):
    """Wraps `module` (kept as `.module`): broadcasts rank 0's parameters and buffers at construction,
    then averages gradients over ranks during `backward()`, bucketed (see the module docstring).

    `with ddp.no_sync():` skips the averaging so gradients accumulate locally (gradient accumulation);
    the first backward outside it averages the accumulated sum. `comm_seconds` adds up the time this
    rank spent inside MPI calls for the gradients (launching, progressing and waiting).
    """

    def __init__(self, module, bucket_cap_mb=4.0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DistributedDataParallel wraps a minigrad nn.Module, got {type(module).__name__}")
        if bucket_cap_mb <= 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be > 0, got {bucket_cap_mb}")
        dist.init_process_group()
        self.module = module
        self.world_size = dist.get_world_size()
        self.comm_seconds = 0.0
        self._sync = True
        with no_grad():
            for t in list(module.parameters()) + [b for _, b in module.named_buffers()]:
                dist.broadcast(t.data, src=0)
        params = [p for p in module.parameters() if p.requires_grad]
        self._buckets = self._make_buckets(params[::-1], bucket_cap_mb * 2 ** 20)
        self._where = {id(p): (b, i) for b in self._buckets for i, p in enumerate(b.params)}
        self._launched = 0
        self._finish_queued = False
        hooked = params if self.world_size > 1 else []  # a world of one has nothing to average
        self._handles = [p.register_post_accumulate_grad_hook(self._grad_ready) for p in hooked]

    @staticmethod
    def _make_buckets(params, cap_bytes):
        buckets, current = [], []
        for p in params:
            cap = cap_bytes if buckets else min(cap_bytes, FIRST_BUCKET_BYTES)
            if current and (p.data.dtype != current[0].data.dtype
                            or sum(q.data.nbytes for q in current) + p.data.nbytes > cap):
                buckets.append(_Bucket(current))
                current = []
            current.append(p)
        return buckets + ([_Bucket(current)] if current else [])

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes inside accumulate local gradients without communicating."""
        previous = self._sync
        self._sync = False
        try:
            yield
        finally:
            self._sync = previous

    def _grad_ready(self, p):
        """Hook: p.grad is final for this backward; copy it into its bucket and launch full buckets in order."""
        if not self._sync:
            return
        if not self._finish_queued:
            self._finish_queued = True
            autograd.queue_callback(self._finish)
        bucket, i = self._where[id(p)]
        bucket.view(i)[...] = p.grad
        bucket.ready.add(i)
        self._launch_ready()

    def _launch_ready(self, force=False):
        """Start all-reduces strictly in bucket order: every rank must issue its collectives in the same order."""
        start = time.perf_counter()
        while self._launched < len(self._buckets):
            bucket = self._buckets[self._launched]
            if not force and len(bucket.ready) < len(bucket.params):
                break
            bucket.work = dist.all_reduce(bucket.buffer, op=dist.ReduceOp.AVG, async_op=True)
            self._launched += 1
        for bucket in self._buckets[:self._launched]:
            bucket.work.is_completed()  # MPI moves non-blocking collectives forward inside MPI calls
        self.comm_seconds += time.perf_counter() - start

    def _finish(self):
        """End of backward: launch what is left (a parameter unused on this rank counts as a zero gradient),
        wait, and put the averages into .grad."""
        for bucket in self._buckets:
            for i in set(range(len(bucket.params))) - bucket.ready:
                bucket.view(i)[...] = 0
        self._launch_ready(force=True)
        start = time.perf_counter()
        for bucket in self._buckets:
            bucket.work.wait()  # the mean over ranks
        self.comm_seconds += time.perf_counter() - start
        for bucket in self._buckets:
            for i, p in enumerate(bucket.params):
                if p.grad is None:
                    p.grad = bucket.view(i).copy()
                else:
                    p.grad[...] = bucket.view(i)
            bucket.ready.clear()
            bucket.work = None
        self._launched = 0
        self._finish_queued = False

    def extra_repr(self):
        sizes = [f"{b.buffer.nbytes / 2 ** 20:.2f}" for b in self._buckets]
        return f"world_size={self.world_size}, buckets of [{', '.join(sizes)}] MiB"
