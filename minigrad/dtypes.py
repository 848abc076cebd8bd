"""The dtypes a tensor can hold, and PyTorch's rules for the dtype of a mixed operation.

    mg.float32, mg.float64, mg.int64, …      NumPy dtypes under PyTorch's names
    mg.bfloat16                               ml_dtypes' bfloat16 (float32's 8 exponent bits, 7 mantissa bits)
    is_floating(dtype)                        float16, bfloat16, float32, float64 (bfloat16's NumPy kind is "V")
    as_dtype("float32") / as_dtype(float)     anything a user may pass as dtype= → a NumPy dtype
    promote_types(a, b), result_dtype(x, y)   the dtype of a binary op (bool < int < float)
"""
import ml_dtypes
import numpy as np

float16, float32, float64 = np.dtype("float16"), np.dtype("float32"), np.dtype("float64")
int8, int16, int32, int64 = np.dtype("int8"), np.dtype("int16"), np.dtype("int32"), np.dtype("int64")
uint8, bool_ = np.dtype("uint8"), np.dtype("bool")
bfloat16 = np.dtype(ml_dtypes.bfloat16)
HALF_FLOATS = frozenset((float16, bfloat16))  # a set: `dtype in HALF_FLOATS` runs on every op
DTYPES = {"float16": float16, "half": float16, "bfloat16": bfloat16, "float32": float32, "float": float32, "float64": float64,
          "double": float64, "int8": int8, "int16": int16, "int32": int32, "int": int32, "int64": int64,
          "long": int64, "uint8": uint8, "bool": bool_}


def as_dtype(dtype):
    """`mg.float32`, `np.float32`, `"float32"` or `float` → a NumPy dtype minigrad supports."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"unknown dtype {dtype!r}: use one of {', '.join(sorted(DTYPES))}") from None
    if not is_number(dt):
        raise TypeError(f"minigrad tensors hold numbers (bool, int, float); dtype {dt} is not supported")
    return dt


def is_floating(dtype):
    """Whether a tensor of this dtype can carry gradients: NumPy's floats and bfloat16."""
    return dtype.kind == "f" or dtype == bfloat16


def is_number(dtype):
    """bool, integers and floats (what a tensor may hold)."""
    return dtype.kind in "biu" or is_floating(dtype)


def category(dtype):
    """0 for bool, 1 for integers, 2 for floats: the order in which PyTorch promotes."""
    return 2 if is_floating(dtype) else 0 if dtype.kind == "b" else 1


def promote_types(da, db):
    """PyTorch's promotion of two dtypes: the higher category wins (bool < int < float), else the wider type."""
    ca, cb = category(da), category(db)
    if ca != cb:
        return da if ca > cb else db
    return np.promote_types(da, db)


def result_dtype(a, b):
    """The dtype of a binary op on arrays a and b: within one category, an array with dimensions wins over a
    0-d one (so `x32 + mg.tensor(1.0, dtype=mg.float64)` stays float32, as in PyTorch)."""
    da, db = a.dtype, b.dtype
    if category(da) == category(db) and (a.ndim == 0) != (b.ndim == 0):
        return db if a.ndim == 0 else da
    return promote_types(da, db)
