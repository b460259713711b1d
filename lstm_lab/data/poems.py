"""The Tang poem corpus of chapter 8: a fixed split, a character vocabulary, the forms, padded batches.

The corpus (`lstm_lab.data.download.fetch("tang")`) holds 57,580 poems of the chinese-poetry collection, one per line.
Each poem belongs to train, valid or test by a hash of its text (5% test, 5% valid), so the split does not
change when the corpus is reordered, and two copies of a poem always land in the same split.

A poem is read as <bos> c_1 ... c_n <eos>.  A batch pads the poems to its longest one with <pad> (the model and
its masked loss are in `lstm_lab.poem_model`).  The widely copied reference (the poetry chapter of Chen Yun's
PyTorch book, chenyuntc/pytorch-book) pads every poem in front to a fixed length, cuts what is longer, and counts
the padding as targets: `pad_fixed` and `padding_share` do the same, in front or at the end.

Forms ("5x4": four lines of five characters, ...): lines end in "，" and "。" alternately, as the corpus writes
them; `poem_slots` lays a form out for `lstm_lab.poem_model.generate_poem`.  Introduced in chapter 8.
"""
import re
import unicodedata
from collections import Counter

import torch
from torch import nn

from lstm_lab.config import InputError, whole_number
from lstm_lab.data.corpus import BOS, EOS, PAD, UNK, Vocab, hash_split
from lstm_lab.data.download import fetch

__all__ = ["PUNCTUATION", "FORMS", "FORM_NAMES", "poem_split", "load_poems", "poem_form", "poem_vocab", "encode_poem",
           "pad_batch", "batches", "pad_fixed", "padding_share", "check_form", "poem_slots", "is_han"]

PUNCTUATION = ("，", "。")  # after odd lines, after even lines
FORMS = {"5x4": (5, 4), "7x4": (7, 4), "5x8": (5, 8), "7x8": (7, 8)}  # name: (characters per line, lines)
FORM_NAMES = {"5x4": "five-character quatrain (五言绝句)",
              "7x4": "seven-character quatrain (七言绝句)",
              "5x8": "five-character regulated verse (五言律诗)",
              "7x8": "seven-character regulated verse (七言律诗)"}


def poem_split(poem):
    """'train', 'valid' or 'test' for a poem, from the sha256 of its text (5% test, 5% valid).  Chapter 8."""
    return hash_split(poem, 20)


def load_poems(data_dir=None, progress=False):
    """{"train", "valid", "test"}: the corpus's poems by split, in corpus order.  Chapter 8."""
    lines = fetch("tang", data_dir=data_dir, progress=progress)["text"].read_text("utf-8").splitlines()
    splits = {"train": [], "valid": [], "test": []}
    for poem in lines:
        splits[poem_split(poem)].append(poem)
    return splits


def poem_form(poem):
    """The form of a poem ("5x4", "7x4", "5x8", "7x8"), or None: lines ending alternately in ， and 。, all of
    five or all of seven characters, four or eight of them.  Chapter 8."""
    lines = re.findall(r"[^，。]+[，。]", poem)
    if "".join(lines) != poem:
        return None
    if any(line[-1] != PUNCTUATION[k % 2] for k, line in enumerate(lines)):
        return None
    widths = {len(line) - 1 for line in lines}
    for name, (width, count) in FORMS.items():
        if widths == {width} and len(lines) == count:
            return name
    return None


def poem_vocab(poems, min_count=1):
    """<pad>, <bos>, <eos>, <unk>, then every character seen at least `min_count` times, most frequent first;
    InputError (a ValueError) if that is no character.  Chapter 8."""
    counts = Counter(ch for poem in poems for ch in poem)
    kept = [ch for ch, n in counts.most_common() if n >= min_count]
    if not kept:
        most = max(counts.values(), default=0)
        raise InputError(f"min_count {min_count} keeps no character: the most frequent one of the {len(poems):,} "
                         f"training poems appears {most:,} times; expected min_count 1 to {max(most, 1):,}")
    return Vocab([PAD, BOS, EOS, UNK] + kept)


def encode_poem(poem, vocab):
    """LongTensor ids of <bos> poem <eos>; a character outside the vocabulary becomes <unk>.  Chapter 8."""
    unk = vocab.stoi[UNK]
    return torch.tensor([vocab.stoi[BOS]] + [vocab.stoi.get(ch, unk) for ch in poem] + [vocab.stoi[EOS]])


def pad_batch(poems, vocab):
    """(inputs (T, B), targets (T, B), lengths (B,)): each poem's ids without the last / without the first,
    padded with <pad> (id 0) to the longest; lengths counts the real input positions.  Chapter 8."""
    ids = [encode_poem(poem, vocab) for poem in poems]
    inputs = nn.utils.rnn.pad_sequence([t[:-1] for t in ids], padding_value=vocab.stoi[PAD])
    targets = nn.utils.rnn.pad_sequence([t[1:] for t in ids], padding_value=vocab.stoi[PAD])
    return inputs, targets, torch.tensor([len(t) - 1 for t in ids])


def batches(poems, batch_size, generator=None, bucket=True):
    """Lists of poems, `batch_size` each (the last may be smaller).  bucket=True sorts the poems by length
    inside chunks of 50 batches, so a batch holds poems of similar length and little padding; the order of
    the chunks and of the batches is shuffled by `generator` (None: corpus order).  Chapters 3, 4, 6, 7, 8 and 9."""
    if not whole_number(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be a whole number of poems, 1 or more, got {batch_size!r}")
    if not isinstance(poems, (list, tuple)) or not all(isinstance(poem, str) for poem in poems):
        raise TypeError(f"poems must be a list of str, got {type(poems).__name__}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator (or None: corpus order), got {type(generator).__name__}")
    order = torch.randperm(len(poems), generator=generator).tolist() if generator is not None \
        else list(range(len(poems)))
    if bucket:
        chunk = 50 * batch_size
        order = [i for start in range(0, len(order), chunk)
                 for i in sorted(order[start:start + chunk], key=lambda i: len(poems[i]))]
    groups = [[poems[i] for i in order[start:start + batch_size]] for start in range(0, len(order), batch_size)]
    if generator is not None:
        groups = [groups[k] for k in torch.randperm(len(groups), generator=generator).tolist()]
    return groups


def pad_fixed(poems, vocab, fixed_len=125, side="end"):
    """(inputs, targets), each (fixed_len, B): every <bos> poem <eos> cut to its first fixed_len + 1 ids, or padded
    with <pad> to that length, and every one of the fixed_len targets counted in the loss, padding included.
    side="front" puts the padding before the poem, as the widely copied reference does (its loss then also has
    <bos> as a target, after the padding); "end" after it.  Chapter 8."""
    if side not in ("front", "end"):
        raise ValueError(f"side must be 'front' or 'end', got {side!r}")
    ids = [encode_poem(poem, vocab)[:fixed_len + 1] for poem in poems]
    padded = torch.full((fixed_len + 1, len(ids)), vocab.stoi[PAD], dtype=torch.long)
    for b, t in enumerate(ids):
        if side == "end":
            padded[:len(t), b] = t
        else:
            padded[fixed_len + 1 - len(t):, b] = t
    return padded[:-1], padded[1:]


def padding_share(poems, fixed_len, side="end"):
    """The share of targets that are <pad> when every poem is padded (or cut) to `fixed_len` positions and the
    padding is counted in the loss (`pad_fixed`; side="front" as the widely copied reference does).  Chapter 8."""
    extra = 1 if side == "front" else 0  # in front, <bos> is a target too: it follows the padding
    real = sum(min(len(poem) + 1 + extra, fixed_len) for poem in poems)  # the poem's characters and its <eos>
    return 1 - real / (fixed_len * len(poems))


def check_form(form):
    """The (width, lines) of a form name; ValueError listing the forms for any other.  Chapter 8."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of: {', '.join(FORMS)} (characters x lines)")
    return FORMS[form]


def poem_slots(form):
    """The characters of a poem of `form` in order: None where the model writes a character, the punctuation
    mark where the form puts one ("5x4": 5 Nones, "，", 5 Nones, "。", ...).  Chapter 8."""
    width, lines = check_form(form)
    return [None if position < width else PUNCTUATION[line % 2]
            for line in range(lines) for position in range(width + 1)]


def is_han(ch):
    """Whether the string `ch` is one Chinese character (a CJK ideograph), the only thing a form's character slot holds.

    The corpus also holds brackets, digits, other punctuation and its mark for a lost character (□), from titles
    and notes that the collection writes into some poems; a generated poem never writes them.  Chapter 8."""
    ideographs = ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH")
    return len(ch) == 1 and unicodedata.name(ch, "").startswith(ideographs)
