"""Training throughput in words per second: one language-model training step, several ways, timed in turn.

    python -m lstm_lab.experiments.throughput --device cuda --json lstm_lab/recorded/throughput-gpu.json
    python -m lstm_lab.experiments.throughput --sizes zaremba-small --repeats 5 --no-compile   # quicker, any device

A step is what `train_epoch` does per window -- forward, Zaremba's loss, backward, clipping, SGD step -- on a
(T, B) window of random token ids, with the state carried in.  Words per second = T x B / the step's median
time.  The ways (`VARIANTS`), each its own model built from the same seed:

    nn.LSTM              PyTorch's LSTM: cuDNN on a GPU, oneDNN on a CPU
    lstm_lab.LSTM        the book's LSTM in eager mode: a few small kernels per time step
    compiled             the book's LSTM through torch.compile (Inductor), fixed shapes
    CUDA graph           the book's LSTM, the whole step replayed from a CUDA graph (GPU only)
    nn.LSTM, AMP         nn.LSTM under autocast: float16 with a GradScaler on a GPU, bfloat16 on a CPU

Timed round-robin with warm-up and synchronisation (`lstm_lab.experiments.timing`), TF32 off for every variant.  The
result carries its provenance.  Introduced in chapter 7, whose throughput table reads the recorded GPU run.
"""
import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from lstm_lab.config import preset
from lstm_lab.experiments.bench import set_tf32
from lstm_lab.experiments.timing import interleaved_times, summarize
from lstm_lab.lm_train import capture_train_step, train_window
from lstm_lab.model import LanguageModel
from lstm_lab.provenance import provenance
from lstm_lab.runtime import amp_dtype, grad_scaler, pick_device

__all__ = ["SIZES", "REFERENCE", "make_step", "build_variants", "measure", "main"]

SIZES = ("zaremba-small", "zaremba-medium")  # presets timed by default
VARIANTS = ("nn.LSTM", "lstm_lab.LSTM", "compiled", "CUDA graph", "nn.LSTM, AMP")
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
        if name == "compiled":
            steps[name] = make_step(torch.compile(model), train_config, inputs, targets, state)
        elif name == "CUDA graph":
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


def main(argv=None):
    """Time every variant, print words per second, and write --json if given.  Returns 0.  Chapter 7."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m lstm_lab.experiments.throughput",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if there is one)")
    parser.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=10, help="timed rounds (after 3 warm-up rounds)")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled variant")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be a positive number of rounds, got {args.repeats}")
    device = pick_device(args.device)
    variants = [v for v in VARIANTS if not (args.no_compile and v == "compiled")]
    results = measure(args.sizes, device, variants, args.repeats)
    record = {"provenance": {**provenance(["throughput", *argv], device), "tf32": False}, "results": results}
    record["provenance"]["command"] = "python -m lstm_lab.experiments.throughput " + " ".join(argv)
    for size, rows in results.items():
        for name, row in rows.items():
            print(f"{size:>15}  {name:>15}  {row['words_per_second']:>10,.0f} words/s  {row['ratio']:5.2f}x the time "
                  f"of {REFERENCE}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
