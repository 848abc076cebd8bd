"""state_dict round trips through mg.save / mg.load, and the errors for missing, extra and mis-shaped keys."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.optim as optim


def gpt(seed):
    mg.manual_seed(seed)
    return nn.GPT(vocab_size=13, block_size=6, n_layer=2, n_head=2, d_model=8)


def test_gpt_round_trip_through_save_and_load(tmp_path):
    source, target = gpt(0), gpt(1)
    idx = np.random.default_rng(0).integers(0, 13, size=(2, 6))
    assert not np.allclose(source(idx).data, target(idx).data)
    mg.save(source.state_dict(), tmp_path / "gpt.npz")
    loaded = mg.load(tmp_path / "gpt.npz")
    assert list(loaded) == list(source.state_dict())
    target.load_state_dict(loaded)
    for name, value in source.state_dict().items():
        np.testing.assert_array_equal(target.state_dict()[name].data, value.data, err_msg=name)
        assert target.state_dict()[name].dtype == np.float32
    np.testing.assert_array_equal(target(idx).data, source(idx).data)


def test_loading_copies_values_instead_of_sharing_arrays(tmp_path):
    source, target = gpt(0), gpt(1)
    target.load_state_dict(source.state_dict())
    source.wte.weight.data[...] = 0
    assert np.abs(target.wte.weight.data).max() > 0


def test_training_continues_after_a_reload(tmp_path):
    # parameters that were loaded are still the ones the optimizer updates
    model = gpt(0)
    model.load_state_dict(mg.load(_saved(gpt(1), tmp_path)))
    opt = optim.SGD(model.parameters(), lr=0.1)
    before = model.lm_head.weight.data.copy()
    idx = np.zeros((1, 4), np.int64)
    model(idx).sum().backward()
    opt.step()
    assert not np.array_equal(before, model.lm_head.weight.data)


def _saved(model, tmp_path):
    path = tmp_path / "model.npz"
    mg.save(model.state_dict(), path)
    return path


def test_positional_encoding_and_attention_round_trip(tmp_path):
    model = nn.Sequential(nn.PositionalEncoding(8, max_len=10), nn.MultiheadAttention(8, 2))
    fresh = nn.Sequential(nn.PositionalEncoding(8, max_len=10), nn.MultiheadAttention(8, 2))
    assert set(model.state_dict()) == {"0.pe", "1.in_proj_weight", "1.in_proj_bias", "1.out_proj.weight",
                                       "1.out_proj.bias"}
    fresh.load_state_dict(mg.load(_saved(model, tmp_path)))
    x = mg.tensor(np.random.default_rng(1).standard_normal((2, 5, 8)).astype(np.float32))
    np.testing.assert_allclose(fresh[1](fresh[0](x)).data, model(x).data, rtol=1e-6)


def test_missing_key_is_named(tmp_path):
    state = dict(gpt(0).state_dict())
    del state["blocks.1.attn.in_proj_bias"]
    with pytest.raises(KeyError, match=r"missing keys \['blocks.1.attn.in_proj_bias'\]"):
        gpt(1).load_state_dict(state)


def test_extra_key_is_named(tmp_path):
    state = dict(mg.load(_saved(gpt(0), tmp_path)))
    state["blocks.2.ln1.weight"] = mg.ones(8)
    with pytest.raises(KeyError, match=r"unexpected keys \['blocks.2.ln1.weight'\]"):
        gpt(1).load_state_dict(state)


def test_mis_shaped_key_names_both_shapes(tmp_path):
    state = dict(gpt(0).state_dict())
    state["wpe.weight"] = mg.zeros(7, 8)  # a block_size-7 model's table
    with pytest.raises(ValueError, match=r"'wpe.weight'.*\(7, 8\).*\(6, 8\)"):
        gpt(1).load_state_dict(state)


def test_gpt_from_a_model_with_other_sizes_is_rejected(tmp_path):
    mg.manual_seed(0)
    wider = nn.GPT(vocab_size=13, block_size=6, n_layer=2, n_head=2, d_model=12)
    with pytest.raises(ValueError, match=r"\(13, 12\).*\(13, 8\)"):
        gpt(1).load_state_dict(mg.load(_saved(wider, tmp_path)))


@pytest.mark.slow
def test_multihead_attention_state_dict_loads_into_torch_and_back():
    torch = pytest.importorskip("torch")
    mha = nn.MultiheadAttention(8, 2)
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True)
    theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy()) for k, v in mha.state_dict().items()})
    back = nn.MultiheadAttention(8, 2)
    back.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    for name, value in mha.state_dict().items():
        np.testing.assert_array_equal(back.state_dict()[name].data, value.data)
