"""Date normalisation: the sequence-to-sequence task of chapter 9, generated from a seed, with no download.

A source is a date written the way people write dates; its target is the same date in ISO 8601:

    "Wednesday, the 3rd of March 1999"  ->  "1999-03-03"
    "3/3/99"                            ->  "1999-03-03"     (slashes: month first, as in the US)
    "03.03.1999"                        ->  "1999-03-03"     (dots: day first, as in Europe)

Every date lies in 1969-2068, the window in which a two-digit year is unambiguous under POSIX's rule (69-99
mean 1969-1999, 00-68 mean 2000-2068), which Python's `strptime` also follows.  A format is a pattern of
tokens: {d} day, {dd} zero-padded day, {o} ordinal day (3rd), {m}/{mm} month number, {B}/{b} month name and
its abbreviation, {A}/{a} weekday and its abbreviation, {Y}/{y} year with four or two digits.  Names are
written in English by this module itself, whatever the locale.

Splits: each date belongs to train, valid or test by a hash of its ISO string (10% test, 10% valid), so the
splits never share a date and do not change when the date range or the formats change.  The `unseen` split
writes test dates in formats that never occur in training (`UNSEEN_FORMATS`).  Introduced in chapter 9.
"""
import datetime
import random
import re

import torch

from lstm_lab.data.corpus import BOS, EOS, PAD, Vocab, hash_split

__all__ = ["TRAIN_FORMATS", "UNSEEN_FORMATS", "SPLITS", "ordinal", "render", "split_of", "split_dates",
           "make_examples", "source_vocab", "target_vocab", "check_source", "encode_batch"]

FIRST_DATE, LAST_DATE = datetime.date(1969, 1, 1), datetime.date(2068, 12, 31)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# (pattern, case): case is None (as written), "upper" or "lower"
TRAIN_FORMATS = (
    ("{d} {B} {Y}", None), ("{dd} {B} {Y}", None), ("{d} {b} {Y}", None), ("{B} {d}, {Y}", None),
    ("{b} {d}, {Y}", None), ("{b} {d}, {y}", None), ("{B} {o}, {Y}", None), ("{o} {B} {Y}", None),
    ("the {o} of {B} {Y}", None), ("{A}, the {o} of {B} {Y}", None), ("{A}, {B} {d}, {Y}", None),
    ("{a}, {d} {b} {Y}", None), ("{mm}/{dd}/{Y}", None), ("{m}/{d}/{Y}", None), ("{m}/{d}/{y}", None),
    ("{dd}.{mm}.{Y}", None), ("{dd}-{b}-{Y}", None), ("{d}-{b}-{y}", None), ("{Y}/{mm}/{dd}", None),
    ("{Y}.{mm}.{dd}", None), ("{Y}{mm}{dd}", None), ("{B} {d} {Y}", None), ("{d} {B}, {Y}", None),
    ("{b}. {d}, {Y}", None), ("{Y} {B} {d}", None), ("{A} {d} {B} {Y}", None), ("{dd}{b}{Y}", None),
    ("{B} {d}, {Y}", "upper"), ("{d} {b} {y}", "lower"), ("{a} {b} {dd} {Y}", None),
)
UNSEEN_FORMATS = (  # each recombines pieces that training shows only in other combinations
    ("{d}.{m}.{Y}", None), ("{B} the {o}, {Y}", None), ("{d} {b} {Y}", "upper"), ("{Y}, {B} {d}", None),
    ("{a} {d} {B} {Y}", None), ("{o} of {B}, {Y}", None),
)
SPLITS = ("train", "valid", "test", "unseen")
MAX_SOURCE_LEN = 48  # characters; `translate` rejects longer input


def ordinal(day):
    """3 -> '3rd', 11 -> '11th', 22 -> '22nd'.  Chapter 9."""
    suffix = "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def render(date, pattern, case=None):
    """The date written in a format: render(date(1999, 3, 3), "{b} {d}, {y}") -> 'Mar 3, 99'.  Chapter 9."""
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    values = {"d": str(date.day), "dd": f"{date.day:02d}", "o": ordinal(date.day), "m": str(date.month),
              "mm": f"{date.month:02d}", "B": month, "b": month[:3], "A": weekday, "a": weekday[:3],
              "Y": str(date.year), "y": f"{date.year % 100:02d}"}
    text = re.sub(r"\{(\w+)\}", lambda token: values[token.group(1)], pattern)
    return {None: text, "upper": text.upper(), "lower": text.lower()}[case]


def split_of(date):
    """'train', 'valid' or 'test': fixed for each date by a hash of its ISO string (10% test, 10% valid).  Chapter 9."""
    return hash_split(date.isoformat(), 10)


def split_dates(split):
    """Every date of a split ('unseen' uses the test dates), in calendar order.  Chapter 9."""
    days = (LAST_DATE - FIRST_DATE).days + 1
    dates = (FIRST_DATE + datetime.timedelta(days=k) for k in range(days))
    wanted = "test" if split == "unseen" else split
    return [date for date in dates if split_of(date) == wanted]


def make_examples(split, n, seed=0):
    """n examples of a split: a list of (source, target, format index) tuples, the same for the same seed.

    train, valid and test draw their formats from TRAIN_FORMATS; unseen from UNSEEN_FORMATS.  Chapter 9."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    formats = UNSEEN_FORMATS if split == "unseen" else TRAIN_FORMATS
    dates = split_dates(split)
    rng = random.Random(f"{seed}/{split}")  # a string seed: the same on every machine and Python version
    examples = []
    for _ in range(n):
        date, k = rng.choice(dates), rng.randrange(len(formats))
        examples.append((render(date, *formats[k]), date.isoformat(), k))
    return examples


def source_vocab():
    """Characters of every training format for every month and weekday, after <pad>: the encoder's vocabulary.

    Built from the formats, not from a sample, so it is the same for every seed.  Chapter 9."""
    probe = [datetime.date(2000, month, day) for month in range(1, 13) for day in (1, 12, 20, 25, 30)
             if (month, day) != (2, 30)]  # every month, weekday, digit and ordinal suffix appears
    chars = sorted({ch for date in probe for pattern, case in TRAIN_FORMATS for ch in render(date, pattern, case)})
    return Vocab([PAD] + chars)


def target_vocab():
    """<pad>, <bos>, <eos>, the ten digits and '-': the decoder's vocabulary.  Chapter 9."""
    return Vocab([PAD, BOS, EOS] + list("0123456789-"))


def check_source(text, vocab, max_len=MAX_SOURCE_LEN):
    """Raise ValueError (one line, saying what is allowed) unless `text` can be encoded by `vocab`.  Chapter 9."""
    if not isinstance(text, str):
        raise TypeError(f"a date to translate must be a str, got {type(text).__name__}")
    shown = repr(text) if len(text) <= 60 else f"{text[:40]!r}... ({len(text):,} characters)"
    if not text.strip():
        raise ValueError(f"empty input {shown}: expected a date such as '3 March 1999'")
    if len(text) > max_len:
        raise ValueError(f"input {shown} is longer than the model's limit of {max_len} characters")
    unknown = sorted(set(text) - set(vocab.stoi))
    if unknown:
        allowed = "".join(t for t in vocab.itos if len(t) == 1)
        raise ValueError(f"characters {''.join(unknown)!r} of {shown} are not among the {len(allowed)} the model "
                         f"reads: {allowed!r}")


def encode_batch(examples, src_vocab, tgt_vocab):
    """Tensors for a list of (source, target, ...) examples, time-major and padded with <pad> (id 0):

    src (S, B), lengths (B,), tgt_in (T, B) = <bos> target, tgt_out (T, B) = target <eos>.  Chapter 9."""
    sources = [src_vocab.encode(source) for source, *_ in examples]
    targets = [tgt_vocab.encode(list(target)) for _, target, *_ in examples]
    bos, eos = tgt_vocab.encode([BOS]), tgt_vocab.encode([EOS])
    pad = lambda seqs: torch.nn.utils.rnn.pad_sequence(seqs, padding_value=src_vocab.stoi[PAD])  # (L, B)
    lengths = torch.tensor([len(s) for s in sources])
    tgt_in, tgt_out = [torch.cat([bos, t]) for t in targets], [torch.cat([t, eos]) for t in targets]
    return pad(sources), lengths, pad(tgt_in), pad(tgt_out)
