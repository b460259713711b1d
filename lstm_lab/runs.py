"""Run folders: what a training run writes, how it is resumed, and how it is read back -- for every model.

A run folder (`train --out`, `poems train --out`, `dates train --out`) holds

    checkpoint.pt   everything needed to resume (`lstm_lab.checkpoint`), written after every epoch
    best.pt         the weights of the best validation epoch so far
    config.json     the run's configs, readable
    vocab.json      the vocabulary the model was trained with (its sha256 is in checkpoint.pt)
    results.json    the numbers after every epoch, then the test results, with provenance (and a copy in
                    --results if given)
    train.lock      held while a `train` writes there: a second `train` on the folder is refused

Every file is written atomically, in an order that leaves a run `--resume` can finish wherever the process is
killed (see `RunRecorder.epoch_done`), and a resumed run ends exactly as an uninterrupted one would have.

    train_in_folder(out, resume, lambda has_run: train_run(PoemsTask, configs, out, has_run, device))

`train_run` is the same for every model: what differs is the task (`lstm_lab.lm_train.LanguageModelTask`,
`lstm_lab.poems_train.PoemsTask`, `lstm_lab.seq2seq_train.DatesTask`).  Introduced in chapter 6.
"""
import datetime
import json
import os
from contextlib import contextmanager
from pathlib import Path

import torch

from lstm_lab.checkpoint import (CheckpointError, atomic_write_json, checkpoint_best_epoch,
                                 checkpoint_configs, checkpoint_kind, config_differences, load_checkpoint,
                                 load_model_state, run_state_of, save_best, save_checkpoint, set_rng_state,
                                 tokens_sha256, with_epochs)
from lstm_lab.distributed import SINGLE, unwrap, wrap
from lstm_lab.files import remove_stale_parts, try_lock
from lstm_lab.provenance import provenance
from lstm_lab.runtime import grad_scaler, seed_everything
from lstm_lab.train import best_epoch, diverged, fit, new_run_state

__all__ = ["COMMANDS", "RunError", "train_run", "train_in_folder", "RunRecorder", "read_checkpoint", "resumed_configs",
           "resume_from", "restore_training", "same_weights", "load_best", "open_run"]

LOCK_FILE = "train.lock"  # in the run folder; locked by the `train` writing there
DAMAGED_CHECKPOINT_FIX = "delete it and run train again (the run restarts from epoch 1)"
COMMANDS = {"lm": "train", "poems": "poems train", "dates": "dates train"}  # the command that trains each kind


class RunError(Exception):
    """A run folder that cannot be used as asked; the message says why and what to do.  Chapter 6."""


# ---------------------------------------------------------------------------------------------------------------
# Training in a run folder


def train_run(task_class, configs, out, has_run, device, argv=(), results=None, epochs=None, progress=False,
              world=SINGLE, **options):
    """Train the run in folder `out` (its lock held: see `train_in_folder`): start it, or resume it from its
    checkpoint; train the epochs left; test it.  Returns the results dict also written to out/results.json (and
    to `results`), or None if no epoch was trained.

    task_class: the model's task (e.g. `lstm_lab.poems_train.PoemsTask`); configs: its configs by name, as
    requested (a resumed run must have been started with the same, but for `epochs`: a larger one extends it).
    has_run: whether `out` holds a checkpoint to resume.  options go to task_class.load (e.g. data_dir).
    world: this process among the ranks of a DDP run (chapter 7): every rank trains, only rank 0 writes."""
    out, device, leader = Path(out), torch.device(device), world.rank == 0
    checkpoint = read_checkpoint(out / "checkpoint.pt", device, DAMAGED_CHECKPOINT_FIX) if has_run else None
    if checkpoint is not None:
        check_kind(out, checkpoint, task_class.kind)
        check_resumable(out, checkpoint)
        configs = resumed_configs(out, checkpoint, configs, epochs)
    elif epochs is not None:
        configs = {name: with_epochs(config, epochs) for name, config in configs.items()}
    task = task_class.load(configs, device, world=world, progress=progress, **options)
    settings = task.settings
    seed_everything(settings["seed"])
    model = task.build_model().to(device)
    optimizer = task.make_optimizer(model)
    scaler = grad_scaler(settings["amp"], device)  # None unless float16
    if checkpoint is None:
        run_state = new_run_state(settings["lr"])
    else:
        check_data(out, checkpoint, task.data_sha256)
        check_vocab(out, checkpoint, task.vocab_tokens(), "the vocabulary of the data it reads now")
        run_state = resume_from(out, model, optimizer, checkpoint, scaler, leader)
    recorder = None
    if leader:
        atomic_write_json(task.vocab_tokens(), out / "vocab.json")
        recorder = RunRecorder(out, task, argv, device, results, has_run, run_state["epoch"] + 1, scaler, world)
    stopped = divergence(run_state["history"])
    if stopped and epochs is not None and epochs > run_state["epoch"]:
        raise RunError(f"{out} {stopped}: it cannot be continued; start a new run with a smaller learning rate")
    if not stopped:
        fit(wrap(model, device, world, settings["seed"]), task, optimizer, run_state, settings["epochs"],
            settings["patience"], recorder.epoch_done if leader else None, scaler, progress)
    if run_state["epoch"] == 0 or not leader:
        return None
    return recorder.finish(model, run_state)


def train_in_folder(out, resume, run):
    """run(has_run) a training that writes checkpoint.pt into `out`, holding the folder's lock the whole time:
    `check_out_dir` says whether there is a run to resume (a --resume in a folder whose run was killed before
    its first checkpoint starts afresh), and .part files of a killed run are removed first.  Every training
    command (language model, poems, dates) goes through here.  Chapter 6."""
    out = Path(out)
    made = missing_folders(out)  # the folders run_lock makes: [out, its parent, ...] that do not exist yet
    started = (out / LOCK_FILE).exists()  # a `train` began here before (perhaps killed before its first epoch)
    with run_lock(out):  # a RunError if another `train` holds it: then nothing here is ours to touch
        try:
            has_run = check_out_dir(out, resume, started)
            remove_stale_parts(out)
            return run(has_run)
        except Exception:
            if not (out / "checkpoint.pt").exists():
                undo_start(out, made, started)
            raise


def missing_folders(out):
    """[out, out's parent, ...]: the folders on the way to `out` that do not exist, deepest first."""
    missing = []
    while not out.exists() and out != out.parent:
        missing.append(out)
        out = out.parent
    return missing


def undo_start(out, made, started):
    """Leave a run folder as it was before a `train` that failed ahead of its first checkpoint (a text too short
    for the batch size, a corpus not found): remove the vocab.json and train.lock it wrote and the folders it made,
    so the same command with a fixed option starts afresh, without --resume.  Called only while holding the
    folder's lock: a `train` refused because another one runs there touches nothing.  A kill cannot do this;
    `--resume` starts such a folder from epoch 1 (`check_out_dir`)."""
    (out / "vocab.json").unlink(missing_ok=True)
    if not started:
        (out / LOCK_FILE).unlink(missing_ok=True)
    for folder in made:
        try:
            folder.rmdir()  # only if empty
        except OSError:
            return


class RunRecorder:
    """Writes a run's checkpoint, best model and results JSON after every epoch, and the test results at the end.

    The results JSON is the task's record (`task.results`) with the provenance of the latest session on top and
    a list of every session (a run resumed across machines or days keeps the command, commit and date of each
    part, and the world size and backend it trained with).  With several ranks, only rank 0 has a recorder.
    Chapter 6."""

    def __init__(self, out, task, argv, device, results=None, resume=False, start_epoch=1, scaler=None,
                 world=SINGLE):
        self.out, self.task, self.argv, self.device = Path(out), task, list(argv), device
        self.scaler, self.world = scaler, world  # the GradScaler (float16 amp) is checkpointed with the run
        self.vocab_sha256 = tokens_sha256(task.vocab_tokens())  # goes into every checkpoint
        self.paths = [self.out / "results.json"] + ([Path(results)] if results else [])
        previous = read_json(self.paths[0]) if resume else {}
        self.sessions = previous.get("sessions", [])
        start = provenance(self.argv, device)
        self.started, self.code = start["date"], (start["commit"], start["uncommitted_changes"])  # code loaded now
        self.start_epoch = start_epoch  # the first epoch this session trains (> epochs: it only re-evaluates)

    def write(self, run_state, model, **extra):
        """Write the results JSON (to the run folder and to --results) with `extra` fields added."""
        session = {**provenance(self.argv, self.device, self.code), "date_started": self.started,
                   "start_epoch": self.start_epoch, "world_size": self.world.world_size, "backend": self.world.backend}
        sessions = self.sessions + [session]  # the earlier sessions, read when this one started, then this one
        latest = {k: v for k, v in session.items() if k not in ("date_started", "start_epoch")}
        record = {"kind": self.task.kind, **self.task.results(run_state, model), **extra, **latest,
                  "sessions": sessions}
        for path in self.paths:
            atomic_write_json(record, path)
        return record

    def epoch_done(self, model, optimizer, run_state):
        """`fit`'s on_epoch: checkpoint, then best model if this epoch is the best, then results JSON, one log line.

        In this order a crash at any instant leaves a run `--resume` can finish: checkpoint.pt names the epoch
        best.pt must hold, and the only time best.pt can be behind it, that epoch is checkpoint.pt's own
        (`repair_best` then copies the weights over)."""
        model = unwrap(model)
        save_checkpoint(self.out / "checkpoint.pt", model, optimizer, self.task.configs, run_state, self.task.kind,
                        self.vocab_sha256, self.scaler, self.task.data_sha256)
        if run_state["history"][-1]["improved"]:
            save_best(self.out / "best.pt", model.state_dict(), self.task.configs, run_state["epoch"])
        self.write(run_state, model)
        print(self.task.epoch_line(run_state["history"][-1]), flush=True)

    def finish(self, model, run_state):
        """The task's final tests (`task.finish`), recorded; the results are then complete.

        A run that diverged is complete too, untested: its results say so and why ("stopped"), and where its
        best epoch before that is kept."""
        stopped = divergence(run_state["history"])
        if stopped:
            best_at = best_epoch(run_state["history"])
            kept = (f"its best epoch, {best_at}, is kept in {self.out / 'best.pt'}" if best_at
                    else "no epoch before it was finite, so there is no model to test")
            print(f"the run {stopped}: not tested; {kept}. Start a new run with a smaller learning rate.", flush=True)
            return self.write(run_state, model, complete=True, diverged=True, stopped=stopped)
        final = self.task.finish(model, run_state, lambda m: load_best(m, self.out / "best.pt",
                                                                        best_epoch(run_state["history"])))
        return self.write(run_state, model, **final, complete=True, diverged=False)


def divergence(history):
    """Why a run stopped early because it diverged ("diverged at epoch 3: valid_ppl inf"), or None if it did not:
    only the last epoch can have diverged (`lstm_lab.train.fit` stops there)."""
    numbers = diverged(history[-1]) if history else {}
    if not numbers:
        return None
    return f"diverged at epoch {history[-1]['epoch']}: {', '.join(f'{k} {v}' for k, v in numbers.items())}"


def read_json(path):
    """The JSON in `path`, or {} if there is none or it cannot be read."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@contextmanager
def run_lock(out):
    """Hold `out`/train.lock while a run trains there; a second `train` on the same folder raises RunError.

    The lock belongs to the open file, so the operating system releases it when the process ends, however it
    ends (kill -9 included): a killed run never leaves its folder locked."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot make the run folder {out}: {error.strerror or error}") from None
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


# ---------------------------------------------------------------------------------------------------------------
# Resuming


def read_checkpoint(path, device, fix):
    """load_checkpoint, with a missing or damaged file reported as a RunError that ends with `fix`.  Chapter 6."""
    if not path.is_file():
        raise RunError(f"{path} is missing; {fix}")
    try:
        return load_checkpoint(path, map_location=device)
    except CheckpointError as error:
        raise RunError(f"{error}; {fix}") from None


def check_kind(out, checkpoint, kind):
    """Raise RunError unless the run in `out` is of `kind` ("lm", "poems", "dates"), naming the command that
    trained it, and was written in the one checkpoint format (a poems or dates run written before it cannot be
    read: its vocabulary lived in the checkpoint)."""
    saved = checkpoint_kind(checkpoint)
    if saved != kind:
        raise RunError(f"{out} holds a run of `python -m lstm_lab {COMMANDS.get(saved, saved)}`, not of "
                       f"`python -m lstm_lab {COMMANDS[kind]}`: use that command's subcommands with it, or pick "
                       "another --out")
    if "kind" not in checkpoint and kind != "lm":
        raise RunError(f"{out} was written by an older lstm_lab, before every model's run folder had one format: "
                       f"train it again in a new folder with `python -m lstm_lab {COMMANDS[kind]}`")


def check_resumable(out, checkpoint):
    """Raise RunError unless checkpoint.pt holds everything a resumed run restores (an older lstm_lab's may not)."""
    missing = [key for key in ("rng", "optimizer", "best_valid", "best_epoch", "vocab_sha256") if key not in checkpoint]
    if missing:
        raise RunError(f"{out / 'checkpoint.pt'} was written by an older lstm_lab and lacks {', '.join(missing)}: "
                       "it cannot be resumed exactly; start the run again in a new folder")


def resumed_configs(out, checkpoint, requested, epochs=None, free=("epochs", "vocab_size")):
    """The configs to continue the run in `out` with: the saved ones, with `epochs` (--epochs) if given.

    requested: {name: config} as asked for now.  Every setting but those in `free` must be the saved one:
    otherwise RunError names the fields that differ.  A larger --epochs extends a run, finished or not; the
    learning-rate schedule goes on from where it stopped.  Chapter 6."""
    saved = checkpoint_configs(checkpoint, {name: type(config) for name, config in requested.items()})
    differences = [d for name, config in requested.items() for d in config_differences(saved[name], config, free)]
    if differences:
        raise RunError(f"{out} was trained with other settings ({'; '.join(differences)}): resume with the options "
                       "it was started with (see \"command\" in its results.json); only --epochs may change")
    if epochs is not None and epochs < checkpoint["epoch"]:
        raise RunError(f"{out} has trained {checkpoint['epoch']} epochs already: --epochs must be "
                       f"{checkpoint['epoch']} or more")
    return {name: with_epochs(config, epochs) if epochs else config for name, config in saved.items()}


def check_data(out, checkpoint, sha256):
    """Raise RunError if the text a resumed run reads is not the text it started with (by sha256)."""
    saved = checkpoint.get("data_sha256")
    if saved and sha256 and saved != sha256:
        raise RunError(f"the text {out} was trained on has changed since (sha256 {saved[:12]}, now {sha256[:12]}): "
                       "resume it with the same text, or start a new run in another --out")


def check_vocab(out, checkpoint, tokens, where):
    """Raise RunError unless `tokens` (a vocabulary as JSON) is the one checkpoint.pt was trained with."""
    sha256 = tokens_sha256(tokens)
    if sha256 != checkpoint["vocab_sha256"]:
        raise RunError(f"{where} is not the vocabulary {out / 'checkpoint.pt'} was trained with "
                       f"({token_count(tokens):,} tokens, sha256 {sha256[:12]}; expected sha256 "
                       f"{checkpoint['vocab_sha256'][:12]})")


def token_count(tokens):
    """How many tokens a vocabulary as JSON holds (a list, or a dict of lists)."""
    return sum(map(len, tokens.values())) if isinstance(tokens, dict) else len(tokens)


def resume_from(out, model, optimizer, checkpoint, scaler=None, leader=True):
    """`restore_training` from a run's checkpoint; returns the run state.

    leader: whether this process writes the run folder (always, but for ranks 1.. of a DDP run); it also puts
    best.pt right if the run was killed before writing it (see `repair_best`).  Chapter 6."""
    run_state = restore_training(model, optimizer, checkpoint, scaler)
    if leader:
        repair_best(out, checkpoint)
    return run_state


def restore_training(model, optimizer, checkpoint, scaler=None):
    """Load a checkpoint into model, optimizer and scaler (a GradScaler, float16 amp), restore the random
    generators, and return the run state.  Writes nothing: every rank of a DDP run calls it.  Chapter 6."""
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
        save_best(out / "best.pt", checkpoint["state_dict"], checkpoint["config"], epoch)
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
    """Whether two state_dicts hold exactly the same tensors.  Chapter 6."""
    return a.keys() == b.keys() and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ---------------------------------------------------------------------------------------------------------------
# Reading a run back


def load_best(model, path, expected=None):
    """Load the weights of best.pt into `model`; returns the epoch they are from (checked to be `expected`).
    Chapter 6."""
    best = read_checkpoint(Path(path), next(model.parameters()).device, "the best epoch's weights are lost")
    if expected is not None and best["epoch"] != expected:
        raise RunError(f"{path} holds epoch {best['epoch']}, but the run's best epoch is {expected}")
    load_model_state(model, best)
    return best["epoch"]


def open_run(out, device, kind, weights="last"):
    """(checkpoint, the dict whose state_dict to load, vocabulary as JSON) of a run folder of `kind`, for using
    its model; RunError says what is wrong with the folder, ValueError or TypeError what is wrong with the arguments.

    weights: "last" (checkpoint.pt, the latest epoch) or "best" (the best validation epoch: best.pt, or
    checkpoint.pt itself when the latest epoch is the best).  Chapters 6, 8 and 9."""
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be the path of a run folder (a str or Path), got {type(out).__name__}")
    if weights not in ("last", "best"):
        raise ValueError(f"weights must be 'last' or 'best', got {weights!r}")
    out = Path(out)
    if not (out / "checkpoint.pt").is_file():
        raise RunError(f"{out} holds no checkpoint.pt; train first: python -m lstm_lab {COMMANDS[kind]} --out {out}")
    checkpoint = read_checkpoint(out / "checkpoint.pt", device, DAMAGED_CHECKPOINT_FIX)
    check_kind(out, checkpoint, kind)
    tokens = read_vocab(out, checkpoint)
    stopped = divergence(checkpoint.get("history", []))
    if stopped and (weights == "last" or not checkpoint_best_epoch(checkpoint)):
        best_at = checkpoint_best_epoch(checkpoint)
        raise RunError(f"{out} {stopped}, so its last weights are not a model: "
                       + (f"use --weights best (epoch {best_at})" if best_at else "no epoch before it was finite"))
    return checkpoint, checkpoint if weights == "last" else best_weights(out, checkpoint, device), tokens


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
    """The run's vocab.json (a list of tokens, or a dict of such lists), checked to be the vocabulary
    checkpoint.pt was trained with."""
    path = out / "vocab.json"
    fix = "restore the run's own vocab.json, or run train --resume with the run's options to write it again"
    try:
        tokens = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RunError(f"{path} is missing or is not JSON: {fix}") from None
    if not isinstance(tokens, (list, dict)):
        raise RunError(f"{path} is not a vocabulary: {fix}")
    try:
        check_vocab(out, checkpoint, tokens, path)
    except RunError as error:
        raise RunError(f"{error}; {fix}") from None
    return tokens
