"""Tang poems for chapter 8: a fixed split, a character vocabulary, the forms, padded batches with the padding
masked out of the loss, a character model over packed batches, and poems generated to a form.

The corpus (`lstm_lab.data.fetch("tang")`) holds 57,580 poems of the chinese-poetry collection, one per line.
Each poem belongs to train, valid or test by a hash of its text (5% test, 5% valid), so the split does not
change when the corpus is reordered, and two copies of a poem always land in the same split.

A poem is read as <bos> c_1 ... c_n <eos>.  A batch pads the poems to its longest one with <pad>; the loss is the
mean over the real characters only (`masked_nll`), which is the perplexity per character of the poems.  The
widely copied reference pads every poem to a fixed length and counts the padding as targets: `padding_share`
measures how much of its loss is padding.

Forms ("5x4": four lines of five characters, ...): lines end in "，" and "。" alternately, as the corpus writes
them.  `generate_poem` writes a poem of a form from a first character, a prompt, or an acrostic (藏头诗: line k
starts with the k-th given character), placing the punctuation itself.  Introduced in chapter 8.
"""
import re
from collections import Counter

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_lab.corpus import BOS, EOS, PAD, UNK, Vocab, hash_split
from lstm_lab.data import fetch
from lstm_lab.generate import sample_next
from lstm_lab.lstm import LSTM

PUNCTUATION = ("，", "。")  # after odd lines, after even lines
FORMS = {"5x4": (5, 4), "7x4": (7, 4), "5x8": (5, 8), "7x8": (7, 8)}  # name: (characters per line, lines)
FORM_NAMES = {"5x4": "five-character quatrain (五言绝句)",
              "7x4": "seven-character quatrain (七言绝句)",
              "5x8": "five-character regulated verse (五言律诗)",
              "7x8": "seven-character regulated verse (七言律诗)"}


def poem_split(poem):
    """'train', 'valid' or 'test' for a poem, from the sha256 of its text (5% test, 5% valid)."""
    return hash_split(poem, 20)


def load_poems(data_dir=None, progress=False):
    """{"train", "valid", "test"}: the corpus's poems by split, in corpus order."""
    lines = fetch("tang", data_dir=data_dir, progress=progress)["text"].read_text("utf-8").splitlines()
    splits = {"train": [], "valid": [], "test": []}
    for poem in lines:
        splits[poem_split(poem)].append(poem)
    return splits


def poem_form(poem):
    """The form of a poem ("5x4", "7x4", "5x8", "7x8"), or None: lines ending alternately in ， and 。, all of
    five or all of seven characters, four or eight of them."""
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
    """<pad>, <bos>, <eos>, <unk>, then every character seen at least `min_count` times, most frequent first."""
    counts = Counter(ch for poem in poems for ch in poem)
    return Vocab([PAD, BOS, EOS, UNK] + [ch for ch, n in counts.most_common() if n >= min_count])


def encode_poem(poem, vocab):
    """LongTensor ids of <bos> poem <eos>; a character outside the vocabulary becomes <unk>."""
    unk = vocab.stoi[UNK]
    return torch.tensor([vocab.stoi[BOS]] + [vocab.stoi.get(ch, unk) for ch in poem] + [vocab.stoi[EOS]])


def pad_batch(poems, vocab):
    """(inputs (T, B), targets (T, B), lengths (B,)): each poem's ids without the last / without the first,
    padded with <pad> (id 0) to the longest; lengths counts the real input positions."""
    ids = [encode_poem(poem, vocab) for poem in poems]
    inputs = nn.utils.rnn.pad_sequence([t[:-1] for t in ids], padding_value=vocab.stoi[PAD])
    targets = nn.utils.rnn.pad_sequence([t[1:] for t in ids], padding_value=vocab.stoi[PAD])
    return inputs, targets, torch.tensor([len(t) - 1 for t in ids])


def batches(poems, batch_size, generator=None, bucket=True):
    """Lists of poems, `batch_size` each (the last may be smaller).  bucket=True sorts the poems by length
    inside chunks of 50 batches, so a batch holds poems of similar length and little padding; the order of
    the chunks and of the batches is shuffled by `generator` (None: corpus order)."""
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


def masked_nll(logits, targets, pad_id, how="ignore_index"):
    """Mean negative log-likelihood over the real (non-<pad>) targets.  logits (T, B, V), targets (T, B).

    how="ignore_index": cross_entropy's ignore_index; how="mask": every position's NLL times a 0/1 mask,
    summed and divided by the mask's sum.  The two are the same number."""
    if how == "ignore_index":
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (T*B,)
    mask = (targets.flatten() != pad_id).to(nll.dtype)
    return (nll * mask).sum() / mask.sum()


def pad_fixed(poems, vocab, fixed_len=125):
    """(inputs, targets), each (fixed_len, B): the widely copied reference's batch.  Every <bos> poem <eos> is
    cut or padded with <pad> to fixed_len + 1 ids, and all fixed_len targets count in its loss, padding
    included."""
    ids = [encode_poem(poem, vocab)[:fixed_len + 1] for poem in poems]
    padded = torch.full((fixed_len + 1, len(ids)), vocab.stoi[PAD], dtype=torch.long)
    for b, t in enumerate(ids):
        padded[:len(t), b] = t
    return padded[:-1], padded[1:]


def padding_share(poems, fixed_len):
    """The share of targets that are <pad> when every poem is padded (or cut) to `fixed_len` positions and
    the padding is counted in the loss, as the widely copied reference does."""
    real = sum(min(len(poem) + 1, fixed_len) for poem in poems)  # the poem's characters and its <eos>
    return 1 - real / (fixed_len * len(poems))


def training_step(model, inputs, targets, lengths, pad_id, count_padding=False):
    """Forward, loss and backward of one batch (no optimizer step); returns the loss.  lengths None runs the
    LSTM over the padding too; count_padding=True is the reference's loss, every target counted."""
    logits = model(inputs, lengths)
    loss = (F.cross_entropy(logits.flatten(0, 1), targets.flatten()) if count_padding
            else masked_nll(logits, targets, pad_id))
    model.zero_grad()
    loss.backward()
    return loss


def batching_candidates(model, poems, vocab, batch_size, fixed_len=125):
    """Four ways to train on the same `poems`, for timing: {name: fn} where fn() runs every batch's
    forward and backward, and {name: positions computed}.

      fixed length, padding in the loss   the reference: every poem padded to fixed_len, every target counted
      corpus order, padded                batches in corpus order, padded to their longest poem
      bucketed, padded                    poems sorted by length first, so a batch holds similar lengths
      bucketed, packed                    the same batches packed: the LSTM skips the padding too
    """
    pad = vocab.stoi[PAD]
    in_order = [poems[k:k + batch_size] for k in range(0, len(poems), batch_size)]
    by_length = sorted(poems, key=len)
    bucketed = [by_length[k:k + batch_size] for k in range(0, len(poems), batch_size)]
    fixed = [pad_fixed(group, vocab, fixed_len) for group in in_order]
    padded = [pad_batch(group, vocab) for group in in_order]
    sorted_padded = [pad_batch(group, vocab) for group in bucketed]
    candidates = {
        "fixed length, padding in the loss": lambda: [training_step(model, i, t, None, pad, True) for i, t in fixed],
        "corpus order, padded": lambda: [training_step(model, i, t, None, pad) for i, t, _ in padded],
        "bucketed, padded": lambda: [training_step(model, i, t, None, pad) for i, t, _ in sorted_padded],
        "bucketed, packed": lambda: [training_step(model, i, t, n, pad) for i, t, n in sorted_padded],
    }
    positions = {
        "fixed length, padding in the loss": sum(t.numel() for _, t in fixed),
        "corpus order, padded": sum(t.numel() for _, t, _ in padded),
        "bucketed, padded": sum(t.numel() for _, t, _ in sorted_padded),
        "bucketed, packed": sum(int(n.sum()) for _, _, n in sorted_padded),
    }
    return candidates, positions


class PoemLM(nn.Module):
    """Character model of whole poems: embedding -> lstm_lab.LSTM -> decoder.

    forward(inputs (T, B), lengths (B,)) -> logits (T, B, V): the batch is packed, so the padding costs
    no computation and never enters a state; lengths=None runs over every position, padding included.
    step(ids (B,), state) -> logits (B, V), state: one character at a time, for generation."""

    def __init__(self, vocab_size, embed_size=256, hidden_size=512, num_layers=2, dropout=0.0, pad_id=0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.rnn = LSTM(embed_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, inputs, lengths=None):
        return self.decoder(self.drop(self.hidden(inputs, lengths)))

    def hidden(self, inputs, lengths=None):
        """The last layer's h at every position (T, B, H), zeros on the padding (lengths None: no packing)."""
        x = self.drop(self.embedding(inputs))  # (T, B, E)
        if lengths is None:
            return self.rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        output, _ = self.rnn(packed)
        return pad_packed_sequence(output, total_length=inputs.shape[0])[0]

    def step(self, ids, state=None):
        output, state = self.rnn(self.embedding(ids).unsqueeze(0), state)  # one step: (1, B, H)
        return self.decoder(output[0]), state


def check_characters(text, vocab, what):
    """Raise ValueError (one line) naming the characters of `text` the vocabulary does not have."""
    unknown = sorted({ch for ch in text if ch not in vocab.stoi})
    if unknown:
        raise ValueError(f"{what} {text!r} has characters the model never saw in training: {''.join(unknown)}")


def check_form(form):
    """The (width, lines) of a form name; ValueError listing the forms for any other."""
    if form not in FORMS:
        raise ValueError(f"unknown form {form!r}; choose one of: {', '.join(FORMS)} (characters x lines)")
    return FORMS[form]


def poem_slots(form):
    """The characters of a poem of `form` in order: None where the model writes a character, the punctuation
    mark where the form puts one ("5x4": 5 Nones, "，", 5 Nones, "。", ...)."""
    width, lines = check_form(form)
    return [None if position < width else PUNCTUATION[line % 2]
            for line in range(lines) for position in range(width + 1)]


def forced_characters(form, first, prompt, acrostic, vocab):
    """{slot index: character} that a poem of `form` must have, from at most one of `first` (its first
    character), `prompt` (its beginning, punctuation included) or `acrostic` (one character starting each
    line).  Raises ValueError, in one line, for anything the form or the vocabulary cannot take."""
    slots = poem_slots(form)
    width, lines = FORMS[form]
    if sum(x is not None for x in (first, prompt, acrostic)) > 1:
        raise ValueError("give at most one of first, prompt and acrostic")
    if first is not None and len(first) != 1:
        raise ValueError(f"first must be one character, got {first!r}")
    prompt = first if first is not None else prompt
    if acrostic is not None:
        check_characters(acrostic, vocab, "acrostic")
        if len(acrostic) != lines:
            raise ValueError(f"form {form} has {lines} lines: the acrostic needs {lines} characters, "
                             f"got {len(acrostic)} ({acrostic!r})")
        return {line * (width + 1): ch for line, ch in enumerate(acrostic)}
    if prompt is None:
        return {}
    if not 0 < len(prompt) <= len(slots):
        raise ValueError(f"a {form} prompt has 1 to {len(slots)} characters, got {len(prompt)}")
    for k, (ch, slot) in enumerate(zip(prompt, slots)):
        if (ch in PUNCTUATION or slot is not None) and ch != slot:
            raise ValueError(f"prompt {prompt!r} does not fit form {form}: character {k + 1} is {ch!r}, "
                             f"the form has {'a character' if slot is None else repr(slot)} there")
    check_characters(prompt, vocab, "first character" if first is not None else "prompt")
    return {k: ch for k, ch in enumerate(prompt) if ch not in PUNCTUATION}


@torch.no_grad()
def generate_poem(model, vocab, form="5x4", first=None, acrostic=None, temperature=0.8, top_k=None, seed=0,
                  prompt=None):
    """A poem of `form`, its lines closed by ， and 。 in turn, the punctuation placed by the form.
    first: the character the poem starts with; prompt: the poem's beginning ("白日依山尽，黄"); acrostic: one
    character per line, each line starting with it (藏头诗).  temperature 0 decodes greedily.

    Raises ValueError for an unknown form, characters the vocabulary lacks, or a start the form cannot take."""
    slots = poem_slots(form)
    forced = forced_characters(form, first, prompt, acrostic, vocab)
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    banned = [vocab.stoi[t] for t in (PAD, BOS, EOS, UNK) + PUNCTUATION if t in vocab.stoi]
    if temperature == 0:  # greedy: sample from the single most likely character
        temperature, top_k = 1.0, 1
    logits, state = model.step(torch.tensor([vocab.stoi[BOS]], device=device))
    poem = []
    for k, slot in enumerate(slots):
        ch = slot or forced.get(k)
        ch_id = vocab.stoi[ch] if ch else sample_next(logits[0], temperature, top_k, generator, banned)
        poem.append(vocab.itos[ch_id])
        logits, state = model.step(torch.tensor([ch_id], device=device), state)
    return "".join(poem)
