"""Supervised fine-tuning (lesson `11_fine_tuning`): a task with right answers, a loss on the answers only.

Pretraining teaches a GPT to continue any text; fine-tuning in the supervised sense teaches it one job
from (prompt, answer) pairs. The job here is made up by the project, so nothing is downloaded:
reverse a four-letter word, "abcd>" → "dcba". A pretrained model cannot do it (the docs never show it),
every example has the same length, and answering needs attention to look at other places than it
learned to (the last letter first), so adapting the attention weights matters.

The loss is the language-model loss on the answer positions only,

    L = −(1/|A|) Σ_{t ∈ A} log p(x_{t+1} | x_≤t)        A = the positions whose next token is an answer token

so the model is not trained to predict the (random) prompts. The prompt positions get the target −100,
which `cross_entropy(..., ignore_index=-100)` skips, as in PyTorch.
"""
import numpy as np

IGNORE = -100  # the target of a position that does not count (cross_entropy's ignore_index)


def reversal_problems(words):
    """(prompt, answer) for lowercase words of one length: "abcd>" and "dcba"."""
    return [(w + ">", w[::-1]) for w in words]


def split_reversal_problems(n_train, n_test, rng, length=4):
    """n_train + n_test distinct random lowercase words; the n_test held out never appear in training, so
    accuracy on them measures reversal learned, not answers memorised."""
    if n_train + n_test > 26 ** length // 2:
        raise ValueError(f"split_reversal_problems: ask for at most {26 ** length // 2} words of length {length}")
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = []
    while len(words) < n_train + n_test:
        draws = letters[rng.integers(0, 26, size=(n_train + n_test, length))]
        words = list(dict.fromkeys(words + ["".join(w) for w in draws]))
    words = words[:n_train + n_test]
    return reversal_problems(words[:n_train]), reversal_problems(words[n_train:])


def supervised_batch(examples, encode):
    """Token ids x (B, T) of prompt + answer, and targets y (B, T): the next token where it is an answer
    token, IGNORE elsewhere. Every example must encode to the same lengths (fixed-width problems do)."""
    rows = [(np.asarray(encode(p), dtype=np.int64), np.asarray(encode(a), dtype=np.int64)) for p, a in examples]
    if len({(len(p), len(a)) for p, a in rows}) != 1:
        raise ValueError("supervised_batch: every prompt and every answer must encode to the same number of tokens")
    tokens = np.stack([np.concatenate([p, a]) for p, a in rows])  # (B, P + A)
    P = len(rows[0][0])
    x, y = tokens[:, :-1], tokens[:, 1:].copy()  # (B, T): position t predicts token t + 1
    y[:, :P - 1] = IGNORE  # targets that are still prompt tokens
    return x, y


def answer_accuracy(model, examples, encode, decode, batch_size=500):
    """The fraction of examples whose greedy answer (temperature 0, KV cache) is exactly right."""
    correct = 0
    for i in range(0, len(examples), batch_size):
        chunk = examples[i:i + batch_size]
        prompts = np.stack([np.asarray(encode(p), dtype=np.int64) for p, _ in chunk])  # (B, P)
        n_answer = len(encode(chunk[0][1]))
        out = model.generate(prompts, n_answer, temperature=0)  # (B, P + A)
        correct += sum(decode(row[prompts.shape[1]:]) == a for row, (_, a) in zip(out, chunk))
    return correct / len(examples)
