"""From text to training windows: vocabularies, token ids, `batchify` into streams, truncated-BPTT windows.

`load_corpus` reads a registered corpus (PTB, WikiText-2, Tiny Shakespeare, the Tang poems) or a student's own
text file or folder, at word or character level, into a vocabulary and one tensor of ids per split:

    text files --read--> train / valid / test texts --tokens--> vocabulary of train --ids--> Corpus

A single text (Tiny Shakespeare, Tang, a file of your own) is cut at line boundaries into the first 90% of its
lines (train), the next 5% (valid) and the last 5% (test): contiguous, like nanoGPT's shakespeare_char, and a
function of the text alone.  Introduced in chapter 6.
"""
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from lstm_lab.config import InputError, whole_number
from lstm_lab.data.download import CORPORA, DataNotFoundError, fetch, files_sha256, text_files

__all__ = ["PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS", "hash_split", "Vocab", "word_tokens", "char_tokens", "Corpus",
           "read_text", "split_lines", "train_vocab", "load_corpus", "batchify", "num_windows", "bptt_windows"]

# The special tokens, one set for the whole package (chapters 8 and 9 import them from here):
PAD = "<pad>"  # fills a batch's shorter sequences up to its longest (chapters 8, 9)
BOS = "<bos>"  # starts a sequence: the first input when a model writes a poem or a date (chapters 8, 9)
EOS = "<eos>"  # ends every line (sentence) of a word-level corpus, and every poem or date (chapters 6, 8, 9)
UNK = "<unk>"  # stands for every token the vocabulary does not hold (chapters 6, 8)
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # marks, not text: a vocabulary of these alone cannot model anything


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
    """Whitespace-separated words, with `eos` after every line (PTB: one sentence a line).  Chapter 6."""
    return [word for line in text.splitlines() for word in line.split() + [eos]]


def char_tokens(text):
    """Every character is a token, newlines included.  Chapter 6."""
    return list(text)


@dataclass
class Corpus:
    """A tokenised corpus: its vocabulary, one 1-D LongTensor of ids per split, and where they come from.  Chapter 6."""
    vocab: Vocab
    splits: dict  # split name ("train", "valid", "test") -> (N,) LongTensor
    description: str = ""  # one plain sentence: the files read, how they were split, the vocabulary
    sha256: str = None  # of the text files read (`files_sha256`): a resumed run checks its text with it


def tokenizer(level):
    """The tokenizer of a level: `word_tokens` for "word", `char_tokens` for "char"; ValueError for any other."""
    tokenize = {"word": word_tokens, "char": char_tokens}.get(level)
    if tokenize is None:
        raise ValueError(f"unknown level {level!r}; choose one of: word, char")
    return tokenize


def read_text(path):
    """The text of a UTF-8 file (a leading byte-order mark dropped).  InputError (a ValueError), in one line, for a
    file that is not UTF-8 text (a binary file) or holds nothing but whitespace.  Introduced in chapter 6."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}): "
                         f"expected a plain text file") from None
    if "\x00" in text:
        raise InputError(f"{path} holds NUL bytes, so it is a binary file: expected a plain text file")
    if not text.strip():
        raise InputError(f"{path} is empty: expected a file with some text in it")
    return text


def join_texts(texts):
    """The texts one after the other, a newline added after any but the last that lacks one, so no line of one
    runs into the next (a single text is returned as it is)."""
    texts = list(texts)
    return "".join(text if text.endswith("\n") else text + "\n" for text in texts[:-1]) + texts[-1]


def split_lines(text, percent=(90, 5, 5)):
    """{"train", "valid", "test"}: a text cut at line boundaries into three contiguous parts.

    Of its n lines, the first n * 90 // 100 are train, the lines up to n * 95 // 100 valid, the rest test
    (percent gives the three shares, summing to 100).  The parts joined in order are the text, so the split
    depends on the text alone and covers it.  Introduced in chapter 6."""
    lines = text.splitlines(keepends=True)
    a, b = len(lines) * percent[0] // 100, len(lines) * (percent[0] + percent[1]) // 100
    return {"train": "".join(lines[:a]), "valid": "".join(lines[a:b]), "test": "".join(lines[b:])}


def describe_split(source, parts):
    """"SOURCE split by lines: lines 1-36,000 train (90%), lines 36,001-38,000 valid (5%), ..." for the parts
    {split: text} of a text."""
    counts = {split: len(text.splitlines()) for split, text in parts.items()}
    total, first, pieces = sum(counts.values()), 1, []
    for split, count in counts.items():
        lines = {0: "no lines", 1: f"line {first:,}"}.get(count, f"lines {first:,}-{first + count - 1:,}")
        pieces.append(f"{lines} {split} ({100 * count / total:.0f}%)")
        first += count
    return f"{source} split by lines: " + ", ".join(pieces)


def train_vocab(train, held_out=(), max_size=None, unk=UNK):
    """The vocabulary of the train tokens, most frequent first (ties: first seen first), as `Vocab.build`.

    `unk` is added, last, only when it is needed: when `max_size` leaves tokens out (the vocabulary then holds
    the max_size - 1 most frequent and `unk`) or when a `held_out` (valid, test) token is not in it.  So PTB and
    WikiText-2, whose texts already hold <unk>, keep their vocabularies.  Introduced in chapter 6."""
    ranked = [token for token, _ in Counter(train).most_common()]
    kept = ranked[:max_size]  # max_size None keeps all
    known = set(kept)
    if unk not in known and (len(kept) < len(ranked) or any(token not in known for token in held_out)):
        kept = (kept[:-1] if max_size is not None and len(kept) == max_size else kept) + [unk]
    return Vocab(kept)


def encode_or_unk(vocab, tokens, unk=UNK):
    """(N,) LongTensor of ids, a token outside the vocabulary read as `unk` (when the vocabulary has it;
    otherwise `Vocab.encode`'s KeyError).  Introduced in chapter 6."""
    if unk not in vocab.stoi:
        return vocab.encode(tokens)
    unk_id = vocab.stoi[unk]
    return torch.tensor([vocab.stoi.get(token, unk_id) for token in tokens], dtype=torch.long)


def check_split_sizes(tokens, source, least=2):
    """Raise InputError (a ValueError), in one line, unless every split of {split: tokens} holds `least` tokens or
    more."""
    sizes = {split: len(toks) for split, toks in tokens.items()}
    if min(sizes.values()) < least:
        held = ", ".join(f"{split} {n:,}" for split, n in sizes.items())
        raise InputError(f"{source} is too short: its splits hold {held} tokens, expected at least {least} in each "
                         f"(a single text needs at least 11 lines to give valid and test a line each)")


def load_corpus(name, level="word", data_dir=None, allow_download=True, progress=True, max_vocab=None):
    """Read a corpus into a `Corpus`: the vocabulary of its train split and the ids of train, valid and test.

    name: a registered corpus ("ptb", "wikitext-2", "tang", "tinyshakespeare": `lstm_lab.data.download.CORPORA`),
    found or downloaded and checked, or else the path of your own text: a file, or a folder
    (`lstm_lab.data.download.text_files`: train.txt, valid.txt and test.txt as the splits, or all its .txt files joined in name order).  One argument
    names both, so a run's configuration records its corpus as one string and reloads it the same way, whether it
    came from `train --corpus wikitext-2` or `train --text-file F`.  A registered name wins over a folder of the
    same name: write ./ptb for the folder.
    A single text is cut by `split_lines` (lines: first 90% train, next 5% valid, last 5% test).
    level: "word" (tokens = words + <eos> per line) or "char" (every character, newlines included).
    max_vocab: keep only the max_vocab most frequent train tokens, <unk> included; the rest read as <unk>.
    Tokens of valid or test that train lacks read as <unk>, added to the vocabulary only then (`train_vocab`);
    PTB's ids and vocabulary are those of its own files, unchanged.

    Bad input raises one line before any training: ValueError for an unknown level or a max_vocab under 2;
    InputError (a ValueError) for a file that is not UTF-8 text or is empty, a text too short for 2 tokens in each
    split, a max_vocab that keeps nothing but special tokens; DataNotFoundError for a
    name that is neither registered nor a path, or a folder without .txt files.  Introduced in chapter 6."""
    tokenize = tokenizer(level)
    if max_vocab is not None and not whole_number(max_vocab):
        raise TypeError(f"max_vocab must be an int (or None: every token), got {max_vocab!r}")
    if max_vocab is not None and max_vocab < 2:
        raise ValueError(f"max_vocab must be at least 2 (a token and <unk>), got {max_vocab}")
    texts, source, sha256 = corpus_texts(name, data_dir, allow_download, progress)
    tokens = {split: tokenize(text) for split, text in texts.items()}
    check_split_sizes(tokens, source)
    vocab = train_vocab(tokens["train"], [t for split in ("valid", "test") for t in tokens[split]], max_vocab)
    if all(token in SPECIAL_TOKENS for token in vocab.itos):
        raise InputError(f"the vocabulary of {source} keeps only {', '.join(vocab.itos)}: every word would read as "
                         f"{UNK}; expected max_vocab of {len(vocab) + 1} or more")
    splits = {split: encode_or_unk(vocab, toks) for split, toks in tokens.items()}
    description = f"{source}; {level} level, vocabulary of train: {len(vocab):,} tokens{unk_note(vocab, tokens)}"
    return Corpus(vocab, splits, description, sha256)


def corpus_texts(name, data_dir=None, allow_download=True, progress=True):
    """({"train", "valid", "test"}: text, where they come from in words, sha256 of the files read) of a corpus
    named as `load_corpus` names it: a registered corpus or the path of a text file or folder.  A single text
    is cut by `split_lines`.  Introduced in chapter 6."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"a corpus is a registered name ({', '.join(CORPORA)}) or the path of a text file or folder, "
                        f"got {type(name).__name__}")
    if name in CORPORA:
        files = {split: [path] for split, path in fetch(name, data_dir, allow_download, progress).items()}
    elif name != "" and Path(name).exists():
        files = text_files(name)
    else:
        raise DataNotFoundError(f"{name!r} is neither a registered corpus ({', '.join(CORPORA)}) nor an existing "
                                f"file or folder: expected one of those")
    texts = {split: join_texts(read_text(path) for path in paths) for split, paths in files.items()}
    source = describe_files(name, files)
    if "text" in texts:
        texts = split_lines(texts.pop("text"))
        source = describe_split(source, texts)
    return texts, source, files_sha256([path for paths in files.values() for path in paths])


def describe_files(name, files):
    """The files {split: [Path, ...]} of corpus `name` in words: "train ptb/train.txt, valid ptb/valid.txt, test
    ptb/test.txt", "tinyshakespeare/input.txt", "notes.txt" or "the 3 .txt files of poems joined in name order"."""
    shown = (lambda path: f"{path.parent.name}/{path.name}") if name in CORPORA else str
    if "text" not in files:
        return ", ".join(f"{split} {shown(paths[0])}" for split, paths in files.items())
    paths = files["text"]
    if len(paths) == 1:
        return shown(paths[0])
    return f"the {len(paths)} .txt files of {paths[0].parent} joined in name order"


def unk_note(vocab, tokens, unk=UNK):
    """"; outside it, read as <unk>: train 0.0%, valid 9.7%, test 9.8%" for {split: tokens}, or "" when every
    token is in the vocabulary."""
    shares = {split: sum(t not in vocab.stoi for t in toks) / len(toks) for split, toks in tokens.items()}
    if not any(shares.values()):
        return ""
    percents = ", ".join(f"{split} {100 * share:.1f}%" for split, share in shares.items())
    return f"; outside it, read as {unk}: {percents}"


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
    """How many windows `bptt_windows(source, seq_len)` yields.  Chapter 6."""
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
