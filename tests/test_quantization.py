"""int8 dynamic quantization: the int8 × int8 → int32 kernel (both C versions against a float64 reference),
per-channel scales against the formula, QuantizedLinear against float, a trained GPT's val loss, bad input."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad import quantization as Q

SHAPES = [(1, 1, 1), (1, 7, 63), (3, 9, 64), (5, 4, 65), (17, 13, 130), (4, 4, 128), (33, 70, 257)]


def dot_reference(a, b):
    """Σ_k a[i, k] b[j, k] in float64: exact for these sizes (|sum| < 2^53), independent of any int path."""
    return np.einsum("ik,jk->ij", a.astype(np.float64), b.astype(np.float64))


def random_int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)  # includes −128, which the VNNI shift must handle


def test_reference_is_exact():
    rng = np.random.default_rng(0)
    a, b = random_int8(rng, (6, 300)), random_int8(rng, (5, 300))
    np.testing.assert_array_equal(Q.int8_matmul_reference(a, b), dot_reference(a, b))


@pytest.mark.parametrize("version", ["portable", "vnni"])
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_c_kernel_versions_equal_the_reference(c_kernels_built, version, m, n, k):
    if version == "vnni" and not Q.vnni_available():
        pytest.skip("this CPU has no AVX-512 VNNI; the portable version is tested instead")
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a, b = random_int8(rng, (m, k)), random_int8(rng, (n, k))
    got = Q.int8_matmul(a, b, backend="c", version=version)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, dot_reference(a, b))


def test_vnni_and_portable_agree_at_the_extremes(c_kernels_built):
    if not Q.vnni_available():
        pytest.skip("this CPU has no AVX-512 VNNI")
    k = 1000  # every product −128·−128 = 16384: the largest int32 sum a layer can make, 1.6e7
    for fill_a, fill_b in ((-128, -128), (127, -128), (-128, 127), (127, 127)):
        a, b = np.full((3, k), fill_a, np.int8), np.full((5, k), fill_b, np.int8)
        vnni = Q.int8_matmul(a, b, version="vnni")
        np.testing.assert_array_equal(vnni, Q.int8_matmul(a, b, version="portable"))
        assert vnni[0, 0] == fill_a * fill_b * k


def test_kernel_reads_strided_inputs_and_threads_agree(c_kernels_built):
    rng = np.random.default_rng(3)
    a, b = random_int8(rng, (8, 200))[:, ::2], random_int8(rng, (6, 100)).T.copy().T  # a non-contiguous view
    expected = dot_reference(a, b)
    for threads in (1, 2):
        np.testing.assert_array_equal(Q.int8_matmul(a, b, num_threads=threads), expected)


def test_kernel_rejects_bad_operands():
    a = np.zeros((2, 3), np.int8)
    with pytest.raises(TypeError, match="a must be a 2-D int8"):
        Q.int8_matmul(a.astype(np.float32), a)
    with pytest.raises(ValueError, match=r"same k, got a \(2, 3\) and b \(2, 4\)"):
        Q.int8_matmul(a, np.zeros((2, 4), np.int8))
    with pytest.raises(ValueError, match="version must be one of"):
        Q.int8_matmul(a, a, version="avx9")


def test_quantize_symmetric_follows_the_formula():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 50)).astype(np.float32) * np.array([[1e-3], [1.0], [30.0], [0.0]], np.float32)
    q, scale = Q.quantize_symmetric(x)
    absmax = np.abs(x).max(axis=1)
    np.testing.assert_allclose(scale[:3], absmax[:3] / 127, rtol=1e-6)
    assert scale[3] == 1.0 and (q[3] == 0).all()  # an all-zero row stays exactly zero
    assert q.dtype == np.int8 and np.abs(q).max() == 127 and q.min() >= -127
    # round to nearest: the error of each element is at most half a step
    assert (np.abs(q * scale[:, None] - x) <= scale[:, None] / 2 * (1 + 1e-5)).all()


@pytest.mark.parametrize("bits", [2, 4, 8, 12])
def test_quantization_error_halves_with_each_bit(bits):
    """For values spread over [−1, 1] the error is uniform on ±step/2: RMS = step/√12, step = absmax/qmax."""
    x = np.linspace(-1, 1, 20001, dtype=np.float32)[None, :]
    q, scale = Q.quantize_symmetric(x, bits)
    rms = np.sqrt(np.mean((q * scale[:, None] - x) ** 2))
    step = 1 / (2 ** (bits - 1) - 1)
    assert rms == pytest.approx(step / np.sqrt(12), rel=0.05)


def test_quantized_linear_matches_the_formula_and_the_float_layer():
    mg.manual_seed(0)
    layer = nn.Linear(96, 40)
    x = mg.randn(3, 5, 96)
    quantized = Q.quantize_dynamic(layer)
    assert isinstance(quantized, Q.QuantizedLinear)
    y = quantized(x)
    assert y.shape == (3, 5, 40) and y.dtype == mg.float32
    # the formula by hand, in float64
    w = layer.weight.data.astype(np.float64)
    sw = np.abs(w).max(1) / 127
    wq = np.rint(w / sw[:, None])
    rows = x.data.reshape(-1, 96).astype(np.float64)
    sx = np.abs(rows).max(1) / 127
    xq = np.rint(rows / sx[:, None])
    expected = (xq @ wq.T) * sx[:, None] * sw[None, :] + layer.bias.data
    np.testing.assert_allclose(y.data.reshape(-1, 40), expected, rtol=1e-5, atol=1e-6)
    # and close to the float layer: relative error ~ 1/127 per operand
    exact = layer(x).data
    assert np.abs(y.data - exact).max() < 0.02 * np.abs(exact).max()


def test_attention_projection_is_quantized_per_row_and_sliced():
    mg.manual_seed(2)
    mha = nn.MultiheadAttention(32, 4)
    x = mg.randn(2, 5, 32)
    expected = mha(x).data
    quantized = Q.quantize_dynamic(mha)
    assert quantized.in_proj_weight.dtype == np.int8 and quantized.in_proj_weight.scale.shape == (96,)
    q_rows = quantized.in_proj_weight[32:64]  # the k projection keeps its own rows' scales
    np.testing.assert_allclose(q_rows.dequantize(), mha.in_proj_weight.data[32:64], atol=q_rows.scale.data.max())
    assert np.abs(quantized(x).data - expected).max() < 0.03 * np.abs(expected).max()
    with pytest.raises(TypeError, match="only row slices"):
        quantized.in_proj_weight[[0, 1]]


def test_quantized_linear_numpy_and_c_agree(c_kernels_built):
    mg.manual_seed(1)
    layer = Q.quantize_dynamic(nn.Linear(130, 33, bias=False))
    x = mg.randn(7, 130)
    w, s = layer.weight.data, layer.weight_scale.data
    y_c = Q.dynamic_quantized_linear(x, w, s, backend="c").data
    y_np = Q.dynamic_quantized_linear(x, w, s, backend="numpy").data
    np.testing.assert_array_equal(y_c, y_np)


def markov_text(n, seed=0):
    """A text from a random first-order Markov chain on 12 letters: learnable, but not memorisable."""
    rng = np.random.default_rng(seed)
    letters = "abcdefghijkl"
    table = rng.dirichlet(np.full(len(letters), 0.3), size=len(letters))
    ids = [0]
    for _ in range(n - 1):
        ids.append(rng.choice(len(letters), p=table[ids[-1]]))
    return np.array(ids, dtype=np.int64)


def batches(ids, T, B, rng):
    starts = rng.integers(0, len(ids) - T - 1, B)
    x = np.stack([ids[s:s + T] for s in starts])
    y = np.stack([ids[s + 1:s + T + 1] for s in starts])
    return x, y


@pytest.fixture(scope="module")
def trained_gpt():
    mg.manual_seed(0)
    ids = markov_text(6000)
    train, val = ids[:5000], ids[5000:]
    model = nn.GPT(12, 32, n_layer=2, n_head=2, d_model=64)
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(0)
    for _ in range(120):
        x, y = batches(train, 32, 16, rng)
        loss = F.cross_entropy(model(x).reshape(-1, 12), y.reshape(-1))
        model.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return model, val


def val_loss(model, val):
    T = 32
    x = np.stack([val[s:s + T] for s in range(0, len(val) - T - 1, T)])
    y = np.stack([val[s + 1:s + T + 1] for s in range(0, len(val) - T - 1, T)])
    with mg.no_grad():
        return F.cross_entropy(model(x).reshape(-1, 12), y.reshape(-1)).item()


def test_quantized_gpt_val_loss_within_two_percent(trained_gpt):
    model, val = trained_gpt
    float_loss = val_loss(model, val)
    assert float_loss < np.log(12) - 0.3  # it learned something, so the comparison means something
    quantized = Q.quantize_dynamic(model)
    assert abs(val_loss(quantized, val) - float_loss) < 0.02 * float_loss
    assert not any(isinstance(m, Q.QuantizedLinear) for m in model.modules())  # the original is untouched


def test_quantized_linear_state_is_four_times_smaller(trained_gpt, tmp_path):
    model, _ = trained_gpt
    quantized = Q.quantize_dynamic(model)
    float_sd, quant_sd = model.state_dict(), quantized.state_dict()
    linear_keys = [k for k in quant_sd if quant_sd[k].dtype == np.int8]
    assert len(linear_keys) == 2 * 4 + 1  # in_proj, out_proj, mlp.0, mlp.2 per block, lm_head
    float_bytes = sum(float_sd[k].data.nbytes for k in linear_keys)
    weight_bytes = sum(quant_sd[k].data.nbytes for k in linear_keys)
    scale_bytes = sum(quant_sd[k + "_scale"].data.nbytes for k in linear_keys)
    assert 4 * weight_bytes == float_bytes  # int8 is 1 byte for float32's 4
    rows = sum(quant_sd[k].shape[0] for k in linear_keys)
    assert scale_bytes == 4 * rows  # plus one float32 scale per output channel: 4/in_features more, here 1/16
    assert float_bytes / (weight_bytes + scale_bytes) > 3.7
    # the whole state dict: embeddings, norms and biases (5% of this small model) stay float32
    whole = sum(v.data.nbytes for v in float_sd.values()) / sum(v.data.nbytes for v in quant_sd.values())
    assert whole > 3.3
    # and it survives a save / load round trip with its dtypes
    mg.save(quant_sd, tmp_path / "q.npz")
    fresh = Q.quantize_dynamic(nn.GPT(12, 32, n_layer=2, n_head=2, d_model=64))
    fresh.load_state_dict(mg.load(tmp_path / "q.npz"))
    x = np.arange(20).reshape(2, 10) % 12
    np.testing.assert_array_equal(fresh(x).data, quantized(x).data)


def test_quantize_in_place_and_generation_runs(trained_gpt):
    model, _ = trained_gpt
    clone = Q.quantize_dynamic(model)
    block = nn.TransformerBlock(16, 2)
    assert Q.quantize_dynamic(block, inplace=True) is block and isinstance(block.mlp[0], Q.QuantizedLinear)
    mg.manual_seed(5)
    out = clone.generate(np.zeros((1, 1), np.int64), 10)
    assert out.shape == (1, 11) and out.max() < 12


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="Sequential has no nn.Linear layer to quantize"):
        Q.quantize_dynamic(nn.Sequential(nn.ReLU(), nn.Tanh()))
    with pytest.raises(TypeError, match="only dtype=mg.int8 is supported, got"):
        Q.quantize_dynamic(nn.Linear(2, 2), dtype=mg.float16)
    with pytest.raises(TypeError, match="expected an nn.Module, got ndarray"):
        Q.quantize_dynamic(np.zeros(3))
    with pytest.raises(ValueError, match=r"expected input \(…, 4\), got shape \(2, 3\)"):
        Q.quantize_dynamic(nn.Linear(4, 2))(mg.zeros(2, 3))
    with pytest.raises(ValueError, match="inf or NaN"):
        Q.quantize_symmetric(np.array([[1.0, np.inf]]))
