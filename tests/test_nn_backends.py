"""The layers that run on the kernels (linear, layer_norm, cross_entropy, AdamW, GELU) give the same values
and gradients on backend "c" as on the NumPy reference, and gradient-check in float64 on both."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim

pytestmark = pytest.mark.usefixtures("c_kernels_built")

TOL = {np.float32: dict(rtol=1e-4, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-12)}


def rand(*shape, seed=0, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def values_and_grads(backend, fn, arrays):
    with mg.backend(backend):
        ts = [mg.tensor(a, requires_grad=True) for a in arrays]
        out = fn(*ts)
        (out * mg.tensor(rand(*out.shape, seed=9, dtype=out.dtype))).sum().backward()
    return [out.data] + [t.grad for t in ts]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["layer_norm_last", "layer_norm_two_dims", "layer_norm_plain",
                                  "cross_entropy", "cross_entropy_nd", "gelu", "linear", "linear_no_bias"])
def test_same_values_and_gradients_on_c_as_on_numpy(case, dtype):
    x = rand(4, 6, 8, seed=1, dtype=dtype) * 3
    w, b = rand(8, seed=2, dtype=dtype), rand(8, seed=3, dtype=dtype)
    targets = np.random.default_rng(4).integers(0, 8, size=24)
    fn, arrays = {
        "layer_norm_last": (lambda a, c, d: F.layer_norm(a, 8, c, d), [x, w, b]),
        "layer_norm_two_dims": (lambda a, c, d: F.layer_norm(a, (6, 8), c, d),
                                [x, rand(6, 8, seed=5, dtype=dtype), rand(6, 8, seed=6, dtype=dtype)]),
        "layer_norm_plain": (lambda a: F.layer_norm(a, 8), [x]),
        "cross_entropy": (lambda a: F.cross_entropy(a.reshape(24, 8), targets), [x]),
        "cross_entropy_nd": (lambda a: F.cross_entropy(a, targets.reshape(4, 6) % 6), [x[:, :, :6]]),  # (N, C, d)
        "gelu": (lambda a: F.gelu(a), [x]),
        "linear": (lambda a, c, d: F.linear(a, c, d), [x, rand(5, 8, seed=7, dtype=dtype), rand(5, seed=8, dtype=dtype)]),
        "linear_no_bias": (lambda a, c: F.linear(a[:, 1:], c), [x, rand(5, 8, seed=7, dtype=dtype)]),  # strided x
    }[case]
    reference = values_and_grads("numpy", fn, arrays)
    for got, want in zip(values_and_grads("c", fn, arrays), reference):
        assert got.dtype == want.dtype == dtype
        np.testing.assert_allclose(got, want, **TOL[dtype])
    if dtype == np.float64:
        with mg.backend("c"):
            assert mg.gradcheck(fn, [mg.tensor(a, requires_grad=True) for a in arrays])


def test_adamw_takes_the_same_steps_on_c_as_on_numpy():
    """Several steps over tensors of two dtypes and a non-contiguous parameter, decay on, in both backends."""
    def run(backend):
        mg.manual_seed(0)
        params = [nn.Parameter(rand(5, 3, seed=1)), nn.Parameter(rand(7, seed=2)),
                  nn.Parameter(rand(4, 6, seed=3).astype(np.float32)), nn.Parameter(rand(6, 4, seed=4).T)]
        opt = optim.AdamW(params, lr=0.05, weight_decay=0.1)
        with mg.backend(backend):
            for step in range(4):
                for i, p in enumerate(params):
                    p.grad = rand(*p.shape, seed=10 * step + i, dtype=p.data.dtype)
                opt.step()
        return params
    for got, want in zip(run("c"), run("numpy")):
        np.testing.assert_allclose(got.data, want.data, **TOL[got.data.dtype.type])
