"""CUDA source -> a C shared library the simulator can launch, compiled once and cached.

The user's source is compiled as C after the rewrites that C needs: `extern "C"` and
its braces go; then, in the preprocessed text, every `__shared__` declaration becomes a
macro for memory the launch allocates (`extern __shared__ T name[];` the dynamic shared
memory, `__shared__ T name[N];` a guarded allocation of its own), undefined again where
its scope ends. It is compiled between the CUDA built-ins of sim_runtime.h and the fiber
scheduler of sim_scheduler.c, with every load and store of the kernels instrumented
(GCC's and Clang's -fsanitize=thread, one call per access) so that the scheduler checks it. Libraries are cached by the hash of source, options and simulator sources in
$MINIGRAD_CACHE_DIR (default ~/.cache/minigrad)/cuda-sim.
"""
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import threading
import warnings
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .errors import CompileError, CompileWarning, CudaSimError
from .signature import Param, parse_kernels

HERE = Path(__file__).resolve().parent
RUNTIME_FILES = ("sim_runtime.h", "sim_scheduler.c")
CFLAGS = ["-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-U_FORTIFY_SOURCE",
          "-fno-strict-aliasing",  # CUDA code reinterprets float* as float4* freely
          "-fno-math-errno",  # lets sqrtf be one instruction; CUDA has no errno either
          "-fstack-usage",  # frame sizes, to size the fiber stacks
          "-fstack-clash-protection",  # a frame larger than a page still touches the guard page first
          "-Werror=implicit-function-declaration", "-Werror=incompatible-pointer-types",
          "-Werror=int-conversion", "-Werror=return-type",
          "-Werror=implicit-int",  # C++'s `auto x = 1.5f;` would silently be an int in C
          "-Wuninitialized", "-Wmaybe-uninitialized", "-Warray-bounds"]  # shown as CompileWarning
LDFLAGS = ["-shared", "-Wl,-z,defs", "-pthread", "-lm", "-ldl"]
# The kernels (not the scheduler) call sim_scheduler.c's __tsan_{read,write}N before every memory
# access (ThreadSanitizer's instrumentation, which keeps every read and write, unlike AddressSanitizer's,
# which drops a store after a load of the same address); -gdwarf-4 (which older addr2line reads right,
# unlike DWARF 5) lets an error name the source line of the access.
CHECK_FLAGS = {"gcc": ["-gdwarf-4", "-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0"],
               "clang": ["-gdwarf-4", "-fsanitize=thread", "-mllvm", "-tsan-instrument-func-entry-exit=0",
                         "-mllvm", "-tsan-instrument-read-before-write=1", "-mllvm", "-tsan-instrument-atomics=0"]}
BASE_STACK_BYTES = 64 * 1024
MAX_STATIC_SHARED = 256  # SIM_MAX_STATIC_SHARED in sim_runtime.h  # room for libc calls (printf) on top of the kernel's own frames

_EXTERN_C = re.compile(r'\bextern\s+"C"\s*')
_EXTERN_C_BLOCK = re.compile(r'\bextern\s+"C"\s*\{')
_SHARED_WORD = re.compile(r"\b__shared__\b")
_LINE_MARKER = re.compile(r'^#\s*(?:line\s+)?(\d+)\s+"((?:[^"\\]|\\.)*)"[ \d]*$', re.M)
_SHARED_DECLARATOR = re.compile(r"^(\**)\s*([A-Za-z_]\w*)\s*((?:\[[^\]]*\]\s*)*)$")
_STORAGE_WORDS = {"__shared__", "static", "extern"}
_loaded = {}
_lock = threading.Lock()
# What Python calls in a module (sim_scheduler.c and the generated entries).
C_DECLARATIONS = """
    typedef struct {
        char *start, *window_lo, *window_hi;
        uint64_t bytes;
        int kind, granule;
        uint64_t reads, writes;
        void *shadow;
    } sim_region;
    typedef struct {
        int kind, region, write, size;
        int64_t offset;
        uint64_t address, pc;
        uint32_t block, thread;
        int other_write;
        uint32_t other_block, other_thread;
        uint64_t other_pc;
    } sim_fault;
    int minigrad_sim_launch(int kernel, void **args, const unsigned int *grid, const unsigned int *block,
                            void *dynamic_shared, void *const *static_shared, int static_count,
                            sim_region *regions, int region_count, int check_races, sim_fault *fault,
                            int order, uint64_t seed, size_t stack_bytes, char *error, size_t error_size);
    void *minigrad_sim_fault_address(void);
    unsigned long long minigrad_sim_shared_size(int kernel);
    unsigned long long minigrad_sim_static_shared_bytes(int k);
    int minigrad_sim_guarded_alloc(size_t bytes, sim_region *region);
    void minigrad_sim_guarded_free(const sim_region *region);
    long long minigrad_sim_guarded_damage(void *data, size_t bytes);
    size_t minigrad_sim_shadow_bytes(void);
"""


@dataclass
class Library:
    """A compiled, loaded module: its kernels' parameters and the launch entry point."""
    lib: object
    ffi: object
    kernels: dict  # name -> (index, (Param, ...), bytes of static shared memory)
    stack_bytes: int
    path: str = ""  # the shared library, for source lines of code addresses
    shared_vars: list = field(default_factory=list)  # [(name, declaration line, bytes)] by index k
    filename: str = "kernel.cu"

    def source_line(self, pc):
        """'line N' of the kernel source for a code offset in the library (from its debug lines), or ''."""
        return _source_line(self.path, self.filename, pc) if pc else ""


@lru_cache(maxsize=256)
def _source_line(path, filename, pc):
    try:
        out = subprocess.run(["addr2line", "-e", path, "-i", hex(pc - 1)], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for frame in out.splitlines():  # innermost (inlined) frame first; the first in the user's source wins
        where, _, line = frame.rpartition(":")
        line = line.split()[0] if line else ""
        if os.path.basename(where) == filename and line.isdigit() and line != "0":
            return f"line {line}"
    return ""


def cache_dir():
    root = os.environ.get("MINIGRAD_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "minigrad")
    path = Path(root) / "cuda-sim"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:  # a read-only home, as in some sandboxes: compile into the temporary directory instead
        path = Path(tempfile.gettempdir()) / f"minigrad-{os.getuid()}" / "cuda-sim"
        path.mkdir(parents=True, exist_ok=True)
    return path


def compiler():
    return shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")[:1]


def extra_flags():
    """$MINIGRAD_CUDA_SIM_CFLAGS, e.g. "-fsanitize=undefined" to check kernels and simulator for C undefined
    behaviour; compiled in, so part of the cache key."""
    return shlex.split(os.environ.get("MINIGRAD_CUDA_SIM_CFLAGS", ""))


def defines(options):
    """The -D macros among NVRTC-style options; everything else means nothing on a CPU."""
    options = list(options)
    found = []
    for i, opt in enumerate(options):
        if opt in ("-D", "--define-macro") and i + 1 < len(options):
            found.append(options[i + 1])
        elif opt.startswith("--define-macro="):
            found.append(opt.split("=", 1)[1])
        elif opt.startswith("-D") and len(opt) > 2:
            found.append(opt[2:].strip())
    return ["-D" + d for d in found]


def _unwrap_extern_c_blocks(code):
    """`extern "C" { ... }` -> the declarations inside, blanks where the braces were."""
    while match := _EXTERN_C_BLOCK.search(code):
        depth, end = 0, len(code)
        for i in range(match.end() - 1, len(code)):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            if depth == 0:
                end = i
                break
        opener = " " * (match.end() - match.start())
        code = code[:match.start()] + opener + code[match.end():end] + " " + code[end + 1:]
    return code


def translate(code):
    """Drop `extern "C"` (C++ only); the line count stays the same."""
    return _EXTERN_C.sub("", _unwrap_extern_c_blocks(code))


@dataclass
class SharedVar:
    """One static `__shared__` declarator: what it is called, its C type, where, and in which kernel."""
    name: str
    ctype: str       # `float [16][16]`, as sizeof takes it
    line: int
    kernel: str      # the __global__ function whose body declares it, or "" (a __device__ function, file scope)


def _line_at(markers, text, pos):
    """(source line, file name) of position pos of preprocessed text with line markers."""
    i = bisect_right([m.start() for m in markers], pos) - 1
    if i < 0:
        return text.count("\n", 0, pos) + 1, ""
    m = markers[i]
    return int(m.group(1)) + text.count("\n", m.end(), pos) - 1, m.group(2)


def _statement_bounds(text, pos):
    """Start (after the previous ; { } or directive line) and end (after the ;) of the declaration at pos."""
    start = pos
    while start > 0 and text[start - 1] not in ";{}":
        if text[start - 1] == "\n" and text.startswith("#", start):
            break
        start -= 1
    while text[start].isspace() or text.startswith("#", start):
        start = text.index("\n", start) + 1 if text.startswith("#", start) else start + 1
    end = text.find(";", pos)
    if end < 0:
        raise CompileError(f"a __shared__ declaration without its `;`: {text[start:start + 80]!r}")
    return start, end + 1


def _split_declarators(text):
    parts, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "(": 1, "]": -1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    return parts + [current]


def _scope_end(text, pos):
    """Index just after the `}` that closes the block containing pos, or None at file scope."""
    depth = 0
    for i in range(pos, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return i + 1
            depth -= 1
    return None


def _enclosing_kernel(kernel_spans, pos):
    return next((name for name, lo, hi in kernel_spans if lo <= pos < hi), "")


def rewrite_shared(text):
    """Preprocessed source (with line markers) -> (source without __shared__, [SharedVar]).

    `__shared__ T a[N][M], s;` becomes `#define a (*(T (*)[N][M])__sim_static_shared(k))` and
    `#define s (*(T (*))__sim_static_shared(k + 1))`: the same types (sizeof, decay, indexing), but
    the storage is the launch's. `extern __shared__ T d[];` becomes
    `#define d ((T *)__sim_dynamic_shared())`. Each macro is #undef'd where the block that
    declared it ends, and #line directives keep every line number.
    """
    # the preprocessor's markers carry include flags that mislead the compiler once the text is itself
    # included from module.c: keep them as plain #line directives
    text = _LINE_MARKER.sub(lambda m: f'#line {m.group(1)} "{m.group(2)}"', text)
    markers = list(_LINE_MARKER.finditer(text))
    kernel_spans = []
    for m in re.finditer(r"\b__global__\b[^;{]*?\b([A-Za-z_]\w*)\s*\([^)]*\)\s*\{", text):
        end = _scope_end(text, m.end())
        kernel_spans.append((m.group(1), m.end(), end or len(text)))
    edits, shared, seen = [], [], set()
    for m in _SHARED_WORD.finditer(text):
        start, end = _statement_bounds(text, m.start())
        if start in seen:
            continue
        seen.add(start)
        line, filename = _line_at(markers, text, start)
        declaration = re.sub(r"__align__\s*\([^)]*\)", " ", text[start:end - 1])
        declaration = re.sub(r"__attribute__\s*\(\(.*?\)\)", " ", declaration)
        first = re.search(r"[*]|\b[A-Za-z_]\w*\s*(?:\[|,|$)", declaration)
        if first is None:
            raise CompileError(f"{filename}:{line}: cannot read this __shared__ declaration: {declaration.strip()!r}")
        spec = [w for w in declaration[:first.start()].split() if w not in _STORAGE_WORDS]
        dynamic = "extern" in declaration[:first.start()].split()
        ctype = " ".join(spec)
        lines, names = [], []
        for declarator in _split_declarators(declaration[first.start():]):
            d = _SHARED_DECLARATOR.match(declarator.strip())
            if not d or not ctype:
                raise CompileError(f"{filename}:{line}: the simulator cannot read the __shared__ declarator "
                                   f"{declarator.strip()!r} (use `__shared__ T name[N]...;`)")
            stars, name, dims = d.group(1), d.group(2), re.sub(r"\s+", "", d.group(3))
            if dynamic:
                lines.append(f"#define {name} (({ctype} {stars}*)__sim_dynamic_shared())")
            else:
                lines.append(f"#define {name} (*({ctype} {stars}(*){dims})__sim_static_shared({len(shared)}))")
                shared.append(SharedVar(name, f"{ctype} {stars}{dims}", line,
                                        _enclosing_kernel(kernel_spans, start)))
            names.append(name)
        resync = f'#line {line} "{filename}"'
        edits.append((start, end, "\n" + "\n".join(f"#undef {n}" for n in names) + "\n" + "\n".join(lines)
                      + f"\n{resync}\n" + " " * (start - text.rfind("\n", 0, start) - 1)))
        scope = _scope_end(text, end)
        if scope is not None:
            close_line, _ = _line_at(markers, text, scope - 1)
            edits.append((scope, scope, "\n" + "\n".join(f"#undef {n}" for n in names)
                          + f'\n#line {close_line} "{filename}"\n'))
    for start, end, replacement in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, shared


def _run(cmd, cwd=None, stdin=None):
    try:
        return subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, text=True)
    except FileNotFoundError:
        raise CompileError(f"the CUDA simulator needs a C compiler and found none ({cmd[0]!r}); install gcc "
                           "or clang, or set CC") from None


def _compile_error(stderr, filename):
    return CompileError("the kernel source does not compile as C for the CUDA simulator (it accepts the C subset "
                        "of CUDA: no templates, classes, references or #include). Compiler output, with line "
                        f"numbers of your source in {filename}:\n{stderr.strip()}")


def _entries(kernels, shared_vars):
    """One function per kernel that unpacks the launch's `void *a[]` into its parameters (not
    instrumented: `a` is the launch's, not the kernel's, memory); minigrad_sim_shared_size(kernel), the
    static shared memory its body declares; minigrad_sim_static_shared_bytes(k), each variable's size."""
    lines = []
    for i, (name, params) in enumerate(kernels.items()):
        call = ", ".join(p.c_argument(j) for j, p in enumerate(params))
        lines.append(f"__attribute__((no_sanitize_thread)) static void __sim_entry_{i}(void **a) "
                     f"{{ (void)a; {name}({call}); }}")
    table = ", ".join(f"__sim_entry_{i}" for i in range(len(kernels))) or "0"
    lines.append(f"SIM_SHARED const sim_entry __sim_entries[] = {{{table}}};")
    lines.append(f"SIM_SHARED const int __sim_entry_count = {len(kernels)};")
    per_kernel = [" + ".join(["0"] + [f"sizeof({v.ctype})" for v in shared_vars if v.kernel == name])
                  for name in kernels]
    for function, sizes in (("minigrad_sim_shared_size(int kernel)", per_kernel),
                            ("minigrad_sim_static_shared_bytes(int k)", [f"sizeof({v.ctype})" for v in shared_vars])):
        index = function[function.index(" ", function.index("(")) + 1:-1]
        lines.append(f'__attribute__((visibility("default"), no_sanitize_thread)) unsigned long long {function}')
        lines.append(f"{{ static const unsigned long long sizes[] = {{{', '.join(sizes) or '0'}}}; "
                     f"return sizes[{index}]; }}")
    return "\n".join(lines) + "\n"


def _kernel_flags(flags):
    """The extra flags for the kernels' own file: AddressSanitizer (for the scheduler, in the sanitizer
    test) cannot be combined with the instrumentation of the per-access checks, which do its work there;
    UBSan's array-bounds check would report a kernel's bad index before the simulator names its array."""
    kept, undefined = [], False
    for flag in flags:
        if flag.startswith("-fsanitize="):
            kinds = [k for k in flag.split("=", 1)[1].split(",") if k != "address"]
            undefined |= "undefined" in kinds
            flag = "-fsanitize=" + ",".join(kinds) if kinds else None
        if flag:
            kept.append(flag)
    return kept + ["-fno-sanitize=bounds"] * undefined


@lru_cache(maxsize=None)
def _check_flags(cc):
    version = subprocess.run([*cc, "--version"], capture_output=True, text=True).stdout
    return CHECK_FLAGS["clang" if "clang" in version else "gcc"]


def _stack_bytes(build_dir):
    """Fiber stack size: the sum of all frames (an upper bound for any call chain without recursion)."""
    frames, unbounded = 0, False
    for su in Path(build_dir).glob("*.su"):
        for line in su.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                frames += int(parts[1])
                unbounded |= parts[2].strip() == "dynamic"
    stack = BASE_STACK_BYTES + frames + (BASE_STACK_BYTES if unbounded else 0)
    return (stack + 4095) // 4096 * 4096


def _compile(code, options, so_path, meta_path, filename):
    cc, flags = compiler(), defines(options) + extra_flags()
    scheduler = _scheduler_object(cc, flags, so_path.parent)
    with tempfile.TemporaryDirectory(dir=so_path.parent) as tmp:
        Path(tmp, filename).write_text(translate(code))
        pre = _run(cc + ["-E", "-x", "c", "-DMINIGRAD_CUDA_SIM=1", *flags, filename], cwd=tmp)
        if pre.returncode:
            raise _compile_error(pre.stderr, filename)
        kernels = parse_kernels(pre.stdout)
        source, shared_vars = rewrite_shared(pre.stdout)
        if len(shared_vars) > MAX_STATIC_SHARED:
            raise CompileError(f"{len(shared_vars)} static __shared__ variables; the simulator takes at most "
                               f"{MAX_STATIC_SHARED} per module")
        Path(tmp, "kernel.i").write_text(source)
        entries = _entries(kernels, shared_vars)
        Path(tmp, "module.c").write_text(f'#include "sim_runtime.h"\n#include "kernel.i"\n{entries}')
        built = _run(cc + CFLAGS + _check_flags(tuple(cc)) + [f"-I{HERE}", *_kernel_flags(flags), "-c", "module.c"],
                     cwd=tmp)
        if not built.returncode:
            linked = _run(cc + [*flags, "-o", "module.so", "module.o", str(scheduler)] + LDFLAGS, cwd=tmp)
            built.returncode, built.stderr = linked.returncode, built.stderr + linked.stderr
        if built.returncode:
            raise _compile_error(built.stderr, filename)
        meta = {"kernels": {name: [vars(p) for p in params] for name, params in kernels.items()},
                "shared": [[v.name, v.line] for v in shared_vars],
                "stack_bytes": _stack_bytes(tmp),
                "warnings": built.stderr.strip() if f"{filename}:" in built.stderr else ""}
        Path(tmp, "meta.json").write_text(json.dumps(meta))
        os.replace(Path(tmp, "module.so"), so_path)
        os.replace(Path(tmp, "meta.json"), meta_path)


def _scheduler_object(cc, flags, directory):
    """sim_scheduler.c compiled once per compiler and -D flags: most of a module's compile time."""
    h = hashlib.sha256(repr((cc, CFLAGS, flags)).encode())
    for name in RUNTIME_FILES:
        h.update((HERE / name).read_bytes())
    obj = directory / f"scheduler-{h.hexdigest()[:32]}.o"
    if not obj.exists():
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            built = _run(cc + CFLAGS + [f"-I{HERE}", *flags, "-c", str(HERE / "sim_scheduler.c"), "-o", "s.o"],
                         cwd=tmp)
            if built.returncode:
                raise CompileError(f"the simulator's own scheduler failed to compile:\n{built.stderr.strip()}")
            os.replace(Path(tmp, "s.o"), obj)
    return obj


def source_hash(code, options):
    h = hashlib.sha256()
    for name in RUNTIME_FILES + ("build.py", "signature.py"):
        h.update((HERE / name).read_bytes())
    h.update(code.encode())
    h.update(repr((tuple(options), extra_flags())).encode())
    return h.hexdigest()[:32]


def load(code, options=(), filename="kernel.cu"):
    """The Library for this source and options: from this process, the disk cache, or a fresh compile.

    filename only names the source in compiler messages.
    """
    if not sys.platform.startswith("linux"):
        raise CudaSimError(f"the CUDA simulator runs on Linux (and WSL on Windows), not on {sys.platform}: it "
                           "relies on ELF shared libraries and Linux signals")
    key = source_hash(code, options)
    with _lock:
        if key in _loaded:
            return _loaded[key]
        directory = cache_dir()
        so_path, meta_path = directory / f"{key}.so", directory / f"{key}.json"
        if not (so_path.exists() and meta_path.exists()):
            _compile(code, options, so_path, meta_path, filename)
        meta = json.loads(meta_path.read_text())
        if meta["warnings"]:
            warnings.warn(CompileWarning(f"the compiler warns about the kernel source:\n{meta['warnings']}"),
                          stacklevel=3)
        import cffi
        ffi = cffi.FFI()
        ffi.cdef(C_DECLARATIONS)
        lib = ffi.dlopen(str(so_path))
        kernels = {name: (i, tuple(Param(**p) for p in params), lib.minigrad_sim_shared_size(i))
                   for i, (name, params) in enumerate(meta["kernels"].items())}
        shared = [(name, line, lib.minigrad_sim_static_shared_bytes(k)) for k, (name, line) in enumerate(meta["shared"])]
        library = Library(lib, ffi, kernels, meta["stack_bytes"], str(so_path), shared, filename)
        _loaded[key] = library
        return library
