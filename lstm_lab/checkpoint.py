"""Checkpoints: plain dicts of tensors and numbers, written atomically, read back with `weights_only=True`.

One format for every model the book trains.  A checkpoint holds

    kind          which model it is: "lm" (`train`), "poems" (`poems train`) or "dates" (`dates train`)
    state_dict    the model's weights
    config        the run's configs as dicts, by name ({"model": ..., "train": ...} for the language model)
    optimizer     the optimizer's state; scaler: the GradScaler's (float16 mixed precision), or None
    rng           every random generator's state (Python, numpy, torch CPU and CUDA)
    epoch, lr, best_valid, bad_epochs, history    where the run stands (`lstm_lab.train.new_run_state`)
    best_epoch    the epoch whose weights `best.pt` holds (0: none yet)
    vocab_sha256  the sha256 of the vocabulary it was trained with (vocab.json beside it)
    data_sha256   the sha256 of the text files it read (None where the data is generated or pinned elsewhere)

so a resumed run continues exactly where it stopped, and the same run resumed or not gives the same numbers.
Beside it, `config.json` says in plain text what was trained.  Introduced in chapter 6.
"""
import hashlib
import io
import json
import random
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

from lstm_lab.config import config_from_dict
from lstm_lab.files import write_bytes
from lstm_lab.train import best_epoch

__all__ = ["CheckpointError", "set_rng_state", "atomic_save", "atomic_write_json", "tokens_sha256", "save_checkpoint",
           "save_best", "config_differences", "load_checkpoint", "damage", "checkpoint_kind", "checkpoint_configs",
           "load_model_state", "checkpoint_best_epoch", "run_state_of", "with_epochs"]


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read: empty, truncated, or not a checkpoint at all.  Chapter 6."""


def rng_state():
    """Python's, numpy's and torch's (CPU, and CUDA if present) generator states, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the generators saved by `rng_state` (from a checkpoint loaded onto any device).  Chapter 6."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())  # generator states are CPU byte tensors, wherever torch.load put them
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_save(obj, path):
    """torch.save `obj` into memory, then write it to `path` atomically (`lstm_lab.files.write_bytes`): never a
    half-written file, and a full disk is a WriteError naming the file (torch.save writing to the file itself
    reports it only as "unexpected pos").  Chapter 6."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def atomic_write_json(obj, path):
    """Write `obj` as indented JSON, atomically (`lstm_lab.files.write_bytes`).  Chapter 6."""
    return write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def tokens_sha256(tokens):
    """Hex sha256 of a vocabulary as JSON (a list of tokens, or a dict of such lists): names the vocabulary a
    checkpoint was trained with.  For a list it equals `lstm_lab.data.corpus.Vocab.sha256`.  Chapter 6."""
    return hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode("utf-8")).hexdigest()


def save_checkpoint(path, model, optimizer, configs, run_state, kind="lm", vocab_sha256=None, scaler=None,
                    data_sha256=None):
    """Save everything needed to resume, atomically, plus a readable config.json in the same folder.

    configs: {name: config dataclass}, e.g. {"model": ModelConfig, "train": TrainConfig}.  vocab_sha256: of the
    vocabulary trained with, so a run's vocab.json can be checked against it.  scaler: the GradScaler of a
    float16 mixed-precision run (its scale goes on from where it was; chapter 7).  data_sha256: of the text files
    the run reads (a resumed run checks they did not change).  model: the model itself,
    never a DistributedDataParallel wrapper (whose keys start with "module.").  Introduced in chapter 6."""
    configs = {name: asdict(config) for name, config in configs.items()}
    checkpoint = {"kind": kind, "state_dict": model.state_dict(), "config": configs,
                  "optimizer": optimizer.state_dict() if optimizer is not None else None,
                  "epoch": run_state["epoch"], "lr": run_state["lr"],
                  "best_valid": run_state["best_valid"], "bad_epochs": run_state["bad_epochs"],
                  "history": run_state["history"], "rng": rng_state(),
                  "best_epoch": best_epoch(run_state["history"]),  # the epoch best.pt holds (0: none yet)
                  "vocab_sha256": vocab_sha256, "data_sha256": data_sha256,
                  "scaler": scaler.state_dict() if scaler is not None else None}
    atomic_save(checkpoint, path)
    atomic_write_json(configs, Path(path).parent / "config.json")


def save_best(path, state_dict, configs, epoch):
    """Save a run's best weights so far (best.pt): the state_dict, the configs (dataclasses, or the dicts a
    checkpoint holds) and the epoch they are from.  Chapter 6."""
    configs = {name: config if isinstance(config, dict) else asdict(config) for name, config in configs.items()}
    atomic_save({"state_dict": state_dict, "config": configs, "epoch": epoch}, path)


def config_differences(saved, requested, ignore=()):
    """"field: saved X, requested Y" for every field in which two configs of the same class differ, but for the
    fields named in `ignore`.  Chapter 6."""
    saved, requested = asdict(saved), asdict(requested)
    return [f"{k}: saved {saved[k]!r}, requested {v!r}" for k, v in requested.items()
            if k not in ignore and saved[k] != v]


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict, loaded with weights_only=True (tensors and plain values only: no code runs).

    A file that is empty, truncated or not a checkpoint raises CheckpointError naming it.  Chapter 7."""
    try:
        with warnings.catch_warnings():  # torch warns about pickles it did not write before failing on them
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (FileNotFoundError, PermissionError):
        raise  # the OS error names the file and says what is wrong
    except Exception as error:  # EOFError, an OSError or RuntimeError from the zip reader, an UnpicklingError ...
        raise CheckpointError(f"{path} is damaged: {damage(path, error)}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint or "config" not in checkpoint:
        raise CheckpointError(f"{path} is not an lstm_lab checkpoint (no state_dict and config in it)")
    return checkpoint


def damage(path, error):
    """A short description of what is wrong with a checkpoint file torch.load could not read.  Chapter 2."""
    if Path(path).stat().st_size == 0:
        return "the file is empty"
    return f"the file is truncated or not a checkpoint ({type(error).__name__})"


def checkpoint_kind(checkpoint):
    """Which model a checkpoint holds: "lm", "poems" or "dates" (a checkpoint from before they named their kind
    says it by its configs: {"poems": ...}, {"dates": ...}, or a language model's {"model", "train"}).
    Chapter 6."""
    return checkpoint.get("kind") or next((kind for kind in ("poems", "dates") if kind in checkpoint["config"]), "lm")


def checkpoint_configs(checkpoint, classes):
    """{name: config} of a checkpoint, rebuilt as the dataclasses `classes` ({name: class}) name.  Chapter 6."""
    return {name: config_from_dict(cls, checkpoint["config"][name]) for name, cls in classes.items()}


def load_model_state(model, checkpoint):
    """Load a checkpoint's weights into `model`; a model of another shape raises ValueError naming the fields.

    A model with a `config` (a `LanguageModel`) is compared field by field with the checkpoint's "model" config;
    its `rnn` field may differ: lstm_lab.LSTM and nn.LSTM share parameter names and shapes.  Chapter 6."""
    if hasattr(model, "config") and "model" in checkpoint["config"]:
        saved, current = checkpoint["config"]["model"], asdict(model.config)
        differ = {k: (saved.get(k), v) for k, v in current.items() if k != "rnn" and saved.get(k) != v}
        if differ:
            details = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in differ.items())
            raise ValueError(f"checkpoint does not fit this model ({details})")
    model.load_state_dict(checkpoint["state_dict"])
    return model


def checkpoint_best_epoch(checkpoint):
    """The epoch whose weights best.pt must hold, by the checkpoint's record (0: no epoch improved yet).  Chapter 6."""
    return checkpoint["best_epoch"]


def run_state_of(checkpoint):
    """The run state to pass to `lstm_lab.train.fit` to resume from a checkpoint.  Chapter 7."""
    return {k: checkpoint[k] for k in ("epoch", "lr", "best_valid", "bad_epochs", "history")}


def with_epochs(config, epochs):
    """`config` with its `epochs` field set to `epochs` (a config without that field is returned as it is).
    Chapter 6."""
    names = {f.name for f in fields(config)}
    return config.__class__(**{**asdict(config), "epochs": epochs}) if "epochs" in names else config
