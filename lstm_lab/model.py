"""`LanguageModel`: embedding -> stacked LSTM -> decoder, with Zaremba's dropout and optional weight tying.

Introduced in chapter 6.
"""
import torch
import torch.nn.functional as F
from torch import nn

from lstm_lab.cells import check_sizes
from lstm_lab.config import ModelConfig, whole_number
from lstm_lab.init import init_uniform_all_
from lstm_lab.lstm import LSTM, check_dropout

__all__ = ["TiedLayersLSTM", "make_rnn", "LanguageModel", "checkable", "check_token_ids", "check_pad_id",
           "check_lengths", "detach_state", "count_parameters"]


class TiedLayersLSTM(nn.Module):
    """A stacked LSTM whose layers above the first all use one set of weights: "what if the layers shared them?"

    Layer 0 reads the input with its own (4H, I) and (4H, H) matrices; layers 1 .. L-1 each run the same
    `upper` LSTM layer on the output of the one below (with dropout between layers, as nn.LSTM).  Each layer
    still has its own state.  Same call as `nn.LSTM` for time-major tensors:
        forward(x (T, B, I), hx=((L, B, H), (L, B, H)) or None) -> output (T, B, H), (h_n, c_n) (L, B, H)
    Chapter 5."""

    def __init__(self, input_size, hidden_size, num_layers, dropout=0.0):
        super().__init__()
        check_dropout(dropout, num_layers)
        self.input_size, self.hidden_size, self.num_layers, self.dropout = input_size, hidden_size, num_layers, dropout
        self.bottom = LSTM(input_size, hidden_size)
        self.upper = LSTM(hidden_size, hidden_size) if num_layers > 1 else None  # one layer, used L - 1 times

    def forward(self, x, hx=None):
        if hx is None:
            zeros = x.new_zeros(self.num_layers, x.shape[1], self.hidden_size)  # (L, B, H)
            hx = (zeros, zeros)
        h_0, c_0 = hx
        output, (h, c) = self.bottom(x, (h_0[:1], c_0[:1]))  # (T, B, H); state (1, B, H)
        h_n, c_n = [h], [c]
        for k in range(1, self.num_layers):
            layer_input = F.dropout(output, self.dropout, self.training)  # between layers only
            output, (h, c) = self.upper(layer_input, (h_0[k:k + 1], c_0[k:k + 1]))
            h_n.append(h)
            c_n.append(c)
        return output, (torch.cat(h_n), torch.cat(c_n))


def make_rnn(config):
    """The recurrent core a ModelConfig asks for: lstm_lab.LSTM ("lab") or torch.nn.LSTM ("torch"), or, with
    tie_layers, `TiedLayersLSTM` (layers 2..L share their weights; chapter 5).

    All take (T, B, embed_size) and a state ((L, B, H), (L, B, H)), and apply dropout between layers."""
    rnn_class = TiedLayersLSTM if config.tie_layers else {"lab": LSTM, "torch": nn.LSTM}[config.rnn]
    dropout = config.dropout if config.num_layers > 1 else 0.0  # no between-layer dropout with one layer
    return rnn_class(config.embed_size, config.hidden_size, config.num_layers, dropout=dropout)


class LanguageModel(nn.Module):
    """Predicts the next token at every position.

    forward(tokens, state=None) -> logits, state
        tokens  (T, B) LongTensor of ids
        state   (h, c), each (num_layers, B, hidden_size); zeros if None
        logits  (T, B, vocab_size), unnormalised log-probabilities of the next token
    Dropout (Zaremba et al. 2014) is on the non-recurrent connections only: the embedding output, between
    LSTM layers, and the top layer's output; never on the recurrent h -> h path.
    rnn: your own LSTM module in place of the one config.rnn names (the coursework assignment): called like
    nn.LSTM, time-major, embed_size -> hidden_size with config.num_layers layers; it is initialised with the rest.
    Introduced in chapter 6.
    """

    def __init__(self, config, rnn=None):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"config must be a lstm_lab.config.ModelConfig, got {type(config).__name__}")
        if rnn is not None and not isinstance(rnn, nn.Module):
            raise TypeError(f"rnn must be an nn.Module called like nn.LSTM, got {type(rnn).__name__}")
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.embed_size)
        self.rnn = make_rnn(config) if rnn is None else rnn
        self.drop = nn.Dropout(config.dropout)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight  # one (V, H) matrix reads words in and writes them out
        init_uniform_all_(self, config.init_range)

    def forward(self, tokens, state=None):
        check_token_ids(tokens, self.config.vocab_size, dims=2)
        x = self.drop(self.embedding(tokens))  # (T, B, E)
        output, state = self.rnn(x, state)  # (T, B, H); dropout between layers happens inside the LSTM
        logits = self.decoder(self.drop(output))  # (T, B, V)
        return logits, state

    def init_state(self, batch_size):
        """Zero state ((L, B, H), (L, B, H)) on the model's device and dtype."""
        check_sizes(batch_size=batch_size)
        weight = self.decoder.weight
        zeros = weight.new_zeros(self.config.num_layers, batch_size, self.config.hidden_size)
        return zeros, zeros.clone()


def checkable(tensor):
    """Whether a check that reads `tensor`'s values costs no GPU synchronisation worth avoiding: True on the CPU,
    and on a GPU outside training (no gradients being recorded); False while torch.compile traces.  Chapter 6."""
    return not (tensor.is_cuda and torch.is_grad_enabled()) and not torch.compiler.is_compiling()


def check_token_ids(ids, vocab_size, what="token ids", dims=None):
    """Raise a one-line IndexError unless every id in `ids` is from 0 to vocab_size - 1 (nn.Embedding's own error
    says only "index out of range in self"); TypeError unless they are an integer tensor, ValueError unless it
    has `dims` dimensions when given (2: (T, B)).

    Checked wherever it costs no GPU synchronisation: always on the CPU, and on a GPU outside training (sampling,
    evaluation: no gradients).  In a GPU training step the check would stall every batch, so there an id out
    of range ends in CUDA's "device-side assert".  Chapters 6, 8 and 9."""
    if not isinstance(ids, torch.Tensor) or ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"{what} must be an integer tensor (a LongTensor), got {got}")
    if dims is not None and ids.dim() != dims:
        layout = {1: "(B,)", 2: "(T, B): time steps, then streams"}[dims]
        raise ValueError(f"{what} must be {dims}-D {layout}, got shape {tuple(ids.shape)}")
    if ids.numel() == 0 or not checkable(ids):
        return
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise IndexError(f"{what} must be from 0 to {vocab_size - 1} (a vocabulary of {vocab_size:,}), got ids from "
                         f"{low} to {high}")


def check_pad_id(pad_id, vocab_size):
    """Raise ValueError unless `pad_id` is an id of a vocabulary of `vocab_size` (nn.Embedding's padding_idx).
    Chapters 8 and 9."""
    if not whole_number(pad_id) or not 0 <= pad_id < vocab_size:
        raise ValueError(f"pad_id must be an id of the vocabulary, 0 to {vocab_size - 1}, got {pad_id!r}")


def check_lengths(lengths, inputs):
    """Raise ValueError (TypeError for floats) unless `lengths` holds one whole length per column of inputs (T, B),
    each from 1 to T: the lengths a packed batch is cut by.  Chapters 8 and 9."""
    if not isinstance(lengths, torch.Tensor) or lengths.dim() != 1 or lengths.numel() != inputs.shape[1]:
        got = tuple(lengths.shape) if isinstance(lengths, torch.Tensor) else type(lengths).__name__
        raise ValueError(f"lengths must be a 1-D tensor of the {inputs.shape[1]} lengths of the columns of "
                         f"{tuple(inputs.shape)}, got {got}")
    if lengths.is_floating_point():
        raise TypeError(f"lengths must be whole numbers (an integer tensor), got {lengths.dtype}")
    low, high = int(lengths.min()), int(lengths.max())
    if low < 1 or high > inputs.shape[0]:
        raise ValueError(f"lengths must be from 1 to the {inputs.shape[0]} positions of {tuple(inputs.shape)}, got "
                         f"lengths from {low} to {high}")


def detach_state(state):
    """The same state values cut from the graph of the previous window (truncated BPTT).  Chapters 4 and 6."""
    return tuple(s.detach() for s in state)


def count_parameters(model):
    """Number of distinct trainable scalars (a tied matrix counts once).  Chapters 1, 5 and 6."""
    return sum(p.numel() for p in model.parameters())
