import numpy as np
import pytest

from minigrad.text import CharTokenizer


def test_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == [" ", "d", "e", "h", "l", "o", "r", "w"]
    assert tok.vocab_size == 8


def test_encode_gives_int64_ids_by_sorted_position():
    tok = CharTokenizer.from_text("banana")  # vocabulary a, b, n
    ids = tok.encode("banana")
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, [1, 0, 2, 0, 2, 0])


def test_round_trip_on_text_with_unicode_and_newlines():
    text = "To be, or not to be:\nthat is the question — ünïcödé.\n"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(list(tok.encode(text))) == text


def test_empty_string():
    tok = CharTokenizer.from_text("abc")
    assert tok.encode("").shape == (0,)
    assert tok.decode(np.array([], dtype=np.int64)) == ""


def test_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="'z'"):
        tok.encode("abz")


def test_decode_rejects_out_of_range_and_non_integer_ids():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="id 3 .*\\[0, 3\\)"):
        tok.decode([0, 3])
    with pytest.raises(ValueError, match="id -1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="float"):
        tok.decode(np.array([0.0, 1.0]))
