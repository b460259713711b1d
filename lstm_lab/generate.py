"""Sampling text from a trained `LanguageModel`: temperature, top-k, and a prompt.

Introduced in chapter 6.
"""
import math
import numbers

import torch

from lstm_lab.config import whole_number
from lstm_lab.data.corpus import Vocab

__all__ = ["sample_next", "generate"]


def sample_next(logits, temperature=1.0, top_k=None, generator=None, banned=()):
    """Draw one token id from logits (V,).

    temperature < 1 sharpens the distribution (towards the most likely token), > 1 flattens it;
    top_k keeps only the k most likely tokens before sampling (top_k=1: greedy, always the most likely);
    the ids in `banned` are never drawn (chapter 8's poems ban every token that is not a Chinese character).
    A model whose outputs are nan (it diverged) raises ValueError rather than drawing garbage.  Introduced in
    chapter 6, `banned` in chapter 8."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not 0 < temperature < math.inf:
        raise ValueError(f"temperature must be a positive, finite number, got {temperature!r}")
    if not isinstance(logits, torch.Tensor) or logits.dim() != 1 or logits.numel() == 0:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a 1-D tensor of one score per token (V,), got {got}")
    if top_k is not None and not whole_number(top_k):
        raise TypeError(f"top_k must be an int (or None), got {top_k!r}")
    logits = logits.float()  # (V,)
    if torch.isnan(logits).any() or torch.isposinf(logits).any():
        raise ValueError("the model's outputs are not finite (nan or inf): its weights have diverged, so it cannot "
                         "be sampled")
    banned = torch.as_tensor(banned, dtype=torch.long, device=logits.device)  # (n,) ids, n may be 0
    if banned.numel() and not (0 <= int(banned.min()) and int(banned.max()) < logits.numel()):
        raise ValueError(f"banned ids must be token ids, 0 to {logits.numel() - 1}, got {banned.tolist()[:10]}")
    logits = logits.index_fill(0, banned, float("-inf"))  # banned ids get probability 0
    best = logits.max()
    if best == float("-inf"):
        raise ValueError("no token can be drawn: every logit is -inf or banned")
    # Shifted so the best is 0 before dividing: however small the temperature, no logit becomes +inf (or nan);
    # near 0 every other logit goes to -inf and the draw is greedy, and a huge temperature draws uniformly.
    logits = ((logits - best).double() / temperature).float()  # float64: a temperature of 1e-300 is not 0
    if top_k is not None:
        if not 1 <= top_k <= logits.numel():
            raise ValueError(f"top_k must be between 1 and the vocabulary size {logits.numel()}, got {top_k}")
        kth_best = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth_best, float("-inf"))  # drop everything below the k-th
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


@torch.no_grad()
def generate(model, vocab, prompt, steps, temperature=1.0, top_k=None, generator=None, stop=None):
    """Continue `prompt` (a list of tokens) by `steps` sampled tokens; returns only the new tokens.

    The prompt is read in one pass to set the state; then each sampled token is fed back in.
    `stop`: a token (e.g. "<eos>") that ends generation early.  Introduced in chapter 6."""
    if not prompt or isinstance(prompt, str):
        raise ValueError(f"the prompt must be a list of at least one token (e.g. ['<eos>'] to start a sentence), "
                         f"got {prompt!r:.60}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a whole number of tokens, 0 or more, got {steps!r}")
    if not isinstance(vocab, Vocab):
        raise TypeError(f"vocab must be a lstm_lab.data.corpus.Vocab, got {type(vocab).__name__}")
    model.eval()
    device = next(model.parameters()).device
    tokens = vocab.encode(prompt).to(device).unsqueeze(1)  # (T, 1)
    logits, state = model(tokens)  # read the prompt
    if logits.shape[-1] != len(vocab):
        raise ValueError(f"the model scores {logits.shape[-1]:,} tokens but the vocabulary holds {len(vocab):,}: "
                         "use the vocabulary it was trained with")
    new = []
    for _ in range(steps):
        token = sample_next(logits[-1, 0], temperature, top_k, generator)
        new.append(vocab.itos[token])
        if new[-1] == stop:
            break
        logits, state = model(torch.tensor([[token]], device=device), state)  # (1, 1, V)
    return new
