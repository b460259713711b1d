"""Training throughput in words per second: one language-model training step, several ways, timed in turn.

    python -m lstm_lab throughput --device cuda --json lstm_lab/recorded/throughput-gpu.json
    python -m lstm_lab throughput --sizes zaremba-small --repeats 5   # quicker, any device

A step is what `train_epoch` does per window -- forward, Zaremba's loss, backward, clipping, SGD step -- on a
(T, B) window of random token ids, with the state carried in.  Words per second = T x B / the step's median
time.  The ways (`VARIANTS`), each its own model built from the same seed:

    nn.LSTM              PyTorch's LSTM: cuDNN on a GPU, oneDNN on a CPU
    lstm_lab.LSTM        the book's LSTM in eager mode: a few small kernels per time step
    CUDA graph           the book's LSTM, the whole step replayed from a CUDA graph (GPU only)
    nn.LSTM, AMP         nn.LSTM under autocast: float16 with a GradScaler on a GPU, bfloat16 on a CPU

Timed round-robin with warm-up and synchronisation (`lstm_lab.experiments.timing`), TF32 off for every variant.  The
result carries its provenance.  The command line (`lstm_lab.cli`) checks the options, calls `record_throughput` and
writes the record with `lstm_lab.checkpoint.atomic_write_json`.  Introduced in chapter 7, whose throughput table reads
the recorded GPU run.
"""
from dataclasses import replace

import torch

from lstm_lab.config import preset
from lstm_lab.experiments.bench import set_tf32
from lstm_lab.experiments.timing import interleaved_times, summarize
from lstm_lab.lm_train import capture_train_step, train_window
from lstm_lab.model import LanguageModel
from lstm_lab.provenance import provenance
from lstm_lab.runtime import amp_dtype, grad_scaler

__all__ = ["SIZES", "REFERENCE", "make_step", "build_variants", "measure", "record_throughput", "table_lines"]

SIZES = ("zaremba-small", "zaremba-medium")  # presets timed by default
VARIANTS = ("nn.LSTM", "lstm_lab.LSTM", "CUDA graph", "nn.LSTM, AMP")
# No compiled variant: torch.compile leaves an LSTM module, nn.LSTM or the book's, out of its graphs (chapter 7);
# the ladder's `compiled` rung (chapter 3) is the book's loop compiled.
REFERENCE = "nn.LSTM"


def make_step(model, config, inputs, targets, state, amp=None):
    """A zero-argument training step on one fixed window, `lstm_lab.train.train_window` with an SGD optimizer:
    under autocast in `amp` ("bfloat16" or "float16") if given, float16 with a GradScaler, as `train --amp`.
    Chapter 7."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    config = replace(config, amp=amp)
    scaler = grad_scaler(amp, inputs.device)
    return lambda: train_window(model, inputs, targets, state, optimizer, config, scaler)


def graphed_step(model, config, inputs, targets, state):
    """The same step captured in a CUDA graph (`capture_train_step`); each call replays it."""
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    replay, _ = capture_train_step(model, optimizer, config, inputs, targets, [s.clone() for s in state])
    return replay


def build_variants(size, device, variants=VARIANTS, seed=0):
    """{variant: step} for preset `size` on `device`, and the window's words (T x B).

    Dropout stays as the preset has it (training mode).  Variants that cannot run here are left out:
    CUDA graph off a GPU.  Chapter 7."""
    model_config, train_config = preset(size)
    T, B = train_config.seq_len, train_config.batch_size
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(model_config.vocab_size, (T + 1, B), generator=generator).to(device)
    inputs, targets = tokens[:-1], tokens[1:]
    steps = {}
    for name in variants:
        if name == "CUDA graph" and torch.device(device).type != "cuda":
            continue
        torch.manual_seed(seed)
        rnn = "torch" if name.startswith("nn.LSTM") else "lab"
        model = LanguageModel(replace(model_config, rnn=rnn)).to(device).train()
        state = model.init_state(B)
        if name == "CUDA graph":
            steps[name] = graphed_step(model, train_config, inputs, targets, state)
        else:
            amp = amp_dtype(device) if name.endswith("AMP") else None
            steps[name] = make_step(model, train_config, inputs, targets, state, amp)
    return steps, T * B


def measure(sizes=SIZES, device="cpu", variants=VARIANTS, repeats=10, warmup=3):
    """Words per second of every variant at every size: {size: {variant: {"median_ms", ..., "words_per_second",
    "ratio"}}}, ratios against nn.LSTM's time at the same size.  Chapters 2, 3, 4, 5, 6 and 7."""
    set_tf32(False)
    results = {}
    for size in sizes:
        steps, words = build_variants(size, device, variants)
        rows = summarize(interleaved_times(steps, device, repeats, warmup), reference=REFERENCE)
        for row in rows.values():
            row["words_per_second"] = words / row["median_ms"] * 1e3
        results[size] = rows
    return results


def record_throughput(sizes, device, repeats=10, argv=()):
    """The throughput record: {"provenance": where and how it ran (TF32 off), "results": `measure`'s}.

    sizes: presets (e.g. SIZES).  device: "cpu", "cuda", a torch.device.  argv: the command line, e.g. ["throughput", "--device", "cuda"], recorded as
    "python -m lstm_lab throughput --device cuda".  Chapter 7."""
    device = torch.device(device)
    results = measure(sizes, device, VARIANTS, repeats)
    return {"provenance": {**provenance(list(argv), device), "tf32": False}, "results": results}


def table_lines(results):
    """One printable line per size and variant: words per second and time against nn.LSTM.  Chapter 7."""
    return [f"{size:>15}  {name:>15}  {row['words_per_second']:>10,.0f} words/s  {row['ratio']:5.2f}x the time "
            f"of {REFERENCE}" for size, rows in results.items() for name, row in rows.items()]
