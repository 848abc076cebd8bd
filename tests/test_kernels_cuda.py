"""The CUDA kernels (kernels/*.cu) against NumPy references written out here.

- through the CUDA simulator, in several thread orders, on shapes that are not
  multiples of any tile (1, 15, 17, 33, 37, non-square), causal and not;
- compiled with NVRTC (the compiler CuPy uses) for sm_80 and sm_90, checking with
  ptxas -v that no kernel uses local memory, and with nvcc -ptx where nvcc exists;
- on a real GPU through CuPy (marked gpu, skipped without one).
"""
import re
import shutil
import subprocess
import types

import numpy as np
import pytest

from minigrad.kernels import cuda_backend, numpy_backend

ORDERS = ("forward", "reverse", "random:7")
CU_FILES = ("matmul", "attention")


@pytest.fixture(params=ORDERS)
def order(request, monkeypatch):
    """Run the test with the simulator's threads scheduled in this order between barriers."""
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_ORDER", request.param)
    return request.param


def rng(seed=0):
    return np.random.default_rng(seed)


def close(actual, expected, what, rtol=1e-5, atol=1e-5):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------- NumPy references (float64)

def reference_attention(q, k, v, causal):
    """(out, lse) of the NumPy reference (minigrad/kernels/numpy_backend.py) in float64."""
    return numpy_backend.attention(q, k, v, is_causal=causal, return_lse=True)


def reference_attention_backward(q, k, v, grad_out, causal):
    """(dq, dk, dv) of the NumPy reference in float64 (checked against central differences in test_backends.py)."""
    out, lse = reference_attention(q, k, v, causal)
    return numpy_backend.attention_backward(q, k, v, out, lse, grad_out, is_causal=causal)


def attention_inputs(B, Tq, Tk, d, dv, seed=0):
    g = rng(seed)
    return (g.standard_normal((B, Tq, d)), g.standard_normal((B, Tk, d)),
            g.standard_normal((B, Tk, dv)), g.standard_normal((B, Tq, dv)))


# ---------------------------------------------------------------- matmul in the simulator

MATMUL_SHAPES = [(1, 1, 1), (15, 17, 33), (37, 15, 1), (17, 33, 37), (1, 37, 15), (33, 1, 17),
                 (130, 20, 129)]  # the last spans 2 x 2 blocks of v3's 128 x 128 tiles


@pytest.mark.parametrize("version", cuda_backend.MATMUL_VERSIONS)
@pytest.mark.parametrize("M,K,N", MATMUL_SHAPES)
def test_matmul_sim(version, M, K, N, order):
    a, b = rng().standard_normal((M, K)), rng(1).standard_normal((K, N))
    out = cuda_backend.matmul(a.astype(np.float32), b.astype(np.float32), sim=True, version=version)
    assert out.dtype == np.float32 and out.shape == (M, N)
    close(out, a @ b, f"matmul {version} {M}x{K} @ {K}x{N}, order {order}")


@pytest.mark.parametrize("version", cuda_backend.MATMUL_VERSIONS)
@pytest.mark.parametrize("a_shape,b_shape", [
    ((2, 3, 15, 17), (17, 33)),         # one b shared by the batch: passed once, stride 0
    ((17, 15), (3, 15, 2)),             # one a shared by the batch
    ((2, 1, 15, 17), (1, 3, 17, 33)),   # both broadcast
    ((3, 33, 1), (3, 1, 37)),           # K = 1
    ((2, 130, 9), (9, 131)),            # transposed reads over several v3 blocks
])
def test_matmul_and_backward_batched_sim(version, a_shape, b_shape, order):
    a, b = rng().standard_normal(a_shape), rng(1).standard_normal(b_shape)
    out = np.matmul(a, b)
    g = rng(2).standard_normal(out.shape)
    close(cuda_backend.matmul(a, b, sim=True, version=version), out, f"matmul {version} {a_shape} @ {b_shape}")
    grad_a, grad_b = cuda_backend.matmul_backward(a, b, g, sim=True, version=version)
    ref_a, ref_b = numpy_backend.matmul_backward(a, b, g)
    assert grad_a.shape == a_shape and grad_b.shape == b_shape
    assert grad_a.dtype == np.float64, "float64 in, float64 out (computed in float32)"
    close(grad_a, ref_a, f"matmul_backward {version} grad_a {a_shape} @ {b_shape}", rtol=1e-4, atol=1e-4)
    close(grad_b, ref_b, f"matmul_backward {version} grad_b {a_shape} @ {b_shape}", rtol=1e-4, atol=1e-4)


def test_matmul_empty_bad_version_and_32_bit_limit():
    a, b = np.ones((3, 0), np.float32), np.ones((0, 4), np.float32)
    np.testing.assert_array_equal(cuda_backend.matmul(a, b, sim=True), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="cuda matmul: unknown version 'v9'"):
        cuda_backend.matmul(np.ones((2, 2)), np.ones((2, 2)), sim=True, version="v9")
    # a broadcast view: 2**31 elements without the memory (the check comes before any copy)
    huge = np.broadcast_to(np.float32(1), (2 ** 16, 2 ** 15))
    with pytest.raises(ValueError, match=r"matmul: the cuda kernels index with 32-bit ints, but a has 2147483648"):
        cuda_backend.matmul(huge, np.ones((2 ** 15, 1), np.float32), sim=True)
    wide = np.ones((1, 16 * 65535 + 1), np.float32)
    with pytest.raises(ValueError, match=r"cuda matmul v1: 1048561 output columns need 65536 blocks along gridDim.y"):
        cuda_backend.matmul(np.ones((1, 1), np.float32), wide, sim=True, version="v1")


# ---------------------------------------------------------------- attention in the simulator

ATTENTION_SHAPES = [  # (B, Tq, Tk, d, dv)
    (1, 1, 1, 16, 16),
    (2, 15, 15, 16, 16),
    (1, 17, 33, 64, 64),
    (2, 40, 40, 16, 16),
    (1, 33, 17, 16, 64),
    (1, 37, 37, 64, 16),
    (1, 20, 19, 128, 128),              # the largest head dim: every register slot in use
]


# every shape in two orders, the largest also in a random one (the simulator is CPU emulation: keep it fast)
ATTENTION_CASES = [shape + (order,) for shape in ATTENTION_SHAPES for order in ORDERS[:2]] + [
    (2, 40, 40, 16, 16, ORDERS[2])]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,Tq,Tk,d,dv,order", ATTENTION_CASES)
@pytest.mark.parametrize("version", cuda_backend.ATTENTION_FORWARD_VERSIONS)
def test_attention_forward_sim(version, B, Tq, Tk, d, dv, order, causal, monkeypatch):
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_ORDER", order)
    q, k, v, _ = attention_inputs(B, Tq, Tk, d, dv)
    f32 = [x.astype(np.float32) for x in (q, k, v)]
    what = f"attention {version} B={B} Tq={Tq} Tk={Tk} d={d} dv={dv} causal={causal} order={order}"
    out, lse = cuda_backend.attention(*f32, is_causal=causal, return_lse=True, sim=True, version=version)
    ref_out, ref_lse = reference_attention(q, k, v, causal)
    assert out.dtype == lse.dtype == np.float32 and out.shape == (B, Tq, dv) and lse.shape == (B, Tq)
    close(out, ref_out, what + ": out")
    close(lse, ref_lse, what + ": lse")


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,Tq,Tk,d,dv,order", ATTENTION_CASES)
def test_attention_backward_sim(B, Tq, Tk, d, dv, order, causal, monkeypatch):
    monkeypatch.setenv("MINIGRAD_CUDA_SIM_ORDER", order)
    q, k, v, g = attention_inputs(B, Tq, Tk, d, dv)
    out, lse = reference_attention(q, k, v, causal)
    f32 = [x.astype(np.float32) for x in (q, k, v, out, lse, g)]
    what = f"attention_backward B={B} Tq={Tq} Tk={Tk} d={d} dv={dv} causal={causal} order={order}"
    grads = cuda_backend.attention_backward(*f32, is_causal=causal, sim=True)
    for name, grad, ref in zip(("dq", "dk", "dv"), grads, reference_attention_backward(q, k, v, g, causal)):
        assert grad.shape == ref.shape and grad.dtype == np.float32
        close(grad, ref, f"{what}: {name}", rtol=1e-4, atol=1e-4)


def test_attention_float64_in_float64_out_and_head_dim_limit():
    q, k, v, _ = attention_inputs(1, 3, 5, 16, 16)
    out = cuda_backend.attention(q, k, v, sim=True)
    assert out.dtype == np.float64
    close(out, reference_attention(q, k, v, False)[0], "attention float64 (computed in float32)")
    wide = np.zeros((1, 3, 129), np.float32)
    with pytest.raises(ValueError, match=r"attention: the cuda kernels take head dims up to 128.*d=129"):
        cuda_backend.attention(wide, wide, wide, sim=True)
    with pytest.raises(ValueError, match="cuda attention: unknown version 'v3'"):
        cuda_backend.attention(q, k, v, sim=True, version="v3")


def test_dispatcher_routes_cuda_sim_to_these_kernels():
    """minigrad.kernels with backend "cuda-sim" (or as the global backend) agrees with backend "numpy"."""
    import minigrad.kernels as K
    from minigrad.backend import backend

    a = rng().standard_normal((3, 15, 17)).astype(np.float32)
    b = rng(1).standard_normal((17, 33)).astype(np.float32)
    g = rng(2).standard_normal((3, 15, 33)).astype(np.float32)
    close(K.matmul(a, b, backend="cuda-sim"), K.matmul(a, b, backend="numpy"), "dispatch matmul", atol=1e-4)
    for name, mine, ref in zip(("grad_a", "grad_b"), K.matmul_backward(a, b, g, backend="cuda-sim"),
                               K.matmul_backward(a, b, g, backend="numpy")):
        close(mine, ref, f"dispatch matmul_backward {name}", atol=1e-4)
    q, k, v, go = (x.astype(np.float32) for x in attention_inputs(2, 33, 17, 16, 8))
    with backend("cuda-sim"):
        out, lse = K.attention(q, k, v, is_causal=True, return_lse=True)
        grads = K.attention_backward(q, k, v, out, lse, go, is_causal=True)
    ref_out, ref_lse = K.attention(q, k, v, is_causal=True, return_lse=True, backend="numpy")
    close(out, ref_out, "dispatch attention out", atol=1e-5)
    close(lse, ref_lse, "dispatch attention lse", atol=1e-5)
    refs = K.attention_backward(q, k, v, ref_out, ref_lse, go, is_causal=True, backend="numpy")
    for name, mine, ref in zip(("dq", "dk", "dv"), grads, refs):
        close(mine, ref, f"dispatch attention_backward {name}", rtol=1e-4, atol=1e-4)


def test_simulator_refuses_device_arrays():
    class ndarray:  # what a CuPy array looks like to the backend, without CuPy
        __module__ = "cupy._core.core"
        shape, dtype = (2, 2), np.dtype(np.float32)

    with pytest.raises(TypeError, match=r"matmul: backend 'cuda-sim' runs on host \(NumPy\) arrays, got ndarray"):
        cuda_backend.matmul(ndarray(), np.ones((2, 2), np.float32), sim=True)


def test_gpu_code_path_runs_with_the_simulator_standing_in_for_cupy(monkeypatch):
    """sim=False goes through require_cupy() and cupy.RawModule; a NumPy-backed stand-in whose
    RawModule is the simulator runs that exact path (options, launches, copies) without a GPU."""
    from minigrad.cuda import SimModule
    compiled = []

    def raw_module(code, options=()):
        compiled.append(options)
        return SimModule(code=code, options=options)

    fake_cupy = types.SimpleNamespace(
        RawModule=raw_module, float32=np.float32, asarray=np.asarray, ascontiguousarray=np.ascontiguousarray,
        empty=np.empty, zeros=np.zeros, full=np.full, broadcast_to=np.broadcast_to)
    monkeypatch.setattr("minigrad.device.require_cupy", lambda: fake_cupy)
    monkeypatch.setattr(cuda_backend, "_modules", {})
    a, b = rng().standard_normal((2, 17, 15)), rng(1).standard_normal((15, 33))
    close(cuda_backend.matmul(a, b), a @ b, "matmul on the GPU code path")
    grad_a, grad_b = cuda_backend.matmul_backward(a, b, np.ones((2, 17, 33)))
    close(grad_b, a.sum(0).T @ np.ones((17, 33)), "matmul_backward grad_b on the GPU code path", atol=1e-4)
    q, k, v, g = attention_inputs(2, 17, 17, 16, 16)
    out, lse = cuda_backend.attention(q, k, v, is_causal=True, return_lse=True)
    close(out, reference_attention(q, k, v, True)[0], "attention on the GPU code path")
    grads = cuda_backend.attention_backward(q, k, v, out, lse, g, is_causal=True)
    close(grads[1], reference_attention_backward(q, k, v, g, True)[1], "attention dk on the GPU code path",
          rtol=1e-4, atol=1e-4)
    assert compiled == [cuda_backend.COMPILE_OPTIONS] * 2, "one RawModule per .cu file, compiled once"


# ---------------------------------------------------------------- compiling for real GPUs

def _nvrtc():
    nvrtc = pytest.importorskip(
        "cuda.bindings.nvrtc",
        reason="NVRTC Python bindings missing: pip install cuda-bindings nvidia-cuda-nvrtc")
    try:
        nvrtc.nvrtcVersion()
    except Exception as exc:  # the bindings import, but libnvrtc is not found
        pytest.skip(f"libnvrtc not loadable ({exc}): pip install nvidia-cuda-nvrtc")
    return nvrtc


def _nvrtc_check(nvrtc, result, prog, what):
    if result != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise AssertionError(f"{what}: {result}\n{_nvrtc_log(nvrtc, prog)}")


def _nvrtc_log(nvrtc, prog):
    _, size = nvrtc.nvrtcGetProgramLogSize(prog)
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    return log.decode(errors="replace").rstrip("\0 \n")


def assert_no_local_memory(report, what):
    """Every kernel in a `ptxas -v` report keeps its per-thread arrays in registers: no stack frame,
    no spills (a per-thread array indexed at run time would live in slow local memory)."""
    kernels = re.findall(r"Compiling entry function '(\w+)'", report)
    frames = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", report)
    assert kernels, f"{what}: ptxas -v reported no kernels:\n{report}"
    assert len(frames) == len(kernels) and all(f == ("0", "0", "0") for f in frames), \
        f"{what} uses local memory:\n{report}"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("name", CU_FILES)
def test_compiles_with_nvrtc_without_spills(name, arch):
    nvrtc = _nvrtc()
    result, prog = nvrtc.nvrtcCreateProgram(cuda_backend.kernel_source(name).encode(), f"{name}.cu".encode(),
                                            0, [], [])
    _nvrtc_check(nvrtc, result, prog, "nvrtcCreateProgram")
    options = [f"--gpu-architecture={arch}", "--ptxas-options=-v", *cuda_backend.COMPILE_OPTIONS]
    (result,) = nvrtc.nvrtcCompileProgram(prog, len(options), [o.encode() for o in options])
    _nvrtc_check(nvrtc, result, prog, f"NVRTC compiling {name}.cu for {arch}")
    log = _nvrtc_log(nvrtc, prog)
    assert "warning" not in log, f"NVRTC warnings for {name}.cu ({arch}):\n{log}"
    assert_no_local_memory(log, f"{name}.cu ({arch}, NVRTC)")
    result, size = nvrtc.nvrtcGetCUBINSize(prog)
    assert size > 0, f"NVRTC produced no cubin for {name}.cu ({arch})"
    nvrtc.nvrtcDestroyProgram(prog)


# PTX for sm_80 only: NVRTC above already runs the whole compiler (to machine code) for both archs
@pytest.mark.slow
@pytest.mark.parametrize("name", CU_FILES)
def test_compiles_with_nvcc_ptx(name, tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc not on PATH (the CUDA toolkit is not installed)")
    source = tmp_path / f"{name}.cu"
    source.write_text(cuda_backend.kernel_source(name))
    run = subprocess.run([nvcc, "-ptx", "-arch=sm_80", *cuda_backend.COMPILE_OPTIONS, str(source),
                          "-o", str(tmp_path / f"{name}.ptx")], capture_output=True, text=True)
    assert run.returncode == 0, f"nvcc -ptx failed on {name}.cu:\n{run.stderr}"
    assert "warning" not in run.stderr, f"nvcc warnings for {name}.cu:\n{run.stderr}"
    entries = set(re.findall(r"\.entry (\w+)\(", (tmp_path / f"{name}.ptx").read_text()))
    expected = set(re.findall(r"KERNEL (\w+)\(", source.read_text()))
    assert entries == expected, f"{name}.ptx has entry points {sorted(entries)}, the source {sorted(expected)}"


# ---------------------------------------------------------------- on a real GPU

@pytest.fixture
def cupy():
    from minigrad.device import require_cupy
    try:
        return require_cupy()
    except RuntimeError as exc:
        pytest.skip(f"no usable GPU: {exc}")


@pytest.mark.gpu
@pytest.mark.parametrize("version", cuda_backend.MATMUL_VERSIONS)
@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (257, 129, 300), (1024, 1024, 1024)])
def test_matmul_gpu(cupy, version, M, K, N):
    a, b = rng().standard_normal((M, K)), rng(1).standard_normal((K, N))
    g = rng(2).standard_normal((M, N))
    what = f"GPU matmul {version} {M}x{K} @ {K}x{N}"
    out = cuda_backend.matmul(a.astype(np.float32), b.astype(np.float32), version=version)
    assert isinstance(out, np.ndarray), "NumPy in, NumPy out"
    close(out, a @ b, what, rtol=1e-4, atol=1e-3)
    on_device = cuda_backend.matmul(cupy.asarray(a, cupy.float32), cupy.asarray(b, cupy.float32), version=version)
    assert isinstance(on_device, cupy.ndarray), "CuPy in, CuPy out"
    grad_a, grad_b = cuda_backend.matmul_backward(a, b, g, version=version)
    close(grad_a, g @ b.T, what + " grad_a", rtol=1e-4, atol=1e-3)
    close(grad_b, a.T @ g, what + " grad_b", rtol=1e-4, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("B,Tq,Tk,d,dv", ATTENTION_SHAPES + [(4, 300, 300, 128, 128), (2, 513, 257, 64, 32)])
def test_attention_gpu(cupy, B, Tq, Tk, d, dv, causal):
    q, k, v, g = attention_inputs(B, Tq, Tk, d, dv)
    f32 = [x.astype(np.float32) for x in (q, k, v, g)]
    what = f"GPU attention B={B} Tq={Tq} Tk={Tk} d={d} dv={dv} causal={causal}"
    ref_out, ref_lse = reference_attention(q, k, v, causal)
    for version in cuda_backend.ATTENTION_FORWARD_VERSIONS:
        out, lse = cuda_backend.attention(*f32[:3], is_causal=causal, return_lse=True, version=version)
        close(out, ref_out, f"{what} {version}: out", rtol=1e-4, atol=1e-4)
        close(lse, ref_lse, f"{what} {version}: lse", rtol=1e-4, atol=1e-4)
    grads = cuda_backend.attention_backward(*f32[:3], out, lse, f32[3], is_causal=causal)
    for name, grad, ref in zip(("dq", "dk", "dv"), grads, reference_attention_backward(q, k, v, g, causal)):
        close(grad, ref, f"{what}: {name}", rtol=1e-3, atol=1e-3)
