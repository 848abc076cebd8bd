"""Saving and loading tensors and state dicts as .npz files: plain arrays, never pickle.

A pickle can run arbitrary code when it is loaded; an .npz of numeric arrays
cannot, so `load` refuses anything that would need `allow_pickle=True`.

The archive is written member by member (`name.npy` per entry), so any key
works, even names like "file" that `np.savez` would take as its own
arguments. It is written to a temporary file beside `path` and renamed over
it, so an interrupted save never leaves a half-written checkpoint behind.
"""
import os
import tempfile
import zipfile

import numpy as np

from .dtypes import bfloat16, is_number
from .tensor import Tensor

_SINGLE = "__minigrad_tensor__"
_BFLOAT16 = "__minigrad_bfloat16__/"  # NumPy's format has no bfloat16: its bits are stored as uint16 here
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
_NPY_MAGIC = b"\x93NUMPY"
_PICKLE_MAGIC = b"\x80"  # the PROTO opcode that starts every pickle of protocol 2 and later


def _host(value, name):
    if isinstance(value, Tensor):
        return value.numpy()
    array = np.asarray(value.get() if hasattr(value, "get") and not isinstance(value, dict) else value)
    if not is_number(array.dtype):
        raise TypeError(f"mg.save stores numbers only; entry {name!r} has dtype {array.dtype}")
    return array


def _arrays(obj):
    if isinstance(obj, dict):
        arrays = {}
        for name, value in obj.items():
            if not isinstance(name, str):
                raise TypeError(f"mg.save needs string keys, got {name!r}")
            arrays[name] = _host(value, name)
        return arrays
    if isinstance(obj, (Tensor, np.ndarray)):
        return {_SINGLE: _host(obj, "tensor")}
    raise TypeError(f"mg.save takes a Tensor or a dict of tensors (a state dict), got {type(obj).__name__}")


def save(obj, path):
    """Write a tensor, or a dict of name → tensor/array/number (a state dict), to `path` as .npz, atomically."""
    arrays = _arrays(obj)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
            for name, array in arrays.items():
                if array.dtype == bfloat16:
                    name, array = _BFLOAT16 + name, array.view(np.uint16)
                with archive.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, array, allow_pickle=False)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private; a checkpoint gets normal permissions
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _refuse(path, reason):
    raise ValueError(f"cannot load {path}: {reason}")


def _check_format(path):
    """Name what the file is when it is not an .npz archive, before NumPy guesses (and blames pickle)."""
    if os.path.isdir(path):
        _refuse(path, "it is a directory, not a file")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        _refuse(path, "the file is empty")
    if head.startswith(_NPY_MAGIC):
        _refuse(path, "it is a single .npy array; mg.load reads the .npz archives that mg.save writes")
    if head.startswith(_PICKLE_MAGIC):
        _refuse(path, "it holds pickled Python objects, which could run code when loaded; mg.load reads plain "
                      "numeric arrays only")
    if not head.startswith(_ZIP_MAGIC):
        _refuse(path, "it is not an .npz archive (no zip header); was it written by mg.save?")


def load(path):
    """Read what `save` wrote: a Tensor, or a dict of name → Tensor. Pickled content raises, never runs.

    Every way a file can be wrong (missing, a directory, empty, text, a lone .npy, truncated, a
    corrupt zip, object arrays) raises one OSError or ValueError that names the file and the problem.
    """
    path = os.fspath(path)
    _check_format(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):
            _refuse(path, "an entry holds pickled Python objects, which could run code when loaded; "
                          "mg.load reads plain numeric arrays only")
        _refuse(path, f"an entry is not a valid array ({exc})")
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        _refuse(path, f"the archive is truncated or corrupt ({type(exc).__name__}: {exc})")
    for name, array in arrays.items():
        if array.dtype.kind not in "biuf":
            _refuse(path, f"entry {name!r} has dtype {array.dtype}; mg.load reads numeric arrays only")
    for name in [n for n in arrays if n.startswith(_BFLOAT16)]:
        if arrays[name].dtype != np.uint16:
            _refuse(path, f"entry {name!r} should hold bfloat16 bits as uint16, has dtype {arrays[name].dtype}")
        arrays[name[len(_BFLOAT16):]] = arrays.pop(name).view(bfloat16)
    if set(arrays) == {_SINGLE}:
        return Tensor(arrays[_SINGLE])
    return {name: Tensor(array) for name, array in arrays.items()}
