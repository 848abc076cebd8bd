"""What each `__global__` kernel needs from a launch, read from its source: its parameters and the
types a launch must pass them.

A GPU receives kernel arguments as raw bytes, so a mismatch (a float64 array for a
`float *`, a 64-bit Python int for an `int`) is not an error there but garbage. The
simulator knows each parameter's C type and refuses such arguments instead.
"""
import re
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .errors import CompileError

# C scalar type (as `normalize` spells it) -> the NumPy dtype with the same bytes.
SCALAR_DTYPES = {
    "float": np.float32, "double": np.float64,
    "char": np.int8, "unsigned char": np.uint8, "short": np.int16, "unsigned short": np.uint16,
    "int": np.int32, "unsigned int": np.uint32, "long": np.int64, "unsigned long": np.uint64,
    "long long": np.int64, "unsigned long long": np.uint64, "bool": np.bool_, "_Bool": np.bool_,
    "int8_t": np.int8, "uint8_t": np.uint8, "int16_t": np.int16, "uint16_t": np.uint16,
    "int32_t": np.int32, "uint32_t": np.uint32, "int64_t": np.int64, "uint64_t": np.uint64,
    "size_t": np.uint64, "ptrdiff_t": np.int64,
}
# Types that only make sense behind a pointer: the element dtype of the array they view (void: any).
POINTEE_DTYPES = {"void": None, "float2": np.float32, "float4": np.float32, "int2": np.int32,
                  "int4": np.int32, "double2": np.float64}

_QUALIFIERS = {"const", "volatile", "restrict", "__restrict", "__restrict__"}
_TYPEDEF = re.compile(r"\btypedef\s+([A-Za-z_][\w\s]*?)\s+([A-Za-z_]\w*)\s*;")
_KERNEL = re.compile(r"\b__global__\s+(?:__launch_bounds__\s*\([^)]*\)\s*)?void\s+"
                     r"(?:__launch_bounds__\s*\([^)]*\)\s*)?([A-Za-z_]\w*)\s*\(([^)]*)\)\s*([{;])")


@dataclass(frozen=True)
class Param:
    """One kernel parameter: `const float *x` is Param('x', 'float', pointer=True, const=True)."""
    name: str
    ctype: str
    pointer: bool
    const: bool

    @cached_property
    def dtype(self):
        """The NumPy dtype an argument must have (of the array, for a pointer); None for void *."""
        table = {**SCALAR_DTYPES, **POINTEE_DTYPES} if self.pointer else SCALAR_DTYPES
        return None if table[self.ctype] is None else np.dtype(table[self.ctype])

    def __str__(self):
        if self.pointer:
            return f"{'const ' if self.const else ''}{self.ctype} *{self.name}"
        return f"{self.ctype} {self.name}"

    def c_argument(self, i):
        """The C expression that reads this argument from the launch's `void *a[]`."""
        return f"a[{i}]" if self.pointer else f"*({self.ctype} *)a[{i}]"


def normalize(words):
    """C type words without qualifiers -> one spelling: ['unsigned'] -> 'unsigned int'."""
    unsigned = "unsigned" in words
    words = [w for w in words if w not in ("unsigned", "signed")]
    if "int" in words and len(words) > 1:
        words.remove("int")
    base = " ".join(words) or "int"
    return f"unsigned {base}" if unsigned else base


def parse_param(text, kernel, typedefs=None):
    """`const float *__restrict__ x` -> Param; raises CompileError for types the simulator cannot pass.

    typedefs maps names made by `typedef float real;` to the words of their type.
    """
    text = " ".join(text.split())
    pointer_depth = text.count("*") + (1 if text.endswith("]") else 0)
    text = re.sub(r"\[\s*\]$", "", text)
    head, _, _ = text.rpartition("*")
    tokens = re.findall(r"[A-Za-z_]\w*", text)
    if pointer_depth > 1 or len(tokens) < 2:
        raise CompileError(f"kernel {kernel}: parameter `{text}` is not supported by the simulator; "
                           "use a named scalar or a pointer to scalars")
    name = tokens[-1]
    words = [t for t in tokens[:-1] if t not in _QUALIFIERS]
    while len(words) == 1 and typedefs and words[0] in typedefs and typedefs[words[0]] != words:
        words = typedefs[words[0]]
    ctype = normalize(words)
    pointer = pointer_depth == 1
    known = {**SCALAR_DTYPES, **POINTEE_DTYPES} if pointer else SCALAR_DTYPES
    if ctype not in known:
        raise CompileError(f"kernel {kernel}: parameter `{text}` has type {ctype!r}, which the simulator "
                           f"cannot pass; use one of: {', '.join(sorted(SCALAR_DTYPES))} (or pointers to them)")
    const = pointer and "const" in re.findall(r"[A-Za-z_]\w*", head if "*" in text else text)
    return Param(name, ctype, pointer, const)


def parse_kernels(preprocessed):
    """Every `__global__ void name(params) {` in preprocessed source -> {name: (Param, ...)}."""
    typedefs = {name: [w for w in words.split() if w not in _QUALIFIERS]
                for words, name in _TYPEDEF.findall(preprocessed)}
    kernels = {}
    for match in _KERNEL.finditer(preprocessed):
        name, params, opener = match.groups()
        if opener != "{":
            continue
        params = params.strip()
        if params in ("", "void"):
            kernels[name] = ()
        else:
            kernels[name] = tuple(parse_param(p, name, typedefs) for p in params.split(","))
    return kernels
