"""Checkpoints: plain dicts of tensors and numbers, written atomically, read back with `weights_only=True`.

A checkpoint holds the model's state_dict, both configs (as dicts), the run state (epoch, learning rate, best
validation loss, history), the optimizer's state, the GradScaler's (float16 mixed precision) and every random
generator's state, so a resumed run continues exactly where it stopped.  It also names the epoch whose weights
`best.pt` holds and the sha256 of the vocabulary it was trained with.  Beside it, `config.json` says in plain
text what was trained.  Introduced in chapter 6.
"""
import json
import random
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lstm_lab.config import ModelConfig, TrainConfig, config_from_dict
from lstm_lab.data import write_atomically
from lstm_lab.train import best_epoch


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read: empty, truncated, or not a checkpoint at all."""


def rng_state():
    """Python's, numpy's and torch's (CPU, and CUDA if present) generator states, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the generators saved by `rng_state` (from a checkpoint loaded onto any device)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"].cpu())  # generator states are CPU byte tensors, wherever torch.load put them
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def atomic_save(obj, path):
    """torch.save to a temporary file beside `path`, then rename it over `path`: never a half-written file."""
    return write_atomically(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj, path):
    """Write `obj` as indented JSON, atomically."""
    return write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path, model, optimizer, model_config, train_config, run_state, vocab=None, scaler=None):
    """Save everything needed to resume, atomically, plus a readable config.json in the same folder.

    vocab: the `Vocab` trained with; its sha256 is stored so a run's vocab.json can be checked against it.
    scaler: the GradScaler of a float16 mixed-precision run (its scale goes on from where it was; chapter 7).
    model: the model itself, never a DistributedDataParallel wrapper (whose keys start with "module.").
    Introduced in chapter 6."""
    configs = {"model": asdict(model_config), "train": asdict(train_config)}
    checkpoint = {"state_dict": model.state_dict(), "config": configs,
                  "optimizer": optimizer.state_dict() if optimizer is not None else None,
                  "epoch": run_state["epoch"], "lr": run_state["lr"],
                  "best_valid_nll": run_state["best_valid_nll"], "bad_epochs": run_state["bad_epochs"],
                  "history": run_state["history"], "rng": rng_state(),
                  "best_epoch": best_epoch(run_state["history"]),  # the epoch best.pt holds (0: none yet)
                  "vocab_sha256": vocab.sha256() if vocab is not None else None,
                  "scaler": scaler.state_dict() if scaler is not None else None}
    atomic_save(checkpoint, path)
    atomic_write_json(configs, Path(path).parent / "config.json")


def config_differences(saved, requested):
    """"field: saved X, requested Y" for every field in which two configs of the same class differ."""
    saved, requested = asdict(saved), asdict(requested)
    return [f"{k}: saved {saved[k]!r}, requested {v!r}" for k, v in requested.items() if saved[k] != v]


class SettingsMismatch(ValueError):
    """--resume with other options than the run was started with (the message names the fields)."""


def settings_mismatch(out, differences):
    """The one-line message for a --resume whose options differ from the run's (`config_differences`)."""
    return (f"{out} was trained with other settings ({'; '.join(differences)}): resume with the options it was "
            "started with (see \"command\" in its results.json); only --epochs may change")


def save_best(path, state_dict, model_config, epoch):
    """Save a run's best weights so far (best.pt): the state_dict, the model config and the epoch they are from."""
    atomic_save({"state_dict": state_dict, "config": {"model": asdict(model_config)}, "epoch": epoch}, path)


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict, loaded with weights_only=True (tensors and plain values only: no code runs).

    A file that is empty, truncated or not a checkpoint raises CheckpointError naming it."""
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
    """A short description of what is wrong with a checkpoint file torch.load could not read."""
    if Path(path).stat().st_size == 0:
        return "the file is empty"
    return f"the file is truncated or not a checkpoint ({type(error).__name__})"


def checkpoint_configs(checkpoint):
    """(ModelConfig, TrainConfig) stored in a checkpoint."""
    return (config_from_dict(ModelConfig, checkpoint["config"]["model"]),
            config_from_dict(TrainConfig, checkpoint["config"]["train"]))


def load_model_state(model, checkpoint):
    """Load a checkpoint's weights into `model`; a model of another shape raises ValueError naming the fields.

    The `rnn` field may differ: lstm_lab.LSTM and nn.LSTM share parameter names and shapes."""
    saved, current = checkpoint["config"]["model"], asdict(model.config)
    differ = {k: (saved.get(k), v) for k, v in current.items() if k != "rnn" and saved.get(k) != v}
    if differ:
        details = ", ".join(f"{k}: checkpoint {a!r} vs model {b!r}" for k, (a, b) in differ.items())
        raise ValueError(f"checkpoint does not fit this model ({details})")
    model.load_state_dict(checkpoint["state_dict"])
    return model


def checkpoint_best_epoch(checkpoint):
    """The epoch whose weights best.pt must hold, by the checkpoint's record (0: no epoch improved yet)."""
    return checkpoint.get("best_epoch", best_epoch(checkpoint["history"]))  # older checkpoints: from the history


def run_state_of(checkpoint):
    """The run state to pass to `train` to resume from a checkpoint."""
    return {k: checkpoint[k] for k in ("epoch", "lr", "best_valid_nll", "bad_epochs", "history")}
