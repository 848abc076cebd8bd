"""Saving and loading tensors and state dicts as .npz files: plain arrays, never pickle.

A pickle can run arbitrary code when it is loaded; an .npz of numeric arrays
cannot, so `load` refuses anything that would need `allow_pickle=True`.
"""
import numpy as np

from .tensor import Tensor

_SINGLE = "__minigrad_tensor__"


def _host(value, name):
    if isinstance(value, Tensor):
        return value.numpy()
    array = np.asarray(value.get() if hasattr(value, "get") and not isinstance(value, dict) else value)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"mg.save stores numbers only; entry {name!r} has dtype {array.dtype}")
    return array


def save(obj, path):
    """Write a tensor, or a dict of name → tensor/array/number (a state dict), to `path` as .npz."""
    if isinstance(obj, dict):
        arrays = {}
        for name, value in obj.items():
            if not isinstance(name, str):
                raise TypeError(f"mg.save needs string keys, got {name!r}")
            arrays[name] = _host(value, name)
    elif isinstance(obj, (Tensor, np.ndarray)):
        arrays = {_SINGLE: _host(obj, "tensor")}
    else:
        raise TypeError(f"mg.save takes a Tensor or a dict of tensors (a state dict), got {type(obj).__name__}")
    with open(path, "wb") as f:  # a file object, so NumPy does not append ".npz" to the name
        np.savez(f, **arrays)


def load(path):
    """Read what `save` wrote: a Tensor, or a dict of name → Tensor. Pickled content raises, never runs."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        raise ValueError(f"refusing to load {path}: it holds pickled Python objects, which could run code "
                         f"when loaded; mg.load reads plain numeric arrays only ({exc})") from None
    if set(arrays) == {_SINGLE}:
        return Tensor(arrays[_SINGLE])
    return {name: Tensor(array) for name, array in arrays.items()}
