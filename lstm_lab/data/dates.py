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
splits never share a date and do not change when the date range or the formats change.  A training example is
written in one of `TRAIN_FORMATS`, as it is or (one time in ten each) in upper or lower case.  Two tests write
the test dates in formats training never shows:

    unseen     `UNSEEN_FORMATS`: recombinations of pieces that training shows in other combinations
    realistic  `REALISTIC_FORMATS`: layouts people write that the generator never produces, written by hand,
               of three kinds (`format_kind`): month or weekday names, numbers only, ISO-like year-month-day

Each example of these two is a string that no format before it writes for its date.  `NOT_DATES` (written by
hand) and `make_non_dates` (generated) are inputs that name no date at all: what a translator should refuse.
Introduced in chapter 9.
"""
import calendar
import datetime
import random
import re

import torch

from lstm_lab.data.corpus import BOS, EOS, PAD, Vocab, hash_split

__all__ = ["TRAIN_FORMATS", "UNSEEN_FORMATS", "REALISTIC_FORMATS", "NOT_DATES", "SPLITS", "CASES", "KINDS",
           "FIRST_DATE", "LAST_DATE", "ordinal", "render", "format_kind", "split_of", "split_dates", "make_examples",
           "make_non_dates", "source_vocab", "target_vocab", "check_source", "encode_batch"]

FIRST_DATE = datetime.date(1969, 1, 1)  # the window in which a two-digit year is unambiguous (see above)
LAST_DATE = datetime.date(2068, 12, 31)
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# (pattern, case): case is None (as written), "upper" or "lower".  Slashes put the month first, dots the day
# first, dashes between numbers the year first (ISO 8601).
TRAIN_FORMATS = (
    ("{d} {B} {Y}", None), ("{dd} {B} {Y}", None), ("{d} {b} {Y}", None), ("{B} {d}, {Y}", None),
    ("{b} {d}, {Y}", None), ("{b} {d}, {y}", None), ("{B} {o}, {Y}", None), ("{o} {B} {Y}", None),
    ("the {o} of {B} {Y}", None), ("{A}, the {o} of {B} {Y}", None), ("{A}, {B} {d}, {Y}", None),
    ("{a}, {d} {b} {Y}", None), ("{mm}/{dd}/{Y}", None), ("{m}/{d}/{Y}", None), ("{m}/{d}/{y}", None),
    ("{dd}.{mm}.{Y}", None), ("{dd}-{b}-{Y}", None), ("{d}-{b}-{y}", None), ("{Y}/{mm}/{dd}", None),
    ("{Y}.{mm}.{dd}", None), ("{Y}{mm}{dd}", None), ("{B} {d} {Y}", None), ("{d} {B}, {Y}", None),
    ("{b}. {d}, {Y}", None), ("{Y} {B} {d}", None), ("{A} {d} {B} {Y}", None), ("{dd}{b}{Y}", None),
    ("{a} {b} {dd} {Y}", None), ("{B} {dd}, {Y}", None), ("{Y}-{mm}-{dd}", None), ("{y}-{mm}-{dd}", None),
    ("{d}. {B} {Y}", None),
)
CASES = (None,) * 8 + ("upper", "lower")  # a training example's case: as written 8 times in 10
UNSEEN_FORMATS = (  # each recombines pieces that training shows only in other combinations
    ("{d}.{m}.{Y}", None), ("{B} the {o}, {Y}", None), ("{b} {o}, {Y}", None), ("{Y}, {B} {d}", None),
    ("{a} {d} {B} {Y}", None), ("{o} of {B}, {Y}", None),
)
REALISTIC_FORMATS = (  # written by hand from how people and programs write dates; never produced by the generator
    # names
    ("{A} {o} {B} {Y}", None),      # Wednesday 3rd March 1999: a British letter
    ("{A}, {d} {B} {Y}", None),     # Wednesday, 3 March 1999
    ("{a}, {dd} {b} {Y}", None),    # Wed, 03 Mar 1999: an e-mail header (RFC 5322)
    ("{B} {o} {Y}", None),          # March 3rd 1999
    ("{o} {b} {Y}", None),          # 3rd Mar 1999
    ("{b} {dd} {Y}", None),         # Mar 03 1999: C's asctime, without the time
    ("{A}, {b} {d}, {Y}", None),    # Wednesday, Mar 3, 1999
    ("{B} {d}, {y}", None),         # March 3, 99
    ("{d}{b}{Y}", None),            # 3Mar1999: a military date, unpadded
    ("{dd}-{b}-{y}", "upper"),      # 03-MAR-99: Oracle's DD-MON-RR
    ("{A}, {B} {o}, {Y}", "lower"), # wednesday, march 3rd, 1999: typed in a hurry
    ("{d} {b}. {Y}", None),         # 3 Mar. 1999
    # numbers only
    ("{mm}/{dd}/{y}", None),        # 03/03/99
    ("{d}.{m}.{y}", None),          # 3.3.99: German, short
    ("{dd}.{mm}.{y}", None),        # 03.03.99
    ("{d}. {m}. {Y}", None),        # 3. 3. 1999: Czech
    ("{Y}/{m}/{d}", None),          # 1999/3/3: Japanese
    ("{Y}.{m}.{d}", None),          # 1999.3.3
    ("{y}{mm}{dd}", None),          # 990303: file names
    # ISO-like: year-month-day with a number left unpadded
    ("{Y}-{m}-{d}", None),          # 1999-3-3
    ("{Y}-{mm}-{d}", None),         # 1999-03-3
    ("{Y}-{m}-{dd}", None),         # 1999-3-03
)
KINDS = ("names", "numbers", "iso")
NOT_DATES = (  # written by hand: inputs that name no single date in 1969-2068, each in the model's characters
    # a field missing
    "March 1999", "3 March", "Mar 3", "the 3rd of March", "3/3", "03.1999", "1999", "Wednesday", "March",
    "1999-03", "spring 1999", "the 1990s",
    # a field impossible
    "13/13/1999", "31/12/1999", "1999-13-01", "March 32, 1999", "32.01.2001", "0/0/00", "00.00.0000",
    # words and numbers that are not dates
    "tomorrow", "this Friday", "yesterday", "today", "hello", "no date here", "a b c", "March Madness",
    "Apollo 11", "Route 66", "Catch-22", "3.14159", "12345", "1,000,000", "555-0199", "Saturday Night Fever",
    "Mayday", "Sunday best", "Top 40", "Mission 2000",
    # outside the years the model knows
    "July 4, 1776", "3 March 1850", "1/1/2100", "2525-01-01", "the 1st of May 1900",
)
SPLITS = ("train", "valid", "test", "unseen", "realistic")
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


def format_kind(pattern):
    """'names' (a month or weekday name, or an ordinal), 'iso' (numbers, year first, dashes) or 'numbers'.
    Chapter 9."""
    if re.search(r"\{(B|b|A|a|o)\}", pattern):
        return "names"
    return "iso" if pattern.startswith("{Y}-") else "numbers"


def split_of(date):
    """'train', 'valid' or 'test': fixed for each date by a hash of its ISO string (10% test, 10% valid).  Chapter 9."""
    return hash_split(date.isoformat(), 10)


def split_dates(split):
    """Every date of a split ('unseen' and 'realistic' use the test dates), in calendar order.  Chapter 9."""
    days = (LAST_DATE - FIRST_DATE).days + 1
    dates = (FIRST_DATE + datetime.timedelta(days=k) for k in range(days))
    wanted = "test" if split in ("unseen", "realistic") else split
    return [date for date in dates if split_of(date) == wanted]


def make_examples(split, n, seed=0, formats=None):
    """n examples of a split: a list of (source, target, format index) tuples, the same for the same seed.

    train, valid and test draw their formats from TRAIN_FORMATS, each example in a case drawn from CASES; unseen
    writes test dates in UNSEEN_FORMATS, realistic in REALISTIC_FORMATS, each in the format's own case and only
    where the string is not one the formats before them write for that date (`written_before`).
    formats: other (pattern, case) pairs for the split's dates (chapter 9 calibrates on validation dates in
    UNSEEN_FORMATS).  Chapter 9."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    training = formats is None and split in ("train", "valid", "test")
    formats = formats or {"unseen": UNSEEN_FORMATS, "realistic": REALISTIC_FORMATS}.get(split, TRAIN_FORMATS)
    dates = split_dates(split)
    rng = random.Random(f"{seed}/{split}")  # a string seed: the same on every machine and Python version
    examples = []
    while len(examples) < n:
        date, k = rng.choice(dates), rng.randrange(len(formats))
        pattern, case = formats[k]
        if training:
            case = rng.choice(CASES)
        text = render(date, pattern, case)
        if training or not written_before(text, date, split):  # "10.10.1999" is "{dd}.{mm}.{Y}" too: draw again
            examples.append((text, date.isoformat(), k))
    return examples


def written_before(text, date, split):
    """Whether `text` is a string that the formats before `split` write for `date`: training formats in any case
    for unseen; those and the unseen formats for realistic.  A new format can coincide with an old one:
    "{d}.{m}.{Y}" is "{dd}.{mm}.{Y}" from the 10th of October on."""
    before = [(pattern, case) for pattern, _ in TRAIN_FORMATS for case in set(CASES)]
    before += list(UNSEEN_FORMATS) if split == "realistic" else []
    return any(render(date, pattern, case) == text for pattern, case in before)


PARTIAL_FORMATS = (  # a date with a field left out
    "{B} {Y}", "{b} {Y}", "{B} {d}", "{d} {B}", "{b} {d}", "the {o} of {B}", "{A}, {B} {d}", "{m}/{d}", "{m}/{Y}",
    "{mm}.{Y}", "{dd}.{mm}", "{Y}-{mm}", "{B}", "{A}", "{o}",
)


def make_non_dates(split, n, seed=0):
    """n generated inputs of a split's dates (train, valid or test) that name no date, as (source, kind) pairs:

    "partial"     a date with its day, month or year left out ("March 1999", "3/3")
    "impossible"  a month above 12 or a day past the month's end, written in a training layout ("13/3/1999")
    "noise"       3 to 20 characters drawn from the model's own, at random
    Chapter 9."""
    if split not in ("train", "valid", "test"):
        raise ValueError(f"non-dates are drawn for the train, valid or test split, got {split!r}")
    dates, chars = split_dates(split), "".join(t for t in source_vocab().itos if len(t) == 1)
    rng = random.Random(f"{seed}/{split}/non-dates")
    examples = []
    for _ in range(n):
        kind, date = rng.choice(("partial", "impossible", "noise")), rng.choice(dates)
        if kind == "partial":
            text = render(date, rng.choice(PARTIAL_FORMATS), rng.choice(CASES))
        elif kind == "impossible":
            month = rng.randint(13, 31)
            past_end = rng.randint(calendar.monthrange(date.year, date.month)[1] + 1, 39)  # after the month's last day
            text = rng.choice((f"{month}/{date.day}/{date.year}", f"{date.day:02d}.{month:02d}.{date.year}",
                               f"{date.year}-{month:02d}-{date.day:02d}", f"{MONTHS[date.month - 1]} {past_end}, "
                               f"{date.year}", f"{past_end} {MONTHS[date.month - 1][:3]} {date.year}"))
        else:
            text = "".join(rng.choice(chars) for _ in range(rng.randint(3, 20))).strip() or "x"
        examples.append((text, kind))
    return examples


def source_vocab():
    """Characters of every training format in every case for every month and weekday, after <pad>: the encoder's
    vocabulary.  Built from the formats, not from a sample, so it is the same for every seed.  Chapter 9."""
    probe = [datetime.date(2000, month, day) for month in range(1, 13) for day in (1, 12, 20, 25, 30)
             if (month, day) != (2, 30)]  # every month, weekday, digit and ordinal suffix appears
    chars = sorted({ch for date in probe for pattern, _ in TRAIN_FORMATS for case in set(CASES)
                    for ch in render(date, pattern, case)})
    return Vocab([PAD] + chars)


def target_vocab():
    """<pad>, <bos>, <eos>, the ten digits and '-': the decoder's vocabulary.  Chapter 9."""
    return Vocab([PAD, BOS, EOS] + list("0123456789-"))


def check_source(text, vocab, max_len=MAX_SOURCE_LEN):
    """Raise ValueError (one line, saying what is allowed) unless `text` can be encoded by `vocab` and names no
    four-digit year outside FIRST_DATE.year to LAST_DATE.year, the years the model was trained on.  Chapter 9."""
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
                         f"reads (upper and lower case count as different characters): {allowed!r}")
    for year in re.findall(r"(?<!\d)\d{4}(?!\d)", text):
        if not FIRST_DATE.year <= int(year) <= LAST_DATE.year:
            raise ValueError(f"the year {year} of {shown} is outside {FIRST_DATE.year}-{LAST_DATE.year}, the years "
                             f"the model was trained on")


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
