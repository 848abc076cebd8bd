"""float16 / bfloat16 ↔ float32 conversion through kernels/halfconv.c (lesson 12).

NumPy converts float16 element by element in software (~10× slower than the float32 product it feeds);
the C kernel uses the CPU's F16C instructions where it has them and vectorised bit arithmetic for bfloat16.
Both round to nearest, ties to even, exactly as NumPy and ml_dtypes do, so `cast` is `astype`, faster.
"""
import numpy as np

from ..dtypes import bfloat16, float16, float32

_FUNCTIONS = {(float16, float32): "f16_to_f32", (float32, float16): "f32_to_f16",
              (bfloat16, float32): "bf16_to_f32", (float32, bfloat16): "f32_to_bf16"}
_lib = None


def _kernels():
    global _lib
    if _lib is None:
        from .c_backend import load
        try:
            _lib = load()
        except RuntimeError:
            _lib = False  # not built: NumPy's astype does the same, slower
        if _lib and not hasattr(_lib[1], "f16_to_f32"):
            _lib = False  # a build older than kernels/halfconv.c: the same, slower, until `python build.py`
    return _lib


def cast(array, dtype, portable=False):
    """array.astype(dtype) (a new array); 16-bit ↔ float32 on host arrays through the C kernel when built.
    portable=True picks the C version without F16C (for tests)."""
    dtype = np.dtype(dtype)
    if not hasattr(array, "dtype"):  # a Python number from a reduction
        array = np.asarray(array)
    name = _FUNCTIONS.get((array.dtype, dtype))
    kernels = _kernels() if name and type(array) is np.ndarray and array.size else None
    if not kernels:
        return array.astype(dtype)
    ffi, lib = kernels
    source = np.ascontiguousarray(array)
    out = np.empty(array.shape, dtype)
    function = getattr(lib, name + ("_portable" if portable and name.startswith(("f16", "f32_to_f16")) else ""))
    bits_in = "uint16_t[]" if source.dtype.itemsize == 2 else "float[]"
    bits_out = "uint16_t[]" if dtype.itemsize == 2 else "float[]"
    function(ffi.from_buffer(bits_in, source.view(np.uint16) if source.dtype.itemsize == 2 else source),
             ffi.from_buffer(bits_out, out.view(np.uint16) if dtype.itemsize == 2 else out), source.size)
    return out
