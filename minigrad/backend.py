"""Which backend runs the accelerated ops: the one switch, kept per thread.

The backends ("numpy", "c", "cuda", "cuda-sim") are the modules of
`minigrad.kernels`; every Tensor op that has a kernel (matmul, attention,
gelu, …) asks `minigrad.kernels`, which asks `backend_for(op)` here.

    mg.set_backend("c")                        this thread, every op, from now on
    with mg.backend("c"): ...                  this thread, every op, for the block
    with mg.backend("c", ops=("attention",)):  only attention (and its backward) for the block

The default is the fastest correct backend there is: "c" when the C kernels
are built, "numpy" (the reference) otherwise; `MINIGRAD_CUDA_SIM=1` makes it
"cuda-sim". Like PyTorch's grad mode, the choice belongs to a thread: a
`with mg.backend(...)` in one thread never changes what another thread runs,
and a new thread starts from the default.
"""
import contextlib
import os
import threading

BACKENDS = ("numpy", "c", "cuda", "cuda-sim")

_default = None  # found on first use, so `import minigrad` loads no compiled code


def check_backend(name):
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    return name


def default_backend():
    """"cuda-sim" under MINIGRAD_CUDA_SIM=1, else "c" when the C kernels load, else "numpy"."""
    global _default
    if _default is None:
        if os.environ.get("MINIGRAD_CUDA_SIM") == "1":
            _default = "cuda-sim"
        else:
            from .kernels import c_backend
            _default = "c" if c_backend.available() else "numpy"
    return _default


class _Choice(threading.local):
    """This thread's backend (None: the default) and per-op exceptions {op: backend}."""
    name = None

    def __init__(self):
        self.ops = {}


_choice = _Choice()


def get_backend():
    """The backend that this thread's Tensor ops use now (ops routed elsewhere by `ops=` aside)."""
    return _choice.name or default_backend()


def backend_for(op):
    """The backend for one op family ("matmul", "attention", "gelu", …) in this thread."""
    return _choice.ops.get(op) or _choice.name or default_backend()


def _check_ops(ops):
    if isinstance(ops, str) or not all(isinstance(op, str) for op in ops):
        raise TypeError(f"ops must be a tuple of op names such as ('attention',), got {ops!r}")
    from .kernels import OPS
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        raise ValueError(f"unknown op {unknown[0]!r} in ops=: choose among {', '.join(OPS)}")
    return tuple(ops)


def set_backend(name, ops=None):
    """Route this thread's accelerated ops (or only `ops`, e.g. ("attention",)) through backend `name`."""
    check_backend(name)
    if ops is None:
        _choice.name, _choice.ops = name, {}
    else:
        _choice.ops = {**_choice.ops, **{op: name for op in _check_ops(ops)}}


@contextlib.contextmanager
def backend(name, ops=None):
    """`with mg.backend("c"):` runs the block on that backend in this thread, then restores the previous choice."""
    check_backend(name)
    ops = None if ops is None else _check_ops(ops)
    previous = _choice.name, _choice.ops
    set_backend(name, ops)
    try:
        yield
    finally:
        _choice.name, _choice.ops = previous
