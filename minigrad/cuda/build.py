"""CUDA source -> a C shared library the simulator can launch, compiled once and cached.

The user's source is compiled as C after the textual rewrites that C needs
(`extern "C"` and its braces go, `extern __shared__ T name[];` becomes a pointer to
the launch's dynamic shared memory), between the CUDA built-ins of sim_runtime.h and the fiber
scheduler of sim_scheduler.c. Libraries are cached by the hash of source, options and
simulator sources in $MINIGRAD_CACHE_DIR (default ~/.cache/minigrad)/cuda-sim.
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
from dataclasses import dataclass
from pathlib import Path

from .errors import CompileError, CompileWarning, CudaSimError
from .signature import Param, parse_kernels, static_shared_sizes

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
LDFLAGS = ["-shared", "-Wl,-z,defs", "-pthread", "-lm"]
BASE_STACK_BYTES = 64 * 1024  # room for libc calls (printf) on top of the kernel's own frames

_EXTERN_C = re.compile(r'\bextern\s+"C"\s*')
_EXTERN_C_BLOCK = re.compile(r'\bextern\s+"C"\s*\{')
_EXTERN_SHARED = re.compile(r"\bextern\s+__shared__\s+((?:__align__\s*\(\s*\d+\s*\)\s*)?[^;\[\]]*?)\s*"
                            r"([A-Za-z_]\w*)\s*\[\s*\]\s*;")
_loaded = {}
_lock = threading.Lock()


@dataclass
class Library:
    """A compiled, loaded module: its kernels' parameters and the launch entry point."""
    lib: object
    ffi: object
    kernels: dict  # name -> (index, (Param, ...), bytes of static shared memory)
    stack_bytes: int


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


def _brace_depth(code, end):
    return code.count("{", 0, end) - code.count("}", 0, end)


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
    """Rewrite the CUDA-only declarations C cannot compile; the line count stays the same."""
    code = _EXTERN_C.sub("", _unwrap_extern_c_blocks(code))

    def dynamic_shared(match):
        ctype, name = match.group(1).strip(), match.group(2)
        if _brace_depth(code, match.start()) > 0:
            return f"{ctype} *{name} = ({ctype} *)__sim_dynamic_shared();"
        # a macro needs a line of its own; C has no file-scope pointer with a run-time value
        at_line_start = match.start() == 0 or code[match.start() - 1] == "\n"
        newline = "" if at_line_start else "\n"
        return f"{newline}#define {name} (({ctype} *)__sim_dynamic_shared())"

    return _EXTERN_SHARED.sub(dynamic_shared, code)


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


def _undefine_redefined(code):
    """#undef lines for our min/max/abs where the source defines its own macro of that name."""
    return "".join(f"#undef {name}\n" for name in ("min", "max", "abs")
                   if re.search(rf"^\s*#\s*define\s+{name}\b", code, re.M))


def _entries(kernels, shared_sizes):
    """One function per kernel that unpacks the launch's `void *a[]` into its parameters; and
    minigrad_sim_shared_size(kernel), its static shared memory as the compiler counts it."""
    lines = []
    for i, (name, params) in enumerate(kernels.items()):
        call = ", ".join(p.c_argument(j) for j, p in enumerate(params))
        lines.append(f"static void __sim_entry_{i}(void **a) {{ (void)a; {name}({call}); }}")
    table = ", ".join(f"__sim_entry_{i}" for i in range(len(kernels))) or "0"
    lines.append(f"SIM_SHARED const sim_entry __sim_entries[] = {{{table}}};")
    lines.append(f"SIM_SHARED const int __sim_entry_count = {len(kernels)};")
    sizes = ", ".join(f"({shared_sizes[name]})" for name in kernels) or "0"
    lines.append("__attribute__((visibility(\"default\"))) unsigned long long minigrad_sim_shared_size(int kernel)")
    lines.append(f"{{ static const unsigned long long sizes[] = {{{sizes}}}; return sizes[kernel]; }}")
    return "\n".join(lines) + "\n"


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
    translated = translate(code)
    cc, flags = compiler(), defines(options) + extra_flags()
    pre = _run(cc + ["-E", "-P", "-x", "c", "-DMINIGRAD_CUDA_SIM=1", *flags, "-"], stdin=translated)
    if pre.returncode:
        raise _compile_error(pre.stderr, "<stdin>")
    kernels, shared_sizes = parse_kernels(pre.stdout), static_shared_sizes(pre.stdout)
    scheduler = _scheduler_object(cc, flags, so_path.parent)
    with tempfile.TemporaryDirectory(dir=so_path.parent) as tmp:
        Path(tmp, filename).write_text(translated)
        entries = _entries(kernels, shared_sizes)
        Path(tmp, "module.c").write_text(f'#include "sim_runtime.h"\n{_undefine_redefined(code)}'
                                         f'#include "{filename}"\n{entries}')
        built = _run(cc + CFLAGS + [f"-I{HERE}", *flags, "-o", "module.so", "module.c", str(scheduler)] + LDFLAGS,
                     cwd=tmp)
        if built.returncode:
            raise _compile_error(built.stderr, filename)
        meta = {"kernels": {name: [vars(p) for p in params] for name, params in kernels.items()},
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
                           "relies on ELF linker sections to find shared memory")
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
        ffi.cdef("""
            int minigrad_sim_launch(int kernel, void **args, const unsigned int *grid, const unsigned int *block,
                                    void *dynamic_shared, size_t dynamic_bytes, int order, uint64_t seed,
                                    size_t stack_bytes, char *error, size_t error_size);
            void *minigrad_sim_fault_address(void);
            unsigned long long minigrad_sim_shared_size(int kernel);
            void *minigrad_sim_guarded_alloc(size_t bytes);
            void minigrad_sim_guarded_free(void *data, size_t bytes);
            long long minigrad_sim_guarded_damage(void *data, size_t bytes);
        """)
        lib = ffi.dlopen(str(so_path))
        kernels = {name: (i, tuple(Param(**p) for p in params), lib.minigrad_sim_shared_size(i))
                   for i, (name, params) in enumerate(meta["kernels"].items())}
        library = Library(lib, ffi, kernels, meta["stack_bytes"])
        _loaded[key] = library
        return library
