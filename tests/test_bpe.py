"""Byte-level BPE (minigrad.text.BPETokenizer) against two references: a naive trainer written out here
(recount every pair over the whole text after each merge) and tiktoken, which encodes with our ranks."""
import json
import pickle
import time

import numpy as np
import pytest
import regex
from hypothesis import given, settings, strategies as st

from minigrad.__main__ import python_docs_text
from minigrad.text import SPLIT_PATTERNS, BPETokenizer, byte_pair_merge, merge_pair, split_pattern

tiktoken = pytest.importorskip("tiktoken", reason="tiktoken (the test extra) is the encoding oracle")

VARIED = [
    "",
    "a",
    "def f(x):\n    return x ** 2  # square\n\n\n\tif x != 0: print('ok')\r\n",
    "Hello 👋🏽 world 🌍! Ünïcödé façade, naïve café.",
    "日本語のテキストと中文文本，混合。",
    "한국어 문장도 잘 처리해야 합니다. 안녕하세요!",
    "    leading and trailing spaces    \n\n\n   \t\t  ",
    "I'M you'RE they'll we've don't it's HE'D",
    "1234567890 3.14159 1e-10 0x1F 100,000",
    "ab" * 200 + "x" + " " * 50 + "yy" * 33,
    "\x00\x01\x7f control \u200b zero\u00a0width",
]


def reference_train(text, vocab_size, pattern):
    """The definition, slowly: split, then merge the most frequent pair (the first met on a tie), recounting
    every pair over every chunk occurrence after each merge; bytes already in the vocabulary reuse that token."""
    chunks = [list(c.encode("utf-8")) for c in regex.findall(split_pattern(pattern), text)]
    vocab, ids_of, merges = [bytes([b]) for b in range(256)], {}, []
    while len(vocab) < vocab_size:
        counts = {}
        for ids in chunks:
            for pair in zip(ids, ids[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        pair = max(counts, key=counts.get)  # max keeps the first of equal counts: dicts keep insertion order
        token = vocab[pair[0]] + vocab[pair[1]]
        if token not in ids_of:
            ids_of[token] = len(vocab)
            vocab.append(token)
            merges.append(pair)
        chunks = [merge_pair(ids, pair, ids_of[token]) for ids in chunks]
    return merges, vocab


def as_tiktoken(tok):
    return tiktoken.Encoding("minigrad-test", pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(),
                             special_tokens={})


@pytest.fixture(scope="module")
def docs():
    return python_docs_text()


@pytest.fixture(scope="module")
def trained(docs):
    """One tokenizer per split, on docs plus the varied texts so multi-byte characters merge too."""
    text = docs[:60_000] + "".join(VARIED) * 3
    tokenizers = {}
    for pattern in ("gpt4", "gpt2", None):
        tok = BPETokenizer()
        tok.train(text, 700, pattern=pattern)
        tokenizers[pattern] = tok
    return tokenizers


def test_merge_pair_is_left_to_right_without_overlap():
    assert merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]
    assert merge_pair([1, 1, 1, 1], (1, 1), 9) == [9, 9]
    sites = []
    assert merge_pair([5, 1, 2, 1, 2, 1], (1, 2), 7, sites) == [5, 7, 7, 1]
    assert sites == [(1, 1), (3, 2)]
    assert merge_pair([], (1, 2), 7) == [] and merge_pair([1], (1, 2), 7) == [1]


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", None])
def test_training_equals_the_full_recount(docs, pattern):
    text = docs[:15_000] + " aaaa abab ab ab 한국어 한국"
    merges, vocab = reference_train(text, 560, pattern)
    tok = BPETokenizer()
    tok.train(text, 560, pattern=pattern)
    assert tok.merges == merges and tok.vocab == vocab


def test_ties_go_to_the_pair_met_first():
    tok = BPETokenizer()
    tok.train("xy ab cd ab cd xy", 257, pattern=None)  # (x,y), (a,b), (c,d) all occur twice: (x,y) is first
    assert tok.vocab[256] == b"xy"
    # chunks "cd", " ab", " cd", " ab": cd, " a" and ab occur twice; after cd, " a" is met before ab
    tok.train("cd ab cd ab", 258, pattern="gpt2")
    assert tok.vocab[256:] == [b"cd", b" a"]


def test_a_pair_whose_bytes_are_already_a_token_reuses_it():
    # "abc" forms as a + bc in the first word and as ab + c in the second: one token, not two
    text = "abc " * 5 + "xab " * 9 + "bcy " * 9 + " zabc" * 6
    tok = BPETokenizer()
    tok.train(text, 262, pattern=None)
    assert len(set(tok.vocab)) == len(tok.vocab)
    assert tok.vocab == reference_train(text, 262, None)[1]


def test_vocab_size_256_is_bytes():
    tok = BPETokenizer()
    tok.train("hello", 256)
    assert tok.merges == [] and tok.encode("hé") == [104, 0xC3, 0xA9]


def test_training_stops_with_a_warning_when_nothing_is_left_to_merge():
    tok = BPETokenizer()
    with pytest.warns(UserWarning, match="no pair left to merge after 1 merges"):
        tok.train("ab", 300, pattern=None)
    assert tok.vocab_size == 257


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2", None])
@pytest.mark.parametrize("text", VARIED, ids=range(len(VARIED)))
def test_encode_equals_tiktoken_and_round_trips(trained, pattern, text):
    tok = trained[pattern]
    ids = tok.encode(text)
    assert ids == as_tiktoken(tok).encode_ordinary(text)
    assert tok.decode(ids) == text


def test_encode_equals_tiktoken_on_text_not_trained_on(trained, docs):
    held_out = docs[-30_000:]
    for tok in trained.values():
        ids = tok.encode(held_out)
        assert ids == as_tiktoken(tok).encode_ordinary(held_out)
        assert tok.decode(ids) == held_out
        assert len(ids) < 0.5 * len(held_out.encode("utf-8"))  # the merges do compress


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_encode_equals_tiktoken_on_random_unicode(trained, text):
    for tok in trained.values():
        assert tok.encode(text) == as_tiktoken(tok).encode_ordinary(text)
        assert tok.decode(tok.encode(text)) == text


def ranks_from_merges(merges):
    tok = BPETokenizer.from_json(json.dumps({"format": "minigrad.BPETokenizer", "version": 1, "split": None,
                                             "pattern": split_pattern(None), "merges": merges}))
    return tok


def test_encode_merges_by_the_rank_of_the_bytes_like_tiktoken():
    # tokens: ab (256), bc (257), abc = a + bc (258). In "abcx", ab has the lowest rank, then ab + c is
    # looked up by its bytes "abc" and merges although the pair (ab, c) was never learned.
    tok = ranks_from_merges([[97, 98], [98, 99], [97, 257]])
    assert tok.encode("abcx") == [258, 120] == as_tiktoken(tok).encode_ordinary("abcx")
    assert byte_pair_merge(b"abcx", tok.mergeable_ranks()) == [258, 120]


def test_a_chunk_that_is_a_token_is_that_token_like_tiktoken():
    # bc (256), ab (257), cd (258), abcd = ab + cd (259): merging by rank alone gets stuck at a, bc, d,
    # but tiktoken takes a chunk that is itself a token whole
    tok = ranks_from_merges([[98, 99], [97, 98], [99, 100], [257, 258]])
    assert tok.encode("abcd") == [259] == as_tiktoken(tok).encode_ordinary("abcd")
    assert tok.encode("abcde") == [97, 256, 100, 101] == as_tiktoken(tok).encode_ordinary("abcde")


def test_decode_of_a_cut_character_gives_the_replacement_character_like_tiktoken(trained):
    tok = trained["gpt4"]
    ids = tok.encode("한")  # three bytes
    cut = ids[:-1] if len(ids) > 1 else [tok.mergeable_ranks()["한".encode()[:1]]]
    assert tok.decode(cut) == as_tiktoken(tok).decode(cut)
    assert "\ufffd" in tok.decode(cut)


def test_mergeable_ranks_are_bytes_then_merges_in_order(trained):
    tok = trained["gpt2"]
    ranks = tok.mergeable_ranks()
    assert all(ranks[bytes([b])] == b for b in range(256))
    for i, (left, right) in enumerate(tok.merges):
        assert ranks[tok.vocab[left] + tok.vocab[right]] == 256 + i
    assert sorted(ranks.values()) == list(range(tok.vocab_size))
    assert tok.pattern == SPLIT_PATTERNS["gpt2"]


def test_save_and_load(tmp_path, trained):
    for pattern, tok in trained.items():
        path = tmp_path / f"{pattern}.json"
        tok.save(path)
        again = BPETokenizer.load(path)
        assert again.vocab == tok.vocab and again.merges == tok.merges
        assert again.pattern == tok.pattern and again.split == pattern
        text = "".join(VARIED)
        assert again.encode(text) == tok.encode(text)
    assert json.loads(path.read_text())["format"] == "minigrad.BPETokenizer"  # plain JSON text


@pytest.mark.parametrize("content,why", [
    (b'{"format": "minigrad.BPETokenizer", "version": 1, "split": "gpt4", "merg', "not JSON"),
    (b'{"vocab": {"a": 0}, "merges": []}', "format"),
    (pickle.dumps({"merges": []}), "not JSON"),
    (b'{"format": "minigrad.BPETokenizer", "version": 2}', "version 2"),
    (b'{"format": "minigrad.BPETokenizer", "version": 1, "split": "gpt5", "pattern": "x", "merges": []}', "gpt5"),
    (b'{"format": "minigrad.BPETokenizer", "version": 1, "split": null, "pattern": "[\\\\s\\\\S]+", '
     b'"merges": [[97, 98], [256, 300]]}', "merge 1 is \\[256, 300\\]"),
    (b'{"format": "minigrad.BPETokenizer", "version": 1, "split": null, "pattern": "[\\\\s\\\\S]+", '
     b'"merges": [[97, 98], [97, 98]]}', "already token 256"),
])
def test_corrupt_or_foreign_files_are_refused(tmp_path, content, why):
    path = tmp_path / "tok.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=f"is not a minigrad BPETokenizer file: .*{why}"):
        BPETokenizer.load(path)


def test_bad_arguments_are_named():
    tok = BPETokenizer()
    with pytest.raises(ValueError, match="pattern must be one of .*'gpt3'"):
        tok.train("abc", 300, pattern="gpt3")
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 256.*255"):
        tok.train("abc", 255)
    with pytest.raises(ValueError, match="vocab_size"):
        tok.train("abc", 300.0)
    with pytest.raises(TypeError, match="text must be a str"):
        tok.train(b"abc", 300)
    tok.train("abcabc", 258)
    with pytest.raises(ValueError, match=r"ids holds 258, outside the vocabulary \[0, 258\)"):
        tok.decode([97, 258])
    with pytest.raises(ValueError, match="ids holds -1"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="ids must be integers"):
        tok.decode(np.array([1.0]))


def test_one_thousand_merges_on_the_docs_in_seconds(docs):
    tok = BPETokenizer()
    start = time.process_time()
    tok.train(docs, 1256, pattern="gpt4")
    seconds = time.process_time() - start
    assert tok.vocab_size == 1256
    assert seconds < 30, f"1,000 merges took {seconds:.1f} s of CPU time (the target is under 30 s on one core)"
    sample = docs[:50_000]
    assert tok.encode(sample) == as_tiktoken(tok).encode_ordinary(sample)
