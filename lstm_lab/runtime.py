"""Where the code runs: device choice, seeding, mixed-precision settings, CUDA-graph capture, and the Colab check
every chapter's setup cell uses."""
import os
import random
import sys

import numpy as np
import torch

from lstm_lab.config import whole_number

__all__ = ["pick_device", "check_device", "seed_everything", "amp_dtype", "autocast", "grad_scaler",
           "capture_cuda_graph", "setup"]


def on_colab():
    """True when running inside Google Colab."""
    return "google.colab" in sys.modules


def pick_device(prefer=None):
    """The device to run on: `prefer` if given (e.g. "cpu"), else CUDA if available, else CPU.

    `$LSTM_LAB_DEVICE` overrides the automatic choice.  A device this machine does not have raises ValueError
    (see `check_device`).  Introduced in chapter 1."""
    if prefer:
        return check_device(prefer)
    if os.environ.get("LSTM_LAB_DEVICE"):
        try:
            return check_device(os.environ["LSTM_LAB_DEVICE"])
        except ValueError as error:
            raise ValueError(f"$LSTM_LAB_DEVICE: {error}") from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def check_device(name):
    """torch.device(name) if this machine has that device, else ValueError saying what was expected.  Chapter 1."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}: expected cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        check_cuda_device(device)
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{name}: this machine has no Apple GPU (mps); use cpu")
    elif device.type not in ("cpu", "mps"):
        raise ValueError(f"unsupported device {name!r}: expected cpu, cuda, cuda:N or mps")
    return device


def check_cuda_device(device):
    """Raise ValueError unless CUDA is available and `device` (e.g. cuda:1) is one of its GPUs."""
    if not torch.cuda.is_available():
        why = "this torch was built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(f"{device}: CUDA is not available ({why}); use cpu")
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"{device}: this machine has {count} CUDA device(s): expected cuda:0 to cuda:{count - 1}")


def seed_everything(seed):
    """Seed Python's, numpy's and PyTorch's (CPU and CUDA) random number generators.  Chapter 1."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def amp_dtype(device):
    """The low precision `train --amp` uses on `device`: "float16" on CUDA (tensor cores; needs a GradScaler),
    "bfloat16" elsewhere (CPUs run bfloat16 matrix multiplies; float32's range, so no scaler).  Chapter 7."""
    return "float16" if torch.device(device).type == "cuda" else "bfloat16"


def autocast(device, amp):
    """torch.autocast in dtype `amp` ("bfloat16", "float16") on `device`'s type, or, for amp None, a context
    that changes nothing.  Chapter 7."""
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, amp) if amp else None, enabled=bool(amp))


def grad_scaler(amp, device):
    """A GradScaler for float16 mixed precision, else None.

    float16's smallest normal number is about 6e-5, so small gradients would flush to zero: the scaler
    multiplies the loss (and so every gradient) by a large factor before backward, and divides it out before the
    step.  bfloat16 has float32's range and needs none.  Chapter 7."""
    return torch.amp.GradScaler(torch.device(device).type) if amp == "float16" else None


def capture_cuda_graph(fn, warmup=3, before_capture=None):
    """fn() captured in a CUDA graph: returns the `torch.cuda.CUDAGraph`, whose `replay()` launches every kernel
    of the captured call at once, so Python, dispatch and per-kernel launch costs are paid once, at capture.

    As PyTorch's CUDA-graph notes ask, fn() first runs `warmup` times on a side stream (lazy initialisation,
    library workspaces and autotuning happen there, not during capture).  Then before_capture(), if given, runs
    on the current stream: e.g. put back what the warm-up calls changed, in place.  Then fn() runs once under
    capture, which records its kernels and computes nothing.  The shapes and the addresses of every tensor fn
    reads or writes are frozen: a replay computes on whatever the captured inputs hold at that moment.
    Needs a CUDA GPU (RuntimeError otherwise).  Chapters 3 (the GPU ladder) and 7 (a graphed training step)."""
    if not callable(fn) or (before_capture is not None and not callable(before_capture)):
        raise TypeError("capture_cuda_graph needs fn, and before_capture if given, to be callables")
    if not whole_number(warmup) or warmup < 1:
        raise ValueError(f"warmup must be a positive number of calls before the capture, got {warmup!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("capturing a CUDA graph needs a CUDA GPU, and this machine has none: call fn eagerly")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())  # the side stream starts after the work queued so far
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)  # and what follows waits for the warm-up
    if before_capture is not None:
        before_capture()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # records the kernels; nothing runs until a replay
        fn()
    return graph


def setup(seed=0, prefer=None, threads=1):
    """Seed everything, pick the device, on a CPU use `threads` threads, print one line saying what was chosen,
    and return the device.

    One thread by default: a chapter's operations are small, so a second thread adds little, and on a busy or
    small machine (Colab's CPU runtime has two cores) threads that wait for each other at the end of every
    operation can make a run many times slower (chapter 3 measures it); one thread also keeps each timing
    independent of what else runs.  threads=None leaves torch's choice.  Called from the first (hidden) cell
    of every chapter.  Chapters 1, 2, 3, 4, 5, 6, 7, 8 and 9."""
    seed_everything(seed)
    device = pick_device(prefer)
    if device.type == "cpu" and threads is not None:
        torch.set_num_threads(threads)
    used = torch.get_num_threads()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{used} CPU thread{'s' * (used > 1)}"
    print(f"torch {torch.__version__} on {device} ({where}), seed {seed}")
    return device
