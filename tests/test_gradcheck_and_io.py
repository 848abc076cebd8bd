"""gradcheck catches wrong rules and says where; save/load round-trips and never unpickles."""
import pickle

import numpy as np
import pytest

import minigrad as mg
from minigrad.tensor import Tensor


def wrong_square(x):
    """x² with a deliberately wrong backward rule (3x instead of 2x)."""
    return Tensor.from_op(x.data ** 2, (x,), lambda grad: (grad * 3 * x.data,))


def test_gradcheck_passes_on_a_right_rule_and_reports_tiny_error():
    x = mg.randn(3, 4, dtype=mg.float64, requires_grad=True)
    assert mg.gradcheck(lambda t: (t * t).sum(1), (x,))
    assert mg.max_relative_error(lambda t: (t * t).sum(1), (x,)) < 1e-7


def test_gradcheck_names_input_element_and_values():
    x = mg.tensor([[1.0, 2.0]], dtype=mg.float64, requires_grad=True)
    y = mg.tensor([0.5], dtype=mg.float64, requires_grad=True)
    with pytest.raises(mg.GradcheckError) as info:
        mg.gradcheck(lambda a, b: a * b + wrong_square(b), (x, y))
    message = str(info.value)
    assert "input 1" in message and "element (0,)" in message
    assert "autograd gives" in message and "central differences give" in message and "relative error" in message


def test_gradcheck_samples_large_inputs_and_still_catches_errors():
    x = mg.randn(40, 40, dtype=mg.float64, requires_grad=True)   # 1600 elements: sampled + random directions
    assert mg.gradcheck(lambda t: (t @ t).tanh(), (x,))
    with pytest.raises(mg.GradcheckError):
        mg.gradcheck(wrong_square, (x,))
    assert mg.max_relative_error(wrong_square, (x,)) > 0.1


def test_gradcheck_needs_an_input_that_requires_grad():
    with pytest.raises(ValueError, match="requires_grad"):
        mg.gradcheck(lambda t: t * 2, (mg.ones(2),))


def test_save_load_tensor_and_state_dict(tmp_path):
    t = mg.randn(3, 2)
    mg.save(t, tmp_path / "t.pt")
    back = mg.load(tmp_path / "t.pt")
    np.testing.assert_array_equal(back.data, t.data)
    assert back.dtype == mg.float32
    state = {"w": mg.randn(2, 2), "b": np.arange(3), "step": 7}
    mg.save(state, tmp_path / "sd.npz")
    loaded = mg.load(tmp_path / "sd.npz")
    assert set(loaded) == {"w", "b", "step"}
    np.testing.assert_array_equal(loaded["w"].data, state["w"].data)
    np.testing.assert_array_equal(loaded["b"].data, state["b"])
    assert loaded["step"].item() == 7


class _Boom:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_load_refuses_pickles(tmp_path, capsys):
    path = tmp_path / "evil.npz"
    np.savez(path, evil=np.array([_Boom()], dtype=object))
    with pytest.raises(ValueError, match="pickled"):
        mg.load(path)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Boom()))
    with pytest.raises(ValueError, match="pickled"):
        mg.load(raw)
    assert "must never run" not in capsys.readouterr().out


def test_save_rejects_what_it_cannot_store(tmp_path):
    with pytest.raises(TypeError):
        mg.save([1, 2], tmp_path / "x.npz")
    with pytest.raises(TypeError, match="numbers"):
        mg.save({"s": np.array(["a"])}, tmp_path / "x.npz")
