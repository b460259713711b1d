"""Training a `LanguageModel`: stateful truncated BPTT, Zaremba's loss and learning-rate schedule, perplexity.

Introduced in chapter 6; mixed precision (`config.amp`), CUDA graphs and data-parallel ranks in chapter 7.
"""
import math
import sys
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from lstm_lab.corpus import batchify, bptt_windows, num_windows
from lstm_lab.distributed import SINGLE, shard_streams, sum_over_ranks, unwrap
from lstm_lab.model import detach_state
from lstm_lab.runtime import autocast, grad_scaler


def lm_loss(logits, targets, sum_over_time=True):
    """(loss to backpropagate, summed NLL) of next-token predictions.

    logits (T, B, V), targets (T, B).  The summed NLL is -sum log p(target) over all T*B positions.
    sum_over_time=True gives Zaremba's training loss: summed over the T steps, averaged over the B streams
    (= T x PyTorch's default mean over T*B, so at lr 1 the gradients are T times larger than with the mean).
    Introduced in chapter 6."""
    T, B, V = logits.shape
    nll_sum = F.cross_entropy(logits.reshape(T * B, V), targets.reshape(T * B), reduction="sum")
    loss = nll_sum / B if sum_over_time else nll_sum / (T * B)
    return loss, nll_sum


def perplexity(total_nll, num_tokens):
    """exp(total NLL / tokens): computed from the summed log-loss, never by multiplying probabilities."""
    return math.exp(total_nll / num_tokens)


def zaremba_lr(epoch, lr, decay_after, lr_decay):
    """Learning rate of epoch `epoch` (1-based): lr for the first `decay_after` epochs, then x lr_decay per epoch."""
    return lr * lr_decay ** max(epoch - decay_after, 0)


def next_lr(config, epoch, lr, improved):
    """The learning rate for epoch `epoch` + 1 after finishing `epoch` at rate `lr`.

    "zaremba": the fixed decay; "plateau": x lr_decay when the validation loss did not improve; "constant"."""
    if config.schedule == "zaremba":
        return zaremba_lr(epoch + 1, config.lr, config.decay_after, config.lr_decay)
    if config.schedule == "plateau" and not improved:
        return lr * config.lr_decay
    return lr


def train_epoch(model, source, optimizer, config, device=None, progress=True, desc="train", scaler=None):
    """One pass of stateful truncated BPTT over a batchified source (S, B).

    The state flows from each window into the next (the streams are continuous text) but is detached first,
    so gradients stop at the window's start and the graph never grows beyond seq_len steps.
    config.amp: forward and loss under autocast in that dtype, with `scaler` for float16 (chapter 7).
    model may be a DistributedDataParallel wrapper, source then this rank's streams (chapter 7).
    Returns {"nll": summed NLL, "tokens": count, "seconds": wall time}.  Introduced in chapter 6."""
    model.train()
    device = device or next(model.parameters()).device
    state = unwrap(model).init_state(source.shape[1])
    total_nll, tokens, start = torch.zeros((), device=device), 0, time.perf_counter()
    steps = num_windows(source, config.seq_len)
    steps = min(steps, config.max_batches) if config.max_batches else steps
    bar = make_bar(steps, desc, progress)
    for _, (inputs, targets) in zip(range(steps), bptt_windows(source, config.seq_len)):
        state = detach_state(state)  # keep the values, forget the previous window's graph
        state, nll_sum = train_window(model, inputs.to(device), targets.to(device), state, optimizer, config, scaler)
        total_nll += nll_sum
        tokens += targets.numel()
        bar.update(1)
        if progress and bar.n % 50 == 0:
            bar.set_postfix(ppl=f"{perplexity(total_nll.item(), tokens):.1f}", refresh=False)
    bar.close()
    return {"nll": total_nll.item(), "tokens": tokens, "seconds": time.perf_counter() - start}


def train_window(model, inputs, targets, state, optimizer, config, scaler=None):
    """One training step on one window: forward and loss (under autocast when config.amp is set), backward,
    clipping, optimizer step.  inputs, targets (T, B) on the model's device.  Returns (the final state, still
    attached to this window's graph, and the window's summed NLL, detached).  Introduced in chapter 6."""
    with autocast(inputs.device, config.amp):  # mixed precision; changes nothing when config.amp is None
        logits, state = model(inputs, state)  # (T, B, V)
        loss, nll_sum = lm_loss(logits, targets, config.sum_over_time)
    optimizer.zero_grad(set_to_none=True)
    backward_and_step(model, loss, optimizer, config, scaler)
    return state, nll_sum.detach()


def backward_and_step(model, loss, optimizer, config, scaler=None):
    """The end of every training window: backward, clip the global gradient norm (if config.clip_norm), step.

    Gradients must have been zeroed (or set to None) before.  On CUDA tensors the clipping uses foreach
    kernels with no CPU sync, so this also runs inside a CUDA graph capture.  scaler: a GradScaler for float16
    mixed precision (`scaled_backward_and_step`, chapter 7).  Introduced in chapter 6."""
    if scaler is not None:
        return scaled_backward_and_step(model, loss, optimizer, config, scaler)
    loss.backward()
    if config.clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
    optimizer.step()


def scaled_backward_and_step(model, loss, optimizer, config, scaler):
    """`backward_and_step` for float16 mixed precision, with a torch.amp.GradScaler.

    The gradients are unscaled before clipping, so clip_norm bounds the true gradient, not scale x gradient.
    Chapter 7."""
    scaler.scale(loss).backward()  # loss x scale: small gradients stay above float16's smallest numbers
    scaler.unscale_(optimizer)  # divide the gradients by the scale, in place, before anything reads them
    if config.clip_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
    scaler.step(optimizer)  # skips the step if a gradient overflowed to inf or nan
    scaler.update()  # a smaller scale after an overflow, a larger one after a long run without


@torch.no_grad()
def evaluate(model, tokens, batch_size=1, seq_len=100, device=None, progress=False, desc="eval"):
    """Perplexity of a 1-D token sequence, read as `batch_size` streams with the state carried throughout.

    With batch_size=1 every token but the first is predicted with the whole text before it as context (the
    window length only sets how often the state is detached: it does not change the result).  A run trained
    with mixed precision is evaluated in float32 too (no autocast here): evaluation is a small share of the
    time, and its perplexities then compare with those of float32 runs.
    Returns {"nll": mean NLL per token, "ppl": perplexity, "tokens": count}.  Introduced in chapter 6."""
    model.eval()
    device = device or next(model.parameters()).device
    source = batchify(tokens, batch_size)
    if source.shape[0] < 2:
        raise ValueError(f"evaluating {tokens.numel()} tokens as {batch_size} streams leaves nothing to predict: "
                         "use a smaller batch_size")
    state = model.init_state(batch_size)
    total_nll, count = torch.zeros((), device=device), 0
    bar = make_bar(num_windows(source, seq_len), desc, progress)
    for inputs, targets in bptt_windows(source, seq_len):
        logits, state = model(inputs.to(device), state)
        total_nll += lm_loss(logits, targets.to(device))[1]
        count += targets.numel()
        bar.update(1)
    bar.close()
    total = total_nll.item()
    return {"nll": total / count, "ppl": perplexity(total, count), "tokens": count}


def graph_size(loss):
    """Number of autograd nodes behind `loss`: how much graph backward() would walk (and memory it holds).

    Introduced in chapter 6 to show that detaching the state keeps this constant from window to window."""
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(next_node for next_node, _ in node.next_functions)  # the nodes this one feeds gradient to
    return len(seen)


def make_bar(total, desc, progress):
    """A tqdm bar that works in notebooks and terminals; rare updates when writing to a log file."""
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    return tqdm(total=total, desc=desc, disable=not progress, leave=False, mininterval=0.5 if interactive else 60)


def new_run_state(config):
    """Where a run stands before its first epoch: {"epoch", "lr", "best_valid_nll", "bad_epochs", "history"}."""
    return {"epoch": 0, "lr": config.lr, "best_valid_nll": math.inf, "bad_epochs": 0, "history": []}


def best_epoch(history):
    """The epoch with the best validation loss so far (the last one that improved it), or 0 if none did."""
    return max((r["epoch"] for r in history if r["improved"]), default=0)


def train(model, data, config, device=None, run_state=None, optimizer=None, on_epoch=None, progress=True,
          graphed=False, scaler=None, world=SINGLE):
    """Train `model` on data["train"] for config.epochs epochs, validating on data["valid"] after each.

    data: {"train": (N,), "valid": (M,)} 1-D LongTensors of token ids.  run_state: from `new_run_state`, or from
    a checkpoint to resume.  on_epoch(model, optimizer, run_state) is called after every epoch (checkpointing).
    graphed: on a GPU, replay each training window from a CUDA graph (`train_epoch_graphed`, chapter 7).
    scaler: the GradScaler of config.amp "float16" (`lstm_lab.runtime.grad_scaler`, chapter 7); a new one if
    None, so float16 never trains unscaled (pass the saved one to resume).
    world: this process's rank among `world.world_size` (chapter 7); `model` is then a DistributedDataParallel
    wrapper, and the rank trains its share of the config.batch_size streams (`shard_streams`) at the learning
    rate of one process (see lstm_lab.distributed).  on_epoch gets the unwrapped model.
    Early stopping: after `config.patience` epochs without a better validation loss (0 = never).
    Returns the history: one dict per epoch (lr, train/valid NLL and perplexity, seconds, tokens per second).
    Introduced in chapter 6."""
    device = device or next(model.parameters()).device
    run_state = run_state or new_run_state(config)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=run_state["lr"])
    scaler = scaler if scaler is not None else grad_scaler(config.amp, device)
    source = shard_streams(batchify(data["train"], config.batch_size), world.rank, world.world_size)  # (S, B / N)
    for epoch in range(run_state["epoch"] + 1, config.epochs + 1):
        if config.patience and run_state["bad_epochs"] >= config.patience:
            break  # early stopping
        record = run_epoch(model, source, data["valid"], optimizer, config, run_state, device, progress, graphed,
                           scaler, world.world_size)
        run_state["history"].append(record)
        if on_epoch is not None:
            on_epoch(unwrap(model), optimizer, run_state)
    return run_state["history"]


def run_epoch(model, source, valid, optimizer, config, run_state, device, progress, graphed=False, scaler=None,
              world_size=1):
    """Train one epoch at run_state["lr"], validate, and advance run_state; returns the epoch's record.

    With world_size ranks, the training NLL and tokens are summed over all of them (the whole batch's
    perplexity), and every rank validates the unwrapped model: the same weights and text, so the same result."""
    epoch, lr = run_state["epoch"] + 1, run_state["lr"]
    for group in optimizer.param_groups:
        group["lr"] = lr
    if graphed:
        stats = train_epoch_graphed(model, source, optimizer, config, device)
    else:
        stats = train_epoch(model, source, optimizer, config, device, progress, f"epoch {epoch}", scaler)
    stats = sum_over_ranks(stats, world_size, device)
    valid_start = time.perf_counter()
    val = evaluate(unwrap(model), valid, config.eval_batch_size, config.seq_len, device)
    valid_seconds = time.perf_counter() - valid_start
    improved = val["nll"] < run_state["best_valid_nll"]
    run_state.update(epoch=epoch, lr=next_lr(config, epoch, lr, improved),
                     best_valid_nll=min(val["nll"], run_state["best_valid_nll"]),
                     bad_epochs=0 if improved else run_state["bad_epochs"] + 1)
    return {"epoch": epoch, "lr": lr, "train_nll": stats["nll"] / stats["tokens"],
            "train_ppl": perplexity(stats["nll"], stats["tokens"]), "valid_nll": val["nll"], "valid_ppl": val["ppl"],
            "improved": improved, "train_seconds": stats["seconds"], "valid_seconds": valid_seconds,
            "train_tokens": stats["tokens"], "tokens_per_second": stats["tokens"] / stats["seconds"]}


def capture_train_step(model, optimizer, config, inputs, targets, state, warmup=3):
    """One training window -- forward, loss, backward, clipping, optimizer step, state carried on -- captured
    in a CUDA graph, for fixed-shape windows on a GPU.

    inputs, targets (T, B) and state ((L, B, H), (L, B, H)) become the graph's *static* tensors: to train on a
    window, copy it into them and call the returned `replay()`.  Each replay writes the detached final state
    back into `state` (truncated BPTT) and adds the window's summed NLL to the returned `nll` tensor, and the
    CPU never waits for the GPU.  Capturing needs `warmup` eager steps first (on a side stream, as PyTorch's
    CUDA-graph notes ask); they would train the model, so the weights and the optimizer's state are put back
    as they were, in place (the graph keeps the tensors' addresses).  The learning rate is baked into the
    graph: capture again after changing it.  Returns (replay, nll).  Chapter 7."""
    nll = torch.zeros((), device=inputs.device)

    def step():
        logits, (h, c) = model(inputs, state)
        loss, nll_sum = lm_loss(logits, targets, config.sum_over_time)
        backward_and_step(model, loss, optimizer, config)
        state[0].copy_(h.detach())  # the next window starts from these values, with no graph behind them
        state[1].copy_(c.detach())
        nll.add_(nll_sum.detach())

    before = snapshot(model, optimizer, state)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream().wait_stream(side)
    restore(before)
    nll.zero_()
    optimizer.zero_grad(set_to_none=True)  # backward in the graph then allocates .grad, which replays overwrite
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records the kernels; nothing runs until a replay
        step()
    return graph.replay, nll


def snapshot(model, optimizer, state):
    """[(tensor, copy of its values)] for every parameter, optimizer-state tensor and state tensor."""
    tensors = list(model.parameters()) + list(state)
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return [(t, t.detach().clone()) for t in tensors]


def restore(saved):
    """Put back the values `snapshot` saved, in place, so anything that holds the tensors still sees them."""
    with torch.no_grad():
        for tensor, values in saved:
            tensor.copy_(values)


def train_epoch_graphed(model, source, optimizer, config, device, warmup=3):
    """`train_epoch` on a GPU with every full-length window replayed from a CUDA graph (`capture_train_step`).

    The same windows, loss, clipping and updates as `train_epoch` (dropout draws other masks); the last, shorter
    window of an epoch, if any, runs eagerly.  The graph is captured at the start of every epoch, at that
    epoch's learning rate.  Returns {"nll", "tokens", "seconds"} like `train_epoch`.  Chapter 7."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}: train without graphs on a CPU")
    if config.amp:
        raise ValueError(f"CUDA graphs do not support amp {config.amp!r}: train with amp None, or without graphs")
    model.train()
    start = time.perf_counter()
    source = source.to(device)  # the whole text on the GPU once: each window is then a GPU-to-GPU copy
    windows = list(bptt_windows(source, config.seq_len))
    windows = windows[:config.max_batches] if config.max_batches else windows
    full = [w for w in windows if w[0].shape[0] == config.seq_len]  # bptt_windows: only the last can be short
    inputs, targets = full[0][0].clone(), full[0][1].clone()  # the static tensors the graph reads
    state = model.init_state(source.shape[1])
    replay, nll = capture_train_step(model, optimizer, config, inputs, targets, state, warmup)
    for window_inputs, window_targets in full:
        inputs.copy_(window_inputs)
        targets.copy_(window_targets)
        replay()
    total_nll, tokens = nll.item(), sum(t.numel() for _, t in full)
    for window_inputs, window_targets in windows[len(full):]:
        optimizer.zero_grad(set_to_none=False)  # the graph owns the .grad tensors: zero them, keep them
        logits, _ = model(window_inputs, tuple(s.detach() for s in state))
        loss, nll_sum = lm_loss(logits, window_targets, config.sum_over_time)
        backward_and_step(model, loss, optimizer, config)
        total_nll, tokens = total_nll + nll_sum.item(), tokens + window_targets.numel()
    return {"nll": total_nll, "tokens": tokens, "seconds": time.perf_counter() - start}
