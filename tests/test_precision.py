"""Half precision: GradScaler against torch.amp.GradScaler, autocast's policy, bfloat16 bit-exact against
PyTorch, dtype preservation of every op, PyTorch's promotion table, and the bad-input errors."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.amp import GradScaler

try:
    import torch
except ImportError:  # only the comparisons with PyTorch skip; everything else runs
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: this test compares against it")


# ----------------------------------------------------------------------------- GradScaler

def test_grad_scaler_defaults_are_pytorchs():
    scaler = GradScaler()
    assert scaler.get_scale() == 2.0 ** 16
    assert (scaler.get_growth_factor(), scaler.get_backoff_factor(), scaler.get_growth_interval()) == (2.0, 0.5, 2000)
    if torch is not None:
        ref = torch.amp.GradScaler("cpu")
        assert ref.get_scale() == scaler.get_scale()
        assert (ref.get_growth_factor(), ref.get_backoff_factor(), ref.get_growth_interval()) == (2.0, 0.5, 2000)


def scaler_run(bad_steps, steps, growth_interval, make):
    """Train y = x·w with SGD through a GradScaler; the loss is multiplied by inf on bad_steps.
    Returns the scale before each step and the final weights. `make` gives the library's pieces."""
    lib, w, opt, scaler, forward = make(growth_interval)
    scales = []
    rng = np.random.default_rng(0)
    for step in range(steps):
        x = rng.standard_normal((8, 3)).astype(np.float32)
        y = rng.standard_normal((8, 1)).astype(np.float32)
        scales.append(float(scaler.get_scale()))
        opt.zero_grad()
        loss = forward(x, y)
        if step in bad_steps:
            loss = loss * float("inf")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    return scales, np.array(w.detach().numpy() if lib == "torch" else w.data, dtype=np.float64)


def minigrad_pieces(growth_interval):
    w = mg.tensor(np.linspace(-1, 1, 3, dtype=np.float32).reshape(3, 1), requires_grad=True)
    opt = optim.SGD([w], lr=0.1)
    scaler = GradScaler(growth_interval=growth_interval)
    return "minigrad", w, opt, scaler, lambda x, y: F.mse_loss(mg.tensor(x) @ w, mg.tensor(y))


def torch_pieces(growth_interval):
    w = torch.tensor(np.linspace(-1, 1, 3, dtype=np.float32).reshape(3, 1), requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", growth_interval=growth_interval)
    return "torch", w, opt, scaler, lambda x, y: torch.nn.functional.mse_loss(torch.tensor(x) @ w, torch.tensor(y))


@needs_torch
@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the planted inf losses
def test_grad_scaler_sequence_equals_pytorchs():
    bad = {1, 4, 5, 11}
    scales, w = scaler_run(bad, 16, 3, minigrad_pieces)
    ref_scales, ref_w = scaler_run(bad, 16, 3, torch_pieces)
    assert scales == ref_scales
    np.testing.assert_allclose(w, ref_w, rtol=1e-5, atol=1e-6)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_grad_scaler_backs_off_skips_and_grows():
    """Closed form: halve and skip on an overflow, double after growth_interval clean steps in a row."""
    scales, _ = scaler_run({0, 2}, 8, 2, minigrad_pieces)
    s = 2.0 ** 16
    assert scales == [s, s / 2, s / 2, s / 4, s / 4, s / 2, s / 2, s]


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_skipped_step_leaves_parameters_and_a_clean_step_equals_the_unscaled_one():
    lib, w, opt, scaler, forward = minigrad_pieces(2000)
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    before = w.data.copy()
    scaler.scale(forward(x, y) * float("inf")).backward()
    assert scaler.step(opt) is None
    scaler.update()
    np.testing.assert_array_equal(w.data, before)
    # a clean step: the gradient the optimizer sees is the plain one
    opt.zero_grad()
    plain = mg.tensor(before, requires_grad=True)
    F.mse_loss(mg.tensor(x) @ plain, mg.tensor(y)).backward()
    scaler.scale(forward(x, y)).backward()
    scaler.unscale_(opt)
    np.testing.assert_allclose(w.grad, plain.grad, rtol=1e-6)
    scaler.step(opt)  # after unscale_, step must not unscale a second time
    np.testing.assert_allclose(w.data, before - 0.1 * plain.grad, rtol=1e-6)


def test_grad_scaler_bad_use_is_named():
    _, w, opt, scaler, forward = minigrad_pieces(2000)
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32)
    with pytest.raises(RuntimeError, match=r"scale\(\) was not called since the last update\(\)"):
        scaler.step(opt)
    forward(x, y).backward()  # gradients exist, but the loss was never scaled
    with pytest.raises(RuntimeError, match=r"scale\(\) was not called"):
        scaler.step(opt)
    opt.zero_grad()
    scaler.scale(forward(x, y))  # scaled, but backward was never called
    with pytest.raises(RuntimeError, match="the optimizer's parameters have no gradients"):
        scaler.step(opt)
    scaler.scale(forward(x, y)).backward()
    scaler.unscale_(opt)
    with pytest.raises(RuntimeError, match=r"unscale_\(\) has already been called"):
        scaler.unscale_(opt)
    with pytest.raises(TypeError, match="expected a Tensor .* got str"):
        scaler.scale("loss")
    with pytest.raises(ValueError, match="backoff_factor must lie in"):
        GradScaler(backoff_factor=2.0)


def test_disabled_scaler_is_a_pass_through():
    _, w, opt, _, forward = minigrad_pieces(2000)
    scaler = GradScaler(enabled=False)
    loss = forward(np.ones((2, 3), np.float32), np.zeros((2, 1), np.float32))
    assert scaler.scale(loss) is loss and scaler.get_scale() == 1.0


# ----------------------------------------------------------------------------- dtypes and promotion

DTYPE_NAMES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "bfloat16", "float32", "float64"]


def mg_tensor(name, ndim):
    shape = (2,) * ndim
    return mg.tensor(np.ones(shape), dtype=getattr(mg, name if name != "bool" else "bool_"))


def torch_tensor(name, ndim):
    return torch.ones((2,) * ndim, dtype=getattr(torch, name))


@needs_torch
@pytest.mark.parametrize("a", DTYPE_NAMES)
@pytest.mark.parametrize("b", DTYPE_NAMES)
def test_promotion_table_equals_pytorchs(a, b):
    """Every pair, as two tensors with dims, and as a tensor with dims and a 0-d tensor (either side)."""
    for nd_a, nd_b in ((1, 1), (1, 0), (0, 1)):
        expected = str((torch_tensor(a, nd_a) + torch_tensor(b, nd_b)).dtype).removeprefix("torch.")
        got = (mg_tensor(a, nd_a) + mg_tensor(b, nd_b)).dtype
        assert str(got) == expected, f"{a} ({nd_a}-d) + {b} ({nd_b}-d): minigrad {got}, PyTorch {expected}"


@needs_torch
@pytest.mark.parametrize("a", DTYPE_NAMES)
@pytest.mark.parametrize("scalar", [True, 2, 2.5])
def test_python_scalars_promote_as_in_pytorch(a, scalar):
    if a == "bool" and scalar is True:
        return  # bool + bool is an error in neither library but means `or` in NumPy; not promotion
    expected = str((torch_tensor(a, 1) * scalar).dtype).removeprefix("torch.")
    assert str((mg_tensor(a, 1) * scalar).dtype) == expected


def test_bfloat16_names_and_conversions():
    x = mg.tensor([1.0, 2.0, 3.0])
    assert mg.bfloat16.itemsize == 2 and str(mg.bfloat16) == "bfloat16"
    assert x.bfloat16().dtype == mg.bfloat16 and x.half().dtype == mg.float16
    assert x.to(mg.bfloat16).float().dtype == mg.float32 and x.to("bfloat16").dtype == mg.bfloat16
    assert mg.zeros(2, dtype=mg.bfloat16).dtype == mg.bfloat16 and mg.randn(3, dtype="bfloat16").dtype == mg.bfloat16
    assert mg.tensor([1.5], dtype=mg.bfloat16, requires_grad=True).requires_grad


def bfloat16_reference(x):
    """float32 → bfloat16 by hand: keep the upper 16 bits, rounded to nearest, ties to even (no NaN here)."""
    bits = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def awkward_float32s():
    """Random floats over the whole range, exact ties (…8000 in the low bits), subnormals, ±0, ±inf, extremes."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2 ** 16, 2000).astype(np.uint32) << 16) | np.uint32(0x8000)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, 1e-45, -1e-45, 1e-40, np.finfo(np.float32).max,
                         np.finfo(np.float32).tiny, 3.3895314e38, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8], np.float32)
    x = np.concatenate([bits.view(np.float32), ties.view(np.float32), specials])
    return x[~np.isnan(x)]


def test_bfloat16_rounds_to_nearest_even_bit_exactly():
    x = awkward_float32s()
    got = mg.tensor(x).bfloat16().numpy().view(np.uint16)
    np.testing.assert_array_equal(got, bfloat16_reference(x))


@needs_torch
def test_bfloat16_equals_pytorchs_bit_for_bit():
    x = awkward_float32s()
    ours = mg.tensor(x).bfloat16().numpy().view(np.uint16)
    theirs = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ours, theirs)
    # and back: bfloat16 → float32 is exact in both
    np.testing.assert_array_equal(mg.tensor(x).bfloat16().float().numpy(),
                                  torch.from_numpy(x).to(torch.bfloat16).float().numpy())


# ----------------------------------------------------------------------------- every op keeps 16-bit floats

def _ops(lib):
    """name → (function of tensors, input shapes); `lib` is (module, functional) of minigrad or torch."""
    m, f = lib
    return {
        "add": (lambda a, b: a + b, [(3, 4), (4,)]), "sub": (lambda a, b: a - b, [(3, 4), (3, 1)]),
        "mul": (lambda a, b: a * b, [(3, 4), (3, 4)]), "div": (lambda a, b: a / (b * b + 1), [(3, 4), (3, 4)]),
        "pow": (lambda a: a ** 2, [(3, 4)]), "neg": (lambda a: -a, [(5,)]),
        "scalar": (lambda a: 2.5 * a - 1, [(5,)]),
        "exp": (lambda a: a.exp(), [(5,)]), "log": (lambda a: (a * a + 1).log(), [(5,)]),
        "sqrt": (lambda a: (a * a + 1).sqrt(), [(5,)]), "tanh": (lambda a: a.tanh(), [(5,)]),
        "sigmoid": (lambda a: a.sigmoid(), [(5,)]), "relu": (lambda a: a.relu(), [(5,)]),
        "abs": (lambda a: a.abs(), [(5,)]), "clamp": (lambda a: a.clamp(-0.5, 0.5), [(5,)]),
        "sum": (lambda a: a.sum(1), [(3, 40)]), "mean": (lambda a: a.mean(), [(3, 40)]),
        "max": (lambda a: a.amax(1), [(3, 4)]), "var": (lambda a: a.var(1, unbiased=False), [(3, 40)]),
        "softmax": (lambda a: a.softmax(-1), [(3, 8)]), "log_softmax": (lambda a: a.log_softmax(-1), [(3, 8)]),
        "reshape": (lambda a: a.reshape(4, 3).transpose(0, 1).permute(1, 0), [(3, 4)]),
        "index": (lambda a: a[1:, ::2], [(3, 4)]), "matmul": (lambda a, b: a @ b, [(2, 3, 16), (16, 5)]),
        "bmm": (lambda a, b: a @ b, [(2, 3, 16), (2, 16, 5)]),
        "cat": (lambda a, b: m.cat([a, b], 0), [(2, 3), (1, 3)]),
        "stack": (lambda a, b: m.stack([a, b], 1), [(2, 3), (2, 3)]),
        "where": (lambda a, b: m.where(a > 0, a, b), [(2, 3), (2, 3)]),
        "linear": (lambda x, w, b: f.linear(x, w, b), [(2, 3, 16), (5, 16), (5,)]),
        "gelu": (lambda a: f.gelu(a), [(6,)]),
        "layer_norm": (lambda x, w, b: f.layer_norm(x, (16,), w, b), [(3, 16), (16,), (16,)]),
        "mse_loss": (lambda a, b: f.mse_loss(a, b), [(3, 4), (3, 4)]),
        "cross_entropy": (lambda z: f.cross_entropy(z, _targets(lib)), [(4, 7)]),
        "attention": (lambda q, k, v: f.scaled_dot_product_attention(q, k, v, is_causal=True),
                      [(2, 2, 8, 16), (2, 2, 8, 16), (2, 2, 8, 16)]),
        "conv2d": (lambda x, w: f.conv2d(x, w, padding=1), [(1, 2, 5, 5), (3, 2, 3, 3)]),
    }


def _targets(lib):
    ids = np.array([0, 3, 6, 2])
    return mg.tensor(ids) if lib[0] is mg else torch.from_numpy(ids)


HALF_OPS = sorted(_ops((mg, F)))


@needs_torch
@pytest.mark.parametrize("backend", ["numpy", "c"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("op", HALF_OPS)
def test_every_op_keeps_16_bit_floats_as_pytorch(op, dtype, backend, request):
    """Output and gradients in the input's dtype (no silent float32), values as PyTorch's in that dtype."""
    if backend == "c":
        request.getfixturevalue("c_kernels_built")
    fn, shapes = _ops((mg, F))[op]
    tfn, _ = _ops((torch, torch.nn.functional))[op]
    rng = np.random.default_rng(len(op))
    arrays = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    inputs = [mg.tensor(a).to(dtype).requires_grad_() for a in arrays]
    tinputs = [torch.from_numpy(a).to(getattr(torch, dtype)).requires_grad_() for a in arrays]
    with mg.backend(backend):
        out = fn(*inputs)
        out.backward(np.ones(out.shape, np.float32))
    tout = tfn(*tinputs)
    tout.backward(torch.ones_like(tout))
    assert str(out.dtype) == dtype, f"{op} on {backend}: output {out.dtype}, input {dtype}"
    eps = float(np.finfo(np.dtype(mg.float16) if dtype == "float16" else mg.bfloat16).eps)

    def close(ours, theirs, what):
        ours, theirs = np.asarray(ours, np.float64), theirs.detach().float().numpy().astype(np.float64)
        scale = max(1.0, np.abs(theirs).max(initial=0))
        assert np.abs(ours - theirs).max(initial=0) <= 8 * eps * scale, f"{op} {what} on {backend} in {dtype}"

    close(out.data.astype(np.float32), tout, "output")
    for x, tx in zip(inputs, tinputs):
        assert x.grad.dtype == x.dtype, f"{op} on {backend}: gradient {x.grad.dtype} for a {x.dtype} input"
        close(x.grad.astype(np.float32), tx.grad, "gradient")


# ----------------------------------------------------------------------------- autocast

def autocast_outputs(lib, dtype_name):
    """The dtype of each op's output under the library's autocast, from float32 inputs and float32 weights."""
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((2, 4, 16)).astype(np.float32),
              "w": rng.standard_normal((8, 16)).astype(np.float32), "b": np.zeros(8, np.float32),
              "img": rng.standard_normal((1, 2, 5, 5)).astype(np.float32),
              "k": rng.standard_normal((3, 2, 3, 3)).astype(np.float32), "ln": np.ones(16, np.float32)}
    if lib == "torch":
        t = {n: torch.from_numpy(a) for n, a in arrays.items()}
        f, context = torch.nn.functional, torch.autocast("cpu", dtype=getattr(torch, dtype_name))
        y = torch.tensor([0, 1, 2, 3])
    else:
        t = {n: mg.tensor(a) for n, a in arrays.items()}
        f, context = F, mg.autocast(dtype=getattr(mg, dtype_name))
        y = mg.tensor([0, 1, 2, 3])
    with context:
        h = f.linear(t["x"], t["w"], t["b"])  # (2, 4, 8)
        q = h.reshape(2, 1, 4, 8)
        results = {"linear": h, "matmul": t["x"] @ t["x"].transpose(1, 2), "conv2d": f.conv2d(t["img"], t["k"]),
                   "attention": f.scaled_dot_product_attention(q, q, q, is_causal=True),
                   "softmax": f.softmax(h, dim=-1), "log_softmax": f.log_softmax(h, dim=-1),
                   "layer_norm": f.layer_norm(t["x"], (16,), t["ln"], None),
                   "cross_entropy": f.cross_entropy(h[0], y), "mse_loss": f.mse_loss(h, h.detach() * 0),
                   "gelu": f.gelu(h), "add": h + 1.0, "float64 matmul": t["x"].double() @ t["w"].double().T}
    return {name: str(r.dtype).removeprefix("torch.") for name, r in results.items()}


@needs_torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_autocast_policy_equals_pytorchs(dtype):
    ours, theirs = autocast_outputs("minigrad", dtype), autocast_outputs("torch", dtype)
    # softmax runs in float32 as on PyTorch's CUDA autocast list (its CPU list leaves softmax in 16 bits)
    assert ours.pop("softmax") == ours.pop("log_softmax") == "float32"
    del theirs["softmax"], theirs["log_softmax"]
    assert ours == theirs
    assert ours["linear"] == dtype and ours["layer_norm"] == ours["cross_entropy"] == "float32"


def test_autocast_keeps_float32_master_weights_and_their_gradients():
    mg.manual_seed(0)
    layer = nn.Linear(16, 8)
    x = mg.randn(4, 16)
    with mg.autocast(dtype=mg.bfloat16):
        y = layer(x)
        loss = F.mse_loss(y, mg.zeros(4, 8))
    assert y.dtype == mg.bfloat16 and loss.dtype == mg.float32
    loss.backward()
    assert layer.weight.dtype == layer.weight.grad.dtype == mg.float32
    # the gradient is the float32 one up to bfloat16's rounding of x, W and y (8 bits of mantissa)
    exact = nn.Linear(16, 8)
    exact.load_state_dict(layer.state_dict())
    F.mse_loss(exact(x), mg.zeros(4, 8)).backward()
    np.testing.assert_allclose(layer.weight.grad, exact.weight.grad, rtol=0.05, atol=0.02)


@needs_torch
def test_autocast_linear_values_equal_pytorchs():
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((5, 64), (32, 64), (32,)))
    with mg.autocast(dtype=mg.bfloat16):
        ours = F.linear(mg.tensor(x), mg.tensor(w), mg.tensor(b)).float().numpy()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = torch.nn.functional.linear(*map(torch.from_numpy, (x, w, b))).float().numpy()
    # both: bfloat16 inputs, float32 accumulation, one rounding; the sums' order may differ by one ulp
    ulp = np.abs(theirs) * 2.0 ** -7
    assert (np.abs(ours - theirs) <= ulp + 1e-6).all()


def test_autocast_state_is_per_thread_and_nests():
    import threading
    seen = {}

    def other():
        seen["other"] = (mg.randn(2, 3) @ mg.randn(3, 2)).dtype

    with mg.autocast(dtype=mg.float16):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        with mg.autocast(enabled=False):
            inner = (mg.randn(2, 3) @ mg.randn(3, 2)).dtype
        outer = (mg.randn(2, 3) @ mg.randn(3, 2)).dtype
    assert seen["other"] == mg.float32 and inner == mg.float32 and outer == mg.float16
    assert not mg.amp.is_autocast_enabled()


def test_autocast_defaults_to_float16_and_takes_the_dtype_first():
    a, b = mg.randn(2, 3), mg.randn(3, 2)
    with mg.autocast():
        default = (a @ b).dtype
    with mg.autocast(mg.bfloat16):
        positional = (a @ b).dtype
    with mg.autocast("cpu", mg.bfloat16):
        torch_order = (a @ b).dtype
    assert (default, positional, torch_order) == (mg.float16, mg.bfloat16, mg.bfloat16)


def test_autocast_rejects_a_non_16_bit_dtype():
    for bad in (mg.int32, mg.float32, mg.float64, "int8"):
        with pytest.raises(TypeError, match="autocast: dtype must be a 16-bit float, mg.float16 or mg.bfloat16"):
            mg.autocast(dtype=bad)
    with pytest.raises(TypeError, match="got 'fp8'"):
        mg.autocast(dtype="fp8")
    with pytest.raises(ValueError, match="device_type must be 'cpu' or 'cuda', got 'tpu'"):
        mg.autocast("tpu")


def tiny_loss_step(use_scaler):
    """A float16 step whose output gradients (~1e-9) lie below float16's smallest subnormal (6e-8)."""
    mg.manual_seed(0)
    layer = nn.Linear(32, 32)
    x = mg.randn(64, 32)
    scaler = GradScaler() if use_scaler else None
    with mg.autocast(dtype=mg.float16):
        loss = F.mse_loss(layer(x), mg.zeros(64, 32)) * 1e-6
    (scaler.scale(loss) if scaler else loss).backward()
    if scaler:
        scaler.unscale_(optim.SGD(layer.parameters(), lr=0.0))
    plain = nn.Linear(32, 32)
    plain.load_state_dict(layer.state_dict())
    (F.mse_loss(plain(x), mg.zeros(64, 32)) * 1e-6).backward()
    return layer.weight.grad, plain.weight.grad


def test_float16_gradients_underflow_without_loss_scaling_and_survive_with_it():
    unscaled, exact = tiny_loss_step(False)
    assert np.abs(exact).max() > 1e-8 and (unscaled == 0).mean() > 0.9  # flushed to zero
    scaled, exact = tiny_loss_step(True)
    assert (scaled != 0).mean() > 0.99
    np.testing.assert_allclose(scaled, exact, rtol=0.02, atol=1e-3 * np.abs(exact).max())


def test_module_half_and_bfloat16_convert_parameters_and_run():
    mg.manual_seed(0)
    model = nn.GPT(10, 8, n_layer=1, n_head=2, d_model=16)
    idx = np.arange(8).reshape(1, 8) % 10
    reference = model(idx).data
    for convert, dtype, eps in ((nn.Module.half, mg.float16, 2 ** -10), (nn.Module.bfloat16, mg.bfloat16, 2 ** -7)):
        copy = nn.GPT(10, 8, n_layer=1, n_head=2, d_model=16)
        copy.load_state_dict(model.state_dict())
        convert(copy)
        assert all(p.dtype == dtype for p in copy.parameters())
        logits = copy(idx)
        assert logits.dtype == dtype
        F.cross_entropy(logits.reshape(-1, 10), idx.reshape(-1)).backward()
        assert all(p.grad.dtype == dtype for p in copy.parameters())
        assert np.abs(logits.data.astype(np.float32) - reference).max() < 40 * eps * np.abs(reference).max()


def test_training_with_autocast_and_grad_scaler_tracks_float32():
    """A small GPT trained 30 steps: float16 autocast + GradScaler ends within 2% of the float32 loss."""
    def train(mixed):
        mg.manual_seed(0)
        model = nn.GPT(16, 16, n_layer=1, n_head=2, d_model=32)
        opt = optim.AdamW(model.parameters(), lr=3e-3)
        scaler = GradScaler(enabled=mixed)
        rng = np.random.default_rng(0)
        for _ in range(30):
            idx = rng.integers(0, 8, (8, 16)) * 2 % 16  # only even tokens: learnable
            with mg.autocast(dtype=mg.float16, enabled=mixed):
                loss = F.cross_entropy(model(idx).reshape(-1, 16), idx.reshape(-1))
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        return loss.item()
    full, mixed = train(False), train(True)
    assert mixed == pytest.approx(full, rel=0.02) and full < np.log(16) - 0.5


# ----------------------------------------------------------------------------- the conversion kernel

@pytest.mark.parametrize("portable", [False, True])
def test_float16_conversions_equal_numpys_bit_for_bit(c_kernels_built, portable):
    """Every one of the 65536 float16 patterns widened; awkward float32s narrowed (ties, subnormals,
    overflow to inf, NaN), through the F16C version and the portable one."""
    from minigrad.kernels.halfconv import cast
    halves = np.arange(2 ** 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    widened, expected = cast(halves, np.float32, portable=portable), halves.astype(np.float32)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(widened[~nan].view(np.uint32), expected[~nan].view(np.uint32))
    assert np.isnan(widened[nan]).all()
    x = np.concatenate([awkward_float32s(), np.float32([65504, 65519.996, 65520, -7e4, 2.0 ** -25,
                                                        1.5 * 2.0 ** -24, 2.5 * 2.0 ** -24, np.nan])])
    with np.errstate(over="ignore", invalid="ignore"):
        expected = x.astype(np.float16)
    narrowed = cast(x, np.float16, portable=portable)
    nan = np.isnan(expected)
    np.testing.assert_array_equal(narrowed[~nan].view(np.uint16), expected[~nan].view(np.uint16))
    assert np.isnan(narrowed[nan]).all()


def test_bfloat16_conversions_equal_ml_dtypes(c_kernels_built):
    from minigrad.kernels.halfconv import cast
    x = np.concatenate([awkward_float32s(), np.float32([np.nan, -np.nan])])
    narrowed = cast(x, mg.bfloat16)
    nan = np.isnan(x)
    np.testing.assert_array_equal(narrowed[~nan].view(np.uint16), bfloat16_reference(x[~nan]))
    assert np.isnan(narrowed[nan].astype(np.float32)).all()
    np.testing.assert_array_equal(cast(narrowed, np.float32)[~nan], narrowed[~nan].astype(np.float32))


def test_16_bit_state_dicts_save_and_load(tmp_path):
    mg.manual_seed(0)
    state = {"w": mg.randn(3, 4).bfloat16(), "h": mg.randn(5).half(), "i": mg.tensor([1, 2])}
    mg.save(state, tmp_path / "s.npz")
    back = mg.load(tmp_path / "s.npz")
    assert {k: v.dtype for k, v in back.items()} == {k: v.dtype for k, v in state.items()}
    for k in state:
        np.testing.assert_array_equal(back[k].numpy().view(np.uint8), state[k].numpy().view(np.uint8))
    mg.save(mg.ones(2).bfloat16(), tmp_path / "t.npz")
    assert mg.load(tmp_path / "t.npz").dtype == mg.bfloat16


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("make", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.01),
                                  lambda p: optim.AdamW(p, lr=0.01)], ids=["SGD", "Adam", "AdamW"])
def test_optimizers_keep_16_bit_parameters(dtype, make):
    """Parameters stay 16-bit and move as the float32 update would, up to the dtype's rounding."""
    mg.manual_seed(0)
    start = mg.randn(6, 4)
    grad = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
    low, full = mg.tensor(start.data, dtype=dtype, requires_grad=True), mg.tensor(start.data, requires_grad=True)
    for p, opt in ((low, make([low])), (full, make([full]))):
        for _ in range(3):
            p.grad = grad.astype(p.dtype)
            opt.step()
    assert low.dtype == getattr(mg, dtype)
    eps = float(np.finfo(low.dtype).eps)
    np.testing.assert_allclose(low.data.astype(np.float32), full.data, atol=4 * eps * np.abs(full.data).max())
