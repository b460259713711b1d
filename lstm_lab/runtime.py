"""Where the code runs: device choice, seeding, and the Colab check every chapter's setup cell uses."""
import os
import random
import sys

import numpy as np
import torch


def on_colab():
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules


def pick_device(prefer=None):
    """The device to run on: `prefer` if given (e.g. "cpu"), else CUDA if available, else CPU.

    `$LSTM_LAB_DEVICE` overrides the automatic choice.  Introduced in chapter 1."""
    name = prefer or os.environ.get("LSTM_LAB_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed):
    """Seed Python's, numpy's and PyTorch's (CPU and CUDA) random number generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def setup(seed=0, prefer=None):
    """Seed everything, pick the device, print one line saying what was chosen, and return the device.

    Called from the first (hidden) cell of every chapter."""
    seed_everything(seed)
    device = pick_device(prefer)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__} on {device} ({where}), seed {seed}")
    return device
