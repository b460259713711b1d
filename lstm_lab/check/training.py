"""`check_training`: a student's language-model training loop, run for a few windows of a real corpus.

The interface the student's code must offer (chapter 6's, in three small functions):

    make_model(vocab_size) -> model          model(tokens (T, B), state=None) -> logits (T, B, V), state
    train_windows(model, windows) -> losses  trains `model` in place on the (inputs, targets) windows, each (T, B),
                                             in order, the state carried from each window into the next (they are
                                             consecutive text of B streams); returns each window's training loss:
                                             the mean negative log-likelihood per token, in nats
    evaluate(model, windows) -> perplexity   optional: the perplexity of the windows, state carried
    loss_fn(logits, targets, pad_id) -> loss optional: mean NLL over the targets that are not pad_id

    report = check_training(train_windows, make_model, evaluate=evaluate, loss_fn=loss_fn)

The check watches every forward call (a hook): whether the state coming in still carries the last window's graph,
whether it was reset, how large the graph grows, how long each window takes; it compares the weights before and
after, the first window's loss with the model's true mean NLL, the held-out NLL before and after, and the
student's perplexity and masked loss with the formulas students get wrong.  Introduced in chapter 6 (the loss and
perplexity; the padding in chapter 8, the autograd errors in chapter 4).
"""
import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from lstm_lab.check.cell import check_device
from lstm_lab.check.compare import check_size
from lstm_lab.check.report import Report, cause, describe_error
from lstm_lab.config import InputError
from lstm_lab.data.corpus import Corpus, batchify, bptt_windows, load_corpus
from lstm_lab.experiments.clinic import unregistered_named_tensors
from lstm_lab.lm_train import graph_size

__all__ = ["check_training", "WindowWatch", "check_windows", "held_out_nll", "loss_ratio_cause",
           "perplexity_hypotheses", "check_loss_fn"]


def check_windows(corpus, windows, seq_len, batch_size, data_dir=None):
    """(vocab_size, training windows, held-out windows) from a corpus name or a loaded `Corpus`: `windows` windows
    of the train split and four of the valid split, the last one shorter (a wrong mean shows).  Chapter 6."""
    if not isinstance(corpus, Corpus):
        corpus = load_corpus(corpus, level="char", data_dir=data_dir, progress=False)
    train = corpus.splits["train"][: batch_size * (windows * seq_len + 1)]
    valid = corpus.splits["valid"][: 4 * (3 * seq_len + seq_len // 2 + 1)]
    return len(corpus.vocab), list(bptt_windows(batchify(train, batch_size), seq_len)), \
        list(bptt_windows(batchify(valid, 4), seq_len))


def tensors_in(value):
    """Every tensor inside nested tuples, lists and dicts."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


class WindowWatch:
    """A forward hook that records, for every call of the model: whether a state came in, whether it still has a
    graph behind it (not detached) or is all zeros (reset), the graph size behind the logits, and the time.
    Chapter 4."""

    def __init__(self, model):
        self.calls = []
        self.handle = model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        state = tensors_in(list(args[1:]) + list(kwargs.values()))
        logits = tensors_in(output)[0]
        self.calls.append({"state": bool(state), "attached": any(t.grad_fn is not None for t in state),
                           "zeros": bool(state) and all(not t.any() for t in state),
                           "graph": graph_size(logits) if logits.grad_fn is not None else 0,
                           "time": time.perf_counter()})

    def close(self):
        self.handle.remove()


@torch.no_grad()
def held_out_nll(model, windows, device, reset=False):
    """[(summed NLL, tokens)] per window in eval mode, state carried (or reset), no gradients.  Chapter 6."""
    training = model.training
    model.eval()
    state, rows = None, []
    for inputs, targets in windows:
        logits, state = model(inputs.to(device), None if reset else state)
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.to(device).reshape(-1),
                              reduction="sum")
        rows.append((float(nll), targets.numel()))
    model.train(training)
    return rows


def loss_ratio_cause(reported, true, T, B):
    """A `Cause` if the first window's reported loss is the true mean NLL per token times a telling factor.
    Chapter 6."""
    factors = {T: ("loss_not_per_token", "summed over the time steps"), B: ("loss_not_per_token", "summed over the "
               "batch"), T * B: ("loss_not_per_token", "summed over every token"),
               1 / math.log(2): ("loss_wrong_base", "in bits (log base 2)"),
               1 / math.log(10): ("loss_wrong_base", "in log base 10")}
    ratio = reported / true
    for factor, (cause_id, words) in factors.items():
        if abs(ratio / factor - 1) < 0.05:
            return cause(cause_id, f"the first window's loss {reported:.4g} is {ratio:.3g} x the mean NLL per "
                                   f"token {true:.4g}: {words}")
    return cause("loss_not_per_token", f"the first window's loss {reported:.4g} is {ratio:.3g} x the mean NLL per "
                                       f"token {true:.4g}")


def perplexity_hypotheses(rows, reset_rows):
    """[(cause id, evidence, value)]: the perplexity students compute by mistake from per-window (NLL, tokens).
    Chapter 6."""
    means = [nll / n for nll, n in rows]
    mean = sum(nll for nll, _ in rows) / sum(n for _, n in rows)
    reset_mean = sum(nll for nll, _ in reset_rows) / sum(n for _, n in reset_rows)
    return [("perplexity_wrong_mean", "the mean of the windows' perplexities", sum(map(math.exp, means)) / len(means)),
            ("perplexity_wrong_mean", "exp of the mean of the windows' mean NLLs (not weighted by tokens)",
             math.exp(sum(means) / len(means))),
            ("perplexity_wrong_base", "2 ** (mean NLL in nats)", 2 ** mean),
            ("perplexity_wrong_base", "10 ** (mean NLL in nats)", 10 ** mean),
            ("perplexity_state_reset", "exp of the mean NLL with the state reset every window", math.exp(reset_mean))]


def check_loss_fn(report, loss_fn, vocab_size, device, seed):
    """The student's masked loss on a batch with padding, against cross_entropy(ignore_index=pad_id).  Chapter 8."""
    generator = torch.Generator().manual_seed(seed)
    T, B, pad_id = 7, 4, 0
    logits = torch.randn(T, B, vocab_size, generator=generator).to(device)
    targets = torch.randint(1, vocab_size, (T, B), generator=generator)
    lengths = torch.tensor([7, 5, 3, 2])
    targets[torch.arange(T)[:, None] >= lengths[None, :]] = pad_id  # the padded tail of the shorter sequences
    targets = targets.to(device)
    flat = lambda: (logits.reshape(-1, vocab_size), targets.reshape(-1))
    real = targets != pad_id
    right = float(F.cross_entropy(*flat(), ignore_index=pad_id))
    try:
        got = float(loss_fn(logits, targets, pad_id))
    except Exception as error:  # the student's code may raise anything; the report says what
        report.add("loss_fn runs", False, f"{type(error).__name__}: {str(error)[:120]}")
        return
    ok = abs(got - right) <= 1e-4 * abs(right)
    report.add("loss_fn ignores the padding", ok, f"{got:.4f}; mean over the {int(real.sum())} real tokens: "
                                                  f"{right:.4f} ({int((~real).sum())} pads)")
    summed = float(F.cross_entropy(*flat(), ignore_index=pad_id, reduction="sum"))
    wrong = {"padding counted as tokens": float(F.cross_entropy(*flat())),
             "the real tokens' NLL divided by every position": summed / targets.numel(),
             "summed, not averaged": summed}
    for words, value in wrong.items():
        if not ok and abs(got - value) <= 1e-4 * abs(value):
            report.diagnose(cause("padding_in_loss" if "summed" not in words else "loss_not_per_token", words))


def check_training(train_windows, make_model, evaluate=None, loss_fn=None, corpus="tinyshakespeare", windows=12,
                   seq_len=20, batch_size=8, device=None, data_dir=None, seed=0):
    """Run a student's training loop for a few windows of a real corpus (character level) and check what it does.

    train_windows, make_model, evaluate, loss_fn: the interface in the module docstring.  corpus: a corpus name
    (default Tiny Shakespeare, found through $LSTM_LAB_DATA) or a loaded `lstm_lab.data.corpus.Corpus`.
    windows, seq_len, batch_size: the training run (12 windows of 20 steps of 8 streams: seconds on a CPU).
    Returns a `Report`: the loop runs and returns a loss per window; the loss is the mean NLL per token in nats;
    the state is detached and carried; every weight trains; the held-out loss falls (the learning rate); the
    perplexity and the masked loss are right.  Introduced in chapter 6."""
    if not (callable(train_windows) and callable(make_model)):
        raise InputError("train_windows and make_model must be functions (see lstm_lab.check.training)")
    for name, value in (("evaluate", evaluate), ("loss_fn", loss_fn)):
        if value is not None and not callable(value):
            raise InputError(f"{name} must be a function or None, got {type(value).__name__}")
    windows, seq_len, batch_size = (check_size(n, v) for n, v in (("windows", windows), ("seq_len", seq_len),
                                                                   ("batch_size", batch_size)))
    if batch_size in (seq_len, seq_len * batch_size) or seq_len == 1:
        raise InputError(f"seq_len and batch_size must differ and seq_len be 2 or more (a loss summed over one "
                         f"could not be told from the other), got {seq_len} and {batch_size}")
    vocab_size, train, valid = check_windows(corpus, windows, seq_len, batch_size, data_dir)
    torch.manual_seed(seed)
    model = make_model(vocab_size)
    if not isinstance(model, nn.Module):
        raise InputError(f"make_model(vocab_size) must return an nn.Module, got {type(model).__name__}")
    device = check_device(device, list(model.named_parameters()))
    model.to(device)
    report = Report(f"check_training({getattr(train_windows, '__name__', 'train_windows')}, {windows} windows of "
                    f"{seq_len} x {batch_size} characters, vocabulary {vocab_size}) on {device}")
    watched = list(model.named_parameters()) + unregistered_named_tensors(model)
    before = [t.detach().clone() for _, t in watched]
    (nll0, n0), = held_out_nll(model, train[:1], device)
    valid_before = held_out_nll(model, valid, device)
    watch = WindowWatch(model)
    start = time.perf_counter()
    try:
        losses = train_windows(model, [(x.to(device), y.to(device)) for x, y in train])
    except Exception as error:  # the student's code may raise anything; the report says what and why
        watch.close()
        report.add("train_windows runs", False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
        attached = any(c["attached"] for c in watch.calls[1:])
        if attached and "inplace" in str(error):
            report.diagnose(cause("retain_graph", "the state still holds the last window's graph, so backward "
                                                  "reaches weights the optimizer has since changed in place"))
        report.diagnose(describe_error(error))
        return report
    watch.close()
    seconds = time.perf_counter() - start
    losses = [float(v) for v in losses] if isinstance(losses, (list, tuple)) else None
    if not report.add("returns one finite loss per window", losses is not None and len(losses) == len(train)
                      and all(map(math.isfinite, losses)),
                      f"{len(losses) if losses is not None else 'no list of'} losses for {len(train)} windows"):
        if losses and not all(map(math.isfinite, losses)):
            report.diagnose(cause("lr_too_high", f"losses {losses[:3]} ... {losses[-1]}"))
        return report
    true0 = nll0 / n0
    if not report.add("loss is the mean NLL per token, in nats", abs(losses[0] / true0 - 1) < 0.05,
                      f"first window {losses[0]:.4f}, its mean NLL per token {true0:.4f}"):
        report.diagnose(loss_ratio_cause(losses[0], true0, seq_len, batch_size))
    state_properties(report, watch.calls, seconds)
    weight_properties(report, watched, len(list(model.parameters())), before, valid_before, held_out_nll(model, valid, device))
    if evaluate is not None:
        check_perplexity(report, evaluate, model, valid, device)
    if loss_fn is not None:
        check_loss_fn(report, loss_fn, vocab_size, device, seed)
    return report


def state_properties(report, calls, seconds):
    """The state detached and carried, from the hook's records of every forward call."""
    later = calls[1:]
    attached = [k + 1 for k, c in enumerate(later) if c["attached"]]
    graphs = [c["graph"] for c in calls]
    times = [b["time"] - a["time"] for a, b in zip(calls, calls[1:])]
    growth = f"graph nodes per window {graphs[0]} ... {graphs[-1]}" + (
        f"; seconds per window {times[0]:.3f} ... {times[-1]:.3f}" if len(times) > 1 else "")
    if not report.add("the state is detached between windows", not attached, growth):
        report.diagnose(cause("retain_graph", f"window {attached[0]} receives a state that still holds the last "
                                              f"window's graph, and no error stopped it: {growth}"))
    reset = [k + 1 for k, c in enumerate(later) if not c["state"] or c["zeros"]]
    if not report.add("the state is carried between windows", not reset,
                      f"{len(reset)} of {len(later)} windows start from zeros" if reset else f"{len(calls)} forward "
                      f"calls, {seconds:.2f} s"):
        report.diagnose(cause("state_reset", f"windows {reset[:3]} ... start from a zero (or no) state"))


def weight_properties(report, watched, registered, before, valid_before, valid_after):
    """Every weight changed (the first `registered` watched tensors are parameters, the rest are not); the
    held-out NLL fell by a sensible amount."""
    unchanged = [name for (name, t), b in zip(watched, before) if torch.equal(t.detach(), b)]
    unregistered = [name for name, _ in watched[registered:]]
    changes = [float((t.detach() - b).norm() / (b.norm() + 1e-12)) for (_, t), b in zip(watched, before)]
    report.add("every weight is trained", not unchanged and not unregistered,
               f"unchanged: {', '.join(unchanged[:4])}{' ...' if len(unchanged) > 4 else ''}" if unchanged else
               f"{len(watched)} tensors changed, median relative change {sorted(changes)[len(changes) // 2]:.1e}")
    if unregistered:
        report.diagnose(cause("unregistered_parameters", f"{len(unregistered)} tensors are not in parameters(), "
                                                         f"e.g. {unregistered[0]}"))
    elif unchanged:
        report.diagnose(cause("parameters_frozen", f"{len(unchanged)} of {len(watched)} parameters never changed, "
                                                   f"e.g. {unchanged[0]}"))
    nll = lambda rows: sum(r[0] for r in rows) / sum(r[1] for r in rows)
    start, end = nll(valid_before), nll(valid_after)
    median = sorted(changes)[len(changes) // 2]
    too_high = not math.isfinite(end) or end > start * 1.02  # held-out NLL rose: the steps overshoot
    too_low = end > start * 0.98 and median < 1e-2  # barely fell, and the weights barely moved
    if not report.add("learning rate: the held-out NLL falls, the weights move", not (too_high or too_low),
                      f"{start:.3f} -> {end:.3f} nats; median relative weight change {median:.1e}"):
        if too_high:
            report.diagnose(cause("lr_too_high", f"held-out NLL {start:.3f} -> {end:.3f}"))
        elif not unchanged and not unregistered:
            report.diagnose(cause("lr_too_low", f"held-out NLL {start:.3f} -> {end:.3f}; the weights moved by "
                                                f"{median:.1e} of their size"))


def check_perplexity(report, evaluate, model, valid, device):
    """The student's perplexity of the held-out windows against exp of the mean NLL per token, state carried."""
    rows, reset_rows = held_out_nll(model, valid, device), held_out_nll(model, valid, device, reset=True)
    right = math.exp(sum(r[0] for r in rows) / sum(r[1] for r in rows))
    try:
        got = float(evaluate(model, [(x.to(device), y.to(device)) for x, y in valid]))
    except Exception as error:  # the student's code may raise anything; the report says what
        report.add("evaluate runs", False, f"{type(error).__name__}: {str(error)[:120]}")
        return
    if report.add("perplexity = exp(mean NLL per token), state carried", abs(got / right - 1) < 1e-3,
                  f"{got:.3f}; expected {right:.3f}"):
        return
    for cause_id, words, value in perplexity_hypotheses(rows, reset_rows):
        if abs(got / value - 1) < 1e-3:
            report.diagnose(cause(cause_id, f"{got:.3f} is {words}"))
            return
