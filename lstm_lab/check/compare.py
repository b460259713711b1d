"""Measuring how far a student's numbers are from the reference's, with tolerances that fit the dtype.

Introduced with the coursework checks (chapter 4); the error measure is chapter 2's relative error.
"""
import numbers

import torch

from lstm_lab.config import InputError

__all__ = ["TOLERANCE", "relative_error", "tolerance", "same", "call_student", "check_size", "seeded_randn"]

# relative error below which two results are the same computation, rounding aside: a float32 LSTM step differs from
# nn.LSTM's by about 1e-7, a float64 one by about 1e-16; a real bug differs by 1e-2 or more
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def relative_error(a, b):
    """||a - b|| / (||a|| + ||b||) of two tensors (0 for two zeros): chapter 2's measure.  Chapter 4."""
    a, b = a.detach().double(), b.detach().double()
    denominator = a.norm() + b.norm()
    return 0.0 if denominator == 0 else float((a - b).norm() / denominator)


def tolerance(dtype):
    """The relative error two results of this dtype may differ by and still be the same: TOLERANCE.  Chapter 4."""
    if dtype not in TOLERANCE:
        raise InputError(f"the checks run in float32 or float64, got {dtype}")
    return TOLERANCE[dtype]


def same(a, b, dtype):
    """Whether tensors a and b (same shape) agree to the dtype's tolerance.  Chapter 4."""
    return tuple(a.shape) == tuple(b.shape) and relative_error(a, b) <= tolerance(dtype)


def call_student(fn, *args):
    """(result, None) of fn(*args), or (None, the exception it raised): a check records the error instead of
    stopping on it.  Chapter 4."""
    try:
        return fn(*args), None
    except Exception as error:  # the student's code may raise anything; the report says what and why
        return None, error


def check_size(name, value):
    """Raise InputError unless value is a positive int (the sizes a check builds its inputs from).  Chapter 4."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def seeded_randn(generator, *shape, dtype=torch.float64, device=None, scale=1.0):
    """Normal random numbers from `generator` (on the CPU, so every device gets the same values), scaled and moved
    to device and dtype.  Chapter 4."""
    return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(device=device, dtype=dtype)
