"""The training loop every model of the book uses: one epoch, the loop over epochs, and where a run stands.

    history = fit(model, task, optimizer, new_run_state(lr), epochs=10)

What differs between the book's models lives in a *task* (`lstm_lab.lm_train.LanguageModelTask` for the word
language model of chapter 6, `lstm_lab.poems_train.PoemsTask` for chapter 8's poems, `lstm_lab.seq2seq_train.
DatesTask` for chapter 9's date translator).  A task is a small object with

    task.train_epoch(model, optimizer, epoch, scaler, progress) -> stats   one pass, usually `train_epoch` below
                                                                           with the task's batches and step
    task.validate(model) -> {name: number}     the validation numbers after an epoch, task.monitor among them
    task.monitor                               the name of the validation number to minimise ("valid_nll")
    task.next_lr(epoch, lr, improved) -> lr    the learning-rate schedule
    task.train_record(stats) -> {name: number} what an epoch's training stats are recorded as

and, for run folders (`lstm_lab.runs.train_run`), what to build, save and test (see `lstm_lab.runs`).  The
loop itself -- forward and loss, backward, clipping, optimizer step; validation; schedule; early stopping;
a callback that checkpoints -- is written once, here.  Introduced in chapter 6.
"""
import math
import sys
import time

import torch
from tqdm.auto import tqdm

from lstm_lab.runtime import autocast

__all__ = ["train_epoch", "train_batch", "backward_and_step", "scaled_backward_and_step", "perplexity", "make_bar",
           "new_run_state", "best_epoch", "diverged", "fit", "run_epoch", "constant_lr"]


def train_epoch(model, batches, step, optimizer, clip_norm=0.0, amp=None, scaler=None, progress=False,
                desc="train", postfix=None):
    """One pass over `batches`, one optimizer step per batch: the inner loop of every model in the book.

    step(model, batch) -> (loss, stats) is the model's part: the forward pass and the loss of one batch, and a
    dict of numbers (or tensors, or lists) to add up over the epoch, e.g. {"nll": summed NLL, "tokens": count}.
    Everything else is the same for every model: the forward pass under autocast when `amp` is set (chapter 7),
    gradients zeroed, backward, the global gradient norm clipped to `clip_norm` (0: not clipped), the step.
    postfix(totals) -> str: shown beside the progress bar.  Returns the summed stats, plus "seconds" and
    "batches".  Introduced in chapter 6."""
    model.train()
    totals, start = {}, time.perf_counter()
    bar = make_bar(len(batches), desc, progress)
    for batch in batches:
        add_up(totals, train_batch(model, batch, step, optimizer, clip_norm, amp, scaler))
        bar.update(1)
        if postfix is not None and bar.n % 50 == 0:
            bar.set_postfix_str(postfix(totals), refresh=False)
    bar.close()
    return {**totals, "seconds": time.perf_counter() - start, "batches": len(batches)}


def train_batch(model, batch, step, optimizer, clip_norm=0.0, amp=None, scaler=None):
    """One optimizer step on one batch: forward and loss by `step` (under autocast when `amp` is set), gradients
    zeroed, backward, clipping, the step.  Returns the batch's stats.  Introduced in chapter 6."""
    with autocast(next(model.parameters()).device, amp):  # mixed precision; changes nothing when amp is None
        loss, stats = step(model, batch)
    optimizer.zero_grad(set_to_none=True)
    backward_and_step(model, loss, optimizer, clip_norm, scaler)
    return stats


def add_up(totals, stats):
    """Add every value of `stats` to the one of the same name in `totals` (in place; a new name starts there)."""
    for name, value in stats.items():
        totals[name] = totals[name] + value if name in totals else value


def backward_and_step(model, loss, optimizer, clip_norm=0.0, scaler=None):
    """The end of every training batch: backward, clip the global gradient norm to `clip_norm` (0: no clipping),
    step.

    Gradients must have been zeroed (or set to None) before.  On CUDA tensors the clipping uses foreach
    kernels with no CPU sync, so this also runs inside a CUDA graph capture.  scaler: a GradScaler for float16
    mixed precision (`scaled_backward_and_step`, chapter 7).  Introduced in chapter 6."""
    if scaler is not None:
        return scaled_backward_and_step(model, loss, optimizer, clip_norm, scaler)
    loss.backward()
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    optimizer.step()


def scaled_backward_and_step(model, loss, optimizer, clip_norm, scaler):
    """`backward_and_step` for float16 mixed precision, with a torch.amp.GradScaler.

    The gradients are unscaled before clipping, so clip_norm bounds the true gradient, not scale x gradient.
    Chapter 7."""
    scaler.scale(loss).backward()  # loss x scale: small gradients stay above float16's smallest numbers
    scaler.unscale_(optimizer)  # divide the gradients by the scale, in place, before anything reads them
    if clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm)
    scaler.step(optimizer)  # skips the step if a gradient overflowed to inf or nan
    scaler.update()  # a smaller scale after an overflow, a larger one after a long run without


def perplexity(total_nll, num_tokens):
    """exp(total NLL / tokens): computed from the summed log-loss, never by multiplying probabilities.

    A mean NLL beyond what a float can exponentiate (about 709.8: a model that has diverged) gives inf rather
    than an OverflowError, so a diverged epoch is recorded like any other.  Introduced in chapter 6."""
    mean = total_nll / num_tokens
    return math.exp(mean) if mean < 709.78 else math.inf


def make_bar(total, desc, progress):
    """A tqdm bar that works in notebooks and terminals; rare updates when writing to a log file.  Chapter 6."""
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, mininterval=0.5 if interactive else 60)


# ---------------------------------------------------------------------------------------------------------------
# The loop over epochs


def new_run_state(lr):
    """Where a run stands before its first epoch: {"epoch", "lr", "best_valid", "bad_epochs", "history"}.

    best_valid: the best value of the task's monitored validation number so far; bad_epochs: epochs since it
    last improved.  A checkpoint stores the run state, so a resumed run goes on from here.  Chapter 6."""
    return {"epoch": 0, "lr": lr, "best_valid": math.inf, "bad_epochs": 0, "history": []}


def best_epoch(history):
    """The epoch with the best validation number so far (the last one that improved it), or 0 if none did.
    Chapter 8."""
    return max((r["epoch"] for r in history if r["improved"]), default=0)


def diverged(record):
    """The validation numbers (names starting "valid") of an epoch's record that are not finite -- NaN, or a
    perplexity past what a float holds -- as a dict: empty (false) unless the run diverged there.  No later epoch
    can recover from it.  Chapter 6."""
    return {name: value for name, value in record.items()
            if name.startswith("valid") and isinstance(value, (int, float)) and not math.isfinite(value)}


def fit(model, task, optimizer, run_state, epochs, patience=0, on_epoch=None, scaler=None, progress=False):
    """Train `model` until run_state["epoch"] reaches `epochs`, validating after every epoch; returns the history.

    task: what is particular to the model (see the module's docstring).  run_state: from `new_run_state`, or
    from a checkpoint to resume; it is advanced in place.  on_epoch(model, optimizer, run_state) is called after
    every epoch (a run folder checkpoints there).  Stops early after `patience` epochs without a better
    validation number (0: never), and after an epoch that `diverged`.  Introduced in chapter 6."""
    for _ in range(run_state["epoch"] + 1, epochs + 1):
        if patience and run_state["bad_epochs"] >= patience:
            break  # early stopping
        record = run_epoch(model, task, optimizer, run_state, scaler, progress)
        run_state["history"].append(record)
        if on_epoch is not None:
            on_epoch(model, optimizer, run_state)
        if diverged(record):
            break  # no later epoch can recover
    return run_state["history"]


def run_epoch(model, task, optimizer, run_state, scaler=None, progress=False):
    """Train one epoch at run_state["lr"], validate, advance run_state; returns the epoch's record.

    The record: epoch, lr, the task's training and validation numbers, whether the monitored number improved
    (an epoch that `diverged` never does), and the seconds spent training and validating.  Chapter 6."""
    epoch, lr = run_state["epoch"] + 1, run_state["lr"]
    for group in optimizer.param_groups:
        group["lr"] = lr
    stats = task.train_epoch(model, optimizer, epoch, scaler, progress)
    valid_start = time.perf_counter()
    valid = task.validate(model)
    valid_seconds = time.perf_counter() - valid_start
    improved = valid[task.monitor] < run_state["best_valid"] and not diverged(valid)
    run_state.update(epoch=epoch, lr=task.next_lr(epoch, lr, improved),
                     best_valid=valid[task.monitor] if improved else run_state["best_valid"],
                     bad_epochs=0 if improved else run_state["bad_epochs"] + 1)
    return {"epoch": epoch, "lr": lr, **task.train_record(stats), **valid, "improved": improved,
            "train_seconds": stats["seconds"], "valid_seconds": valid_seconds}


def constant_lr(epoch, lr, improved):
    """The learning-rate schedule of a task that keeps its rate (Adam in chapters 8 and 9)."""
    return lr
