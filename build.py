"""Build the C kernels into one CFFI extension module, `minigrad._ckernels`.

Every `kernels/NAME.c` that has a `kernels/NAME.h` beside it is compiled into
the module; the .h holds plain declarations, fed to `ffi.cdef`, so adding a
kernel family means adding one .c and one .h, nothing here.

    python build.py                  build in place: minigrad/_ckernels*.so
    python build.py --sanitize DIR   AddressSanitizer + UBSan build into DIR/minigrad/
                                     (or MINIGRAD_SANITIZE=DIR python build.py)
    python build.py --out DIR        a normal build into DIR/minigrad/ (load it with
                                     MINIGRAD_CKERNELS_DIR=DIR, e.g. to test other flags)

Flags: -O3 -fopenmp -ffp-contract=fast -fno-trapping-math -fno-math-errno, each kept only if the
compiler accepts it;
`MINIGRAD_CFLAGS="-O2 -fopenmp"` replaces them. `pip install -e .` (setup.py)
runs this file too. Importing minigrad never compiles anything.
"""
import argparse
import os
import shlex
import shutil
import tempfile
from pathlib import Path

import setuptools  # noqa: F401  (provides distutils on Python >= 3.12)
from cffi import FFI, VerificationError
from distutils.ccompiler import new_compiler
from distutils.errors import CompileError, DistutilsError, LinkError
from distutils.sysconfig import customize_compiler

ROOT = Path(__file__).resolve().parent
KERNELS = "kernels"
MODULE = "minigrad._ckernels"

# No -march=native: the build (a wheel) must run on other CPUs too. The kernels carry their own copies
# for AVX2 and AVX-512 and choose one at run time (kernels/instantiate.h, kernels/isa.c).
# -ffp-contract=fast: fuse a * b + c into one FMA (in the copies whose instruction set has one),
# which -std=c11 would forbid. -fno-trapping-math: no kernel enables floating-point exceptions, and
# GCC vectorises loops with comparisons (clamps, max) only under it. -fno-math-errno: no kernel reads
# errno, and a sqrt that may set it is a library call that stops vectorisation.
OPTIONAL_FLAGS = (["-O3"], ["-fopenmp"], ["-ffp-contract=fast"], ["-fno-trapping-math"], ["-fno-math-errno"])
SANITIZE_FLAGS = ["-O1", "-g", "-fno-omit-frame-pointer",
                  "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
PROBE_SOURCE = """
#ifdef _OPENMP
#include <omp.h>
#endif
int main(void) {
#ifdef _OPENMP
    return omp_get_max_threads() > 0 ? 0 : 1;
#else
    return 0;
#endif
}
"""


def kernel_files():
    """The (NAME.c, NAME.h) pairs under kernels/, as paths relative to the repository root."""
    pairs = []
    for source in sorted((ROOT / KERNELS).glob("*.c")):
        header = source.with_suffix(".h")
        if not header.exists():
            raise FileNotFoundError(f"{source.relative_to(ROOT)} has no {header.name} with its "
                                    "declarations for ffi.cdef")
        pairs.append((f"{KERNELS}/{source.name}", f"{KERNELS}/{header.name}"))
    return pairs


def compiler_accepts(flags):
    """Whether the C compiler Python builds extensions with compiles and links a tiny program with `flags`."""
    compiler = new_compiler()
    customize_compiler(compiler)
    with tempfile.TemporaryDirectory() as tmp:
        source = os.path.join(tmp, "probe.c")
        with open(source, "w") as f:
            f.write(PROBE_SOURCE)
        try:
            objects = compiler.compile([source], output_dir=tmp, extra_postargs=flags)
            compiler.link_executable(objects, "probe", output_dir=tmp, extra_postargs=flags)
        except (CompileError, LinkError, DistutilsError, OSError):
            return False
    return True


def compile_flags(sanitize=False):
    """(compile flags, link flags): MINIGRAD_CFLAGS if set, else every accepted optional flag."""
    if os.environ.get("MINIGRAD_CFLAGS"):
        cflags = shlex.split(os.environ["MINIGRAD_CFLAGS"])
    else:
        cflags = [flag for group in OPTIONAL_FLAGS if compiler_accepts(group) for flag in group]
    if sanitize:
        cflags = [f for f in cflags if not f.startswith("-O")] + SANITIZE_FLAGS
    ldflags = [f for f in cflags if f == "-fopenmp" or f.startswith("-fsanitize")]
    return cflags, ldflags


def make_ffibuilder(cflags, ldflags, root=""):
    """The FFI builder of minigrad._ckernels from every kernels/NAME.c + NAME.h pair.

    Source paths are relative to the repository root (what setup.py needs)
    unless `root` is given: ffi.compile() runs the compiler from its tmpdir.
    """
    pairs = kernel_files()
    ffibuilder = FFI()
    ffibuilder.cdef("\n".join((ROOT / header).read_text() for _, header in pairs))
    preamble = "#include <stdint.h>\n" + "".join(
        f'#include "{Path(header).name}"\n' for _, header in pairs)
    ffibuilder.set_source(MODULE, preamble,
                          sources=[os.path.join(root, source) for source, _ in pairs],
                          include_dirs=[os.path.join(root, KERNELS)],
                          extra_compile_args=["-std=c11"] + cflags,
                          extra_link_args=ldflags,
                          py_limited_api=True)  # the .abi3.so name pip install gives it too
    return ffibuilder


def build(target_dir=ROOT, sanitize=False, verbose=False):
    """Compile the extension and copy it to target_dir/minigrad/; returns its path."""
    cflags, ldflags = compile_flags(sanitize)
    print(f"building {MODULE} from {', '.join(s for s, _ in kernel_files())} "
          f"with {' '.join(cflags) or 'no extra flags'}")
    with tempfile.TemporaryDirectory() as tmp:
        built = make_ffibuilder(cflags, ldflags, root=str(ROOT)).compile(tmpdir=tmp, verbose=verbose)
        destination = Path(target_dir) / "minigrad" / Path(built).name
        destination.parent.mkdir(parents=True, exist_ok=True)
        # Copy then rename: a process that has the old module loaded keeps its (unlinked) file.
        staging = destination.with_name(destination.name + ".tmp")
        shutil.copyfile(built, staging)
        os.replace(staging, destination)
    # Python would import a stale build under another suffix (e.g. pip's .abi3.so) before this one.
    for stale in destination.parent.glob("_ckernels.*"):
        if stale != destination and stale.suffix in (".so", ".pyd"):
            stale.unlink()
    print(f"built {destination}")
    return destination


def setup_ffibuilder():
    """The builder that setup.py's cffi_modules=["build.py:setup_ffibuilder"] compiles."""
    return make_ffibuilder(*compile_flags())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sanitize", metavar="DIR", default=os.environ.get("MINIGRAD_SANITIZE"),
                        help="build with -fsanitize=address,undefined into DIR/minigrad/")
    parser.add_argument("--out", metavar="DIR", help="build into DIR/minigrad/ instead of in place")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args()
    try:
        if args.sanitize:
            build(Path(args.sanitize), sanitize=True, verbose=args.verbose)
        else:
            build(Path(args.out) if args.out else ROOT, verbose=args.verbose)
    except (VerificationError, CompileError, LinkError, DistutilsError, OSError) as exc:
        raise SystemExit(f"build.py: could not compile the C kernels: {exc}\n"
                         "Is a C compiler installed (Debian/Ubuntu: sudo apt install build-essential; "
                         "macOS: xcode-select --install)? Flags come from MINIGRAD_CFLAGS when it is set.")


if __name__ == "__main__":
    main()
