"""Every backend × every accelerated op × awkward shapes and dtypes, against the NumPy reference in float64.

One table of cases (minitorch's backend tests, tinygrad's helper_test_op): each case builds its inputs
from a seed, runs the op through `minigrad.kernels` on one backend, and compares with the reference
`minigrad.kernels.numpy_backend` run on float64 copies of the same inputs. A dtype that a backend has
no kernel for must come back from the reference in that same dtype. The reference itself is checked
once against central differences. Then: the default backend, and the backend choice per thread.

A backend that is not there is skipped with the reason only when nothing could build it: no C compiler
for "c", no GPU for "cuda". With a compiler, unbuilt C kernels fail here.
"""
import dataclasses
import math
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import minigrad as mg
from minigrad import kernels
from minigrad.backend import backend_for
from minigrad.kernels import numpy_backend
from minigrad.nn.attention import scaled_dot_product_attention as sdpa

BACKENDS = ["numpy", "c", "cuda-sim", "cuda"]
DTYPES = [np.float64, np.float32, np.float16]
SIM_LIMIT = 4096  # elements per input for the CUDA simulator (it runs one fiber per CUDA thread)


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "c":
        request.getfixturevalue("c_kernels_built")
    if request.param == "cuda":
        try:
            from minigrad.device import require_cupy
            require_cupy()
        except RuntimeError as exc:
            pytest.skip(f"backend 'cuda' needs a CUDA GPU with CuPy: {exc}")
    return request.param


# ----------------------------------------------------------------- the inputs

def layout(x, how):
    """x itself, or an array equal to x laid out otherwise in memory (a view where NumPy allows)."""
    if how == "contiguous" or (how == "transposed" and x.ndim < 2):
        return x
    if how == "transposed":  # the transpose of a C-contiguous array, transposed back: a Fortran-order view
        return np.ascontiguousarray(np.swapaxes(x, -1, -2)).swapaxes(-1, -2)
    if how == "strided":  # every other element of a twice-as-wide array
        wide = np.zeros(x.shape[:-1] + (2 * x.shape[-1],), x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    raise ValueError(how)


def random(rng, shape, dtype, how="contiguous"):
    return layout(rng.standard_normal(shape).astype(dtype), how)


@dataclasses.dataclass
class Case:
    op: str           # a function of minigrad.kernels
    shapes: tuple     # the shapes of its array arguments
    how: str = "contiguous"
    causal: bool = False

    def __str__(self):
        return f"{self.op}{'-causal' if self.causal else ''}-{'x'.join(map(str, self.shapes))}-{self.how}"


def attention_shapes(b, tq, tk, d, dv):
    return (b, tq, d), (b, tk, d), (b, tk, dv)


def lstm_shapes(t, b, h):
    """gx (T, B, 4H), h0 and c0 (B, H), w_hh (4H, H)."""
    return (t, b, 4 * h), (b, h), (b, h), (4 * h, h)


CASES = [
    *(Case("matmul", s, how) for s, how in [
        (((1, 1), (1, 1)), "contiguous"),
        (((1, 7), (7, 1)), "contiguous"),
        (((5, 3), (3, 9)), "contiguous"),
        (((17, 33), (33, 13)), "transposed"),
        (((6, 10), (10, 5)), "strided"),
        (((0, 4), (4, 3)), "contiguous"),
        (((3, 0), (0, 5)), "contiguous"),
        (((2, 3, 5, 4), (4, 6)), "contiguous"),
        (((2, 1, 5, 4), (3, 4, 6)), "transposed"),
    ]),
    *(Case("matmul_backward", s, how) for s, how in [
        (((1, 1), (1, 1)), "contiguous"),
        (((5, 3), (3, 9)), "transposed"),
        (((0, 4), (4, 3)), "contiguous"),
        (((2, 3, 5, 4), (4, 6)), "strided"),
        (((2, 1, 5, 4), (3, 4, 6)), "contiguous"),
    ]),
    *(Case(op, attention_shapes(*s), how, causal) for op in ("attention", "attention_backward")
      for s, how in [((1, 1, 1, 1, 1), "contiguous"), ((2, 5, 7, 3, 4), "transposed"),
                     ((3, 9, 9, 16, 16), "contiguous"), ((2, 7, 4, 5, 3), "strided"),
                     ((1, 0, 4, 8, 8), "contiguous")]
      for causal in (False, True)),
    *(Case(op, s, how) for op in ("layer_norm", "layer_norm_backward") for s, how in [
        (((1, 1), (1,), (1,)), "contiguous"), (((5, 7), (7,), (7,)), "contiguous"),
        (((2, 3, 9), (9,), (9,)), "transposed"), (((6, 33), (33,), (33,)), "strided"),
        (((0, 4), (4,), (4,)), "contiguous"),
    ]),
    *(Case(op, s, how) for op in ("cross_entropy", "cross_entropy_backward") for s, how in [
        (((1, 1),), "contiguous"), (((5, 7),), "contiguous"), (((16, 96),), "transposed"), (((9, 13),), "strided"),
    ]),
    Case("adamw_step", ((3,), (4, 5), (1,))),
    *(Case(op, s, how) for op in ("gelu", "gelu_backward") for s, how in [
        (((1,),), "contiguous"), (((7,),), "contiguous"), (((0, 3),), "contiguous"),
        (((3, 5, 7),), "contiguous"), (((9, 6),), "transposed"), (((4, 11),), "strided"),
    ]),
    *(Case(op, lstm_shapes(*s), how) for op in ("lstm", "lstm_backward") for s, how in [
        ((1, 1, 1), "contiguous"), ((3, 2, 5), "transposed"), ((4, 3, 9), "strided"), ((0, 2, 2), "contiguous"),
    ]),
    # images (N, C, H, W): a 3x2 window, stride (2, 1), padding (1, 0) for im2col; 2x2, stride (2, 1) for pooling
    *(Case(op, s, how) for op in ("im2col", "im2col_backward", "max_pool2d", "max_pool2d_backward") for s, how in [
        (((1, 1, 2, 2),), "contiguous"), (((2, 3, 5, 4),), "transposed"), (((1, 2, 6, 7),), "strided"),
        (((0, 2, 3, 3),), "contiguous"),
    ]),
]

IM2COL_WINDOW, POOL_WINDOW = ((3, 2), (2, 1), (1, 0)), ((2, 2), (2, 1))


def run(case, backend, dtype, seed=0):
    """The op of `case` on `backend` with inputs of `dtype` (and its float64 reference, when backend is None)."""
    rng = np.random.default_rng(seed)
    inputs = [random(rng, s, np.float64, case.how) for s in case.shapes]
    cast = [layout(x.astype(dtype), case.how) for x in inputs]
    on = backend or "numpy"
    if backend is None:
        cast = inputs
    if case.op == "matmul":
        return kernels.matmul(*cast, backend=on)
    if case.op == "matmul_backward":
        grad_out = layout(rng.standard_normal(np.matmul(*inputs).shape).astype(cast[0].dtype), case.how)
        return kernels.matmul_backward(*cast, grad_out, backend=on)
    if case.op == "attention":
        return kernels.attention(*cast, is_causal=case.causal, return_lse=True, backend=on)
    if case.op == "attention_backward":
        # out and lse from the reference in float64, so every backend starts its backward from the same point
        out, lse = numpy_backend.attention(*inputs, is_causal=case.causal, return_lse=True)
        grad_out = rng.standard_normal(out.shape)
        saved = [layout(x.astype(cast[0].dtype), case.how) for x in (out, grad_out)]
        return kernels.attention_backward(*cast, saved[0], lse.astype(cast[0].dtype), saved[1],
                                          is_causal=case.causal, backend=on)
    if case.op == "layer_norm":
        return kernels.layer_norm(*cast, 1e-5, backend=on)
    if case.op == "layer_norm_backward":
        _, mean, rstd = numpy_backend.layer_norm(*inputs, 1e-5)
        grad_out = layout(rng.standard_normal(inputs[0].shape).astype(cast[0].dtype), case.how)
        return kernels.layer_norm_backward(cast[0], cast[1], mean.astype(cast[0].dtype),
                                           rstd.astype(cast[0].dtype), grad_out, backend=on)
    if case.op == "cross_entropy":
        targets = rng.integers(0, case.shapes[0][1], case.shapes[0][0])
        return kernels.cross_entropy(cast[0], targets, backend=on)
    if case.op == "cross_entropy_backward":
        targets = rng.integers(0, case.shapes[0][1], case.shapes[0][0])
        lse = numpy_backend.cross_entropy(inputs[0], targets)[1]
        return kernels.cross_entropy_backward(cast[0], targets, lse.astype(cast[0].dtype), 0.5, backend=on)
    if case.op == "adamw_step":  # in place: the updated parameters and moments are the results
        state = [[x.astype(cast[0].dtype) for x in group] for group in
                 (inputs, [rng.standard_normal(x.shape) for x in inputs],  # params, grads
                  [rng.standard_normal(x.shape) * 0.1 for x in inputs],  # exp_avgs
                  [rng.uniform(0.5, 1.0, x.shape) for x in inputs])]  # exp_avg_sqs
        kernels.adamw_step(*state, [1, 3, 7], lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1,
                           backend=on)
        return tuple(state[0] + state[2] + state[3])
    if case.op == "gelu":
        return kernels.gelu(*cast, backend=on)
    if case.op == "gelu_backward":
        cdf = numpy_backend.gelu(inputs[0])[1]
        grad_out = rng.standard_normal(inputs[0].shape)
        return kernels.gelu_backward(cast[0], layout(cdf.astype(cast[0].dtype), case.how),
                                     layout(grad_out.astype(cast[0].dtype), case.how), backend=on)
    if case.op == "lstm":
        return kernels.lstm(*cast, backend=on)
    if case.op == "lstm_backward":
        # out and gates from the reference in float64, as for attention_backward
        out, gates = numpy_backend.lstm(*inputs)
        grad_out = layout(rng.standard_normal(out.shape).astype(cast[0].dtype), case.how)
        saved = [layout(x.astype(cast[0].dtype), case.how) for x in (out, gates)]
        return kernels.lstm_backward(*cast[1:], *saved, grad_out, backend=on)
    if case.op == "im2col":
        return kernels.im2col(cast[0], *IM2COL_WINDOW, backend=on)
    if case.op == "im2col_backward":
        shape = numpy_backend.im2col(inputs[0], *IM2COL_WINDOW).shape
        grad_cols = layout(rng.standard_normal(shape).astype(cast[0].dtype), case.how)
        return kernels.im2col_backward(grad_cols, inputs[0].shape, *IM2COL_WINDOW, backend=on)
    if case.op == "max_pool2d":  # the maxima; their positions (argmax) are compared in test_kernels_conv.py
        return kernels.max_pool2d(cast[0], *POOL_WINDOW, backend=on)[0]
    if case.op == "max_pool2d_backward":
        out, argmax = numpy_backend.max_pool2d(inputs[0], *POOL_WINDOW)
        grad_out = layout(rng.standard_normal(out.shape).astype(cast[0].dtype), case.how)
        return kernels.max_pool2d_backward(argmax, grad_out, inputs[0].shape, backend=on)
    raise ValueError(case.op)


def tolerance(dtype, case):
    """Worst error allowed, relative to the largest reference value: a few ulps × √(terms summed)."""
    terms = max([1] + [n for s in case.shapes for n in s])
    return 64 * float(np.finfo(dtype).eps) * math.sqrt(terms)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_backend_matches_the_reference(backend, case, dtype):
    if backend.startswith("cuda") and max(math.prod(s) for s in case.shapes) > SIM_LIMIT:
        pytest.skip(f"{backend}: the simulator runs small shapes only (> {SIM_LIMIT} elements here)")
    runs_on = kernels.resolve(case.op, backend, np.dtype(dtype))
    module = kernels.backend_module(backend)
    # the backend runs what its table lists, and nothing else (no silent change of dtype)
    listed = np.float32 if np.dtype(dtype).itemsize == 2 and case.op != "adamw_step" else dtype  # 16 bits: via float32
    assert (runs_on == backend) == (backend == "numpy" or np.dtype(listed) in module.KERNELS.get(case.op, ()))
    got = run(case, backend, dtype)
    expected = run(case, None, np.float64)
    got, expected = (got if isinstance(got, tuple) else (got,)), (expected if isinstance(expected, tuple)
                                                                   else (expected,))
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        what = f"{case} {np.dtype(dtype).name} on {backend} (ran on {runs_on}), result {i}"
        statistic = np.dtype(dtype).itemsize == 2 and i in kernels.STATISTICS.get(case.op, ())
        expected_dtype = np.float32 if statistic else dtype  # lse, mean, rstd, Φ of 16-bit inputs: float32
        assert g.dtype == expected_dtype, f"{what}: dtype {g.dtype}, expected {np.dtype(expected_dtype).name}"
        assert g.shape == e.shape, f"{what}: shape {g.shape}, expected {e.shape}"
        finite = np.isfinite(e)
        assert np.array_equal(np.isfinite(g), finite), f"{what}: non-finite values differ"
        if e.size and finite.any():
            scale = max(np.abs(e[finite]).max(), 1.0)
            error = np.abs(g[finite].astype(np.float64) - e[finite]).max() / scale
            assert error <= tolerance(dtype, case), f"{what}: worst error {error:.3g} > {tolerance(dtype, case):.3g}"


# ----------------------------------------------------------------- the reference itself

def directional_derivative(f, inputs, index, direction, eps=1e-6):
    """(f(x + eps·u) − f(x − eps·u)) / 2eps for input `index`: the central difference along u."""
    def at(t):
        moved = list(inputs)
        moved[index] = inputs[index] + t * direction
        return f(*moved)
    return (at(eps) - at(-eps)) / (2 * eps)


@pytest.mark.parametrize("causal", [False, True])
def test_the_reference_backwards_match_central_differences(causal):
    """The reference's backward formulas against finite differences of its forward, along random directions."""
    rng = np.random.default_rng(3)
    a, b, g = rng.standard_normal((2, 4, 3)), rng.standard_normal((1, 3, 5)), rng.standard_normal((2, 4, 5))
    q, k, v = rng.standard_normal((2, 5, 3)), rng.standard_normal((2, 7, 3)), rng.standard_normal((2, 7, 4))
    go = rng.standard_normal((2, 5, 4))
    x, gx = rng.standard_normal((4, 6)) * 2, rng.standard_normal((4, 6))
    out, lse = numpy_backend.attention(q, k, v, is_causal=causal, return_lse=True)
    checks = [
        (lambda a, b: np.sum(g * numpy_backend.matmul(a, b)), (a, b), numpy_backend.matmul_backward(a, b, g)),
        (lambda q, k, v: np.sum(go * numpy_backend.attention(q, k, v, is_causal=causal)), (q, k, v),
         numpy_backend.attention_backward(q, k, v, out, lse, go, is_causal=causal)),
        (lambda x: np.sum(gx * numpy_backend.gelu(x)[0]), (x,),
         (numpy_backend.gelu_backward(x, numpy_backend.gelu(x)[1], gx),)),
    ]
    for f, inputs, grads in checks:
        for index, grad in enumerate(grads):
            direction = rng.standard_normal(inputs[index].shape)
            numeric = directional_derivative(f, inputs, index, direction)
            analytic = np.sum(grad * direction)
            assert abs(numeric - analytic) < 1e-7 * max(1.0, abs(numeric)), \
                f"input {index}: finite differences {numeric!r}, backward formula {analytic!r}"


# ----------------------------------------------------------------- the default and the switch

def run_python(code, **env):
    environment = {**os.environ, **env}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_the_default_is_the_fastest_backend_that_is_there(c_kernels_built, tmp_path):
    """"c" where the kernels are built, "numpy" where they are not (never a backend that is not there),
    "cuda-sim" under MINIGRAD_CUDA_SIM=1; "numpy" stays selectable by name."""
    code = "import minigrad as mg; print(mg.get_backend())"
    assert run_python(code) == "c"
    assert run_python(code, MINIGRAD_CKERNELS_DIR=str(tmp_path)) == "numpy"  # a directory without a build
    assert run_python(code, MINIGRAD_CUDA_SIM="1") == "cuda-sim"
    with mg.backend("numpy"):
        assert mg.get_backend() == "numpy"


def test_backend_choice_belongs_to_its_thread(c_kernels_built):
    """Two threads inside `mg.backend(...)` blocks at the same moment each run their own backend; a thread
    started after `set_backend` in another thread starts from the default."""
    q, k, v = (mg.tensor(np.random.default_rng(s).standard_normal((1, 2, 6, 4)), requires_grad=True)
               for s in range(3))
    meet = threading.Barrier(2, timeout=30)
    seen, errors = {}, []

    def attend(name):
        try:
            with mg.backend(name):
                meet.wait()  # both threads are inside their blocks now
                out = sdpa(q, k, v, is_causal=True)
                meet.wait()
                out.backward(np.ones(out.shape))  # the backward runs on the forward's backend
            seen[name] = out._op, mg.get_backend()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=attend, args=(name,)) for name in ("numpy", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    default = mg.get_backend()
    assert seen == {"numpy": ("scaled_dot_product_attention[numpy]", default),
                    "c": ("scaled_dot_product_attention[c]", default)}

    def set_numpy():
        mg.set_backend("numpy")
        seen["setter"] = mg.get_backend()
    setter = threading.Thread(target=set_numpy)
    setter.start()
    setter.join()
    later = threading.Thread(target=lambda: seen.__setitem__("later", mg.get_backend()))
    later.start()
    later.join()
    assert seen["setter"] == "numpy" and seen["later"] == default == "c"


def test_routing_only_some_ops(c_kernels_built):
    with mg.backend("numpy"), mg.backend("c", ops=("gelu",)):
        assert backend_for("gelu") == "c" and backend_for("matmul") == "numpy"
        assert kernels.resolve("gelu_backward", None, np.dtype(np.float32)) == "c"
        assert kernels.resolve("gelu", None, np.dtype(np.float16)) == "c"  # 16 bits run on the float32 kernel
        assert kernels.resolve("matmul", None, np.dtype(np.float16)) == "numpy"  # routed to numpy above
    with pytest.raises(TypeError, match="tuple of op names"):
        mg.set_backend("c", ops="gelu")
