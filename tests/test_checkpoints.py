"""Saving: any key names, atomic writes, every unreadable file named; tied parameters in state dicts;
optimizer state dicts in PyTorch's layout (checked against torch.optim where it is installed)."""
import os
import pickle
import zipfile

import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.optim as optim

try:
    import torch
except ImportError:  # only the comparisons with PyTorch need it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed: the comparison needs it")


@pytest.mark.parametrize("key", ["file", "allow_pickle", "args", "kwds", "a/b", "with space", "ünïcode", ""])
def test_any_key_round_trips(tmp_path, key):
    path = tmp_path / "state.npz"
    state = {key: np.arange(6.0).reshape(2, 3), "other": mg.tensor([1, 2, 3])}
    mg.save(state, path)
    loaded = mg.load(path)
    assert set(loaded) == {key, "other"}
    np.testing.assert_array_equal(loaded[key].data, state[key])
    np.testing.assert_array_equal(loaded["other"].data, [1, 2, 3])


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mg.save({"w": np.ones(3)}, path)
    write_array, calls = np.lib.format.write_array, []

    def failing_write(*args, **kwargs):  # the disk fills up after the first array is written
        calls.append(1)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return write_array(*args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    with pytest.raises(OSError, match="No space"):
        mg.save({"a": np.zeros(2), "b": np.zeros(2)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(mg.load(path)["w"].data, np.ones(3))
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"], "no temporary file may be left behind"
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _bad_files(tmp_path):
    good = tmp_path / "good.npz"
    mg.save({"w": np.arange(1000.0)}, good)
    data = good.read_bytes()
    files = {"a directory": tmp_path / "folder", "empty": tmp_path / "empty.npz", "text": tmp_path / "t.npz",
             ".npy": tmp_path / "a.npy", "truncated": tmp_path / "trunc.npz", "corrupt zip": tmp_path / "c.npz",
             "object arrays": tmp_path / "obj.npz", "raw pickle": tmp_path / "p.pt"}
    files["a directory"].mkdir()
    files["empty"].write_bytes(b"")
    files["text"].write_text("step,loss\n1,2.3\n")
    np.save(files[".npy"], np.arange(3))
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["corrupt zip"].write_bytes(data[:40] + b"\x00" * (len(data) - 80) + data[-40:])
    np.savez(files["object arrays"], x=np.array([{"a": 1}], dtype=object))
    files["raw pickle"].write_bytes(pickle.dumps({"w": [1, 2]}))
    return files


EXPECTED = {"a directory": "directory", "empty": "empty", "text": "not an .npz", ".npy": ".npy",
            "truncated": "truncated or corrupt", "corrupt zip": "corrupt", "object arrays": "pickled",
            "raw pickle": "pickled"}


def test_every_unreadable_file_is_named(tmp_path):
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises((ValueError, OSError)) as info:
            mg.load(path)
        message = str(info.value)
        assert str(path) in message and EXPECTED[kind] in message, f"{kind}: {message}"
        if kind not in ("object arrays", "raw pickle"):
            assert "pickle" not in message, f"{kind}: the pickle message must only name real pickles: {message}"
    with pytest.raises(FileNotFoundError):
        mg.load(tmp_path / "missing.npz")


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied, as GPT-2 ties its input and output embeddings


def test_tied_parameter_is_listed_under_every_name():
    model = Tied()
    state = model.state_dict()
    assert list(state) == ["embed.weight", "head.weight"]
    assert state["embed.weight"] is state["head.weight"]
    assert len(list(model.parameters())) == 1, "parameters() still lists a shared parameter once"


@needs_torch
def test_tied_state_dict_matches_pytorch_and_loads_it():
    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(5, 3)
            self.head = torch.nn.Linear(3, 5, bias=False)
            self.head.weight = self.embed.weight

    reference = TorchTied().state_dict()
    model = Tied()
    assert list(model.state_dict()) == list(reference)
    model.load_state_dict(reference)
    np.testing.assert_array_equal(model.embed.weight.data, reference["embed.weight"].numpy())
    assert model.head.weight is model.embed.weight


def _train(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.copy()
        opt.step()


def _grads(rng, shapes, steps):
    return [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(steps)]


OPTIMIZERS = [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=0.01)), ("Adam", dict(lr=0.01)),
              ("AdamW", dict(lr=0.01, weight_decay=0.1))]


@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
def test_optimizer_state_dict_resumes_exactly(name, kwargs):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (4,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(rng, shapes, 6)
    straight = [mg.tensor(w.copy(), requires_grad=True) for w in init]
    _train(getattr(optim, name)(straight, **kwargs), straight, grads)

    first = [mg.tensor(w.copy(), requires_grad=True) for w in init]
    opt = getattr(optim, name)(first, **kwargs)
    _train(opt, first, grads[:3])
    saved = opt.state_dict()
    assert [g["params"] for g in saved["param_groups"]] == [[0, 1]]
    resumed = [mg.tensor(p.data.copy(), requires_grad=True) for p in first]
    opt2 = getattr(optim, name)(resumed, lr=123.0)  # hyperparameters come back from the dict
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    _train(opt2, resumed, grads[3:])
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


@needs_torch
@pytest.mark.parametrize("name, kwargs", OPTIMIZERS)
def test_optimizer_state_dict_layout_is_pytorchs(name, kwargs):
    rng = np.random.default_rng(1)
    shapes = [(2, 3), (3,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(rng, shapes, 5)
    ours = [mg.tensor(w.copy(), requires_grad=True) for w in init]
    theirs = [torch.tensor(w.copy(), requires_grad=True) for w in init]
    opt, topt = getattr(optim, name)(ours, **kwargs), getattr(torch.optim, name)(theirs, **kwargs)
    for g in grads[:3]:
        for p, gi in zip(ours, g):
            p.grad = gi.copy()
        for p, gi in zip(theirs, g):
            p.grad = torch.tensor(gi)
        opt.step()
        topt.step()
    mine, reference = opt.state_dict(), topt.state_dict()
    assert mine["state"].keys() == reference["state"].keys()
    for index in reference["state"]:
        assert mine["state"][index].keys() == reference["state"][index].keys()
        for key, value in reference["state"][index].items():
            np.testing.assert_allclose(np.asarray(mine["state"][index][key]), value.numpy(), rtol=1e-6, atol=1e-7)
    for key in mine["param_groups"][0]:
        assert mine["param_groups"][0][key] == reference["param_groups"][0][key], key
    # PyTorch's own dict loads into a fresh minigrad optimizer and the runs continue together.
    resumed = [mg.tensor(p.detach().numpy().copy(), requires_grad=True) for p in theirs]
    opt2 = getattr(optim, name)(resumed, lr=1.0)
    opt2.load_state_dict(reference)
    for g in grads[3:]:
        for p, gi in zip(resumed, g):
            p.grad = gi.copy()
        for p, gi in zip(theirs, g):
            p.grad = torch.tensor(gi)
        opt2.step()
        topt.step()
    for a, b in zip(resumed, theirs):
        np.testing.assert_allclose(a.data, b.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_optimizer_load_state_dict_errors():
    params = [mg.tensor(np.zeros((2, 2), np.float32), requires_grad=True)]
    opt = optim.AdamW(params)
    with pytest.raises(ValueError, match="'state' and 'param_groups'"):
        opt.load_state_dict({"state": {}})
    with pytest.raises(ValueError, match="2 parameters in the dict, 1 in this optimizer"):
        opt.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]})
    with pytest.raises(ValueError, match="amsgrad=True"):
        opt.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1, "amsgrad": True, "params": [0]}]})
    with pytest.raises(ValueError, match="shape"):
        opt.load_state_dict({"state": {0: {"step": 1, "exp_avg": np.zeros(3), "exp_avg_sq": np.zeros(3)}},
                             "param_groups": [{"lr": 0.1, "params": [0]}]})


def test_shapes_and_layouts_round_trip(tmp_path):
    base = np.arange(24.0).reshape(2, 3, 4)
    state = {"scalar": np.asarray(7), "transposed": base.transpose(2, 0, 1), "strided": base[:, ::2, 1:],
             "fortran": np.asfortranarray(base), "empty": np.zeros((0, 3)), "f16": base.astype(np.float16)}
    mg.save(state, tmp_path / "s.npz")
    loaded = mg.load(tmp_path / "s.npz")
    for name, array in state.items():
        assert loaded[name].data.shape == array.shape and loaded[name].data.dtype == array.dtype, name
        np.testing.assert_array_equal(loaded[name].data, array)
