"""Training a `LanguageModel`: stateful truncated BPTT, Zaremba's loss and learning-rate schedule, perplexity.

The word language model's part of the book's one training loop (`lstm_lab.train`): its batches (the windows of
`batchify`'s streams), its step (`WindowStep`, the state carried from window to window), its validation and
schedule, and what a run folder records and tests (`LanguageModelTask`).

    history = train(model, {"train": ids, "valid": ids}, train_config)

Introduced in chapter 6; mixed precision (`config.amp`), CUDA graphs and data-parallel ranks in chapter 7.
"""
import time
from dataclasses import asdict, replace

import torch
import torch.nn.functional as F

from lstm_lab.checkpoint import checkpoint_configs, load_model_state
from lstm_lab.config import InputError, ModelConfig, TrainConfig
from lstm_lab.data.corpus import EOS, UNK, Vocab, batchify, bptt_windows, load_corpus, num_windows
from lstm_lab.distributed import SINGLE, shard_streams, sum_over_ranks, unwrap
from lstm_lab.generate import generate
from lstm_lab.model import LanguageModel, count_parameters, detach_state
from lstm_lab.runs import open_run
from lstm_lab.runtime import capture_cuda_graph
from lstm_lab.train import (backward_and_step, best_epoch, fit, make_bar, new_run_state, perplexity, train_batch,
                            train_epoch)

__all__ = ["lm_loss", "zaremba_lr", "next_lr", "WindowStep", "lm_epoch", "check_streams", "evaluate", "graph_size",
           "LanguageModelTask", "train", "capture_train_step", "restore", "train_epoch_graphed", "train_window",
           "load_lm_run"]


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


def zaremba_lr(epoch, lr, decay_after, lr_decay):
    """Learning rate of epoch `epoch` (1-based): lr for the first `decay_after` epochs, then x lr_decay per epoch.
    Chapter 6."""
    return lr * lr_decay ** max(epoch - decay_after, 0)


def next_lr(config, epoch, lr, improved):
    """The learning rate for epoch `epoch` + 1 after finishing `epoch` at rate `lr`.

    "zaremba": the fixed decay; "plateau": x lr_decay when the validation loss did not improve; "constant".
    Chapter 6."""
    if config.schedule == "zaremba":
        return zaremba_lr(epoch + 1, config.lr, config.decay_after, config.lr_decay)
    if config.schedule == "plateau" and not improved:
        return lr * config.lr_decay
    return lr


class WindowStep:
    """The word language model's `step` for `lstm_lab.train.train_epoch`: one truncated-BPTT window.

    The state flows from each window into the next (the streams are continuous text) but is detached first,
    so gradients stop at the window's start and the graph never grows beyond seq_len steps.  One WindowStep
    per epoch: the first window starts from zeros.  batch: (inputs, targets), each (T, B).  Chapter 6."""

    def __init__(self, sum_over_time=True):
        self.sum_over_time = sum_over_time  # Zaremba's loss (see `lm_loss`)
        self.state = None  # ((L, B, H), (L, B, H)) after the last window

    def __call__(self, model, batch):
        device = next(model.parameters()).device
        inputs, targets = (t.to(device) for t in batch)  # (T, B) each
        if self.state is None:
            self.state = unwrap(model).init_state(inputs.shape[1])
        state = detach_state(self.state)  # keep the values, forget the previous window's graph
        logits, self.state = model(inputs, state)  # (T, B, V)
        loss, nll_sum = lm_loss(logits, targets, self.sum_over_time)
        return loss, {"nll": nll_sum.detach(), "tokens": targets.numel()}


def lm_windows(source, config):
    """The training windows of one epoch of a batchified source (S, B): [(inputs, targets)], each (T, B), at
    most config.max_batches of them (0: all).  Chapter 6."""
    windows = list(bptt_windows(source, config.seq_len))
    return windows[:config.max_batches] if config.max_batches else windows


def lm_epoch(model, source, optimizer, config, scaler=None, progress=False, desc="train"):
    """One epoch of the word language model: `train_epoch` over `lm_windows` with a `WindowStep`.

    source (S, B): batchify's streams.  Returns {"nll": summed NLL (a tensor), "tokens", "seconds", "batches"}.
    Chapter 6."""
    return train_epoch(model, lm_windows(source, config), WindowStep(config.sum_over_time), optimizer,
                       config.clip_norm, config.amp, scaler, progress, desc,
                       postfix=lambda totals: f"ppl={perplexity(totals['nll'].item(), totals['tokens']):.1f}")


def check_streams(tokens, batch_size, split, name="batch_size"):
    """Raise InputError (a ValueError) unless the `split` text `tokens` (N,), cut into `batch_size` streams, leaves
    every stream 2 tokens or more (an input and its target); `name` is the setting the message names.  Chapter 6."""
    most = tokens.numel() // 2
    if not 1 <= batch_size <= most:
        raise InputError(f"{name} {batch_size} does not fit the {split} text ({tokens.numel():,} tokens): every one "
                         f"of the streams needs 2 tokens or more; expected 1 to {most:,}")


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


class LanguageModelTask:
    """The word (or character) language model as a task of the book's training loop (`lstm_lab.train.fit`) and
    of a run folder (`lstm_lab.runs.train_run`).

    configs: {"model": ModelConfig, "train": TrainConfig}.  data: {"train": (N,), "valid": (M,)} token ids, and
    "test" for a run folder's final test.  world: this process's rank among `world.world_size` (chapter 7); the
    model is then a DistributedDataParallel wrapper, and the rank trains its share of the config.batch_size
    streams (`shard_streams`) at the learning rate of one process.  graphed: on a GPU, replay each training
    window from a CUDA graph (`train_epoch_graphed`, chapter 7).  Chapter 6."""
    kind = "lm"  # the run-folder kind: `python -m lstm_lab train`
    monitor = "valid_nll"  # the validation number early stopping and best.pt follow
    data_sha256 = data_description = None  # of the corpus files read (set by `load`)

    def __init__(self, configs, data, device, world=SINGLE, graphed=False, vocab=None, preset=None):
        self.configs, self.data, self.device = configs, data, torch.device(device)
        self.config = configs["train"]
        self.world, self.graphed, self.vocab, self.preset = world, graphed, vocab, preset
        streams = batchify(data["train"], self.config.batch_size)  # (S, B)
        self.source = shard_streams(streams, world.rank, world.world_size)  # (S, B / N): this rank's streams

    @classmethod
    def load(cls, configs, device, data_dir=None, world=SINGLE, progress=False, graphed=False, preset=None):
        """The task of a run folder: its corpus read (`load_corpus`), and the model's vocab_size set from it."""
        config = configs["train"]
        corpus = load_corpus(config.corpus, config.level, data_dir, progress=progress,
                             max_vocab=config.max_vocab or None)
        for split, size, name in (("train", config.batch_size, "batch_size (--batch-size)"),
                                  ("valid", config.eval_batch_size, "eval_batch_size (the preset's)"),
                                  ("test", config.test_batch_size, "test_batch_size (the preset's)")):
            check_streams(corpus.splits[split], size, split, name)
        unk_share = (corpus.splits["train"] == corpus.vocab.stoi.get(UNK, -1)).float().mean().item()
        if unk_share > 0.5 and world.rank == 0:
            print(f"warning: {unk_share:.0%} of the training text reads as {UNK} (max_vocab {config.max_vocab}): the "
                  f"perplexity will mostly measure how well the model predicts {UNK}", flush=True)
        configs = {**configs, "model": replace(configs["model"], vocab_size=len(corpus.vocab))}
        task = cls(configs, corpus.splits, device, world, graphed, corpus.vocab, preset)
        task.data_sha256, task.data_description = corpus.sha256, corpus.description
        return task

    # --- the training loop's part (`fit`)
    def train_epoch(self, model, optimizer, epoch, scaler=None, progress=False):
        if self.graphed:
            return train_epoch_graphed(model, self.source, optimizer, self.config, self.device)
        return lm_epoch(model, self.source, optimizer, self.config, scaler, progress, f"epoch {epoch}")

    def train_record(self, stats):
        """The epoch's training numbers; with several ranks, summed over all of them (the whole batch's)."""
        stats = sum_over_ranks({**stats, "nll": float(stats["nll"])}, self.world.world_size, self.device)
        return {"train_nll": stats["nll"] / stats["tokens"], "train_ppl": perplexity(stats["nll"], stats["tokens"]),
                "train_tokens": stats["tokens"], "tokens_per_second": stats["tokens"] / stats["seconds"]}

    def validate(self, model):
        """Every rank validates the unwrapped model: the same weights and text, so the same result."""
        config = self.config
        valid = evaluate(unwrap(model), self.data["valid"], config.eval_batch_size, config.seq_len, self.device)
        return {"valid_nll": valid["nll"], "valid_ppl": valid["ppl"]}

    def next_lr(self, epoch, lr, improved):
        return next_lr(self.config, epoch, lr, improved)

    # --- the run folder's part (`lstm_lab.runs.train_run`)
    @property
    def settings(self):
        """What the run's loop needs from its configs: seed, epochs, patience, first lr, amp."""
        c = self.config
        return {"seed": c.seed, "epochs": c.epochs, "patience": c.patience, "lr": c.lr, "amp": c.amp}

    def vocab_tokens(self):
        """The vocabulary as JSON (vocab.json; its sha256 goes into every checkpoint)."""
        return self.vocab.itos

    def build_model(self):
        return LanguageModel(self.configs["model"])

    def make_optimizer(self, model):
        return torch.optim.SGD(model.parameters(), lr=self.config.lr)

    def epoch_line(self, r):
        return (f"epoch {r['epoch']:3d}  lr {r['lr']:.4g}  train ppl {r['train_ppl']:8.2f}  valid ppl "
                f"{r['valid_ppl']:8.2f}  {r['train_seconds']:6.0f} s  {r['tokens_per_second']:6.0f} tok/s")

    def results(self, run_state, model):
        """The results JSON of a run so far: configs, per-epoch numbers and totals."""
        history, model_config, train_config = run_state["history"], self.configs["model"], self.config
        train_tokens = sum(r["train_tokens"] for r in history)
        train_seconds = sum(r["train_seconds"] for r in history)
        return {"preset": self.preset, "rnn": model_config.rnn, "corpus": train_config.corpus,
                "data": self.data_description, "data_sha256": self.data_sha256, "amp": train_config.amp,
                "complete": False,
                "epochs": len(history), "planned_epochs": train_config.epochs,
                "parameters": count_parameters(model),
                "valid_ppl": [r["valid_ppl"] for r in history], "train_ppl": [r["train_ppl"] for r in history],
                "lr": [r["lr"] for r in history], "test_ppl": None, "best_epoch": best_epoch(history) or None,
                "wall_seconds": sum(r["train_seconds"] + r["valid_seconds"] for r in history),
                "tokens_per_second": train_tokens / train_seconds if train_seconds else None,
                "history": history, "model_config": asdict(model_config), "train_config": asdict(train_config)}

    def finish(self, model, run_state, load_best):
        """Test the final model as the paper does (and the best validation epoch's), with test_batch_size streams
        (1: the whole text as context); record samples from the final model.  load_best(model) loads the best
        epoch's weights into `model`.  Returns the fields to add to the results."""
        start, batch_size = time.perf_counter(), self.config.test_batch_size
        final = self.test_and_valid(model)
        samples = record_samples(model, self.vocab, self.config.level)
        best_at = best_epoch(run_state["history"])  # >= 1: a run that diverged is not tested (`lstm_lab.runs`)
        if best_at != run_state["epoch"]:
            load_best(model)
            best = self.test_and_valid(model)
        else:
            best = final
        seconds = time.perf_counter() - start
        print(f"test ppl {final['test']:.2f}, valid ppl {final['valid']:.2f} after epoch {run_state['epoch']}; "
              f"best valid epoch {best_at}: test {best['test']:.2f}, valid {best['valid']:.2f} "
              f"(batch size {batch_size}, {seconds:.0f} s)")
        return {"test_ppl": final["test"], "final_valid_ppl": final["valid"], "best_epoch": best_at,
                "best_epoch_test_ppl": best["test"], "best_epoch_valid_ppl": best["valid"],
                "test_eval": f"model after the last epoch ({run_state['epoch']}), as in the paper; batch size "
                             f"{batch_size}, state carried across the whole text",
                "test_eval_seconds": seconds, "samples": samples}

    def test_and_valid(self, model):
        """{"test": ppl, "valid": ppl} with test_batch_size streams (1: the whole text as context)."""
        batch_size = self.config.test_batch_size
        return {split: evaluate(model, self.data[split], batch_size, 100, self.device)["ppl"]
                for split in ("test", "valid")}


def record_samples(model, vocab, level="word", seed=0, steps=40):
    """A few texts sampled from the trained model, recorded with the settings that produced them.

    They start after a line break (<eos> for words, "\n" for characters, else the most frequent token), and from
    "the" where the vocabulary has it."""
    start = next((t for t in (EOS, "\n") if t in vocab.stoi), vocab.itos[0])
    prompts = [([start], 1.0, None), ([start], 0.7, None)] + ([(["the"], 1.0, 40)] if "the" in vocab.stoi else [])
    join = "" if level == "char" else " "
    samples = []
    for prompt, temperature, top_k in prompts:
        generator = torch.Generator().manual_seed(seed)
        tokens = generate(model, vocab, prompt, steps, temperature, min(top_k, len(vocab)) if top_k else None,
                          generator)
        samples.append({"prompt": join.join(prompt), "temperature": temperature, "top_k": top_k, "seed": seed,
                        "text": join.join(tokens)})
    return samples


def train(model, data, config, device=None, run_state=None, optimizer=None, on_epoch=None, progress=True,
          graphed=False, scaler=None, world=SINGLE):
    """Train `model` on data["train"] for config.epochs epochs, validating on data["valid"] after each.

    data: {"train": (N,), "valid": (M,)} 1-D LongTensors of token ids.  run_state: from `new_run_state`, or from
    a checkpoint to resume.  on_epoch(model, optimizer, run_state) is called after every epoch (checkpointing).
    graphed: on a GPU, replay each training window from a CUDA graph (`train_epoch_graphed`, chapter 7).
    scaler: the GradScaler of config.amp "float16" (`lstm_lab.runtime.grad_scaler`, chapter 7); pass the saved
    one to resume.  world: see `LanguageModelTask`.  Early stopping: after `config.patience` epochs without a
    better validation loss (0 = never).  Returns the history: one dict per epoch (lr, train/valid NLL and
    perplexity, seconds, tokens per second).  Introduced in chapter 6."""
    device = device or next(model.parameters()).device
    run_state = run_state or new_run_state(config.lr)
    optimizer = optimizer or torch.optim.SGD(model.parameters(), lr=run_state["lr"])
    if scaler is None and config.amp == "float16":
        scaler = torch.amp.GradScaler(torch.device(device).type)  # float16 never trains unscaled
    task = LanguageModelTask({"model": unwrap(model).config, "train": config}, data, device, world, graphed)
    return fit(model, task, optimizer, run_state, config.epochs, config.patience, on_epoch, scaler, progress)


# ---------------------------------------------------------------------------------------------------------------
# CUDA graphs (chapter 7)


def capture_train_step(model, optimizer, config, inputs, targets, state, warmup=3):
    """One training window -- forward, loss, backward, clipping, optimizer step, state carried on -- captured
    in a CUDA graph, for fixed-shape windows on a GPU.

    inputs, targets (T, B) and state ((L, B, H), (L, B, H)) become the graph's *static* tensors: to train on a
    window, copy it into them and call the returned `replay()`.  Each replay writes the detached final state
    back into `state` (truncated BPTT) and adds the window's summed NLL to the returned `nll` tensor, and the
    CPU never waits for the GPU.  Capturing needs `warmup` eager steps first (`capture_cuda_graph`); they would
    train the model, so the weights and the optimizer's state are put back as they were, in place (the graph
    keeps the tensors' addresses).  The learning rate is baked into the graph: capture again after changing
    it.  Returns (replay, nll).  Chapter 7."""
    nll = torch.zeros((), device=inputs.device)

    def step():
        optimizer.zero_grad(set_to_none=True)  # backward in the graph then allocates .grad, which replays overwrite
        logits, (h, c) = model(inputs, state)
        loss, nll_sum = lm_loss(logits, targets, config.sum_over_time)
        backward_and_step(model, loss, optimizer, config.clip_norm)
        state[0].copy_(h.detach())  # the next window starts from these values, with no graph behind them
        state[1].copy_(c.detach())
        nll.add_(nll_sum.detach())

    before = snapshot(model, optimizer, state)

    def undo_warmup():
        restore(before)
        nll.zero_()
    graph = capture_cuda_graph(step, warmup, before_capture=undo_warmup)
    return graph.replay, nll


def snapshot(model, optimizer, state):
    """[(tensor, copy of its values)] for every parameter, optimizer-state tensor and state tensor."""
    tensors = list(model.parameters()) + list(state)
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return [(t, t.detach().clone()) for t in tensors]


def restore(saved):
    """Put back the values `snapshot` saved, in place, so anything that holds the tensors still sees them.
    Chapter 6."""
    with torch.no_grad():
        for tensor, values in saved:
            tensor.copy_(values)


def train_epoch_graphed(model, source, optimizer, config, device, warmup=3):
    """`lm_epoch` on a GPU with every full-length window replayed from a CUDA graph (`capture_train_step`).

    The same windows, loss, clipping and updates as `lm_epoch` (dropout draws other masks); the last, shorter
    window of an epoch, if any, runs eagerly.  The graph is captured at the start of every epoch, at that
    epoch's learning rate.  Returns {"nll", "tokens", "seconds", "batches"} like `lm_epoch`.  Chapter 7."""
    if torch.device(device).type != "cuda":
        raise ValueError(f"CUDA graphs need a CUDA device, got {device}: train without graphs on a CPU")
    if config.amp:
        raise ValueError(f"CUDA graphs do not support amp {config.amp!r}: train with amp None, or without graphs")
    model.train()
    start = time.perf_counter()
    windows = lm_windows(source.to(device), config)  # the whole text on the GPU once: windows are GPU copies
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
        backward_and_step(model, loss, optimizer, config.clip_norm)
        total_nll, tokens = total_nll + nll_sum.item(), tokens + window_targets.numel()
    return {"nll": total_nll, "tokens": tokens, "seconds": time.perf_counter() - start, "batches": len(windows)}


def train_window(model, inputs, targets, state, optimizer, config, scaler=None):
    """One training step on one fixed window, as `lm_epoch` takes it, for timing a step alone (chapter 7's
    throughput).  Returns (the final state, attached to this window's graph, and the window's summed NLL)."""
    step = WindowStep(config.sum_over_time)
    step.state = state
    stats = train_batch(model, (inputs, targets), step, optimizer, config.clip_norm, config.amp, scaler)
    return step.state, stats["nll"]


def load_lm_run(out, device, weights="last"):
    """(model, vocab, TrainConfig) of a finished or running `train` run folder; RunError says what is wrong with it.

    weights: "last" (checkpoint.pt, the latest epoch) or "best" (the best validation epoch).  Chapter 6."""
    checkpoint, chosen, tokens = open_run(out, device, "lm", weights)
    configs = checkpoint_configs(checkpoint, {"model": ModelConfig, "train": TrainConfig})
    model = LanguageModel(configs["model"]).to(device)
    load_model_state(model, chosen)
    return model, Vocab(tokens), configs["train"]
