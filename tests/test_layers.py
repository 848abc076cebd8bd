"""Modules: PyTorch names, shapes and init, forward against NumPy, train/eval, bad input, a whole small CNN."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F


def rng(seed=0):
    return np.random.default_rng(seed)


def t64(a, requires_grad=True):
    return mg.tensor(np.asarray(a, dtype=np.float64), requires_grad=requires_grad)


def small_cnn():
    """The digits CNN of the benchmark, for 8x8 single-channel images."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128, 10))


def test_linear_module_names_init_and_forward():
    mg.manual_seed(0)
    layer = nn.Linear(20, 30)
    assert [(n, p.shape, p.dtype) for n, p in layer.named_parameters()] == [
        ("weight", (30, 20), np.float32), ("bias", (30,), np.float32)]
    bound = 1 / np.sqrt(20)
    assert np.abs(layer.weight.data).max() <= bound and np.abs(layer.bias.data).max() <= bound
    # 600 draws of U(−b, b): standard deviation b/√3 within 10%, mean within 4 standard errors.
    assert abs(layer.weight.data.std() - bound / np.sqrt(3)) < 0.1 * bound / np.sqrt(3)
    assert abs(layer.weight.data.mean()) < 4 * bound / np.sqrt(3) / np.sqrt(600)
    x = rng(1).standard_normal((2, 4, 20)).astype(np.float32)
    np.testing.assert_allclose(layer(mg.tensor(x)).data, x @ layer.weight.data.T + layer.bias.data, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in nn.Linear(3, 2, bias=False).named_parameters()] == ["weight"]


def test_linear_module_reports_wrong_features():
    with pytest.raises(ValueError, match=r"Linear expected input with 20 features \(…, 20\), got shape \(4, 10\)"):
        nn.Linear(20, 30)(mg.zeros(4, 10))


def test_manual_seed_makes_init_reproducible():
    mg.manual_seed(7)
    a = nn.Linear(4, 3).weight.data.copy()
    mg.manual_seed(7)
    np.testing.assert_array_equal(nn.Linear(4, 3).weight.data, a)


def test_flatten_and_identity():
    x = t64(rng(2).standard_normal((2, 3, 4, 5)), False)
    assert nn.Flatten()(x).shape == (2, 60)
    assert nn.Flatten(0)(x).shape == (120,)
    assert nn.Flatten(1, 2)(x).shape == (2, 12, 5)
    np.testing.assert_array_equal(nn.Flatten()(x).data, x.data.reshape(2, 60))
    assert nn.Identity()(x) is x


@pytest.mark.parametrize("module,ref", [
    (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Tanh(), np.tanh),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.GELU(), lambda x: x * F.normal_cdf(x)),
    (nn.GELU("tanh"), lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))),
])
def test_activation_modules(module, ref):
    x = rng(3).standard_normal((3, 4)) * 2
    np.testing.assert_allclose(module(t64(x, False)).data, ref(x), rtol=1e-12)
    assert list(module.parameters()) == []


def test_dropout_module_follows_train_and_eval():
    drop = nn.Dropout(0.5)
    x = t64(np.ones((50, 50)), False)
    mg.manual_seed(0)
    y = drop(x).data
    assert set(np.unique(y)) == {0.0, 2.0}
    drop.eval()
    assert drop(x) is x
    drop.train()
    assert (drop(x).data == 0).any()
    with pytest.raises(ValueError, match=r"between 0 and 1, got p=-0.1"):
        nn.Dropout(-0.1)


def test_layer_norm_module():
    norm = nn.LayerNorm(6)
    assert [(n, p.shape) for n, p in norm.named_parameters()] == [("weight", (6,)), ("bias", (6,))]
    np.testing.assert_array_equal(norm.weight.data, np.ones(6, dtype=np.float32))
    np.testing.assert_array_equal(norm.bias.data, np.zeros(6, dtype=np.float32))
    norm.weight.data[:] = rng(4).standard_normal(6)
    norm.bias.data[:] = rng(5).standard_normal(6)
    x = rng(6).standard_normal((2, 3, 6)).astype(np.float32) * 3 + 2
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-5) * norm.weight.data + norm.bias.data
    np.testing.assert_allclose(norm(mg.tensor(x)).data, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"normalized_shape \(6,\) \(…, 6\), got shape \(2, 5\)"):
        norm(mg.zeros(2, 5))


def test_embedding_module_init_and_lookup():
    mg.manual_seed(1)
    emb = nn.Embedding(100, 40)
    assert [(n, p.shape) for n, p in emb.named_parameters()] == [("weight", (100, 40))]
    w = emb.weight.data
    # 4000 draws of N(0, 1): mean within 4 standard errors (0.063), std within 5%.
    assert abs(w.mean()) < 4 / np.sqrt(4000) and abs(w.std() - 1) < 0.05
    idx = np.array([[3, 99], [0, 3]])
    np.testing.assert_array_equal(emb(mg.tensor(idx)).data, w[idx])
    with pytest.raises(IndexError, match=r"token id 100 is out of range for a table of 100 rows"):
        emb(mg.tensor([100]))


def test_small_cnn_state_dict_uses_pytorch_names_and_round_trips(tmp_path):
    mg.manual_seed(2)
    model = small_cnn()
    names = {n: p.shape for n, p in model.state_dict().items()}
    assert names == {"0.weight": (16, 1, 3, 3), "0.bias": (16,), "3.weight": (32, 16, 3, 3), "3.bias": (32,),
                     "7.weight": (10, 128), "7.bias": (10,)}
    path = tmp_path / "cnn.npz"
    mg.save(model.state_dict(), path)
    mg.manual_seed(3)
    other = small_cnn()
    other.load_state_dict(mg.load(path))
    x = mg.tensor(rng(7).standard_normal((4, 1, 8, 8)).astype(np.float32))
    np.testing.assert_array_equal(other(x).data, model(x).data)


def test_small_cnn_forward_against_numpy_and_gradients():
    mg.manual_seed(4)
    model = small_cnn()
    for p in model.parameters():
        p.data = p.data.astype(np.float64)
    x = rng(8).standard_normal((3, 1, 8, 8))
    y = np.array([1, 7, 3])

    def reference(x):
        h = x
        for conv in (model[0], model[3]):
            w, b = conv.weight.data, conv.bias.data
            hp = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
            H, W = h.shape[2:]
            out = np.zeros((h.shape[0], w.shape[0], H, W))
            for p in range(3):
                for q in range(3):
                    out += np.einsum("nchw,oc->nohw", hp[:, :, p:p + H, q:q + W], w[:, :, p, q])
            h = np.maximum(out + b[:, None, None], 0)
            h = h.reshape(h.shape[0], h.shape[1], H // 2, 2, W // 2, 2).max(axis=(3, 5))
        return h.reshape(h.shape[0], -1) @ model[7].weight.data.T + model[7].bias.data

    np.testing.assert_allclose(model(t64(x, False)).data, reference(x), rtol=1e-10, atol=1e-12)
    assert mg.gradcheck(lambda a: F.cross_entropy(model(a), y), [t64(x)])
    model.zero_grad()
    F.cross_entropy(model(t64(x, False)), y).backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.parameters())


@pytest.mark.slow  # importing torch alone takes seconds
def test_small_cnn_matches_torch_if_installed():
    torch = pytest.importorskip("torch")
    mg.manual_seed(5)
    model = small_cnn()
    reference = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(128, 10))
    reference.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
    x = rng(9).standard_normal((8, 1, 8, 8)).astype(np.float32)
    y = rng(10).integers(0, 10, 8)
    loss = F.cross_entropy(model(mg.tensor(x)), y)
    loss.backward()
    ref_loss = torch.nn.functional.cross_entropy(reference(torch.tensor(x)), torch.tensor(y))
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-5)
    ref_params = dict(reference.named_parameters())
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, ref_params[name].grad.numpy(), rtol=1e-4, atol=1e-6)


def test_softmax_modules():
    x = rng(11).standard_normal((3, 4))
    e = np.exp(x)
    np.testing.assert_allclose(nn.Softmax(dim=1)(t64(x, False)).data, e / e.sum(1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax(dim=0)(t64(x, False)).data, np.log(e / e.sum(0, keepdims=True)),
                               rtol=1e-12)


def test_loss_modules_equal_their_functions():
    z, y = rng(12).standard_normal((5, 3)), np.array([0, 2, 1, 1, 0])
    p, t = rng(13).uniform(0.1, 0.9, (5, 3)), rng(14).uniform(0, 1, (5, 3))
    assert nn.CrossEntropyLoss()(t64(z, False), y).item() == F.cross_entropy(t64(z, False), y).item()
    assert nn.MSELoss()(t64(z, False), t64(p, False)).item() == pytest.approx(np.mean((z - p) ** 2), rel=1e-12)
    assert nn.BCELoss()(t64(p, False), t64(t, False)).item() == pytest.approx(
        -np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)), rel=1e-12)
    sig = 1 / (1 + np.exp(-z))
    assert nn.BCEWithLogitsLoss()(t64(z, False), t64(t, False)).item() == pytest.approx(
        -np.mean(t * np.log(sig) + (1 - t) * np.log(1 - sig)), rel=1e-12)
