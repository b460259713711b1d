"""Initialisation: every scheme the book uses, in one place.

    init_uniform_(parameters, H)        U(-1/sqrt(H), 1/sqrt(H)): what nn.LSTM and nn.LSTMCell do      (1)
    init_uniform_all_(model, r)         every parameter, biases too, from U(-r, r): Zaremba et al.       (6)
    set_forget_bias(lstm, value)        the forget gate's total bias b_if + b_hf set to `value`          (2)
    forget_bias(lstm)                   read it back, per layer

The forget-gate bias decides how long an untrained LSTM remembers (chapter 2 measures it); Zaremba's
uniform init leaves it at about 0, PyTorch's too, while Gers et al. (2000) and Jozefowicz et al. (2015)
start it at 1 or more.
"""
import math

import torch
from torch import nn


def init_uniform_(parameters, hidden_size):
    """Initialise every tensor in `parameters` from U(-1/sqrt(H), 1/sqrt(H)), as `nn.LSTMCell` does.

    Introduced in chapter 1."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in parameters:
        nn.init.uniform_(p, -bound, bound)


def init_uniform_all_(model, init_range):
    """Every parameter, biases included, from U(-init_range, init_range): Zaremba's init (forget bias 0).

    Introduced in chapter 6."""
    for p in model.parameters():
        nn.init.uniform_(p, -init_range, init_range)


def _bias_pairs(lstm):
    """[(bias_ih, bias_hh), ...] of an LSTM or LSTM cell, one pair per layer, from its parameter names."""
    params = dict(lstm.named_parameters())
    pairs = [(p, params[name.replace("bias_ih", "bias_hh")])
             for name, p in params.items() if name.startswith("bias_ih")]
    if not pairs:
        raise ValueError(f"{type(lstm).__name__} has no bias_ih/bias_hh parameters "
                         "(was it built with bias=False?)")
    return pairs


def set_forget_bias(lstm, value):
    """Make the forget gate's total bias b_if + b_hf equal to `value` in every layer, in place.

    lstm: `lstm_lab.LSTM`, `nn.LSTM`, `lstm_lab.LSTMCell` or `nn.LSTMCell` (gate order i, f, g, o, so the
    forget rows are H:2H).  Only the sum reaches the gate, so b_if is set to `value` and b_hf to 0;
    filling both with `value` would give an effective bias of 2 * value.  Every other parameter is left
    untouched.  Returns `lstm`.  Introduced in chapter 2."""
    H = lstm.hidden_size
    with torch.no_grad():
        for bias_ih, bias_hh in _bias_pairs(lstm):
            bias_ih[H:2 * H] = value  # rows H:2H are the forget gate
            bias_hh[H:2 * H] = 0.0
    return lstm


def forget_bias(lstm):
    """The effective forget-gate bias b_if + b_hf of every layer: a (num_layers, H) tensor.

    Introduced in chapter 2."""
    H = lstm.hidden_size
    return torch.stack([(b_ih + b_hh)[H:2 * H].detach() for b_ih, b_hh in _bias_pairs(lstm)])
