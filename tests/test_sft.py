"""The supervised task: distinct held-out words, masked targets on the answer only, exact-match accuracy."""
import numpy as np
import pytest

import minigrad as mg
import minigrad.nn as nn
import minigrad.nn.functional as F
import minigrad.optim as optim
from minigrad.sft import IGNORE, answer_accuracy, reversal_problems, split_reversal_problems, supervised_batch
from minigrad.text import CharTokenizer

TOK = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz>"))


def test_problems_and_a_disjoint_split():
    assert reversal_problems(["abcd", "zzya"]) == [("abcd>", "dcba"), ("zzya>", "ayzz")]
    train, test = split_reversal_problems(300, 50, np.random.default_rng(0))
    assert len(train) == 300 and len(test) == 50
    words = [p for p, _ in train + test]
    assert len(set(words)) == 350 and all(len(p) == 5 and p.endswith(">") for p in words)
    with pytest.raises(ValueError, match="at most 338"):
        split_reversal_problems(300, 50, np.random.default_rng(0), length=2)


def test_targets_are_the_answer_tokens_and_ignore_the_prompt():
    x, y = supervised_batch([("abcd>", "dcba"), ("wxyz>", "zyxw")], TOK.encode)
    np.testing.assert_array_equal(x[0], TOK.encode("abcd>dcb"))  # the last answer token is never an input
    # position t predicts token t + 1: positions 0-3 would predict prompt letters and ">", so they are ignored
    np.testing.assert_array_equal(y[1], [IGNORE] * 4 + list(TOK.encode("zyxw")))
    with pytest.raises(ValueError, match="same number of tokens"):
        supervised_batch([("abcd>", "dcba"), ("ab>", "ba")], TOK.encode)


def test_the_masked_loss_is_the_mean_over_answer_positions_by_hand():
    mg.manual_seed(0)
    model = nn.GPT(TOK.vocab_size, 8, n_layer=1, n_head=1, d_model=8)
    x, y = supervised_batch([("abcd>", "dcba"), ("wxyz>", "zyxw")], TOK.encode)
    logits = model(x).data.astype(np.float64)  # (B, T, V)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    by_hand = -np.mean([logp[b, t, y[b, t]] for b in range(2) for t in range(8) if y[b, t] != IGNORE])
    loss = F.cross_entropy(model(x).reshape(-1, TOK.vocab_size), y.reshape(-1))
    assert loss.item() == pytest.approx(by_hand, rel=1e-5)


class Answers:
    """A stand-in model whose greedy continuation is given: checks the counting, not a network."""

    def __init__(self, continuations):
        self.continuations = continuations

    def generate(self, idx, n, temperature):
        assert temperature == 0 and n == 4
        return np.stack([np.concatenate([row, TOK.encode(self.continuations[TOK.decode(row)])]) for row in idx])


def test_accuracy_counts_exact_answers():
    examples = reversal_problems(["abcd", "wxyz", "aaab", "qrst"])
    model = Answers({"abcd>": "dcba", "wxyz>": "zyxx", "aaab>": "baaa", "qrst>": "tsrq"})
    assert answer_accuracy(model, examples, TOK.encode, TOK.decode, batch_size=3) == 0.75


@pytest.mark.slow
def test_a_small_gpt_learns_to_reverse_held_out_words():
    train, test = split_reversal_problems(2000, 100, np.random.default_rng(1), length=3)
    mg.manual_seed(0)
    model = nn.GPT(TOK.vocab_size, 8, n_layer=2, n_head=2, d_model=32)
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = np.random.default_rng(2)
    for _ in range(300):
        x, y = supervised_batch([train[i] for i in rng.integers(0, len(train), 64)], TOK.encode)
        loss = F.cross_entropy(model(x).reshape(-1, TOK.vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert answer_accuracy(model, test, TOK.encode, TOK.decode) >= 0.9
