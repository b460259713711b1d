"""Initialisation: every scheme the book uses, in one place.

    init_uniform_(parameters, H)        U(-1/sqrt(H), 1/sqrt(H)): what nn.LSTM and nn.LSTMCell do      (1)
    init_uniform_all_(model, r)         every parameter, biases too, from U(-r, r): Zaremba et al.       (6)
    set_forget_bias(lstm, value)        the forget gate's total bias b_if + b_hf set to `value`          (2)
    forget_bias(lstm)                   read it back, per layer
    initialise_(model, scheme)          one of INIT_SCHEMES over a whole model (chapter 8's study)       (8)
    unit_spread(h)                      how different the hidden units are: 0 when all are identical     (8)

The forget-gate bias decides how long an untrained LSTM remembers (chapter 2 measures it); Zaremba's
uniform init leaves it at about 0, PyTorch's too, while Gers et al. (2000) and Jozefowicz et al. (2015)
start it at 1 or more.
"""
import math

import torch
from torch import nn

__all__ = ["INIT_SCHEMES", "init_uniform_", "init_uniform_all_", "set_forget_bias", "forget_bias", "initialise_",
           "unit_spread"]


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


INIT_SCHEMES = {  # name: what chapter 8's initialisation study does to the recurrent and output weights
    "default": "PyTorch's own: U(-1/sqrt(H), 1/sqrt(H)) for the LSTM and the decoder, N(0, 1) embeddings",
    "zeros": "every weight and bias 0, embeddings included",
    "constant": "every LSTM and decoder weight 0.05, biases 0",
    "normal-1": "LSTM weights from N(0, 1): far too large, the gates saturate",
    "orthogonal": "W_hh orthogonal per gate, W_ih Xavier-uniform, biases 0",
    "forget-bias-1": "PyTorch's own, then the forget gate's bias set to 1",
}


def initialise_(model, scheme):
    """Initialise `model` (with .embedding, .rnn and .decoder, as chapter 8's PoemLM) by `scheme`, one of
    INIT_SCHEMES, in place; "default" leaves it as constructed.  Returns `model`.  Introduced in chapter 8."""
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown initialisation {scheme!r}; choose one of: {', '.join(INIT_SCHEMES)}")
    rnn, decoder = model.rnn, model.decoder
    H = rnn.hidden_size
    with torch.no_grad():
        if scheme == "zeros":
            for p in model.parameters():
                p.zero_()
        elif scheme == "constant":
            for name, p in [*rnn.named_parameters(), *decoder.named_parameters()]:
                p.fill_(0.05 if name.startswith("weight") else 0.0)
        elif scheme == "normal-1":
            for name, p in rnn.named_parameters():
                if name.startswith("weight"):
                    nn.init.normal_(p, 0.0, 1.0)
        elif scheme == "orthogonal":
            for name, p in rnn.named_parameters():
                if name.startswith("weight_hh"):
                    for gate in range(4):  # one orthogonal (H, H) block per gate
                        nn.init.orthogonal_(p[gate * H:(gate + 1) * H])
                elif name.startswith("weight_ih"):
                    nn.init.xavier_uniform_(p)
                else:
                    p.zero_()
        elif scheme == "forget-bias-1":
            set_forget_bias(rnn, 1.0)
    return model


def unit_spread(h):
    """How different the hidden units are: the standard deviation across the H units of h (..., H),
    averaged over every position, divided by the mean |h| (0 where h is all 0).  0 exactly when every
    unit carries the same value at every position: a layer of H identical units is one unit.
    Introduced in chapter 8."""
    h = h.detach().reshape(-1, h.shape[-1]).double()
    scale = h.abs().mean()
    return 0.0 if scale == 0 else float(h.std(dim=1).mean() / scale)
