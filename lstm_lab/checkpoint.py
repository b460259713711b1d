"""Checkpoints: plain dicts of tensors and numbers, written atomically, read back with `weights_only=True`.

A checkpoint holds the model's state_dict, both configs (as dicts), the run state (epoch, learning rate, best
validation loss, history), the optimizer's state and every random generator's state, so a resumed run
continues exactly where it stopped.  Beside it, `config.json` says in plain text what was trained.
Introduced in chapter 6.
"""
import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from lstm_lab.config import ModelConfig, TrainConfig, config_from_dict
from lstm_lab.data import write_atomically


def rng_state():
    """Python's, numpy's and torch's (CPU, and CUDA if present) generator states, as checkpoint-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore the generators saved by `rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def atomic_save(obj, path):
    """torch.save to a temporary file beside `path`, then rename it over `path`: never a half-written file."""
    return write_atomically(path, lambda f: torch.save(obj, f))


def atomic_write_json(obj, path):
    """Write `obj` as indented JSON, atomically."""
    return write_atomically(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def save_checkpoint(path, model, optimizer, model_config, train_config, run_state):
    """Save everything needed to resume, atomically, plus a readable config.json in the same folder.

    Introduced in chapter 6."""
    configs = {"model": asdict(model_config), "train": asdict(train_config)}
    checkpoint = {"state_dict": model.state_dict(), "config": configs,
                  "optimizer": optimizer.state_dict() if optimizer is not None else None,
                  "epoch": run_state["epoch"], "lr": run_state["lr"],
                  "best_valid_nll": run_state["best_valid_nll"], "bad_epochs": run_state["bad_epochs"],
                  "history": run_state["history"], "rng": rng_state()}
    atomic_save(checkpoint, path)
    atomic_write_json(configs, Path(path).parent / "config.json")


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint dict, loaded with weights_only=True (tensors and plain values only: no code runs)."""
    return torch.load(path, map_location=map_location, weights_only=True)


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


def run_state_of(checkpoint):
    """The run state to pass to `train` to resume from a checkpoint."""
    return {k: checkpoint[k] for k in ("epoch", "lr", "best_valid_nll", "bad_epochs", "history")}
