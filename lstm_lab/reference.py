"""`torch.nn.LSTM` as the ground truth the book's own LSTMs are checked against.

    autograd_gradients(problem)    a numpy LSTM problem (chapter 2) through nn.LSTM and autograd

Introduced in chapter 2.
"""
import torch
from torch import nn

__all__ = ["NUMPY_NAMES", "autograd_gradients"]

# nn.LSTM's parameter names for one layer, and the names lstm_lab.numpy_lstm uses for the same arrays
NUMPY_NAMES = {"weight_ih_l0": "W_ih", "weight_hh_l0": "W_hh", "bias_ih_l0": "b_ih", "bias_hh_l0": "b_hh"}


def autograd_gradients(problem):
    """The gradients of a `lstm_lab.numpy_lstm.random_lstm_problem`'s loss, computed by a float64
    `torch.nn.LSTM` holding the same weights and differentiated by autograd.

    The loss is sum(hs * R_hs) + sum(h_T * R_h) + sum(c_T * R_c), as in `numpy_lstm.gradient_check`.
    Returns {name: numpy array} for x, h0, c0, W_ih, W_hh, b_ih, b_hh: the reference the hand-written
    backward pass (`numpy_lstm.hand_gradients`) must match to rounding.  Chapter 2."""
    T, B, I = problem["x"].shape
    H = problem["h0"].shape[1]
    lstm = nn.LSTM(I, H).double()
    lstm.load_state_dict({key: torch.from_numpy(problem[name]) for key, name in NUMPY_NAMES.items()})
    x, h0, c0 = (torch.tensor(problem[name], requires_grad=True) for name in ("x", "h0", "c0"))
    R = {name: torch.from_numpy(problem[name]) for name in ("R_hs", "R_h", "R_c")}
    hs, (h_T, c_T) = lstm(x, (h0[None], c0[None]))  # the state has a leading num_layers axis
    loss = (hs * R["R_hs"]).sum() + (h_T[0] * R["R_h"]).sum() + (c_T[0] * R["R_c"]).sum()
    loss.backward()
    grads = {"x": x.grad, "h0": h0.grad, "c0": c0.grad}
    grads.update({name: getattr(lstm, key).grad for key, name in NUMPY_NAMES.items()})
    return {name: g.numpy() for name, g in grads.items()}
