"""`LSTM`: a multi-layer LSTM over whole sequences, a drop-in for unidirectional `torch.nn.LSTM`.

Layout of one layer's weights (the same names and shapes as `nn.LSTM`, so state dicts load strictly):

    weight_ih_l{k}  (4H, I) for layer 0, (4H, H) above     rows stacked in gate order i, f, g, o
    weight_hh_l{k}  (4H, H)
    bias_ih_l{k}, bias_hh_l{k}  (4H,)

The input projection W_ih x_t + b_ih does not depend on the previous step, so it is computed for all
time steps in one big matrix multiply before the loop ("hoisted"); only W_hh h_{t-1} stays inside.
Introduced in chapter 1; the speed of this choice is measured in chapter 3.
"""
import warnings

import torch
from torch import nn
import torch.nn.functional as F

from lstm_lab.cells import cell_update, check_same_device_dtype, init_uniform_


def lstm_layer(x, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """Run one LSTM layer over a sequence.

    x: (T, B, I);  h, c: (B, H).  Returns output (T, B, H) and the final (h, c), each (B, H).
    The loop iterates over the projected inputs (`for x_gates_t in x_gates` splits the tensor once with
    `unbind`) instead of indexing them: the backward of every `x_gates[t]` builds a zero gradient the
    size of all of `x_gates`, O(T^2) work in all (measured in chapter 3).  Introduced in chapter 1."""
    x_gates = F.linear(x, weight_ih, bias_ih)  # (T, B, 4H): input projection for every step at once
    outputs = []
    for x_gates_t in x_gates:
        gates = x_gates_t + F.linear(h, weight_hh, bias_hh)  # (B, 4H): add the recurrent part
        h, c = cell_update(gates, c)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


class LSTM(nn.Module):
    """Multi-layer unidirectional LSTM with `nn.LSTM`'s parameters, shapes and dropout rule.

    forward(x, hx=None) -> output, (h_n, c_n)
        x       (T, B, I), or (B, T, I) if batch_first, or unbatched (T, I)
        hx      (h_0, c_0), each (num_layers, B, H) — never batch-first, as in nn.LSTM; zeros if None
        output  (T, B, H) (or (B, T, H) if batch_first): the top layer's h at every step
        h_n, c_n (num_layers, B, H): every layer's state after the last step
    Dropout is applied to each layer's output except the last, as in nn.LSTM.  Introduced in chapter 1.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0):
        super().__init__()
        if input_size < 1 or hidden_size < 1 or num_layers < 1:
            raise ValueError("input_size, hidden_size and num_layers must be positive, got "
                             f"{input_size}, {hidden_size}, {num_layers}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a probability in [0, 1], got {dropout}")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout={dropout} has no effect with num_layers=1: dropout is only applied "
                          "between stacked layers", UserWarning)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, dropout
        for k in range(num_layers):
            layer_input = input_size if k == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size, layer_input)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size, hidden_size)))
            if bias:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.empty(4 * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self):
        init_uniform_(self.parameters(), self.hidden_size)

    def layer_weights(self, k):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k; the biases are None if bias=False."""
        weight_ih, weight_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
        if not self.bias:
            return weight_ih, weight_hh, None, None
        return weight_ih, weight_hh, getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")

    def forward(self, x, hx=None):
        x, hx, unbatched = self._check_and_batch(x, hx)  # x: (T, B, I), hx: 2 x (L, B, H)
        h_n, c_n = [], []
        for k in range(self.num_layers):
            x, (h, c) = lstm_layer(x, hx[0][k], hx[1][k], *self.layer_weights(k))
            h_n.append(h)
            c_n.append(c)
            if k < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)  # between layers only
        h_n, c_n = torch.stack(h_n), torch.stack(c_n)  # (L, B, H) each
        if unbatched:
            return x.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n, c_n)

    def _check_and_batch(self, x, hx):
        """Validate shapes, devices and dtypes; return time-major batched x, a full state, and a flag."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LSTM input must be a torch.Tensor, got {type(x).__name__}")
        layout = "(batch_size, seq_len, input_size)" if self.batch_first else "(seq_len, batch_size, input_size)"
        if x.dim() not in (2, 3):
            raise ValueError(f"LSTM input must be 3-D {layout} or unbatched 2-D (seq_len, input_size), "
                             f"got {x.dim()}-D input of shape {tuple(x.shape)}")
        if x.shape[-1] != self.input_size:
            raise ValueError(f"LSTM input must have input_size={self.input_size} features in its last "
                             f"dimension, got shape {tuple(x.shape)}")
        time_dim = 1 if (x.dim() == 3 and self.batch_first) else 0
        if x.shape[time_dim] == 0:
            raise ValueError(f"LSTM input has no time steps: shape {tuple(x.shape)}")
        weight = self.weight_ih_l0
        check_same_device_dtype({"input": x}, (weight.device, weight.dtype, "the LSTM's weights"))
        unbatched = x.dim() == 2
        x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        batch_size = x.shape[1]
        if hx is None:
            zeros = x.new_zeros(self.num_layers, batch_size, self.hidden_size)
            return x, (zeros, zeros), unbatched
        return x, self._check_state(hx, batch_size, unbatched, x), unbatched

    def _check_state(self, hx, batch_size, unbatched, x):
        if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
            raise ValueError("LSTM state must be a pair (h_0, c_0) of tensors")
        expected = (self.num_layers, self.hidden_size) if unbatched else (self.num_layers, batch_size, self.hidden_size)
        for name, state in zip(("h_0", "c_0"), hx):
            if tuple(state.shape) != expected:
                raise ValueError(f"LSTM state {name} must have shape {expected} (num_layers, batch_size, "
                                 f"hidden_size) — never batch-first — got {tuple(state.shape)}")
        check_same_device_dtype({"h_0": hx[0], "c_0": hx[1]}, (x.device, x.dtype, "the input"))
        return tuple(s.unsqueeze(1) for s in hx) if unbatched else tuple(hx)

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s
