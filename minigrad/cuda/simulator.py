"""SimModule and SimKernel: cupy.RawModule and cupy.RawKernel for the CPU.

    mod = SimModule(code=SOURCE)                     # like cupy.RawModule(code=SOURCE)
    add = mod.get_function("vec_add")
    add((blocks,), (256,), (x, y, out, np.int32(n)))  # like a cupy.RawKernel call, on NumPy arrays
    stats = add((blocks,), (256,), args, count=True)  # + the global-memory traffic (LaunchStats)
    add((blocks,), (256,), args, race_check=True)     # + a DataRaceError for racing threads

Before a launch reaches the compiled kernel, every argument is checked the way a GPU
would need it and a wrong one raises a TypeError / ValueError that names the kernel,
the parameter and what to pass instead.
"""
import operator
import os
import threading

import numpy as np

from . import build
from .checks import RACE, describe_access, launch_stats
from .device_memory import LaunchMemory
from .errors import (BarrierDivergenceError, CudaSimError, DataRaceError, KernelFaultError, OrderDependenceError,
                     WarpDivergenceError)

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIMS = (1024, 1024, 64)
MAX_GRID_DIMS = (2**31 - 1, 65535, 65535)
DEFAULT_DYNAMIC_SHARED_BYTES = 48 * 1024  # what a kernel may ask for without opting in
MAX_DYNAMIC_SHARED_BYTES = 227 * 1024  # the most any GPU (sm_90) allows after opting in
ORDERS = ("forward", "reverse", "random")
_FAULT = 5
_STATUS_ERRORS = {1: BarrierDivergenceError, 2: WarpDivergenceError, 3: CudaSimError, 4: MemoryError,
                  _FAULT: KernelFaultError, 6: KeyboardInterrupt}
_ERROR_BYTES = 1024
# One launch at a time in the whole process: the fault handlers a launch installs are process-wide.
_launch_lock = threading.Lock()


def parse_order(order):
    """'forward' | 'reverse' | 'random' | 'random:SEED' -> (index into ORDERS, seed); 'random' is 'random:0'.

    'compare' (launch in forward and in reverse order, compare the results) -> (None, 0).
    """
    if order == "compare":
        return None, 0
    kind, _, seed = str(order).partition(":")
    if kind not in ORDERS or (seed and (kind != "random" or not seed.isdigit())):
        raise ValueError(f"thread order {order!r} is not one of forward, reverse, random, random:SEED "
                         "(SEED a non-negative integer), compare")
    return ORDERS.index(kind), int(seed or 0) % 2**64


def _dims(what, value, limits, kernel):
    """grid/block as CuPy takes them (an int or a tuple of 1 to 3 ints) -> a 3-tuple, checked against the limits."""
    dims = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    try:
        if not 1 <= len(dims) <= 3 or any(isinstance(d, bool) for d in dims):
            raise TypeError
        dims = tuple(operator.index(d) for d in dims) + (1,) * (3 - len(dims))
    except TypeError:
        raise TypeError(f"{kernel}: {what} must be an int or a tuple of 1 to 3 ints, got {value!r}") from None
    for axis, (d, limit) in enumerate(zip(dims, limits)):
        if not 1 <= d <= limit:
            raise ValueError(f"{kernel}: {what} {dims} has {'xyz'[axis]} = {d}; CUDA allows 1 to {limit}")
    return dims


class SimKernel:
    """One `__global__` function of a SimModule, called as kernel(grid, block, args, shared_mem=0)."""

    max_threads_per_block = MAX_THREADS_PER_BLOCK

    def __init__(self, module, name, index, params, shared_size_bytes):
        self.module, self.name, self.params = module, name, params
        self.shared_size_bytes = shared_size_bytes  # static __shared__ arrays, as cupy.RawKernel reports it
        self._index = index
        self.order = None  # thread order for this kernel's launches; None: the module's
        self._max_dynamic_shared = DEFAULT_DYNAMIC_SHARED_BYTES

    @property
    def max_dynamic_shared_size_bytes(self):
        """As in CuPy: raise it (up to 227 KiB on sm_90) to let a launch ask for more than 48 KiB."""
        return self._max_dynamic_shared

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, size):
        if not 0 <= size <= MAX_DYNAMIC_SHARED_BYTES:
            raise ValueError(f"kernel {self.name}: max_dynamic_shared_size_bytes={size}; GPUs allow at most "
                             f"{MAX_DYNAMIC_SHARED_BYTES} (227 KiB, sm_90)")
        self._max_dynamic_shared = int(size)

    def __repr__(self):
        return f"<SimKernel {self.name}({', '.join(map(str, self.params))})>"

    def __call__(self, grid, block, args, *, shared_mem=0, order=None, count=False, race_check=False):
        """Launch like cupy.RawKernel. count=True returns the launch's LaunchStats (global and shared memory
        traffic, counted per access); race_check=True (or $MINIGRAD_CUDA_SIM_RACE_CHECK=1 for every launch)
        raises DataRaceError at the first element two threads touch between barriers, one of them writing,
        neither atomically (slower: one record per element)."""
        where = f"kernel {self.name}"
        grid = _dims("grid", grid, MAX_GRID_DIMS, where)
        block = _dims("block", block, MAX_BLOCK_DIMS, where)
        threads = block[0] * block[1] * block[2]
        if threads > MAX_THREADS_PER_BLOCK:
            raise ValueError(f"{where}: block {block} has {threads} threads; CUDA allows at most "
                             f"{MAX_THREADS_PER_BLOCK} per block")
        if not isinstance(shared_mem, (int, np.integer)) or not 0 <= shared_mem <= self._max_dynamic_shared:
            raise ValueError(f"{where}: shared_mem={shared_mem!r} bytes of dynamic shared memory; this kernel may "
                             f"use 0 to {self._max_dynamic_shared} per block (48 KiB unless "
                             "max_dynamic_shared_size_bytes is raised)")
        limit = max(self._max_dynamic_shared, DEFAULT_DYNAMIC_SHARED_BYTES)
        if self.shared_size_bytes + shared_mem > limit:
            raise ValueError(f"{where}: {self.shared_size_bytes} bytes of static __shared__ arrays plus "
                             f"shared_mem={shared_mem} make {self.shared_size_bytes + shared_mem} bytes of shared "
                             f"memory per block; a GPU allows {limit} here (too many resources requested)")
        if not isinstance(args, (tuple, list)):
            raise TypeError(f"{where}: args must be a tuple of the kernel's arguments, got {type(args).__name__}")
        if len(args) != len(self.params):
            raise TypeError(f"{where}({', '.join(map(str, self.params))}) takes {len(self.params)} arguments, "
                            f"got {len(args)}")
        values = [_check_argument(where, i, p, a) for i, (p, a) in enumerate(zip(self.params, args))]
        race_check = race_check or os.environ.get("MINIGRAD_CUDA_SIM_RACE_CHECK") == "1"
        kind, seed = parse_order(order or self.order or self.module.order
                                 or os.environ.get("MINIGRAD_CUDA_SIM_ORDER") or "forward")
        if kind is None:
            stats = self._compare_orders(where, grid, block, values, int(shared_mem), bool(race_check))
        else:
            stats = self._launch(where, grid, block, values, int(shared_mem), kind, seed, bool(race_check))
        return stats if count else None

    def _compare_orders(self, where, grid, block, values, shared_mem, race_check):
        """Launch in forward and in reverse thread order from the same inputs: different outputs
        mean the result depends on the order threads run in (a missing barrier, a race)."""
        written = [(i, v) for i, (p, v) in enumerate(zip(self.params, values)) if p.pointer and not p.const]
        inputs = [v.copy() for _, v in written]
        stats = self._launch(where, grid, block, values, shared_mem, ORDERS.index("forward"), 0, race_check)
        forward = [v.copy() for _, v in written]
        for (_, v), original in zip(written, inputs):
            np.copyto(v, original)
        self._launch(where, grid, block, values, shared_mem, ORDERS.index("reverse"), 0, race_check)
        for (i, v), f in zip(written, forward):
            # float atomics add in another order, so floats need only agree to rounding
            same = np.isclose(f, v, rtol=1e-5, atol=1e-6, equal_nan=True) if v.dtype.kind in "fc" else f == v
            if not np.all(same):
                k = int(np.flatnonzero(~np.asarray(same).reshape(-1))[0])
                raise OrderDependenceError(
                    f"{where} (grid {grid}, block {block}): argument {i} `{self.params[i]}` differs between "
                    f"forward and reverse thread order at flat index {k}: {f.reshape(-1)[k]!r} vs "
                    f"{v.reshape(-1)[k]!r}. The result depends on the order threads run in: a missing "
                    "__syncthreads(), or threads racing on the same memory")
        return stats

    def _launch(self, where, grid, block, values, shared_mem, kind, seed, race_check):
        library = self.module._library
        lib, ffi = library.lib, library.ffi
        error, fault = ffi.new("char[]", _ERROR_BYTES), ffi.new("sim_fault *")
        with _launch_lock:
            memory = LaunchMemory(library, self.params, values, shared_mem, race_check)
            try:
                status = lib.minigrad_sim_launch(self._index, ffi.new("void *[]", memory.pointers or 1), grid, block,
                                                 memory.shared, memory.static_shared, len(library.shared_vars),
                                                 memory.table, len(memory.regions), race_check, fault, kind, seed,
                                                 library.stack_bytes, error, _ERROR_BYTES)
                where = f"{where} (grid {grid}, block {block}, {ORDERS[kind]} order)"
                if status:
                    message = ffi.string(error).decode(errors="replace")
                    error_type = _STATUS_ERRORS.get(status, CudaSimError)
                    if status == _FAULT and fault.kind:
                        message += describe_access(fault, memory, library, grid, block)
                        error_type = DataRaceError if fault.kind == RACE else KernelFaultError
                    elif status == _FAULT:
                        line = library.source_line(fault.pc)
                        message += (f" ({line})" if line else "") + memory.describe(
                            int(ffi.cast("uintptr_t", lib.minigrad_sim_fault_address())))
                    raise error_type(f"{where}: {message}")
                memory.finish(where)
                return launch_stats(memory, self.params)
            finally:
                memory.free()


def _check_argument(where, i, param, value):
    """The argument as an array whose bytes the kernel may read, after checking it fits `param`."""
    expected = param.dtype
    if param.pointer:
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{where}: argument {i} `{param}` needs a NumPy array (the simulator's device "
                            f"memory), got {type(value).__name__}")
        if expected is not None and value.dtype != expected:
            raise TypeError(f"{where}: argument {i} `{param}` needs a {expected} array, got {value.dtype}; "
                            "a GPU would reinterpret the bytes")
        if not value.flags.c_contiguous:
            raise ValueError(f"{where}: argument {i} `{param}` got a non-contiguous array (shape {value.shape}, "
                             f"strides {value.strides}); a kernel sees only a pointer, so pass "
                             "np.ascontiguousarray(x)")
        if not param.const and not value.flags.writeable:
            raise ValueError(f"{where}: argument {i} `{param}` got a read-only array; the parameter is not "
                             "const, so the kernel may write it (declare it `const` if it only reads)")
        return value
    if type(value) in (int, float, bool):  # not isinstance: np.float64 is a float too
        sent = np.dtype(np.float64 if type(value) is float else np.int64)
        why = ("that happens to fit here, but the simulator asks for the exact type so that a launch stays right "
               "when the parameter changes" if sent == expected else "so the kernel reads garbage on a GPU")
        raise TypeError(f"{where}: argument {i} `{param}` got a Python {type(value).__name__}, which CuPy sends as "
                        f"{sent} whatever the parameter is; {why}. Pass np.{expected.name}({value!r})")
    if not isinstance(value, np.generic) or value.dtype != expected:
        got = value.dtype if isinstance(value, np.generic) else type(value).__name__
        raise TypeError(f"{where}: argument {i} `{param}` needs an np.{expected.name} scalar, got {got}")
    return np.array(value)


class SimModule:
    """A CUDA source compiled for the CPU simulator; mirrors cupy.RawModule.

    code: CUDA C source (CuPy-style `extern "C" __global__` kernels); path: read it
    from a file instead. options: NVRTC options; -D NAME=VALUE / -DNAME are honoured,
    the rest (-std=..., -arch=...) mean nothing on a CPU and are ignored. order: the
    order threads run between barriers ('forward', 'reverse', 'random[:seed]'); None
    means $MINIGRAD_CUDA_SIM_ORDER, else forward.
    """

    def __init__(self, code=None, options=(), *, path=None, order=None):
        if (code is None) == (path is None):
            raise TypeError("SimModule needs exactly one of code= (CUDA source text) and path= (a .cu file)")
        filename = "kernel.cu"
        if path is not None:
            with open(path) as f:
                code = f.read()
            filename = os.path.basename(path)
        if not isinstance(code, str):
            raise TypeError(f"SimModule: code must be CUDA source text (a str), got {type(code).__name__}")
        if order is not None:
            parse_order(order)
        self.code, self.options, self.order = code, tuple(options), order
        self._library = build.load(code, self.options, filename)

    @property
    def kernel_names(self):
        return tuple(self._library.kernels)

    def get_function(self, name):
        """The `__global__` kernel `name` as a SimKernel."""
        if name not in self._library.kernels:
            raise ValueError(f"no __global__ kernel named {name!r} in this module; it has: "
                             f"{', '.join(self._library.kernels) or 'none'}")
        index, params, shared_size = self._library.kernels[name]
        return SimKernel(self, name, index, params, shared_size)


def SimRawKernel(code, name, options=(), *, order=None):
    """cupy.RawKernel(code, name, options) for the CPU: the one kernel `name` of `code`, ready to launch."""
    return SimModule(code=code, options=options, order=order).get_function(name)
