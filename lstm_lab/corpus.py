"""From text to training windows: vocabularies, token ids, `batchify` into streams, truncated-BPTT windows.

Introduced in chapter 6.
"""
import hashlib
import json
from collections import Counter
from dataclasses import dataclass

import torch

from lstm_lab.data import fetch

EOS = "<eos>"  # marks the end of every line (sentence) in a word-level corpus


def hash_split(key, buckets):
    """'test', 'valid' or 'train' for a string, fixed by its sha256: bucket 0 of `buckets` is test, bucket 1
    valid, the rest train.  Stable when the data is reordered or grows.  Chapters 8 and 9."""
    bucket = int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % buckets
    return {0: "test", 1: "valid"}.get(bucket, "train")


class Vocab:
    """A bijection between tokens and ids 0..len-1.  Introduced in chapter 6."""

    def __init__(self, tokens):
        self.itos = list(tokens)  # id -> token
        self.stoi = {s: i for i, s in enumerate(self.itos)}  # token -> id
        if len(self.stoi) != len(self.itos):
            raise ValueError("a vocabulary's tokens must be distinct")

    @classmethod
    def build(cls, tokens, max_size=None):
        """Most frequent first (ties: first seen first), at most `max_size` tokens."""
        counts = Counter(tokens)  # Counter keeps first-seen order, and most_common's sort is stable
        return cls(token for token, _ in counts.most_common(max_size))

    def __len__(self):
        return len(self.itos)

    def encode(self, tokens):
        """1-D LongTensor of ids; a token not in the vocabulary raises KeyError naming it."""
        try:
            return torch.tensor([self.stoi[t] for t in tokens], dtype=torch.long)
        except KeyError as error:
            raise KeyError(f"token {error.args[0]!r} is not in the vocabulary ({len(self)} tokens)") from None

    def decode(self, ids):
        """List of tokens for a sequence of ids."""
        return [self.itos[int(i)] for i in ids]

    def sha256(self):
        """Hex sha256 of the tokens in id order: a checkpoint stores it to name the vocabulary it was trained with."""
        return hashlib.sha256(json.dumps(self.itos, ensure_ascii=False).encode("utf-8")).hexdigest()


def word_tokens(text, eos=EOS):
    """Whitespace-separated words, with `eos` after every line (PTB: one sentence a line)."""
    return [word for line in text.splitlines() for word in line.split() + [eos]]


def char_tokens(text):
    """Every character is a token, newlines included."""
    return list(text)


@dataclass
class Corpus:
    """A tokenised corpus: its vocabulary and one 1-D LongTensor of ids per split."""
    vocab: Vocab
    splits: dict  # split name -> (N,) LongTensor


def load_corpus(name, level="word", data_dir=None, allow_download=True, progress=True):
    """Read a registered corpus, build the vocabulary from its first split, and encode every split.

    level: "word" (tokens = words + <eos> per line) or "char".  Introduced in chapter 6."""
    tokenize = {"word": word_tokens, "char": char_tokens}.get(level)
    if tokenize is None:
        raise ValueError(f"unknown level {level!r}; choose one of: word, char")
    paths = fetch(name, data_dir, allow_download, progress)
    tokens = {split: tokenize(path.read_text("utf-8")) for split, path in paths.items()}
    vocab = Vocab.build(next(iter(tokens.values())))
    return Corpus(vocab, {split: vocab.encode(toks) for split, toks in tokens.items()})


def batchify(data, batch_size):
    """Cut a 1-D token sequence into `batch_size` contiguous streams, one per column.

    data: (N,) -> (N // batch_size, batch_size); the last N % batch_size tokens are dropped.
    With the alphabet and batch_size=4 (as in pytorch/examples):

        a b c d e f g h i j k l m n o p q r s t u v w x y z
                                   |
        column = one stream        v      row = one time step across the 4 streams
        ┌ a g m s ┐
        │ b h n t │     stream 0 reads a b c d e f, stream 1 reads g h i j k l, ...
        │ c i o u │     the rows are fed in order, so each column is read as
        │ d j p v │     continuous text and its hidden state can be carried
        │ e k q w │     from one window to the next
        └ f l r x ┘     (y and z are dropped)

    Introduced in chapter 6."""
    if data.dim() != 1:
        raise ValueError(f"batchify expects a 1-D token sequence, got shape {tuple(data.shape)}")
    if not 1 <= batch_size <= data.numel():
        raise ValueError(f"batch_size must be between 1 and the {data.numel()} tokens, got {batch_size}")
    steps = data.numel() // batch_size
    return data[: steps * batch_size].view(batch_size, steps).t().contiguous()  # (steps, B)


def num_windows(source, seq_len):
    """How many windows `bptt_windows(source, seq_len)` yields."""
    return -(-(source.shape[0] - 1) // seq_len)  # ceil((steps - 1) / seq_len)


def bptt_windows(source, seq_len):
    """Yield (inputs, targets) windows of a batchified source for truncated backpropagation through time.

    source: (S, B).  Each window: inputs = rows i .. i+T-1, targets = rows i+1 .. i+T, both (T, B) with
    T = seq_len (the last window may be shorter).  With seq_len=2 on the batchify example:

        inputs  ┌ a g m s ┐   targets ┌ b h n t ┐   next window: inputs c d, targets d e, ...
                └ b h n t ┘           └ c i o u ┘

    The target is the next token of the same stream, so windows tile each column with no gap or overlap.
    Introduced in chapter 6."""
    for i in range(0, source.shape[0] - 1, seq_len):
        T = min(seq_len, source.shape[0] - 1 - i)
        yield source[i: i + T], source[i + 1: i + 1 + T]
