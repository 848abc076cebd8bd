"""Character-level tokenizer for the text lessons (char-RNN, tiny GPT).

Every distinct character of a training text becomes one token id; ids follow
the sorted order of the characters, so the same text always gives the same
vocabulary.
"""
import numpy as np


class CharTokenizer:
    """Maps characters to integer ids and back.

    >>> tok = CharTokenizer.from_text("hello")
    >>> tok.vocab_size
    4
    >>> tok.encode("hell").tolist()
    [1, 0, 2, 2]
    >>> tok.decode([1, 0, 2, 2, 3])
    'hello'
    """

    def __init__(self, chars):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer: the vocabulary has repeated characters "
                             f"{sorted(c for c in set(chars) if chars.count(c) > 1)!r}")
        self.chars = chars
        self.stoi = {c: i for i, c in enumerate(chars)}

    @classmethod
    def from_text(cls, text):
        """The vocabulary of `text`: its distinct characters, sorted."""
        if not isinstance(text, str):
            raise TypeError(f"CharTokenizer.from_text expects a str, got {type(text).__name__}")
        return cls(sorted(set(text)))

    @property
    def vocab_size(self):
        return len(self.chars)

    def encode(self, text):
        """str -> int64 array of ids, one per character."""
        try:
            return np.fromiter((self.stoi[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError as exc:
            raise ValueError(f"CharTokenizer.encode: character {exc.args[0]!r} is not in the vocabulary "
                           f"of {self.vocab_size} characters") from None

    def decode(self, ids):
        """Sequence of ids (list, 1-D array or Tensor) -> str."""
        ids = np.asarray(getattr(ids, "data", ids))
        if ids.ndim != 1:
            raise ValueError(f"CharTokenizer.decode expects a 1-D sequence of ids, got shape {ids.shape}")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"CharTokenizer.decode expects integer ids, got dtype {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"CharTokenizer.decode: id {int(bad[0])} is outside the vocabulary "
                             f"range [0, {self.vocab_size})")
        return "".join(self.chars[i] for i in ids.tolist())

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size})"
