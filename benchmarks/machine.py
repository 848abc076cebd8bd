"""What machine a benchmark ran on: printed above every figure, since figures from different CPUs,
instruction sets and thread settings do not compare (PERF_NOTES.md)."""
import contextlib
import os
import platform

SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16")


def cpu_model_and_flags():
    """(model name, the SIMD flags of SIMD_FLAGS it has) from /proc/cpuinfo, or what platform knows."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name") and model in ("", platform.machine(), platform.processor()):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return model, [f for f in SIMD_FLAGS if f in flags]


def describe():
    """Lines naming the CPU, its SIMD flags, the C kernels' instruction set and every thread setting."""
    model, flags = cpu_model_and_flags()
    lines = [f"CPU: {model}, {os.cpu_count()} logical cores; SIMD flags: {' '.join(flags) or 'unknown'}"]
    try:
        from minigrad.kernels import c_backend
        lines.append(f"C kernels: instruction set {c_backend.isa()} (of {', '.join(c_backend.supported_isas())}); "
                     f"MINIGRAD_NUM_THREADS={os.environ.get('MINIGRAD_NUM_THREADS', 'unset')}, "
                     f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    except RuntimeError as exc:
        lines.append(f"C kernels: not built ({exc})")
    try:
        from threadpoolctl import threadpool_info
        pools = [f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture', p.get('threading_layer'))}, "
                 f"{p.get('num_threads')} threads)" for p in threadpool_info()]
        lines.append("thread pools: " + ("; ".join(pools) or "none loaded yet"))
    except ImportError:
        lines.append("thread pools: threadpoolctl not installed (pip install threadpoolctl)")
    try:
        import torch
        lines.append(f"PyTorch {torch.__version__}: {torch.get_num_threads()} threads")
    except ImportError:
        lines.append("PyTorch: not installed")
    lines.append(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
                 "(the machine may be shared: figures are medians of interleaved rounds)")
    return "\n".join(lines)


@contextlib.contextmanager
def limited_threads(threads):
    """NumPy's BLAS and every OpenMP pool (threadpoolctl) and minigrad's C kernels ($MINIGRAD_NUM_THREADS,
    which they read on each call; they size their pool from the core count, not from OpenMP's limit)
    on `threads` threads for the block: a "1 thread" figure then really uses one core."""
    from threadpoolctl import threadpool_limits
    previous = os.environ.get("MINIGRAD_NUM_THREADS")
    os.environ["MINIGRAD_NUM_THREADS"] = str(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        if previous is None:
            del os.environ["MINIGRAD_NUM_THREADS"]
        else:
            os.environ["MINIGRAD_NUM_THREADS"] = previous
