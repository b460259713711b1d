"""Sequence to sequence with Luong attention: a packed bidirectional encoder and an LSTMCell decoder.

    encoder   embedding -> bidirectional lstm_lab.LSTM (H/2 units per direction) over a PackedSequence
              memory h̄_s (S, B, H): both directions side by side at every source position s
              the decoder's first state: [forward final; backward final] for h and for c, (B, H) each
    decoder   one step at a time, with lstm_lab.LSTMCell (Luong et al. 2015, "global" attention):
              h_t     = LSTMCell([embed(y_{t-1}); h̃_{t-1}], (h_{t-1}, c_{t-1}))   (input feeding)
              a_t(s)  = softmax over real source positions of score(h_t, h̄_s)     (padding masked out)
              c_t     = sum_s a_t(s) h̄_s                                         context vector
              h̃_t     = tanh(W_c [c_t; h_t])                                     attentional hidden state
              p(y_t)  = softmax(W_s h̃_t)
    scores    dot      h_t · h̄_s
              general  h_t · W_a h̄_s
              concat   v_a · tanh(W_a [h_t; h̄_s])
    baseline  score=None: no attention; the decoder sees the source only through its first state.

Tensors are time-major as in the rest of the book: src (S, B), tgt (T, B).  Introduced in chapter 9.
"""
import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_lab.cells import LSTMCell
from lstm_lab.lstm import LSTM
from lstm_lab.cells import check_sizes
from lstm_lab.config import whole_number
from lstm_lab.model import check_lengths, check_pad_id, check_token_ids

__all__ = ["SCORES", "check_beam", "check_decoding", "Encoder", "LuongAttention", "Decoder", "Seq2Seq", "greedy_decode",
           "beam_search"]

SCORES = ("dot", "general", "concat")


class Encoder(nn.Module):
    """Embedding -> bidirectional LSTM over the packed source.

    forward(src (S, B) ids padded with pad_id, lengths (B,)) -> memory (S, B, H), (h, c) each (B, H).
    hidden_size H is split between the two directions (H/2 each), so their concatenation has the
    decoder's size; the decoder starts from [h_forward; h_backward] and [c_forward; c_backward].  Chapter 9."""

    def __init__(self, vocab_size, embed_size, hidden_size, pad_id=0):
        super().__init__()
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (two directions of hidden_size / 2), got {hidden_size}")
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=pad_id)
        self.lstm = LSTM(embed_size, hidden_size // 2, bidirectional=True)

    def forward(self, src, lengths):
        check_token_ids(src, self.embedding.num_embeddings, "source ids", dims=2)
        check_lengths(lengths, src)
        packed = pack_padded_sequence(self.embedding(src), lengths.cpu(), enforce_sorted=False)
        output, (h_n, c_n) = self.lstm(packed)  # h_n, c_n: (2, B, H/2): forward's last step, backward's first
        memory, _ = pad_packed_sequence(output, total_length=src.shape[0])  # (S, B, H), zeros past each length
        return memory, (torch.cat([h_n[0], h_n[1]], dim=1), torch.cat([c_n[0], c_n[1]], dim=1))


def check_decoding(model, src, lengths, bos_id, eos_id, max_len):
    """Raise ValueError (one line) unless a decoder can start from these: src (S, B) and its lengths, <bos> and
    <eos> ids among the model's outputs, a max_len of 1 or more.  Chapter 9."""
    check_token_ids(src, model.encoder.embedding.num_embeddings, "source ids", dims=2)
    check_lengths(lengths, src)
    outputs = model.decoder.W_s.out_features
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if not whole_number(value) or not 0 <= value < outputs:
            raise ValueError(f"{name} must be an id of the {outputs} output symbols (0 to {outputs - 1}), "
                             f"got {value!r}")
    if not whole_number(max_len) or max_len < 1:
        raise ValueError(f"max_len must be a whole number of steps, 1 or more, got {max_len!r}")


def check_beam(beam, vocab_size):
    """Raise ValueError unless `beam` is a width a search over `vocab_size` output symbols can keep: 1 (greedy) to
    vocab_size.  Chapter 9."""
    if not whole_number(beam) or not 1 <= beam <= vocab_size:
        raise ValueError(f"beam must be a whole number from 1 (greedy) to the {vocab_size} output symbols, "
                         f"got {beam!r}")


class LuongAttention(nn.Module):
    """Luong's global attention with the dot, general or concat score.

    keys(memory (B, S, H)) -> what the scores compare h_t with, computed once per source (B, S, H).
    forward(h (B, H), memory (B, S, H), keys, mask (B, S) True on real positions) -> weights (B, S), context (B, H).
    Padding gets weight exactly 0 (its score is -inf before the softmax).  Chapter 9."""

    def __init__(self, hidden_size, score="general"):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown score {score!r}; choose one of: {', '.join(SCORES)}")
        self.score = score
        if score == "general":
            self.W_a = nn.Linear(hidden_size, hidden_size, bias=False)
        if score == "concat":
            self.W_a = nn.Linear(2 * hidden_size, hidden_size, bias=False)  # acts on [h_t; h̄_s]
            self.v_a = nn.Linear(hidden_size, 1, bias=False)

    def keys(self, memory):
        if self.score == "general":
            return self.W_a(memory)  # (B, S, H): W_a h̄_s, so that score = h_t · W_a h̄_s
        if self.score == "concat":
            H = memory.shape[-1]
            return F.linear(memory, self.W_a.weight[:, H:])  # (B, S, H): the h̄_s half of W_a [h_t; h̄_s]
        return memory

    def forward(self, h, memory, keys, mask):
        if self.score == "concat":
            H = h.shape[-1]
            query = F.linear(h, self.W_a.weight[:, :H]).unsqueeze(1)  # (B, 1, H): the h_t half
            scores = self.v_a(torch.tanh(query + keys)).squeeze(2)  # (B, S)
        else:
            scores = torch.bmm(keys, h.unsqueeze(2)).squeeze(2)  # (B, S): h_t · key_s
        scores = scores.masked_fill(~mask, float("-inf"))  # padding: exp(-inf) = 0 exactly
        weights = torch.softmax(scores, dim=1)  # (B, S), each row sums to 1
        context = torch.bmm(weights.unsqueeze(1), memory).squeeze(1)  # (B, H)
        return weights, context


class Decoder(nn.Module):
    """One output character per step: LSTMCell, then attention, then the output layer.

    step(y_prev (B,), state (h, c), h_tilde_prev (B, H), memory, keys, mask) ->
        logits (B, V), state, h_tilde (B, H), weights (B, S) or None without attention.  Chapter 9."""

    def __init__(self, vocab_size, embed_size, hidden_size, score="general", input_feeding=True):
        super().__init__()
        self.input_feeding = input_feeding and score is not None
        self.embedding = nn.Embedding(vocab_size, embed_size)
        self.cell = LSTMCell(embed_size + (hidden_size if self.input_feeding else 0), hidden_size)
        self.attention = LuongAttention(hidden_size, score) if score is not None else None
        self.W_c = nn.Linear(2 * hidden_size, hidden_size, bias=False) if score is not None else None
        self.W_s = nn.Linear(hidden_size, vocab_size)

    def step(self, y_prev, state, h_tilde_prev, memory, keys, mask):
        check_token_ids(y_prev, self.embedding.num_embeddings, "target ids")
        x = self.embedding(y_prev)  # (B, E)
        if self.input_feeding:
            x = torch.cat([x, h_tilde_prev], dim=1)  # (B, E + H): last step's attentional state
        h, c = self.cell(x, state)
        if self.attention is None:
            return self.W_s(h), (h, c), h, None
        weights, context = self.attention(h, memory, keys, mask)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, h], dim=1)))  # (B, H)
        return self.W_s(h_tilde), (h, c), h_tilde, weights


class Seq2Seq(nn.Module):
    """Encoder and decoder; score None (no attention), "dot", "general" or "concat".

    forward(src (S, B), lengths (B,), tgt_in (T, B)) -> logits (T, B, V), weights (T, B, S) or None:
    teacher forcing, the decoder reads the true previous character at every step.  Chapter 9."""

    def __init__(self, src_vocab_size, tgt_vocab_size, embed_size=32, hidden_size=128, score="general",
                 input_feeding=True, pad_id=0):
        super().__init__()
        check_sizes(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, embed_size=embed_size,
                    hidden_size=hidden_size)
        check_pad_id(pad_id, src_vocab_size)
        self.encoder = Encoder(src_vocab_size, embed_size, hidden_size, pad_id)
        self.decoder = Decoder(tgt_vocab_size, embed_size, hidden_size, score, input_feeding)
        self.mask_padding = True  # False: attention may look at padding too (chapter 9 shows what that does)

    def encode(self, src, lengths):
        """Everything the decoder needs from a source: (state, h_tilde, memory (B, S, H), keys, mask (B, S))."""
        memory, state = self.encoder(src, lengths)
        memory = memory.transpose(0, 1)  # (B, S, H): batch-first for bmm
        mask = torch.arange(src.shape[0], device=src.device) < lengths.to(src.device).unsqueeze(1)  # (B, S)
        if not self.mask_padding:
            mask = torch.ones_like(mask)
        attention = self.decoder.attention
        keys = attention.keys(memory) if attention is not None else None
        return state, torch.zeros_like(state[0]), memory, keys, mask

    def forward(self, src, lengths, tgt_in):
        state, h_tilde, memory, keys, mask = self.encode(src, lengths)
        logits, weights = [], []
        for y_prev in tgt_in:  # (B,) the true previous character
            step_logits, state, h_tilde, step_weights = self.decoder.step(y_prev, state, h_tilde, memory, keys, mask)
            logits.append(step_logits)
            weights.append(step_weights)
        return torch.stack(logits), (torch.stack(weights) if weights[0] is not None else None)


@torch.no_grad()
def greedy_decode(model, src, lengths, bos_id, eos_id, max_len):
    """The most likely character at every step, fed back in, until <eos> or max_len steps.

    Returns tokens (B, max_len) (after <eos>: eos_id again) and weights (max_len, B, S) or None.  Chapter 9."""
    check_decoding(model, src, lengths, bos_id, eos_id, max_len)
    state, h_tilde, memory, keys, mask = model.encode(src, lengths)
    y = torch.full((src.shape[1],), bos_id, dtype=torch.long, device=src.device)
    done = torch.zeros_like(y, dtype=torch.bool)
    tokens, weights = [], []
    for _ in range(max_len):
        logits, state, h_tilde, step_weights = model.decoder.step(y, state, h_tilde, memory, keys, mask)
        y = logits.argmax(dim=1).masked_fill(done, eos_id)
        done |= y == eos_id
        tokens.append(y)
        weights.append(step_weights)
        if done.all():
            break
    return torch.stack(tokens, dim=1), (torch.stack(weights) if weights[0] is not None else None)


@torch.no_grad()
def beam_search(model, src, lengths, bos_id, eos_id, max_len, beam=4):
    """The output with the highest log-probability among `beam` hypotheses kept at every step.

    One source at a time (its hypotheses are the batch).  A hypothesis that emits <eos> is finished; the
    search stops when no live hypothesis can beat the best finished one (log-probabilities only fall as a
    hypothesis grows) or after max_len steps.  Returns one token list per source, without <bos> and <eos>.
    beam=1 is greedy decoding.  Chapter 9."""
    check_decoding(model, src, lengths, bos_id, eos_id, max_len)
    check_beam(beam, model.decoder.W_s.out_features)
    results = []
    for b in range(src.shape[1]):
        length = int(lengths[b])
        state, h_tilde, memory, keys, mask = model.encode(src[:length, b:b + 1], lengths[b:b + 1])
        tokens, scores, finished = [[]], torch.zeros(1, device=src.device), []  # live hypotheses, (K,) log-probs
        for _ in range(max_len):
            K = len(tokens)
            y = torch.tensor([t[-1] if t else bos_id for t in tokens], device=src.device)  # (K,)
            logits, state, h_tilde, _ = model.decoder.step(
                y, state, h_tilde, memory.expand(K, -1, -1), None if keys is None else keys.expand(K, -1, -1),
                mask.expand(K, -1))
            total = scores.unsqueeze(1) + torch.log_softmax(logits, dim=1)  # (K, V): every one-character extension
            top = total.flatten().topk(min(beam, total.numel()))
            rows, chars = top.indices // total.shape[1], top.indices % total.shape[1]
            keep = []
            for score, row, char in zip(top.values.tolist(), rows.tolist(), chars.tolist()):
                if char == eos_id:
                    finished.append((score, tokens[row]))
                else:
                    keep.append((row, char, score))
            best_finished = max((score for score, _ in finished), default=float("-inf"))
            if not keep or best_finished >= max(score for *_, score in keep):
                break
            rows = torch.tensor([row for row, *_ in keep], device=src.device)
            tokens = [tokens[row] + [char] for row, char, _ in keep]
            scores = torch.tensor([score for *_, score in keep], device=src.device)
            state, h_tilde = (state[0][rows], state[1][rows]), h_tilde[rows]
        best = max(finished, default=None, key=lambda item: item[0])
        results.append(best[1] if best else tokens[0])
    return results
