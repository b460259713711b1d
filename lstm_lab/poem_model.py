"""The Tang poem model of chapter 8: a character LSTM over packed batches, the loss with the padding masked out,
and poems generated to a form.

A batch pads the poems to its longest one with <pad> (`lstm_lab.data.poems.pad_batch`); the loss is the mean
over the real characters only (`masked_nll`), which is the perplexity per character of the poems.  `generate_poem`
writes a poem of a form from a first character, a prompt, or an acrostic (藏头诗: line k starts with the k-th
given character), placing the punctuation itself, and returns it as a `Poem`: the text, with the seed that
drew it.  Introduced in chapter 8.
"""
import secrets

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_lab.cells import check_sizes
from lstm_lab.config import whole_number
from lstm_lab.data.corpus import BOS, PAD, Vocab
from lstm_lab.data.poems import FORMS, PUNCTUATION, is_han, pad_batch, pad_fixed, poem_slots
from lstm_lab.generate import sample_next
from lstm_lab.lstm import LSTM
from lstm_lab.model import check_lengths, check_pad_id, check_token_ids, checkable

__all__ = ["masked_nll", "batching_candidates", "PoemLM", "Poem", "fresh_seed", "generate_poem"]


def masked_nll(logits, targets, pad_id, how="ignore_index"):
    """Mean negative log-likelihood over the real (non-<pad>) targets.  logits (T, B, V), targets (T, B).

    how="ignore_index": cross_entropy's ignore_index; how="mask": every position's NLL times a 0/1 mask,
    summed and divided by the mask's sum.  The two are the same number.  Targets that are all <pad> have no mean:
    ValueError, where `checkable` (cross_entropy itself would return nan).  Chapter 8."""
    if how not in ("ignore_index", "mask"):
        raise ValueError(f"how must be 'ignore_index' or 'mask', got {how!r}")
    if not whole_number(pad_id):
        raise TypeError(f"pad_id must be the id of <pad>, an int, got {pad_id!r}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (T, B, V) and targets (T, B), got {tuple(logits.shape)} and "
                         f"{tuple(targets.shape)}")
    if checkable(targets) and not (targets != pad_id).any():
        raise ValueError(f"every target is padding (id {pad_id}): there is no character to score")
    if how == "ignore_index":
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)
    nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")  # (T*B,)
    mask = (targets.flatten() != pad_id).to(nll.dtype)
    return (nll * mask).sum() / mask.sum()


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
    Chapter 8.
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
    step(ids (B,), state) -> logits (B, V), state: one character at a time, for generation.  Chapter 8."""

    def __init__(self, vocab_size, embed_size=256, hidden_size=512, num_layers=2, dropout=0.0, pad_id=0):
        super().__init__()
        check_sizes(vocab_size=vocab_size, embed_size=embed_size, hidden_size=hidden_size, num_layers=num_layers)
        check_pad_id(pad_id, vocab_size)
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.rnn = LSTM(embed_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, inputs, lengths=None):
        return self.decoder(self.drop(self.hidden(inputs, lengths)))

    def hidden(self, inputs, lengths=None):
        """The last layer's h at every position (T, B, H), zeros on the padding (lengths None: no packing)."""
        check_token_ids(inputs, self.embedding.num_embeddings, "character ids", dims=2)
        if lengths is not None:
            check_lengths(lengths, inputs)
        x = self.drop(self.embedding(inputs))  # (T, B, E)
        if lengths is None:
            return self.rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), enforce_sorted=False)
        output, _ = self.rnn(packed)
        return pad_packed_sequence(output, total_length=inputs.shape[0])[0]

    def step(self, ids, state=None):
        check_token_ids(ids, self.embedding.num_embeddings, "character ids", dims=1)
        output, state = self.rnn(self.embedding(ids).unsqueeze(0), state)  # one step: (1, B, H)
        return self.decoder(output[0]), state


def check_characters(text, vocab, what):
    """Raise ValueError (one line) naming the characters of `text` that are not Chinese characters (`is_han`:
    punctuation, the corpus's □ for a lost character, letters) or that the vocabulary does not have."""
    not_han = sorted({ch for ch in text if not is_han(ch) and ch not in PUNCTUATION})
    if not_han:
        raise ValueError(f"{what} {text[:40]!r} holds {''.join(not_han)!r}: expected Chinese characters, which is "
                         "all a poem line holds (the form places ， and 。 itself)")
    unknown = sorted({ch for ch in text if ch not in vocab.stoi})
    if unknown:
        raise ValueError(f"{what} {text!r} has characters the model never saw in training: {''.join(unknown)}")


def forced_characters(form, first, prompt, acrostic, vocab):
    """{slot index: character} that a poem of `form` must have, from at most one of `first` (its first
    character), `prompt` (its beginning, punctuation included) or `acrostic` (one character starting each
    line).  Raises ValueError, in one line, for anything the form or the vocabulary cannot take."""
    slots = poem_slots(form)
    width, lines = FORMS[form]
    for name, value in (("first", first), ("prompt", prompt), ("acrostic", acrostic)):
        if value is not None and not isinstance(value, str):
            raise TypeError(f"{name} must be a str of Chinese characters, got {type(value).__name__}")
    if sum(x is not None for x in (first, prompt, acrostic)) > 1:
        raise ValueError("give at most one of first, prompt and acrostic")
    if first is not None and len(first) != 1:
        raise ValueError(f"first must be one character, got {first!r}")
    prompt, what = (first, "first character") if first is not None else (prompt, "prompt")
    if acrostic is not None:
        if any(ch in PUNCTUATION for ch in acrostic):
            raise ValueError(f"acrostic {acrostic!r} holds ， or 。: expected one Chinese character per line")
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
            raise ValueError(f"{what} {prompt!r} does not fit form {form}: character {k + 1} is {ch!r}, "
                             f"the form has {'a character' if slot is None else repr(slot)} there")
    check_characters(prompt, vocab, what)
    return {k: ch for k, ch in enumerate(prompt) if ch not in PUNCTUATION}


class Poem(str):
    """A generated poem: the text itself (a str), and `seed`, the seed it was drawn with, so that
    `generate_poem(..., seed=poem.seed)` with the same model and settings writes it again.  Chapter 8."""

    def __new__(cls, text, seed):
        poem = super().__new__(cls, text)
        poem.seed = seed
        return poem


def fresh_seed():
    """A seed no earlier call chose: 0 to 2**32 - 1 (what `--seed` takes), from the operating system's randomness,
    not from torch's or numpy's generators, so seeding a notebook does not fix it.  Chapter 8."""
    return secrets.randbelow(2**32)


@torch.no_grad()
def generate_poem(model, vocab, form="5x4", first=None, acrostic=None, temperature=0.8, top_k=None, seed=None,
                  prompt=None):
    """A poem of `form`, its lines closed by ， and 。 in turn, the punctuation placed by the form.
    first: the character the poem starts with; prompt: the poem's beginning ("白日依山尽，黄"); acrostic: one
    character per line, each line starting with it (藏头诗).  temperature 0 decodes greedily.

    seed: None draws a fresh one for every call (`fresh_seed`), so two calls write two poems; give one to get
    the same poem again.  Returns a `Poem`, a str whose `seed` says which seed drew it.  The same seed with other
    starts reuses the same random draws, so its poems share much of their shape: compare poems with a seed each.

    Raises ValueError for an unknown form, characters the vocabulary lacks, or a start the form cannot take.
    Chapter 8."""
    if not isinstance(model, PoemLM) or not isinstance(vocab, Vocab):
        raise TypeError(f"expected a PoemLM and its Vocab (load_poems_model returns both), got "
                        f"{type(model).__name__} and {type(vocab).__name__}")
    slots = poem_slots(form)
    forced = forced_characters(form, first, prompt, acrostic, vocab)
    seed = fresh_seed() if seed is None else seed
    if not whole_number(seed) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a whole number from 0 to 2**63 - 1 (or None: a fresh one), got {seed!r}")
    model.eval()
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    banned = [i for i, t in enumerate(vocab.itos) if not is_han(t)]  # <pad>, <unk>, punctuation, □, digits ...
    if temperature == 0:  # greedy: sample from the single most likely character
        temperature, top_k = 1.0, 1
    logits, state = model.step(torch.tensor([vocab.stoi[BOS]], device=device))
    poem = []
    for k, slot in enumerate(slots):
        ch = slot or forced.get(k)
        ch_id = vocab.stoi[ch] if ch else sample_next(logits[0], temperature, top_k, generator, banned)
        poem.append(vocab.itos[ch_id])
        logits, state = model.step(torch.tensor([ch_id], device=device), state)
    return Poem("".join(poem), seed)
