"""One random generator for all of minigrad, so `mg.manual_seed(n)` makes every draw reproducible."""
import numpy as np

_generator = np.random.default_rng()


def generator():
    """The `np.random.Generator` behind init, dropout, sampling and `mg.randn`."""
    return _generator


def manual_seed(seed):
    """Reseed minigrad's generator: the same seed gives the same init, dropout masks and samples."""
    global _generator
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed expects a non-negative integer, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator
