"""The simulator's device memory: a guarded copy of every array a launch receives.

On a GPU an index past the end of an array is an illegal-address error; on the CPU
it would silently overwrite whatever NumPy keeps next to the array. So each array
argument (and the dynamic shared memory) is copied for the launch into memory that
ends right where 64 KiB of inaccessible memory begin, with poison bytes (0xFF, NaN
as float) in the alignment slack:

    [64 KiB no access][0xFF ... | the array's bytes | 0xFF (< 16 bytes)][64 KiB no access]

An access up to 64 KiB past either end faults and is reported with the argument's
name and the element index; a write into the slack is found after the launch. Non-const arrays
are copied back. Arrays that partly overlap another argument (two views of one
buffer) are passed as they are, so that the kernel sees the aliasing a GPU would.
"""
import mmap
from dataclasses import dataclass

from .errors import KernelFaultError

GUARD_BYTES = 64 * 1024  # inaccessible memory on each side of an array (as in sim_scheduler.c)


@dataclass
class Region:
    """One guarded allocation: what it holds, where, and the array to copy it back to (or None)."""
    description: str
    address: int
    nbytes: int
    itemsize: int  # 1 for the dynamic shared memory, whose positions are counted in bytes
    device: object
    copy_back: object


class LaunchMemory:
    """Device copies of one launch's array arguments; `pointers` are what the kernel receives."""

    def __init__(self, lib, ffi, params, values, shared_mem):
        self._lib, self._ffi = lib, ffi
        self._regions = []
        self.pointers = []
        try:
            self._place(params, values, shared_mem)
        except BaseException:
            self.free()
            raise

    def _place(self, params, values, shared_mem):
        ffi = self._ffi
        spans = {i: _span(v) for i, (p, v) in enumerate(zip(params, values)) if p.pointer}
        region_of = {}
        for i, (param, value) in enumerate(zip(params, values)):
            if not param.pointer:
                self.pointers.append(ffi.from_buffer(value))
            elif any(_overlap(spans[i], other) and spans[i] != other for other in spans.values()):
                self.pointers.append(ffi.from_buffer(value))
            elif spans[i] in region_of:  # the same array twice: one device copy
                region = region_of[spans[i]]
                if not param.const:
                    region.copy_back = value
                self.pointers.append(region.device)
            else:
                region = self._allocate(f"argument {i} `{param}` ({value.size} elements)", value.nbytes,
                                        value.itemsize, None if param.const else value)
                ffi.memmove(region.device, ffi.from_buffer(value), value.nbytes)
                region_of[spans[i]] = region
                self.pointers.append(region.device)
        self.shared = self._allocate(f"the dynamic shared memory (shared_mem={shared_mem} bytes)", shared_mem, 1,
                                     None).device

    def _allocate(self, description, nbytes, itemsize, copy_back):
        device = self._lib.minigrad_sim_guarded_alloc(nbytes)
        if device == self._ffi.NULL:
            raise MemoryError(f"could not map {nbytes} bytes of simulated device memory for {description}")
        region = Region(description, int(self._ffi.cast("uintptr_t", device)), nbytes, itemsize, device, copy_back)
        self._regions.append(region)
        return region

    def describe(self, address):
        """Which argument a faulting address missed, and by how many elements; '' if none of them."""
        for r in self._regions:
            first_page = r.address // mmap.PAGESIZE * mmap.PAGESIZE
            if first_page - GUARD_BYTES <= address < r.address + r.nbytes + 16 + GUARD_BYTES:
                where = "before its start" if address < r.address else "past its end"
                return f"; that is {_position(address - r.address, r.itemsize)} of {r.description}, {where}"
        return ""

    def finish(self, where):
        """After a launch: check the poison around each array, then copy non-const arrays back."""
        for r in self._regions:
            offset = self._lib.minigrad_sim_guarded_damage(r.device, r.nbytes)
            if offset:
                side = "before the start" if offset < 0 else "past the end"
                raise KernelFaultError(f"{where}: a thread wrote {_position(offset, r.itemsize)}, {side} of "
                                       f"{r.description} (on a GPU: an out-of-bounds write)")
        for r in self._regions:
            if r.copy_back is not None:
                self._ffi.memmove(self._ffi.from_buffer(r.copy_back, require_writable=True), r.device, r.nbytes)

    def free(self):
        for r in self._regions:
            self._lib.minigrad_sim_guarded_free(r.device, r.nbytes)
        self._regions = []


def _position(offset, itemsize):
    return f"byte {offset}" if itemsize == 1 else f"element {offset // itemsize}"


def _span(array):
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]
