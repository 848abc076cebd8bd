"""Tokenizers: text to integer ids and back (lessons `08_gpt` and `10_tokens_and_generation`).

`CharTokenizer`: every distinct character of a training text becomes one token id; ids follow the
sorted order of the characters, so the same text always gives the same vocabulary.

`BPETokenizer`: byte-level byte-pair encoding as GPT-2 and GPT-4 do it. The text is split into chunks
by a regex (words, numbers, punctuation, whitespace), each chunk's UTF-8 bytes start as tokens
0…255, and training repeatedly merges the most frequent adjacent pair of tokens into a new token.
Encoding applies the learned merges by rank exactly as tiktoken does, so
`tiktoken.Encoding(name, pat_str=tok.pattern, mergeable_ranks=tok.mergeable_ranks(), special_tokens={})`
gives the same ids.
"""
import heapq
import json
from collections import Counter, defaultdict

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


# The split regexes of GPT-2 (as released with its encoder) and GPT-4 (tiktoken's cl100k_base). They keep a
# merge from ever crossing a word boundary: " the" and "the." never become one token.
SPLIT_PATTERNS = {
    "gpt2": r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""",
    "gpt4": r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+""",
}
WHOLE_TEXT = r"[\s\S]+"  # pattern=None: the whole text is one chunk (the same as no split)
FILE_FORMAT = "minigrad.BPETokenizer"


def split_pattern(pattern):
    """The regex string for a pattern name ("gpt4", "gpt2" or None for no split)."""
    if pattern is None:
        return WHOLE_TEXT
    if pattern not in SPLIT_PATTERNS:
        raise ValueError(f"BPETokenizer: pattern must be one of {sorted(SPLIT_PATTERNS)} or None (no split), "
                         f"got {pattern!r}")
    return SPLIT_PATTERNS[pattern]


def merge_pair(ids, pair, new_id, sites=None):
    """ids with every occurrence of `pair`, scanned left to right without overlap, replaced by new_id.

    merge_pair([1, 1, 1], (1, 1), 9) == [9, 1]: the first two merge, the third has no partner left.
    If `sites` is a list, each merge appends (its position in ids, its position in the result).
    """
    a, b = pair
    out, i, last = [], 0, len(ids) - 1
    while i < last:
        try:
            j = ids.index(a, i, last)  # the scan for the left token runs in C
        except ValueError:
            break
        if ids[j + 1] == b:
            out.extend(ids[i:j])
            if sites is not None:
                sites.append((j, len(out)))
            out.append(new_id)
            i = j + 2
        else:
            out.extend(ids[i:j + 1])
            i = j + 1
    out.extend(ids[i:])
    return out


class PairCounts:
    """Counts of adjacent token pairs over a set of distinct chunks, each weighted by how often it occurs,
    updated chunk by chunk after each merge instead of recounted over the whole text.

    `where[pair]` holds every chunk that contains the pair (and perhaps some that no longer do: a
    chunk is not dropped from the sets of the pairs a merge removes from it), so a merge visits only
    those; a max-heap
    of (−count, pair) with stale entries skipped on the way out finds the most frequent pair.
    Ties go to the pair that occurs first in the text (the first chunk holding it, then its position
    there), the order in which a full recount over the text would meet them.
    """

    def __init__(self, chunks, weights):
        self.chunks, self.weights = chunks, weights  # chunks in order of first appearance in the text
        self.count = defaultdict(int)
        self.where = defaultdict(set)
        for c, ids in enumerate(chunks):
            for pair in zip(ids, ids[1:]):
                self.count[pair] += weights[c]
                self.where[pair].add(c)
        self.heap = [(-n, pair) for pair, n in self.count.items()]
        heapq.heapify(self.heap)

    def first_occurrence(self, pair):
        for c in sorted(self.where[pair]):  # may hold chunks that lost the pair since (see merge)
            ids = self.chunks[c]
            for i in range(len(ids) - 1):
                if ids[i] == pair[0] and ids[i + 1] == pair[1]:
                    return c, i
        raise AssertionError(f"pair {pair} has a count but no chunk holds it")

    def most_frequent(self):
        """The most frequent pair (ties: the first in the text), or None when no chunk has two tokens left."""
        while self.heap and self.count.get(self.heap[0][1], 0) != -self.heap[0][0]:
            heapq.heappop(self.heap)  # stale: that pair's count has changed since the entry went in
        if not self.heap:
            return None
        neg = self.heap[0][0]
        tied = set()
        while self.heap and self.heap[0][0] == neg:
            pair = heapq.heappop(self.heap)[1]
            if self.count.get(pair, 0) == -neg:
                tied.add(pair)
        best = min(tied, key=self.first_occurrence)
        for pair in tied:  # the others stay candidates; best's entry goes stale when it is merged
            heapq.heappush(self.heap, (neg, pair))
        return best

    def merge(self, pair, new_id):
        """Replace pair by new_id in every chunk that holds it, and move the counts of the pairs that changed.

        Only pairs next to a merge change: in the old ids those at positions j − 1, j, j + 1 of each merge
        at j disappear, in the new ids those at q − 1, q of each new token at q appear. So a merge costs
        the number of places it happens, even in one long chunk (pattern=None).
        """
        changed = set()
        for c in self.where.pop(pair):
            old, w, sites = self.chunks[c], self.weights[c], []
            new = merge_pair(old, pair, new_id, sites)
            gone = {p for j, _ in sites for p in (j - 1, j, j + 1) if 0 <= p < len(old) - 1}
            came = {p for _, q in sites for p in (q - 1, q) if 0 <= p < len(new) - 1}
            for p in gone:
                self.count[old[p], old[p + 1]] -= w
                changed.add((old[p], old[p + 1]))
            for p in came:
                self.count[new[p], new[p + 1]] += w
                self.where[new[p], new[p + 1]].add(c)
                changed.add((new[p], new[p + 1]))
            self.chunks[c] = new
        for p in changed:
            if self.count[p] > 0:
                heapq.heappush(self.heap, (-self.count[p], p))
            else:
                del self.count[p]
                self.where.pop(p, None)


def byte_pair_merge(piece, ranks):
    """The token ids of one chunk of bytes: tiktoken's rule, merge by rank until no pair is a token.

    Among the adjacent pairs of parts whose concatenation is in `ranks`, merge the one with the lowest
    rank (the leftmost among equals), then look again. A heap of (rank, start) over a linked list of
    parts does this in O(n log n) instead of rescanning all pairs after each merge.
    """
    n = len(piece)
    if piece in ranks:  # tiktoken's shortcut: a chunk that is itself a token is that token
        return [ranks[piece]]
    end = list(range(1, n + 1))  # end[s]: where the part starting at byte s ends; −1 once merged away
    start = list(range(n))  # start[e − 1]: where the part ending at byte e starts
    heap = [(ranks[piece[s:s + 2]], s) for s in range(n - 1) if piece[s:s + 2] in ranks]
    heapq.heapify(heap)
    while heap:
        rank, s = heapq.heappop(heap)
        mid = end[s]
        if mid < 0 or mid >= n or ranks.get(piece[s:end[mid]]) != rank:
            continue  # stale: this part has merged since the entry went in
        e = end[mid]
        end[s], end[mid] = e, -1
        start[e - 1] = s
        if s > 0:
            left = start[s - 1]
            if piece[left:e] in ranks:
                heapq.heappush(heap, (ranks[piece[left:e]], left))
        if e < n and piece[s:end[e]] in ranks:
            heapq.heappush(heap, (ranks[piece[s:end[e]]], s))
    ids, s = [], 0
    while s < n:
        ids.append(ranks[piece[s:end[s]]])
        s = end[s]
    return ids


class BPETokenizer:
    """Byte-level BPE (lesson `10_tokens_and_generation`).

    >>> tok = BPETokenizer()
    >>> tok.train("low lower lowest", 258, pattern="gpt2")
    >>> [tok.vocab[i] for i in (256, 257)]
    [b'lo', b'low']
    >>> tok.encode("lowlow"), tok.decode(tok.encode("lowlow"))
    ([257, 257], 'lowlow')

    Token ids 0…255 are the bytes; id 256 + i is the i-th merge. `vocab[i]` is the bytes of token i,
    `merges` the merged pairs in order, `pattern` the split regex (tiktoken's pat_str).
    """

    def __init__(self):
        self.split = "gpt4"
        self.pattern = split_pattern(self.split)
        self.merges = []  # [(left id, right id)] in the order learned; merge i made token 256 + i
        self.vocab = [bytes([b]) for b in range(256)]
        self._reset_caches()

    def _reset_caches(self):
        self._ranks = {token: i for i, token in enumerate(self.vocab)}
        self._cache = {}  # chunk bytes -> ids: text repeats its words, so most chunks are looked up once
        import regex
        self._regex = regex.compile(self.pattern)

    @property
    def vocab_size(self):
        return len(self.vocab)

    def train(self, text, vocab_size, pattern="gpt4"):
        """Learn vocab_size − 256 merges from text; each merges the most frequent adjacent pair of tokens.

        Pairs are counted within the chunks of the split pattern ("gpt4", "gpt2", or None: the whole
        text is one chunk). A chunk that repeats is counted once with its multiplicity, and after a
        merge only the chunks that held the pair are recounted (PairCounts), which makes 1,000 merges
        on the Python docs take seconds. A merged pair whose bytes already form a token (b"ab" + b"c"
        after b"a" + b"bc") becomes that token: tiktoken's ranks are keyed by bytes, so the vocabulary
        never holds the same bytes twice. Stops early, with a warning, when no chunk has a pair left.
        """
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train: text must be a str, got {type(text).__name__}")
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 256:
            raise ValueError(f"BPETokenizer.train: vocab_size must be an integer >= 256 (the 256 byte tokens "
                             f"come first), got {vocab_size!r}")
        self.split, self.pattern = pattern, split_pattern(pattern)
        self.merges, self.vocab = [], [bytes([b]) for b in range(256)]
        self._reset_caches()
        chunk_counts = Counter(self._regex.findall(text))  # insertion order = first appearance
        pairs = PairCounts([list(chunk.encode("utf-8")) for chunk in chunk_counts], list(chunk_counts.values()))
        ids_of = {}  # bytes -> id of a token made by a merge
        while len(self.vocab) < vocab_size:
            pair = pairs.most_frequent()
            if pair is None:
                import warnings
                warnings.warn(f"BPETokenizer.train: the text has no pair left to merge after {len(self.merges)} "
                              f"merges; the vocabulary has {len(self.vocab)} tokens, not {vocab_size}", stacklevel=2)
                break
            token = self.vocab[pair[0]] + self.vocab[pair[1]]
            if token not in ids_of:
                ids_of[token] = len(self.vocab)
                self.vocab.append(token)
                self.merges.append(pair)
            pairs.merge(pair, ids_of[token])
        self._reset_caches()

    def mergeable_ranks(self):
        """{token bytes: id}, what tiktoken.Encoding takes as mergeable_ranks."""
        return dict(self._ranks)

    def encode(self, text):
        """str -> list of token ids: split into chunks, then merge each chunk's bytes by rank (byte_pair_merge)."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.encode: text must be a str, got {type(text).__name__}")
        ids = []
        for chunk in self._regex.findall(text):
            piece = chunk.encode("utf-8")
            cached = self._cache.get(piece)
            if cached is None:
                cached = self._cache[piece] = byte_pair_merge(piece, self._ranks)
            ids.extend(cached)
        return ids

    def decode(self, ids):
        """Ids -> str: the tokens' bytes joined and read as UTF-8 (a cut multi-byte character becomes U+FFFD,
        as in tiktoken, since a sampled sequence of tokens need not be valid UTF-8)."""
        ids = np.asarray(getattr(ids, "data", ids))
        if ids.ndim != 1:
            raise ValueError(f"BPETokenizer.decode: ids must be a 1-D sequence, got shape {ids.shape}")
        if ids.size and ids.dtype.kind not in "iu":
            raise TypeError(f"BPETokenizer.decode: ids must be integers, got dtype {ids.dtype}")
        bad = ids[(ids < 0) | (ids >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"BPETokenizer.decode: ids holds {int(bad[0])}, outside the vocabulary "
                             f"[0, {self.vocab_size})")
        return b"".join(self.vocab[i] for i in ids.tolist()).decode("utf-8", errors="replace")

    # ----- saving: JSON text, never pickle ----------------------------------------------------
    def to_json(self):
        return json.dumps({"format": FILE_FORMAT, "version": 1, "split": self.split, "pattern": self.pattern,
                           "merges": [list(p) for p in self.merges]})

    @classmethod
    def from_json(cls, text, source="the tokenizer"):
        def bad(why):
            return ValueError(f"{source} is not a minigrad BPETokenizer file: {why}")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise bad(f"it is not JSON ({exc})") from None
        if not isinstance(data, dict) or data.get("format") != FILE_FORMAT:
            raise bad(f"it lacks \"format\": \"{FILE_FORMAT}\"")
        if data.get("version") != 1:
            raise bad(f"version {data.get('version')!r}, this minigrad reads version 1")
        split, merges = data.get("split"), data.get("merges")
        if split is not None and split not in SPLIT_PATTERNS or data.get("pattern") != split_pattern(split):
            raise bad(f"split {split!r} and pattern {data.get('pattern')!r} do not match a known split pattern")
        if not isinstance(merges, list):
            raise bad("\"merges\" is not a list")
        tok = cls()
        tok.split, tok.pattern = split, data["pattern"]
        known = set(tok.vocab)
        for i, pair in enumerate(merges):
            n = len(tok.vocab)
            if (not isinstance(pair, list) or len(pair) != 2
                    or not all(isinstance(t, int) and not isinstance(t, bool) and 0 <= t < n for t in pair)):
                raise bad(f"merge {i} is {pair!r}, not two ids below {n}")
            token = tok.vocab[pair[0]] + tok.vocab[pair[1]]
            if token in known:
                raise bad(f"merge {i} makes {token!r}, which is already token {tok.vocab.index(token)}")
            known.add(token)
            tok.vocab.append(token)
            tok.merges.append(tuple(pair))
        tok._reset_caches()
        return tok

    def save(self, path):
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path):
        with open(path, "rb") as f:
            return cls.from_json(f.read(), source=str(path))

    def __repr__(self):
        return f"BPETokenizer(vocab_size={self.vocab_size}, pattern={self.split!r})"
