"""Run folders and recorded results: what a training run writes, how it is resumed and read back, and the
recorded results the chapters show.

A run folder (`train --out`) holds checkpoint.pt (everything needed to resume), best.pt (the best validation
epoch's weights), config.json, vocab.json, results.json and train.lock (held while a `train` writes there).
Every file is written atomically, and in an order that leaves a run `--resume` can finish wherever the process
is killed (see `RunRecorder.epoch_done`).  Introduced in chapter 6.

Recorded results live inside the package, in `lstm_lab/recorded/`, and are installed with it (package data),
so a chapter finds them wherever it runs: in a checkout, or on Colab after `pip install lstm_lab @ git+...`.
Each file carries its provenance: device, versions, commit, command, date and wall time.

    load_recorded("bench-gpu.json")      # the dict, or None if no such file was recorded
    load_runs({"nn.LSTM": "ptb-zaremba-small-torch.json"})   # {label: dict} of those recorded
    recorded_names()                     # every recorded file, sorted
"""
import datetime
import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from lstm_lab.checkpoint import (CheckpointError, atomic_write_json, checkpoint_best_epoch, checkpoint_configs,
                                 config_differences, load_checkpoint, load_model_state, run_state_of, save_best,
                                 save_checkpoint, set_rng_state, settings_mismatch)
from lstm_lab.corpus import Vocab
from lstm_lab.data import try_lock
from lstm_lab.distributed import SINGLE
from lstm_lab.generate import generate
from lstm_lab.model import LanguageModel
from lstm_lab.provenance import provenance
from lstm_lab.train import best_epoch, evaluate

LOCK_FILE = "train.lock"  # in the run folder; locked by the `train` writing there
DAMAGED_CHECKPOINT_FIX = "delete it and run train again (the run restarts from epoch 1)"

RECORDED = "recorded"  # the folder inside the package


def recorded_names():
    """The names of every recorded result shipped with the package, sorted; a study's results are in a
    folder of their own and named with it ("depth-200/L1-H200-d0-seed0.json")."""
    folder = resources.files("lstm_lab") / RECORDED
    names = []
    for entry in folder.iterdir():
        if entry.is_dir():
            names += [f"{entry.name}/{inner.name}" for inner in entry.iterdir() if inner.name.endswith(".json")]
        elif entry.name.endswith(".json"):
            names.append(entry.name)
    return sorted(names)


def load_recorded(name):
    """The recorded result `name` (e.g. "bench-cpu.json") as a dict, or None if it was never recorded.

    Read through importlib.resources, so it works from a checkout and from an installed package alike."""
    entry = resources.files("lstm_lab") / RECORDED / name
    if not entry.is_file():
        return None
    return json.loads(entry.read_text(encoding="utf-8"))


def load_results_folder(folder):
    """{name: results} of every finished run (a results JSON with "complete": true) in `folder`, by file name
    without .json; {} if there is no such folder."""
    folder = Path(folder)
    runs = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.json"))}
    return {name: run for name, run in runs.items() if run.get("complete")}


def load_recorded_folder(folder):
    """`load_results_folder` of folder `folder` of the recorded results (lstm_lab/recorded/<folder>).
    Chapter 8."""
    return load_results_folder(resources.files("lstm_lab") / RECORDED / folder)


def load_runs(names):
    """{label: recorded results} for names {label: file name}; a file that was never recorded is left out
    and said so in one printed line (a chapter then shows what exists).  Chapter 6."""
    runs = {}
    for label, name in names.items():
        run = load_recorded(name)
        if run is None:
            print(f"{name} was not recorded in this copy of lstm_lab: nothing to show for {label}")
        else:
            runs[label] = run
    return runs


def load_seeds(folder, names):
    """The recorded results among `names` (e.g. one configuration's seeds) in folder `folder` of the recorded
    results, in the order given; the ones never recorded are left out.  Chapter 5."""
    runs = [load_recorded(f"{folder}/{name}") for name in names]
    return [run for run in runs if run is not None]


def mean_and_spread(values):
    """(mean, sample standard deviation) of a list of numbers; the deviation is None for fewer than two."""
    values = np.asarray(values, dtype=float)
    spread = float(values.std(ddof=1)) if len(values) > 1 else None
    return float(values.mean()), spread


def seeds_row(label, runs):
    """One table row for the seeds of one configuration: how many (and how many are still training), and
    mean +- standard deviation of the validation perplexity after each epoch all of them reached and of the
    test perplexity.  Chapter 5."""
    epochs = min(len(run["valid_ppl"]) for run in runs)
    unfinished = sum(not run["complete"] for run in runs)
    row = {"configuration": label, "seeds": f"{len(runs)}" + (f" ({unfinished} unfinished)" if unfinished else "")}
    for epoch in range(epochs):
        row[f"valid, epoch {epoch + 1}"] = format_spread(*mean_and_spread([r["valid_ppl"][epoch] for r in runs]))
    tested = [run["test_ppl"] for run in runs if run.get("test_ppl")]
    if not tested:
        row["test"] = "not yet"
    else:  # "(2)": only two of the seeds were tested so far
        row["test"] = format_spread(*mean_and_spread(tested)) + (f" ({len(tested)})" if len(tested) < len(runs) else "")
    return row


def format_spread(mean, spread):
    """'112.3 ± 0.8', or '112.3' without a spread."""
    return f"{mean:.1f}" + (f" ± {spread:.1f}" if spread is not None else "")


def run_row(label, run):
    """One table row for a recorded training run: how far it got, its perplexities, speed and provenance.

    run: a results JSON written by `python -m lstm_lab train --results ...`.  Chapter 6."""
    minutes = [(r["train_seconds"] + r["valid_seconds"]) / 60 for r in run["history"]]
    commit = (run["commit"] or "?")[:7] + (" +changes" if run.get("uncommitted_changes") else "")
    return {"run": label, "epochs": f"{run['epochs']} / {run['planned_epochs']}",
            "valid ppl (last)": f"{run['valid_ppl'][-1]:.1f}" if run["valid_ppl"] else "-",
            "test ppl": f"{run['test_ppl']:.1f}" if run.get("test_ppl") else "not yet",
            "min / epoch": f"{sum(minutes) / len(minutes):.2g}" if minutes else "-",
            "words/s": f"{run['tokens_per_second']:,.0f}" if run.get("tokens_per_second") else "-",
            "device": run["device"], "threads": run["threads"], "torch": run["torch_version"], "commit": commit,
            "date": run["date"][:16]}


def comparison_rows(recorded, published):
    """Rows comparing recorded runs with published numbers, published first.

    recorded: {label: results JSON}; published: [{"model", "valid", "test", "note"}].  A run's valid and test
    perplexities are those of the model after its last epoch, the test text read as one stream (as the
    paper); an unfinished run shows its last per-epoch validation perplexity instead.  Chapter 6."""
    rows = [{"model": p["model"], "valid ppl": f"{p['valid']:.1f}", "test ppl": f"{p['test']:.1f}",
             "note": p["note"]} for p in published]
    for label, run in recorded.items():
        final = run.get("final_valid_ppl")
        if run.get("best_epoch_test_ppl"):
            note = (f"after epoch {run['epochs']}, one stream; the best validation epoch ({run['best_epoch']}) "
                    f"tests at {run['best_epoch_test_ppl']:.1f}")
        elif final:
            note = "after the last epoch, one stream"
        else:
            note = f"unfinished: epoch {run['epochs']} of {run['planned_epochs']}, validation with 20 streams"
        valid = final if final else (run["valid_ppl"][-1] if run["valid_ppl"] else None)
        rows.append({"model": label, "valid ppl": f"{valid:.1f}" if valid else "-",
                     "test ppl": f"{run['test_ppl']:.1f}" if run.get("test_ppl") else "not yet", "note": note})
    return rows


def describe_sessions(label, run):
    """Lines saying whether a recorded run is complete and which commands trained, resumed and tested it."""
    status = ("complete" if run["complete"] else
              f"not finished: stopped after epoch {run['epochs']} of {run['planned_epochs']}"
              + (f" ({run['stopped']})" if run.get("stopped") else ""))
    sessions = run.get("sessions") or [run]
    lines = [f"{label}: {status}.  trained with: {sessions[0]['command']}"]
    for later in sessions[1:]:
        what = ("re-evaluated" if later.get("start_epoch", 0) > run["planned_epochs"]
                else f"resumed at epoch {later.get('start_epoch', '?')}")
        lines.append(f"    then {what} on {later['date'][:16]} with: {later['command']}")
    if run.get("test_eval"):
        lines.append(f"    test perplexity measured on the {run['test_eval']}")
    if run.get("commit_note"):
        lines.append(f"    provenance: {run['commit_note']}")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Run folders: the recorder, the lock, resuming, and reading a run back


class RunError(Exception):
    """A run folder that cannot be used as asked; the message says why and what to do."""


def results_record(args, model_config, train_config, run_state, parameters):
    """The results JSON of a run so far: configs, per-epoch numbers and totals."""
    history = run_state["history"]
    train_tokens = sum(r["train_tokens"] for r in history)
    train_seconds = sum(r["train_seconds"] for r in history)
    return {"preset": args.preset, "rnn": model_config.rnn, "corpus": train_config.corpus, "amp": train_config.amp,
            "complete": False,
            "epochs": len(history), "planned_epochs": train_config.epochs, "parameters": parameters,
            "valid_ppl": [r["valid_ppl"] for r in history], "train_ppl": [r["train_ppl"] for r in history],
            "lr": [r["lr"] for r in history], "test_ppl": None, "best_epoch": best_epoch(history) or None,
            "wall_seconds": sum(r["train_seconds"] + r["valid_seconds"] for r in history),
            "tokens_per_second": train_tokens / train_seconds if train_seconds else None,
            "history": history, "model_config": asdict(model_config), "train_config": asdict(train_config)}


class RunRecorder:
    """Writes a run's checkpoint, best model and results JSON after every epoch, and the test result at the end.

    The results JSON carries the provenance of the latest session on top and a list of every session (a run
    resumed across machines or days keeps the command, commit and date of each part, and the world size and
    backend it trained with).  With several ranks, only rank 0 has a recorder."""

    def __init__(self, args, argv, device, model_config, train_config, parameters, start_epoch=1, vocab=None,
                 scaler=None, world=SINGLE):
        self.args, self.argv, self.device = args, argv, device
        self.model_config, self.train_config, self.parameters = model_config, train_config, parameters
        self.vocab = vocab  # its sha256 goes into every checkpoint
        self.scaler, self.world = scaler, world  # the GradScaler (float16 amp) is checkpointed with the run
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
                   "start_epoch": self.start_epoch, "world_size": self.world.world_size, "backend": self.world.backend}
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
                        self.vocab, self.scaler)
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


def resumed_configs(out, checkpoint, model_config, train_config, epochs=None):
    """The configs to continue the run in `out` with: the saved ones, with `epochs` (--epochs) if given.

    Every other setting must be the one requested: otherwise RunError names the fields that differ.  A larger
    --epochs extends a run, finished or not; the learning-rate schedule goes on from where it stopped."""
    saved_model, saved_train = checkpoint_configs(checkpoint)
    differences = (config_differences(saved_model, replace(model_config, vocab_size=saved_model.vocab_size))
                   + config_differences(saved_train, replace(train_config, epochs=saved_train.epochs)))
    if differences:
        raise RunError(settings_mismatch(out, differences))
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


def resume_from(out, model, optimizer, checkpoint, scaler=None, leader=True):
    """`restore_training` from a run's checkpoint; returns the run state.

    leader: whether this process writes the run folder (always, but for ranks 1.. of a DDP run); it also puts
    best.pt right if the run was killed before writing it (see `repair_best`)."""
    run_state = restore_training(model, optimizer, checkpoint, scaler)
    if leader:
        repair_best(out, checkpoint)
    return run_state


def restore_training(model, optimizer, checkpoint, scaler=None):
    """Load a checkpoint into model, optimizer and scaler (a GradScaler, float16 amp), restore the random
    generators, and return the run state.  Writes nothing: every rank of a DDP run calls it."""
    load_model_state(model, checkpoint)
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scaler is not None and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
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
