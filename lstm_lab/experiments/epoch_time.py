"""What an epoch costs: report 000's training loop as the student wrote it, then one fix at a time, timed.

The report trained an LSTM language model with batches of 128, 603 batches an epoch, and saw an epoch take
minutes before its last change and seconds after it.  Its code, as the report shows it, has three features:

    weights    self.W_xi = (torch.randn(emb_size, n_hidden) * 0.01).to(device)   plain tensors, not parameters
    gates      one matrix per gate, multiplied with `@`                           eight products a step
    state      carried from batch to batch, and loss.backward(retain_graph=True)  the "fix" for "Trying to
               backward through the graph a second time"

`LOOP_VARIANTS` lists the loop as written and each fix added to the one before; `time_variants` trains every
variant on the same windows, interleaved (a few windows of each in turn), and records the seconds of every
window; `window_summary` says what they measured, the early windows, the last ones and the total, with no model of
how the time grows (a fitted line would extrapolate 30 windows to 603, and the growth is not a line).  Chapter 3.
"""
import itertools
import time

import numpy as np
import torch
import torch.nn.functional as F

from lstm_lab.config import ModelConfig
from lstm_lab.data.corpus import bptt_windows
from lstm_lab.experiments.clinic import StudentLM
from lstm_lab.experiments.timing import synchronize
from lstm_lab.model import LanguageModel

__all__ = ["LOOP_VARIANTS", "loop_model", "LoopRunner", "time_variants", "window_summary"]

# name -> (model, state_fix): "student" is clinic.StudentLM (per-gate `@`), "lab" lstm_lab.LSTM, "torch" nn.LSTM
LOOP_VARIANTS = {
    "as written: plain-tensor weights, state carried, retain_graph=True": ("student, unregistered", "retain_graph"),
    "+ state detached between batches": ("student, unregistered", "detach"),
    "+ weights registered as parameters": ("student, registered", "detach"),
    "+ gates fused, input projection hoisted (lstm_lab.LSTM)": ("lab", "detach"),
    "+ nn.LSTM": ("torch", "detach"),
}


def loop_model(kind, vocab_size, hidden_size, seed=0, device="cpu", init_scale=0.01):
    """The language model of one variant, on `device`: embedding -> one LSTM layer -> decoder, of width
    hidden_size.  The student's weights are randn * init_scale, created on the device as the report's
    `.to(device)`.  Chapter 4."""
    if kind.startswith("student"):
        return StudentLM(vocab_size, hidden_size, register=kind.endswith(", registered"), seed=seed,
                         device=device, init_scale=init_scale).to(device)
    torch.manual_seed(seed)
    config = ModelConfig(vocab_size=vocab_size, embed_size=hidden_size, hidden_size=hidden_size, num_layers=1,
                         rnn=kind)
    return LanguageModel(config).to(device)


def last_word_logits(model, inputs, state):
    """Logits (B, V) of the word after each window only, as the report's model predicts: the top of the LSTM at
    the last step goes through the decoder.  model: StudentLM or LanguageModel."""
    rnn = model.lstm if isinstance(model, StudentLM) else model.rnn
    output, state = rnn(model.embedding(inputs), state)  # (T, B, H)
    return model.decoder(output[-1]), state


class LoopRunner:
    """One variant's training loop, advanced a few windows at a time: Adam on model.parameters(), the
    cross-entropy of the word after each window (targets="last", as the report: n words in, the next word
    out) or of the word after every position ("all"), the state carried as `state_fix` says ("detach", or
    "retain_graph" as the report).  Chapters 3 and 4."""

    def __init__(self, model, source, seq_len, state_fix, lr=1e-3, targets="last"):
        self.model, self.state_fix, self.targets = model, state_fix, targets
        self.device = next(model.parameters()).device
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        self.windows = bptt_windows(source, seq_len)
        self.state, self.seconds, self.losses = None, [], []

    def run(self, n):
        """Train on the next n windows; append each window's seconds and loss."""
        for inputs, targets in itertools.islice(self.windows, n):
            inputs, targets = inputs.to(self.device), targets.to(self.device)
            synchronize(self.device)
            start = time.perf_counter()
            if self.state_fix == "detach" and self.state is not None:
                self.state = tuple(s.detach() for s in self.state)
            if self.targets == "last":
                logits, self.state = last_word_logits(self.model, inputs, self.state)
                loss = F.cross_entropy(logits, targets[-1])  # (B, V) against the word after each window
            else:
                logits, self.state = self.model(inputs, self.state)
                loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # every position
            self.optimizer.zero_grad()
            loss.backward(retain_graph=self.state_fix == "retain_graph")
            self.optimizer.step()
            synchronize(self.device)  # on a GPU the work is queued: wait for it before reading the clock
            self.seconds.append(time.perf_counter() - start)
            self.losses.append(loss.item())


def time_variants(variants, source, seq_len, vocab_size, hidden_size, rounds, per_round=2, seed=0, device="cpu"):
    """{name: LoopRunner} after `rounds` rounds in which every variant trains `per_round` windows in turn.

    variants: {name: (model kind, state_fix)} as LOOP_VARIANTS.  Interleaving spreads the machine's noise
    over all variants alike; every variant sees the same windows in the same order.  Chapter 3."""
    runners = {name: LoopRunner(loop_model(kind, vocab_size, hidden_size, seed, device), source, seq_len, fix)
               for name, (kind, fix) in variants.items()}
    for _ in range(rounds):
        for runner in runners.values():
            runner.run(per_round)
    return runners


def window_summary(seconds, warmup=2, early=8, last=5):
    """What one variant's timed windows measured: {"early": median seconds of the `early` windows after the
    `warmup` first ones, "last": median seconds of the `last` windows, "total": seconds of all}.  The medians
    keep one slow window (the machine's noise) from deciding a number.  Chapter 3."""
    seconds = np.asarray(seconds, dtype=float)
    if len(seconds) < warmup + early or len(seconds) < last:
        raise ValueError(f"window_summary needs at least {max(warmup + early, last)} timed windows, "
                         f"got {len(seconds)}")
    return {"early": float(np.median(seconds[warmup:warmup + early])), "last": float(np.median(seconds[-last:])),
            "total": float(seconds.sum())}