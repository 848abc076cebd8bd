"""The simulator's device memory: a guarded copy of every array a launch receives, and its shared memory.

On a GPU an index past the end of an array is an illegal-address error; on the CPU
it would silently overwrite whatever NumPy keeps next to the array. So each array
argument, the dynamic shared memory and each static `__shared__` variable get, for
the launch, memory of their own inside a window of reserved, inaccessible address
space (32 GiB each side, sim_scheduler.c):

    [32 GiB no access][0xFF ... | the array's bytes | 0xFF (< 16 bytes)][32 GiB no access]

Every load and store of the kernel is checked against these regions before it
happens (sim_scheduler.c: sim_access), so an index out of bounds by any amount that
an int can express is reported with the region's name and the element index, never
lands in another array; the same check counts each region's reads and writes (the
launch's LaunchStats) and, with race_check, records who touched each element.
Non-const arrays are copied back after a clean launch. Arrays that partly overlap
another argument (two views of one buffer) are passed as they are, so that the kernel
sees the aliasing a GPU would; an access outside the union of such views is still an
error naming the nearest one, but an index of one view that lands inside the other view's
bytes cannot be told from an access through that other view, and passes.
"""
import mmap
from dataclasses import dataclass

import numpy as np

from .errors import KernelFaultError

SMALL_GUARD_BYTES = 64 * 1024  # the least inaccessible memory around a region (sim_scheduler.c)
GLOBAL, DYNAMIC_SHARED, STATIC_SHARED = 0, 1, 2  # SIM_REGION_* in sim_scheduler.c


@dataclass
class Region:
    """One region of a launch: what it is, the array to copy it back to (or None), its index in the C table."""
    description: str
    itemsize: int  # 1 for shared memory, whose positions are counted in bytes
    copy_back: object
    guarded: bool
    argument: int = -1  # the launch argument it holds, or -1


class LaunchMemory:
    """Device copies of one launch's array arguments and shared memory; `pointers` are what the kernel receives."""

    def __init__(self, library, params, values, shared_mem, race_check=False):
        self._lib, self._ffi = library.lib, library.ffi
        self.regions = []
        self.table = self._ffi.new("sim_region[]", len(params) + 1 + len(library.shared_vars))
        self.pointers = []
        self._shadows = []
        try:
            self._place(params, values, shared_mem)
            self.static_shared = self._ffi.new("void *[]", max(1, len(library.shared_vars)))
            for k, (name, line, nbytes) in enumerate(library.shared_vars):
                self.static_shared[k] = self._allocate(f"the __shared__ variable `{name}` (line {line}, {nbytes} "
                                                       "bytes)", nbytes, 1, None, STATIC_SHARED).start
            if race_check:
                self._add_shadows()
        except BaseException:
            self.free()
            raise

    def _place(self, params, values, shared_mem):
        ffi = self._ffi
        spans = {i: _span(v) for i, (p, v) in enumerate(zip(params, values)) if p.pointer}
        region_of = {}
        for i, (param, value) in enumerate(zip(params, values)):
            description = f"argument {i} `{param}` ({value.size} elements)" if param.pointer else ""
            if not param.pointer:
                self.pointers.append(ffi.from_buffer(value))
            elif spans[i] in region_of:  # the same array twice: one device copy
                k = region_of[spans[i]]
                if not param.const:
                    self.regions[k].copy_back = value
                self.pointers.append(self.table[k].start)
            elif any(_overlap(spans[i], other) and spans[i] != other for other in spans.values()):
                # a view that partly overlaps another: the kernel works on the NumPy buffer itself
                k = len(self.regions)
                entry = self.table[k]
                entry.start = entry.window_lo = ffi.cast("char *", ffi.from_buffer(value))
                entry.window_hi = entry.start + value.nbytes
                entry.bytes, entry.kind, entry.granule = value.nbytes, GLOBAL, max(1, value.itemsize)
                self.regions.append(Region(description, value.itemsize, None, False, i))
                region_of[spans[i]] = k
                self.pointers.append(entry.start)
            else:
                entry = self._allocate(description, value.nbytes, value.itemsize, None if param.const else value,
                                       GLOBAL, i)
                ffi.memmove(entry.start, ffi.from_buffer(value), value.nbytes)
                region_of[spans[i]] = len(self.regions) - 1
                self.pointers.append(entry.start)
        self.shared = self._allocate(f"the dynamic shared memory (shared_mem={shared_mem} bytes)", shared_mem, 1,
                                     None, DYNAMIC_SHARED).start

    def _allocate(self, description, nbytes, itemsize, copy_back, kind, argument=-1):
        entry = self.table[len(self.regions)]
        if self._lib.minigrad_sim_guarded_alloc(nbytes, self.table + len(self.regions)):
            raise MemoryError(f"could not map {nbytes} bytes of simulated device memory for {description}")
        entry.kind, entry.granule = kind, max(1, itemsize)
        self.regions.append(Region(description, itemsize, copy_back, True, argument))
        return entry

    def _add_shadows(self):
        """One zeroed record per element (per byte of shared memory) for the race check."""
        record = self._lib.minigrad_sim_shadow_bytes()
        for k in range(len(self.regions)):
            entry = self.table[k]
            shadow = np.zeros(max(1, -(-entry.bytes // entry.granule)) * record, np.uint8)
            self._shadows.append(shadow)
            entry.shadow = self._ffi.from_buffer(shadow)

    def describe(self, address):
        """Which region an address outside every region is nearest to (within the smallest guard), and by how much."""
        near = []
        for k, r in enumerate(self.regions):
            entry = self.table[k]
            start = int(self._ffi.cast("uintptr_t", entry.start))
            first_page = start // mmap.PAGESIZE * mmap.PAGESIZE
            if first_page - SMALL_GUARD_BYTES <= address < start + entry.bytes + 16 + SMALL_GUARD_BYTES:
                distance = start - address if address < start else address - (start + entry.bytes)
                near.append((distance, start, r))
        if not near:
            return ""
        _, start, r = min(near, key=lambda n: n[0])
        where = "before its start" if address < start else "past its end"
        return f"; that is {_position(address - start, r.itemsize)} of {r.description}, {where}"

    def counts(self, k):
        return self.table[k].reads, self.table[k].writes

    def finish(self, where):
        """After a launch: check the poison around each array, then copy non-const arrays back."""
        for k, r in enumerate(self.regions):
            entry = self.table[k]
            offset = self._lib.minigrad_sim_guarded_damage(entry.start, entry.bytes) if r.guarded else 0
            if offset:
                side = "before the start" if offset < 0 else "past the end"
                raise KernelFaultError(f"{where}: a thread wrote {_position(offset, r.itemsize)}, {side} of "
                                       f"{r.description} (on a GPU: an out-of-bounds write)")
        for k, r in enumerate(self.regions):
            if r.copy_back is not None:
                self._ffi.memmove(self._ffi.from_buffer(r.copy_back, require_writable=True), self.table[k].start,
                                  self.table[k].bytes)

    def free(self):
        for k, r in enumerate(self.regions):
            if r.guarded:
                self._lib.minigrad_sim_guarded_free(self.table + k)
        self.regions = []


def _position(offset, itemsize):
    return f"byte {offset}" if itemsize == 1 else f"element {offset // itemsize}"


def _span(array):
    start = array.__array_interface__["data"][0]
    return start, start + array.nbytes


def _overlap(a, b):
    return a[0] < b[1] and b[0] < a[1]
