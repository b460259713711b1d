"""The command line: `python -m lstm_lab train | evaluate | generate | bench`.

    python -m lstm_lab train --preset zaremba-small --rnn lab --out runs/small-lab [--resume]
    python -m lstm_lab evaluate --out runs/small-lab [--split test --batch-size 1]
    python -m lstm_lab generate --out runs/small-lab --prompt "the market" --steps 30 --temperature 0.8 --top-k 40
    python -m lstm_lab bench ...   (forwarded to lstm_lab.bench.main)

A run folder (--out) holds checkpoint.pt (everything needed to resume), best.pt (the best validation epoch's
weights), config.json, vocab.json, results.json and train.lock (held while a `train` writes there).  Every file
is written atomically, and in an order that leaves a run `--resume` can finish wherever the process is killed.
Introduced in chapter 6.
"""
import argparse
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import torch

from lstm_lab.checkpoint import (CheckpointError, atomic_write_json, checkpoint_best_epoch, checkpoint_configs,
                                 load_checkpoint, load_model_state, run_state_of, save_best, save_checkpoint,
                                 set_rng_state)
from lstm_lab.config import PRESETS, RNN_CHOICES, preset
from lstm_lab.corpus import Vocab, load_corpus
from lstm_lab.data import ChecksumError, DataNotFoundError, remove_stale_parts, try_lock
from lstm_lab.generate import generate
from lstm_lab.model import LanguageModel, count_parameters
from lstm_lab.runtime import check_device, pick_device, seed_everything
from lstm_lab.train import best_epoch, evaluate, new_run_state, train

LOCK_FILE = "train.lock"  # in the run folder; locked by the `train` writing there
MAX_SEED = 2**32 - 1  # numpy accepts seeds from 0 to 2**32 - 1
DAMAGED_CHECKPOINT_FIX = "delete it and run train again (the run restarts from epoch 1)"


class RunError(Exception):
    """A run folder that cannot be used as asked; the message says why and what to do."""


class UsageError(Exception):
    """A command-line value that does not fit the run or the text it is used with (exit status 2, as argparse)."""


# ---------------------------------------------------------------------------------------------------------------
# Command-line values: each argparse type says what it expected, so a bad value ends in one line, not a traceback


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0 (not nan, not inf)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def seed_value(text):
    """argparse type: a random seed, an integer from 0 to 2**32 - 1."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text}")
    return value


def thread_count(text):
    """argparse type: CPU threads for torch, from 1 to the machine's core count.

    More threads than cores only slows torch down, and far more crash its OpenMP runtime."""
    value = int(text)
    cores = os.cpu_count() or 1
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(f"expected 1 to {cores} (the CPU cores of this machine), got {text}")
    return value


def device_name(text):
    """argparse type: a device this machine has (cpu, cuda, cuda:1, mps)."""
    try:
        check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def prompt_text(text):
    """argparse type: a prompt of at least one space-separated token."""
    if not text.split():
        raise argparse.ArgumentTypeError("expected at least one space-separated token, e.g. '<eos>' or 'the market'")
    return text


def existing_folder(text):
    """argparse type: the path of a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


def add_common(parser):
    """Options every subcommand that runs a model takes."""
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu, cuda, cuda:1 ... (default: $LSTM_LAB_DEVICE, else CUDA if available)")
    parser.add_argument("--threads", type=thread_count, default=1,
                        help="CPU threads for torch (default 1, so runs side by side do not fight)")
    parser.add_argument("--data-dir", type=existing_folder, default=None,
                        help="folder with the corpora (default: $LSTM_LAB_DATA, data/)")


def add_weights(parser):
    """--weights: which of a run's saved models to use."""
    parser.add_argument("--weights", choices=["last", "best"], default="last",
                        help="last: the latest epoch (checkpoint.pt; what the test_ppl in results is of); "
                             "best: the best validation epoch (best.pt)")


def build_parser():
    """The argparse parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m lstm_lab", description="LSTM Lab language models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,evaluate,generate,bench}")
    train = sub.add_parser("train", help="train a preset, checkpointing every epoch")
    train.add_argument("--preset", required=True, choices=list(PRESETS), help="named configuration")
    train.add_argument("--rnn", choices=RNN_CHOICES, default="lab", help="lab: lstm_lab.LSTM, torch: nn.LSTM")
    train.add_argument("--out", required=True, help="run folder for checkpoint.pt, best.pt, config.json")
    train.add_argument("--resume", action="store_true",
                       help="continue the run saved in --out (with the same options; --epochs may extend it)")
    train.add_argument("--results", default=None, help="also write the results JSON here (e.g. results/x.json)")
    train.add_argument("--epochs", type=positive_int, default=None, help="override the preset's epochs")
    train.add_argument("--max-batches", type=non_negative_int, default=None, help="windows per epoch (0 = all)")
    train.add_argument("--tie-weights", action="store_true", help="share the embedding and decoder matrices")
    train.add_argument("--seed", type=seed_value, default=None, help="override the preset's seed")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_common(train)
    evaluate = sub.add_parser("evaluate", help="perplexity of a trained run on a split")
    evaluate.add_argument("--out", required=True, help="run folder written by train")
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test")
    evaluate.add_argument("--batch-size", type=positive_int, default=1, help="streams (1 = whole text as context)")
    add_weights(evaluate)
    add_common(evaluate)
    generate = sub.add_parser("generate", help="sample text from a trained run")
    generate.add_argument("--out", required=True, help="run folder written by train")
    generate.add_argument("--prompt", type=prompt_text, default="<eos>",
                          help="space-separated start tokens (default: <eos>)")
    generate.add_argument("--steps", type=positive_int, default=40)
    generate.add_argument("--temperature", type=positive_float, default=1.0)
    generate.add_argument("--top-k", type=positive_int, default=None)
    generate.add_argument("--seed", type=seed_value, default=0)
    add_weights(generate)
    add_common(generate)
    sub.add_parser("bench", help="speed benchmarks (arguments go to lstm_lab.bench)", add_help=False)
    return parser


def main(argv=None):
    """Entry point of `python -m lstm_lab`; returns the exit status.

    A bad command-line value exits with status 2 and one line saying what was expected; a run folder or data
    file that cannot be used exits with status 1 and one line saying what to do."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        from lstm_lab import bench  # imported only when asked for (bench imports this module)
        return bench.main(argv[1:]) or 0
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.device = pick_device(args.device)  # --device was checked by argparse; this checks $LSTM_LAB_DEVICE
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(args.threads)
    commands = {"train": train_command, "evaluate": evaluate_command, "generate": generate_command}
    try:
        return commands[args.command](args, argv) or 0
    except UsageError as error:
        parser.error(str(error))
    except (RunError, CheckpointError, DataNotFoundError, ChecksumError) as error:
        raise SystemExit(f"error: {error}") from None


# ---------------------------------------------------------------------------------------------------------------
# Provenance: where, when and with which code a result was produced


def git_commit(repo):
    """(HEAD commit, whether lstm_lab/ has uncommitted changes) of the repository at `repo`, or (None, None).

    A copy of a clean checkout sent to another machine (a remote GPU) names its commit in $LSTM_LAB_COMMIT:
    when set, it is used, with no uncommitted changes, since the copy's .git (if any) may be stale."""
    if os.environ.get("LSTM_LAB_COMMIT"):
        return os.environ["LSTM_LAB_COMMIT"], False
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
        status = subprocess.run(["git", "status", "--porcelain", "--", "lstm_lab"], cwd=repo, capture_output=True,
                                text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return head.stdout.strip(), bool(status.stdout.strip())


def cpu_name():
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def provenance(argv, device, code=None):
    """Where, when and how a result was produced: device, versions, commit, command, date, CPU and threads.

    code: (commit, uncommitted changes) of the code that ran, as read when it was loaded (default: now)."""
    commit, dirty = code or git_commit(Path(__file__).resolve().parent.parent)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": f"{device} ({name})", "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "commit": commit, "uncommitted_changes": dirty,
            "command": "python -m lstm_lab " + " ".join(argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ---------------------------------------------------------------------------------------------------------------
# Run folders: the recorder, the lock, and reading a run back


def results_record(args, model_config, train_config, run_state, parameters):
    """The results JSON of a run so far: configs, per-epoch numbers and totals."""
    history = run_state["history"]
    train_tokens = sum(r["train_tokens"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {"preset": args.preset, "rnn": model_config.rnn, "corpus": train_config.corpus, "complete": False,
            "epochs": len(history), "planned_epochs": train_config.epochs, "parameters": parameters,
            "valid_ppl": [r["valid_ppl"] for r in history], "train_ppl": [r["train_ppl"] for r in history],
            "lr": [r["lr"] for r in history], "test_ppl": None, "best_epoch": best_epoch(history) or None,
            "wall_seconds": sum(r["train_seconds"] + r["valid_seconds"] for r in history),
            "tokens_per_second": train_tokens / train_seconds if train_seconds else None,
            "history": history, "model_config": asdict(model_config), "train_config": asdict(train_config)}


class RunRecorder:
    """Writes a run's checkpoint, best model and results JSON after every epoch, and the test result at the end.

    The results JSON carries the provenance of the latest session on top and a list of every session (a run
    resumed across machines or days keeps the command, commit and date of each part)."""

    def __init__(self, args, argv, device, model_config, train_config, parameters, start_epoch=1, vocab=None):
        self.args, self.argv, self.device = args, argv, device
        self.model_config, self.train_config, self.parameters = model_config, train_config, parameters
        self.vocab = vocab  # its sha256 goes into every checkpoint
        self.out = Path(args.out)
        self.paths = [self.out / "results.json"] + ([Path(args.results)] if args.results else [])
        previous = json.loads(self.paths[0].read_text()) if args.resume and self.paths[0].exists() else {}
        self.sessions = previous.get("sessions", [])
        start = provenance(argv, device)
        self.started, self.code = start["date"], (start["commit"], start["uncommitted_changes"])  # code loaded now
        self.start_epoch = start_epoch  # the first epoch this session trains (> epochs: it only re-evaluates)

    def write(self, run_state, **extra):
        """Write the results JSON (to --out and to --results) with `extra` fields added."""
        session = {**provenance(self.argv, self.device, self.code), "date_started": self.started,
                   "start_epoch": self.start_epoch}
        sessions = [s for s in self.sessions if s["date_started"] != self.started] + [session]
        record = results_record(self.args, self.model_config, self.train_config, run_state, self.parameters)
        latest = {k: v for k, v in session.items() if k not in ("date_started", "start_epoch")}
        record = {**record, **extra, **latest, "sessions": sessions}
        for path in self.paths:
            atomic_write_json(record, path)
        return record

    def epoch_done(self, model, optimizer, run_state):
        """`train`'s on_epoch: checkpoint, then best model if this epoch is the best, then results JSON, one log line.

        In this order a crash at any instant leaves a run `--resume` can finish: checkpoint.pt names the epoch
        best.pt must hold, and the only time best.pt can be behind it, that epoch is checkpoint.pt's own
        (`repair_best` then copies the weights over)."""
        save_checkpoint(self.out / "checkpoint.pt", model, optimizer, self.model_config, self.train_config, run_state,
                        self.vocab)
        r = run_state["history"][-1]
        if r["improved"]:
            save_best(self.out / "best.pt", model.state_dict(), self.model_config, run_state["epoch"])
        self.write(run_state)
        print(f"epoch {r['epoch']:3d}  lr {r['lr']:.4g}  train ppl {r['train_ppl']:8.2f}  valid ppl "
              f"{r['valid_ppl']:8.2f}  {r['train_seconds']:6.0f} s  {r['tokens_per_second']:6.0f} tok/s", flush=True)

    def finish(self, model, corpus, run_state):
        """Test the final model as the paper does (and the best validation epoch's), with one stream; record
        samples from the final model; mark the results complete."""
        start, batch_size = time.perf_counter(), self.train_config.test_batch_size
        final = self.test_and_valid(model, corpus)
        samples = record_samples(model, corpus.vocab)
        best_at = best_epoch(run_state["history"])  # 0 if no epoch improved the validation loss (it diverged)
        best = final if best_at in (0, run_state["epoch"]) else self.test_best(model, corpus, best_at)
        seconds = time.perf_counter() - start
        self.write(run_state, complete=True, test_ppl=final["test"], final_valid_ppl=final["valid"],
                   best_epoch=best_at or None, best_epoch_test_ppl=best["test"] if best_at else None,
                   best_epoch_valid_ppl=best["valid"] if best_at else None,
                   test_eval=f"model after the last epoch ({run_state['epoch']}), as in the paper; batch size "
                             f"{batch_size}, state carried across the whole text",
                   test_eval_seconds=seconds, samples=samples)
        best_text = (f"best valid epoch {best_at}: test {best['test']:.2f}, valid {best['valid']:.2f}" if best_at
                     else "no epoch improved the validation loss")
        print(f"test ppl {final['test']:.2f}, valid ppl {final['valid']:.2f} after epoch {run_state['epoch']}; "
              f"{best_text} (batch size {batch_size}, {seconds:.0f} s)")

    def test_best(self, model, corpus, best_at):
        """test_and_valid of best.pt's weights (loaded into `model`), after checking they are epoch `best_at`'s."""
        held = load_best(model, self.out / "best.pt")
        if held != best_at:
            raise RunError(f"{self.out / 'best.pt'} holds epoch {held}, but the run's best epoch is {best_at}")
        return self.test_and_valid(model, corpus)

    def test_and_valid(self, model, corpus):
        """{"test": ppl, "valid": ppl} with test_batch_size streams (1: the whole text as context)."""
        batch_size = self.train_config.test_batch_size
        return {split: evaluate(model, corpus.splits[split], batch_size, 100, self.device)["ppl"]
                for split in ("test", "valid")}


@contextmanager
def run_lock(out):
    """Hold `out`/train.lock while a run trains there; a second `train` on the same folder raises RunError.

    The lock belongs to the open file, so the operating system releases it when the process ends, however it
    ends (kill -9 included): a killed run never leaves its folder locked."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / LOCK_FILE, "a+") as f:
        if not try_lock(f):
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunError(f"{out} is in use by another `train` ({holder}): wait for it to end, or pick another --out")
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()}, started {datetime.datetime.now().isoformat(timespec='seconds')}\n")
        f.flush()
        yield


def check_out_dir(out, resume, started):
    """A fresh run needs an --out without a checkpoint; --resume needs one there.  Returns whether there is one.

    started: whether a `train` began in `out` before (train.lock is there).  --resume in a folder whose run was
    stopped before its first checkpoint starts the run from epoch 1."""
    has_run = (out / "checkpoint.pt").exists()
    if has_run and not resume:
        raise RunError(f"{out} already holds a run: add --resume to continue it, or pick another --out")
    if resume and not has_run and not started:
        raise RunError(f"--resume given but {out} holds no checkpoint.pt")
    if resume and not has_run:
        print(f"{out} holds no checkpoint.pt (the run there stopped before its first epoch ended): "
              "starting from epoch 1", flush=True)
    return has_run


def read_checkpoint(path, device, fix):
    """load_checkpoint, with a missing or damaged file reported as a RunError that ends with `fix`."""
    if not path.is_file():
        raise RunError(f"{path} is missing; {fix}")
    try:
        return load_checkpoint(path, map_location=device)
    except CheckpointError as error:
        raise RunError(f"{error}; {fix}") from None


def requested_configs(args):
    """(ModelConfig, TrainConfig) of --preset with the command line's overrides (vocab_size: the preset's)."""
    overrides = {"rnn": args.rnn, "epochs": args.epochs, "max_batches": args.max_batches, "seed": args.seed,
                 "tie_weights": True if args.tie_weights else None}
    return preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})


def config_differences(saved, requested):
    """"field: saved X, requested Y" for every field in which two configs of the same class differ."""
    saved, requested = asdict(saved), asdict(requested)
    return [f"{k}: saved {saved[k]!r}, requested {v!r}" for k, v in requested.items() if saved[k] != v]


def resumed_configs(out, checkpoint, model_config, train_config, epochs=None):
    """The configs to continue the run in `out` with: the saved ones, with `epochs` (--epochs) if given.

    Every other setting must be the one requested: otherwise RunError names the fields that differ.  A larger
    --epochs extends a run, finished or not; the learning-rate schedule goes on from where it stopped."""
    saved_model, saved_train = checkpoint_configs(checkpoint)
    differences = (config_differences(saved_model, replace(model_config, vocab_size=saved_model.vocab_size))
                   + config_differences(saved_train, replace(train_config, epochs=saved_train.epochs)))
    if differences:
        raise RunError(f"{out} was trained with other settings ({'; '.join(differences)}): resume with the options "
                       "it was started with (see \"command\" in its results.json); only --epochs may change")
    if epochs is not None and epochs < checkpoint["epoch"]:
        raise RunError(f"{out} has trained {checkpoint['epoch']} epochs already: --epochs must be "
                       f"{checkpoint['epoch']} or more")
    return saved_model, replace(saved_train, epochs=epochs or saved_train.epochs)


def check_vocab(out, checkpoint, vocab, where):
    """Raise RunError unless `vocab` is the one checkpoint.pt was trained with (by size and sha256)."""
    size, sha256 = checkpoint["config"]["model"]["vocab_size"], checkpoint.get("vocab_sha256")
    if len(vocab) != size or sha256 not in (None, vocab.sha256()):  # older checkpoints store no sha256
        raise RunError(f"{where} is not the vocabulary {out / 'checkpoint.pt'} was trained with ({len(vocab):,} "
                       f"tokens, sha256 {vocab.sha256()[:12]}; expected {size:,} tokens, sha256 "
                       f"{(sha256 or '?')[:12]})")


def resume_from(out, model, optimizer, checkpoint):
    """Load a run's checkpoint into model and optimizer and restore the random generators; returns the run state.

    Also puts best.pt right if the run was killed before writing it (see `repair_best`)."""
    load_model_state(model, checkpoint)
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_state(checkpoint["rng"])
    repair_best(out, checkpoint)
    return run_state_of(checkpoint)


def repair_best(out, checkpoint):
    """Make best.pt hold the epoch checkpoint.pt names as the best.

    A run killed after writing checkpoint.pt but before best.pt leaves best.pt behind (or missing); the best
    weights are then checkpoint.pt's own, so they are copied.  Any other mismatch cannot be repaired."""
    epoch, best_at = checkpoint["epoch"], checkpoint_best_epoch(checkpoint)
    if best_at == 0:
        return  # no epoch has improved the validation loss: there is no best model yet
    held = saved_best(out / "best.pt")
    if best_at == epoch and not (held and same_weights(held["state_dict"], checkpoint["state_dict"])):
        model_config, _ = checkpoint_configs(checkpoint)
        save_best(out / "best.pt", checkpoint["state_dict"], model_config, epoch)
    elif best_at != epoch and (held is None or held["epoch"] != best_at):
        raise RunError(f"{out / 'best.pt'} does not hold epoch {best_at}, the run's best, and only best.pt had its "
                       "weights: restore best.pt, or start the run again in a new folder")


def saved_best(path):
    """The dict in a best.pt file, or None if it is missing or damaged."""
    try:
        return load_checkpoint(path)
    except (OSError, CheckpointError):
        return None


def same_weights(a, b):
    """Whether two state_dicts hold exactly the same tensors."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


def train_command(args, argv):
    """`train`: fresh or resumed run; checkpoint, best model and results JSON written after every epoch.

    The run folder stays locked while it trains, and .part files left by a killed run are removed first."""
    out = Path(args.out)
    started = (out / LOCK_FILE).exists()  # a `train` began here before (perhaps killed before its first epoch)
    with run_lock(out):
        has_run = check_out_dir(out, args.resume, started)
        remove_stale_parts(out)
        return train_run(args, argv, out, has_run)


def train_run(args, argv, out, has_run):
    """Train the run in `out` (holding its lock): build or resume it, train the epochs left, test it."""
    device = args.device
    model_config, train_config = requested_configs(args)
    checkpoint = read_checkpoint(out / "checkpoint.pt", device, DAMAGED_CHECKPOINT_FIX) if has_run else None
    if checkpoint is not None:
        model_config, train_config = resumed_configs(out, checkpoint, model_config, train_config, args.epochs)
    corpus = load_corpus(train_config.corpus, data_dir=args.data_dir, progress=not args.no_progress)
    model_config = replace(model_config, vocab_size=len(corpus.vocab))
    seed_everything(train_config.seed)
    model = LanguageModel(model_config).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=train_config.lr)
    if checkpoint is None:
        run_state = new_run_state(train_config)
    else:
        check_vocab(out, checkpoint, corpus.vocab, f"the vocabulary of corpus {train_config.corpus}")
        run_state = resume_from(out, model, optimizer, checkpoint)
    atomic_write_json(corpus.vocab.itos, out / "vocab.json")
    recorder = RunRecorder(args, argv, device, model_config, train_config, count_parameters(model),
                           start_epoch=run_state["epoch"] + 1, vocab=corpus.vocab)
    data = {"train": corpus.splits["train"], "valid": corpus.splits["valid"]}
    train(model, data, train_config, device, run_state, optimizer, recorder.epoch_done, not args.no_progress)
    if run_state["epoch"] == 0:
        return 1
    recorder.finish(model, corpus, run_state)
    return 0


def record_samples(model, vocab, seed=0, steps=40):
    """A few sentences sampled from the trained model, recorded with the settings that produced them."""
    samples = []
    for prompt, temperature, top_k in ((["<eos>"], 1.0, None), (["<eos>"], 0.7, None), (["the"], 1.0, 40)):
        generator = torch.Generator().manual_seed(seed)
        words = generate(model, vocab, prompt, steps, temperature, top_k, generator)
        samples.append({"prompt": " ".join(prompt), "temperature": temperature, "top_k": top_k, "seed": seed,
                        "text": " ".join(words)})
    return samples


def load_best(model, path):
    """Load the weights of best.pt into `model`; returns the epoch they are from."""
    best = read_checkpoint(Path(path), next(model.parameters()).device, "the best epoch's weights are lost")
    load_model_state(model, best)
    return best["epoch"]


def load_run(out, device, weights="last"):
    """(model, vocab, TrainConfig) of a finished or running run folder; RunError says what is wrong with it.

    weights: "last" (checkpoint.pt, the latest epoch) or "best" (the best validation epoch: best.pt, or
    checkpoint.pt itself when the latest epoch is the best)."""
    out = Path(out)
    if not (out / "checkpoint.pt").is_file():
        raise RunError(f"{out} holds no checkpoint.pt; train first: python -m lstm_lab train --out {out}")
    checkpoint = read_checkpoint(out / "checkpoint.pt", device, DAMAGED_CHECKPOINT_FIX)
    model_config, train_config = checkpoint_configs(checkpoint)
    vocab = read_vocab(out, checkpoint)
    model = LanguageModel(model_config).to(device)
    load_model_state(model, checkpoint if weights == "last" else best_weights(out, checkpoint, device))
    return model, vocab, train_config


def best_weights(out, checkpoint, device):
    """The dict holding a run's best weights: checkpoint.pt's own when its epoch is the best one (best.pt may
    not be written yet), else best.pt, checked to hold the epoch checkpoint.pt names."""
    best_at = checkpoint_best_epoch(checkpoint)
    if best_at == 0:
        raise RunError(f"no epoch of {out} has improved the validation loss, so there is no best model: "
                       "use --weights last")
    if best_at == checkpoint["epoch"]:
        return checkpoint
    best = read_checkpoint(out / "best.pt", device, "the best epoch's weights are lost: use --weights last")
    if best["epoch"] != best_at:
        raise RunError(f"{out / 'best.pt'} holds epoch {best['epoch']}, but the run's best epoch is {best_at}: "
                       "use --weights last")
    return best


def read_vocab(out, checkpoint):
    """The run's vocab.json as a Vocab, checked to be the vocabulary checkpoint.pt was trained with."""
    path = out / "vocab.json"
    fix = "restore the run's own vocab.json, or run train --resume with the run's options to write it again"
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"{path} is missing or is not JSON: {fix}") from None
    if not isinstance(tokens, list):
        raise RunError(f"{path} is not a list of tokens: {fix}")
    vocab = Vocab(tokens)
    try:
        check_vocab(out, checkpoint, vocab, path)
    except RunError as error:
        raise RunError(f"{error}; {fix}") from None
    return vocab


def check_batch_size(batch_size, tokens, split):
    """Raise UsageError unless `tokens` cut into `batch_size` streams leaves every stream two tokens or more."""
    most = tokens.numel() // 2
    if batch_size > most:
        raise UsageError(f"--batch-size {batch_size} is too large for the {split} text ({tokens.numel():,} tokens): "
                         f"expected 1 to {most:,}")


def evaluate_command(args, argv):
    """`evaluate`: perplexity of a run's model (last or best epoch) on a split."""
    model, vocab, train_config = load_run(args.out, args.device, args.weights)
    corpus = load_corpus(train_config.corpus, data_dir=args.data_dir, progress=False)
    if corpus.vocab.itos != vocab.itos:
        raise RunError(f"the vocabulary in {args.out} does not match corpus {train_config.corpus}")
    check_batch_size(args.batch_size, corpus.splits[args.split], args.split)
    result = evaluate(model, corpus.splits[args.split], args.batch_size, 100, args.device)
    print(f"{args.split} perplexity {result['ppl']:.2f} over {result['tokens']} tokens "
          f"(batch size {args.batch_size})")
    return 0


def generate_command(args, argv):
    """`generate`: sample text from a run's model (last or best epoch)."""
    model, vocab, _ = load_run(args.out, args.device, args.weights)
    if args.top_k is not None and args.top_k > len(vocab):
        raise UsageError(f"--top-k {args.top_k} is larger than the vocabulary of {args.out}: expected 1 to "
                         f"{len(vocab):,}")
    prompt = args.prompt.split()
    unknown = [t for t in prompt if t not in vocab.stoi]
    if unknown:
        raise UsageError(f"prompt token(s) {unknown} not in the vocabulary of {len(vocab):,} tokens")
    generator = torch.Generator().manual_seed(args.seed)
    words = generate(model, vocab, prompt, args.steps, args.temperature, args.top_k, generator)
    print(" ".join(prompt + words))
    return 0
