"""What the simulator's per-access check reports: memory traffic (LaunchStats) and bad accesses in words.

Every load and store a kernel makes passes sim_scheduler.c's sim_access, which knows
the region it falls in. That gives, per launch, the bytes read and written in each
array argument and in shared memory (kernel(..., count=True) returns them), and the
description of an access that is out of bounds, through a pointer that belongs to no
region, or (kernel(..., race_check=True)) racing with another thread's access.
"""
from dataclasses import dataclass, field

from .device_memory import GLOBAL

OUT_OF_BOUNDS, BAD_POINTER, OTHER_STACK, RACE = 1, 2, 3, 4  # SIM_BAD_* in sim_scheduler.c


@dataclass
class ArrayTraffic:
    """Global-memory traffic of one array argument in one launch."""
    name: str
    itemsize: int
    read_bytes: int
    write_bytes: int

    @property
    def reads(self):
        """Elements read (a float4 load counts 4)."""
        return self.read_bytes // self.itemsize

    @property
    def writes(self):
        """Elements written."""
        return self.write_bytes // self.itemsize


@dataclass
class LaunchStats:
    """Memory traffic of one launch, counted access by access by the simulator.

    stats["A"].reads: elements of argument A read (also by index: stats[0]); stats.global_reads /
    global_writes: elements over all array arguments; shared_read_bytes / shared_write_bytes: static and
    dynamic shared memory. An element read twice counts twice: this is the traffic a GPU without caches
    would see, which is what tiling reduces.
    """
    arrays: dict = field(default_factory=dict)  # parameter name -> ArrayTraffic, in parameter order
    shared_read_bytes: int = 0
    shared_write_bytes: int = 0

    def __getitem__(self, key):
        return list(self.arrays.values())[key] if isinstance(key, int) else self.arrays[key]

    @property
    def global_reads(self):
        return sum(a.reads for a in self.arrays.values())

    @property
    def global_writes(self):
        return sum(a.writes for a in self.arrays.values())

    def __str__(self):
        rows = [f"{name}: {a.reads} elements read, {a.writes} written" for name, a in self.arrays.items()]
        rows.append(f"shared memory: {self.shared_read_bytes} bytes read, {self.shared_write_bytes} written")
        return "\n".join(rows)


def launch_stats(memory, params):
    """The LaunchStats of a finished launch from its regions' counters."""
    stats = LaunchStats()
    for k, region in enumerate(memory.regions):
        reads, writes = memory.counts(k)
        if memory.table[k].kind != GLOBAL:
            stats.shared_read_bytes += reads
            stats.shared_write_bytes += writes
            continue
        name = params[region.argument].name
        if name in stats.arrays:  # the same array passed twice: one region, counted once
            continue
        stats.arrays[name] = ArrayTraffic(name, max(1, region.itemsize), reads, writes)
    for i, p in enumerate(params):  # an argument sharing another's region still gets its row
        if p.pointer and p.name not in stats.arrays:
            stats.arrays[p.name] = ArrayTraffic(p.name, 1, 0, 0)
    return stats


def _coords(linear, dims):
    x, y = linear % dims[0], linear // dims[0] % dims[1]
    return f"({x}, {y}, {linear // (dims[0] * dims[1])})"


def _where_in(region, offset, size):
    """'element 10 of argument 0 `float *y` (10 elements), past its end' for a byte offset into a region."""
    unit = region.itemsize if region.itemsize > 1 else size  # shared memory: in units of the access
    position = f"element {offset // unit}" if offset % unit == 0 else f"byte {offset}"
    if region.itemsize == 1 and unit > 1 and offset % unit == 0:
        position += f" (byte {offset})"
    return f"{position} of {region.description}"


def describe_access(fault, memory, library, grid, block):
    """The words for a refused access (fault: the C sim_fault), after 'block (..), thread (..)'."""
    verb = ("read", "wrote", "atomically updated")[fault.write]
    line = library.source_line(fault.pc)
    at = f" at {line}" if line else ""
    if fault.kind == OUT_OF_BOUNDS:
        region = memory.regions[fault.region]
        bytes_ = memory.table[fault.region].bytes
        side = "before its start" if fault.offset < 0 else "past its end"
        return (f"{at}: {verb} {fault.size} bytes at {_where_in(region, fault.offset, fault.size)}, {side} "
                f"(valid: bytes 0 to {bytes_ - 1}); an index out of bounds (on a GPU: cudaErrorIllegalAddress, "
                "or a silent corruption)")
    if fault.kind == OTHER_STACK:
        return (f"{at}: {verb} {fault.size} bytes at address {fault.address:#x}, in another thread's local "
                "variables (a pointer to a local variable that outlived its thread, or was passed between threads)")
    if fault.kind == BAD_POINTER:
        # near an array passed without a guard window (a view overlapping another argument): name it
        near = memory.describe(fault.address)
        return (f"{at}: {verb} {fault.size} bytes at address {fault.address:#x}, which is in none of this launch's "
                "arrays or shared memory: a pointer that does not come from a launch argument (or an index more "
                f"than 32 GiB out of bounds); on a GPU: cudaErrorIllegalAddress{near}")
    region = memory.regions[fault.region]
    other_line = library.source_line(fault.other_pc) or "an unknown line"
    other_verb = ("read", "wrote")[fault.other_write]
    other_thread = _coords(fault.other_thread, block)
    if fault.other_block != fault.block:
        other = f"thread {other_thread} of block {_coords(fault.other_block, grid)}"
        why = "threads of different blocks are never synchronised within a launch"
    else:
        other = f"thread {other_thread}"
        why = "no __syncthreads() between them"
    return (f"{at}: data race on {_where_in(region, fault.offset, fault.size)}: this thread {verb} it, and {other} "
            f"{other_verb} it at {other_line}, with {why} (at least one writes, neither is an atomic)")
