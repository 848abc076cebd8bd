"""The ring all-reduce, written from scratch on send/recv (lesson `09_data_parallel`).

W ranks stand in a ring; rank r sends to r+1 and receives from r−1 (mod W). Each rank's array is cut
into W chunks c_0 … c_{W−1} (np.array_split: sizes differ by at most one when W does not divide n).

    reduce-scatter, steps s = 0 … W−2:  send chunk (r − s) mod W, receive chunk (r − s − 1) mod W and
                                        add it in. After W−1 steps rank r holds the full sum of
                                        chunk (r + 1) mod W.
    all-gather,     steps s = 0 … W−2:  send chunk (r + 1 − s) mod W, receive chunk (r − s) mod W and
                                        overwrite it. After W−1 steps every rank holds every summed chunk.

Each rank sends 2(W−1) chunks of n/W elements: 2(W−1)/W · n elements, almost independent of W, which
is why the ring is bandwidth-optimal. With latency α per message and β seconds per byte:

    T_ring(n bytes) = 2(W−1) α + 2(W−1)/W · n β
"""
import numpy as np

from . import process_group as pg


def ring_cost(n_bytes, world_size, alpha, beta):
    """T = 2(W−1)·α + 2(W−1)/W · n·β: the ring all-reduce's time for n bytes per rank (see module docstring)."""
    steps = 2 * (world_size - 1)
    return steps * alpha + steps / world_size * n_bytes * beta


def ring_all_reduce(t, op=pg.ReduceOp.SUM):
    """In place on every rank: t ← Σ_r t_r (SUM), the mean (AVG) or max_r t_r (MAX), by the ring above.

    Each step posts its send first (isend) and then receives, so neighbours never wait on each other.
    The same answer as dist.all_reduce, which lets MPI pick its own algorithm.
    """
    array = pg._contiguous(pg._array(t, "ring_all_reduce"), "ring_all_reduce")
    pg._check_op(op, array, "ring_all_reduce")
    world, rank = pg.get_world_size(), pg.get_rank()
    if world == 1:
        return
    combine = np.maximum if op is pg.ReduceOp.MAX else np.add
    chunks = np.array_split(array.reshape(-1), world)  # views into the array: results land in place
    right, left = (rank + 1) % world, (rank - 1) % world
    incoming = np.empty_like(chunks[0])  # the largest chunk is the first one
    for s in range(world - 1):  # reduce-scatter
        send_chunk, recv_chunk = chunks[(rank - s) % world], chunks[(rank - s - 1) % world]
        received = incoming[:recv_chunk.size]
        request = pg.isend(send_chunk, right)
        pg.recv(received, left)
        combine(recv_chunk, received, out=recv_chunk)
        request.wait()
    for s in range(world - 1):  # all-gather
        request = pg.isend(chunks[(rank + 1 - s) % world], right)
        pg.recv(chunks[(rank - s) % world], left)
        request.wait()
    if op is pg.ReduceOp.AVG:
        array /= world
