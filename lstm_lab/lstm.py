"""`LSTM`: a multi-layer, optionally bidirectional LSTM over whole sequences, a drop-in for `torch.nn.LSTM`.

Layout of one layer's weights (the same names, shapes and order as `nn.LSTM`, so state dicts load strictly):

    weight_ih_l{k}  (4H, I) for layer 0, (4H, D*H) above     rows stacked in gate order i, f, g, o
    weight_hh_l{k}  (4H, H)
    bias_ih_l{k}, bias_hh_l{k}  (4H,)
    weight_ih_l{k}_reverse, ...   the same four again for the reverse direction if bidirectional

D is the number of directions: 1, or 2 if bidirectional.  The input projection W_ih x_t + b_ih does not
depend on the previous step, so it is computed for all time steps in one big matrix multiply before the
loop ("hoisted"); only W_hh h_{t-1} stays inside.  The reverse direction is the same layer run on the
input reversed in time.  Introduced in chapter 1; the speed of this choice is measured in chapter 3.

A `torch.nn.utils.rnn.PackedSequence` holds sequences of different lengths without padding, time-major:
`data` holds step 0 of every sequence, then step 1 of those still running, and so on; `batch_sizes[t]`
says how many sequences are still running at step t.  The sequences are sorted longest first, so the
ones running at step t are always the first batch_sizes[t]:

    sequences (lengths 3, 1, 2)     packed, sorted longest first (a, c, b)
        a:  a0 a1 a2                    data             = [a0 c0 b0 | a1 c1 | a2]    (N, I), N = 6
        b:  b0                          batch_sizes      = [3, 2, 1]
        c:  c0 c1                       sorted_indices   = [0, 2, 1]   sorted row r is sequence sorted_indices[r]
                                        unsorted_indices = [0, 2, 1]   sequence b is sorted row unsorted_indices[b]

Chapters 7 and 9 build on this layout.
"""
import numbers
import warnings

import torch
from torch import nn
import torch.nn.functional as F
from torch.nn.utils.rnn import PackedSequence

from lstm_lab.cells import (LSTMInputError, autocast_dtype_for, cell_update, check_same_device_dtype, check_state_pair,
                            fx_leaf)

__all__ = ["lstm_layer", "autocast_dtype", "check_dropout", "LSTM"]


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


def packed_lstm_layer(data, batch_sizes, h, c, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """Run one LSTM layer over packed sequences: `lstm_layer` with a batch that shrinks as sequences end.

    data: (N, I), packed time-major (see the module docstring);  batch_sizes: (T,) int64 on the CPU;
    h, c: (B, H) with B = batch_sizes[0], rows in sorted order.  Returns output (N, H), packed like data,
    and the final (h, c), each (B, H): row b is sequence b's state after its own last step.
    Introduced in chapter 1; chapters 7 and 9 use it."""
    x_gates = F.linear(data, weight_ih, bias_ih)  # (N, 4H): input projection for every step at once
    outputs, h_last, c_last = [], [], []
    for x_gates_t in x_gates.split(batch_sizes.tolist()):  # (B_t, 4H): the B_t sequences still running
        running = x_gates_t.shape[0]
        if running < h.shape[0]:  # the last rows ended at the previous step: their state is final
            h_last.append(h[running:])
            c_last.append(c[running:])
            h, c = h[:running], c[:running]
        gates = x_gates_t + F.linear(h, weight_hh, bias_hh)  # (B_t, 4H): add the recurrent part
        h, c = cell_update(gates, c)
        outputs.append(h)
    h_last.append(h)
    c_last.append(c)
    # the shortest sequences ended first and are the last rows: put the pieces back in row order
    return torch.cat(outputs), (torch.cat(h_last[::-1]), torch.cat(c_last[::-1]))


def reversed_packed_index(batch_sizes):
    """The order of packed rows that reverses every sequence within its own length.

    Row (step t, sequence b) of the result is row (step length_b - 1 - t, sequence b) of the input, so
    `data[index]` is the packing of the reversed sequences, and indexing twice gives data back.
    batch_sizes: (T,) int64 on the CPU.  Returns index (N,).  Introduced in chapter 1."""
    starts = batch_sizes.cumsum(0) - batch_sizes  # (T,): where step t begins in data
    step = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)  # (N,): each row's step
    sequence = torch.arange(len(step)) - starts[step]  # (N,): each row's sequence (in sorted order)
    lengths = torch.bincount(sequence)  # (B,): how many steps each sequence has
    return starts[lengths[sequence] - 1 - step] + sequence


def reverse_time(x, batch_sizes=None):
    """Every sequence of x reversed in time.  x: (T, B, F), or packed data (N, F) with its batch_sizes."""
    if batch_sizes is None:
        return x.flip(0)
    return x[reversed_packed_index(batch_sizes).to(x.device)]


def run_direction(x, h, c, weights, batch_sizes=None, reverse=False):
    """One direction of one layer.  x: (T, B, I), or packed data (N, I) if batch_sizes is given.

    weights: (weight_ih, weight_hh, bias_ih, bias_hh).  The reverse direction is the same layer run on the
    input reversed in time, its output reversed back; its final state is the state after step 0.
    Returns output (T, B, H) or (N, H), and the final (h, c), each (B, H).  Introduced in chapter 1."""
    if reverse:
        output, state = run_direction(reverse_time(x, batch_sizes), h, c, weights, batch_sizes)
        return reverse_time(output, batch_sizes), state
    if batch_sizes is None:
        return lstm_layer(x, h, c, *weights)
    return packed_lstm_layer(x, batch_sizes, h, c, *weights)


ONEDNN_BUILT = torch.backends.mkldnn.is_available()  # asked once: torch.compile cannot trace the question


def autocast_dtype(device_type, packed=False):
    """The dtype `nn.LSTM` runs in under `torch.autocast` on this device type, or None: as given.

    nn.LSTM hands the whole recurrence to one fused kernel, and autocast casts that kernel's input, state
    and weights (float32 ones; never float64), so output, h_n and c_n come back in the low precision:

        CUDA  cuDNN, tensor or packed input                                     float16 by default
        CPU   oneDNN, tensor input, while torch.backends.mkldnn is enabled       bfloat16 by default

    A PackedSequence on CPU runs PyTorch's own step loop instead: its matrix multiplies autocast but its
    output and state stay float32, which `lstm_layer` gives with no cast (F.linear autocasts by itself).
    Introduced with mixed-precision training (chapter 7)."""
    if device_type not in ("cuda", "cpu") or not torch.is_autocast_enabled(device_type):
        return None  # (autocast knows no other device types: "meta" would raise)
    onednn = ONEDNN_BUILT and torch.backends.mkldnn.enabled
    fused_kernel_autocasts = {"cuda": True, "cpu": onednn and not packed}
    if not fused_kernel_autocasts[device_type]:
        return None
    return torch.get_autocast_dtype(device_type)


def check_dropout(dropout, num_layers):
    """Raise a ValueError unless dropout is a probability, as nn.LSTM does; warn if it can have no effect.
    Chapter 1."""
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real):
        raise ValueError(f"dropout must be a float probability in [0, 1], got {dropout!r} "
                         f"of type {type(dropout).__name__}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be a probability in [0, 1], got {dropout}")
    if dropout > 0 and num_layers == 1:
        warnings.warn(f"dropout={dropout} has no effect with num_layers=1: dropout is only applied "
                      "between stacked layers", UserWarning, stacklevel=3)


class LSTM(nn.LSTM):
    """Multi-layer LSTM: `nn.LSTM` with its forward written out, step by step, in Python.

    LSTM(input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
         bidirectional=False, proj_size=0, device=None, dtype=None)          (proj_size must stay 0)

    forward(input, hx=None) -> output, (h_n, c_n), with D = 2 if bidirectional else 1:
        input   (T, B, I), or (B, T, I) if batch_first, or unbatched (T, I), or a PackedSequence
        hx      (h_0, c_0), each (num_layers * D, B, H) — never batch-first, as in nn.LSTM; zeros if None.
                For a PackedSequence, row b of hx is sequence b as the caller numbers it (before sorting).
        output  (T, B, D*H) (or (B, T, D*H) if batch_first): the top layer's h at every step, forward
                direction in [..., :H], reverse in [..., H:]; a PackedSequence packed like input if it is one
        h_n, c_n (num_layers * D, B, H): each layer's final state, ordered layer 0 forward, layer 0 reverse,
                layer 1 forward, ...; for packed input, each sequence's state after its own last step
                (its step 0 for the reverse direction), rows in the caller's order.
    Layer k > 0 reads the concatenation of both directions of layer k - 1.  Dropout is applied to each
    layer's output except the last, as in nn.LSTM.  Under torch.autocast the output and state come back in
    the dtype nn.LSTM returns (see `autocast_dtype`).  Introduced in chapter 1.

    How it relates to nn.LSTM (chapter 3): it *is* one, a subclass that replaces only `forward`.  So
    `isinstance(m, nn.LSTM)` and `isinstance(m, nn.RNNBase)` hold, and everything else is nn.LSTM's own:
    the constructor and its argument checks, the parameters (names, shapes, order, initialisation),
    `flatten_parameters`, `_flat_weights`, `_all_weights`, `all_weights`, `mode`, `repr`, and pickling (the
    class is registered with `torch.serialization.add_safe_globals`, so `torch.load(weights_only=True)`
    reads a whole saved model that holds one).  Where our forward cannot be used, it is not:
        torch.jit.trace, torch.export, ONNX export, torch.compile with allow_rnn   nn.LSTM's forward
            (a Python loop over time steps would be recorded step by step: one graph per sequence length)
        torch.jit.script   an nn.LSTM sharing these parameters (`to_nn`); PyTorch puts it in the scripted
            model's place, in the eager model too (TorchScript cannot read this forward)
        torch.fx           one call_module node, as for nn.LSTM (fx does not trace into torch.nn modules)
        torch.compile      as for nn.LSTM, Dynamo does not trace it (a graph break) and it runs eagerly
    What differs, on purpose:
        - errors for a bad input or state are `LSTMInputError`s with a message that says what was expected:
          a ValueError that is also a RuntimeError (nn.LSTM raises one or the other, case by case);
        - no projections: proj_size must be 0;
        - exact-type tools do not see it: `torch.ao.quantization.quantize_dynamic` matches `type(m) is
          nn.LSTM` and leaves this module in float without a word; quantize `to_nn()`'s module instead.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        if proj_size != 0:
            raise ValueError(f"lstm_lab.LSTM has no projections: proj_size must be 0, got {proj_size} "
                             "(use torch.nn.LSTM for an LSTM with projections)")
        # nn.LSTM checks the arguments and registers the parameters in its layout (the module docstring):
        # weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}, then _reverse, layer by layer
        super().__init__(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first,
                         dropout=dropout, bidirectional=bidirectional, device=device, dtype=dtype)

    def to_nn(self):
        """An `nn.LSTM` with the same arguments whose parameters are this module's own, shared, not copied:
        training either trains both.  For tools that need nn.LSTM's exact type (quantization, TorchScript)."""
        twin = nn.LSTM(self.input_size, self.hidden_size, self.num_layers, bias=self.bias,
                       batch_first=self.batch_first, dropout=self.dropout, bidirectional=self.bidirectional,
                       device="meta")
        for name in self._flat_weights_names:
            setattr(twin, name, getattr(self, name))
        return twin.train(self.training)

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this module's place: `to_nn()` (see the class docstring)."""
        return self.to_nn()

    def layer_weights(self, k, reverse=False):
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer k in one direction; the biases are None if bias=False."""
        suffix = f"_l{k}_reverse" if reverse else f"_l{k}"
        weight_ih, weight_hh = getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix)
        if not self.bias:
            return weight_ih, weight_hh, None, None
        return weight_ih, weight_hh, getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix)

    def forward(self, input, hx=None):
        fx_node = fx_leaf(self, input, hx)
        if fx_node is not None:
            return fx_node
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # being recorded as a graph
            return super().forward(input, hx)  # nn.LSTM's one op: the graph holds it for any length
        return self.forward_step_by_step(input, hx)

    @torch.compiler.disable
    def forward_step_by_step(self, input, hx=None):
        """The forward pass written out: every layer, direction and time step in turn (the class docstring).

        torch.compile does not look inside (`torch.compiler.disable`), as it does not look inside nn.LSTM:
        its Python loop would compile one graph per sequence length."""
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        x, unbatched = self._check_and_batch(input)  # (T, B, I)
        state = self._state_or_zeros(hx, x, x.shape[1], unbatched)  # 2 x (L*D, B, H)
        x, (h_0, c_0) = self._autocast_and_check(x, state, autocast_dtype(x.device.type))
        output, (h_n, c_n) = self._run_layers(x, h_0, c_0)
        if unbatched:
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return (output.transpose(0, 1) if self.batch_first else output), (h_n, c_n)

    def _forward_packed(self, packed, hx):
        """forward for a PackedSequence: rows of hx and h_n follow the caller's order, packed rows sorted order."""
        data, batch_sizes, sorted_indices, unsorted_indices = packed  # data (N, I)
        self._check_features(data)
        state = self._state_or_zeros(hx, data, int(batch_sizes[0]))  # 2 x (L*D, B, H)
        data, (h_0, c_0) = self._autocast_and_check(data, state, autocast_dtype(data.device.type, packed=True))
        if sorted_indices is not None:  # row r of the packed batch is sequence sorted_indices[r]
            h_0, c_0 = h_0.index_select(1, sorted_indices), c_0.index_select(1, sorted_indices)
        output, (h_n, c_n) = self._run_layers(data, h_0, c_0, batch_sizes)
        if unsorted_indices is not None:  # back to the caller's order
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)

    def _run_layers(self, x, h_0, c_0, batch_sizes=None):
        """Every layer and direction in turn.  x: (T, B, I), or packed data (N, I) with batch_sizes.

        h_0, c_0: (L*D, B, H).  Returns the top layer's output, (T, B, D*H) or (N, D*H), and (h_n, c_n),
        each (L*D, B, H) in nn.LSTM's order: layer 0 forward, layer 0 reverse, layer 1 forward, ..."""
        directions = (False, True) if self.bidirectional else (False,)  # reverse?
        h_n, c_n = [], []
        for k in range(self.num_layers):
            outputs = []
            for reverse in directions:
                j = len(h_n)  # this layer and direction's row in h_0, c_0, h_n and c_n
                weights = self.layer_weights(k, reverse)
                output, (h, c) = run_direction(x, h_0[j], c_0[j], weights, batch_sizes, reverse)
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)  # (T, B, D*H): both directions
            if k < self.num_layers - 1 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)  # between layers only
        return x, (torch.stack(h_n), torch.stack(c_n))

    def _check_features(self, x):
        if x.shape[-1] != self.input_size:
            raise LSTMInputError(f"LSTM input must have input_size={self.input_size} features in its last "
                             f"dimension, got shape {tuple(x.shape)}")

    def _check_and_batch(self, x):
        """Validate the input's type and shape; return it time-major and batched, (T, B, I), and a flag."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"LSTM input must be a torch.Tensor or a PackedSequence, got {type(x).__name__}")
        layout = "(batch_size, seq_len, input_size)" if self.batch_first else "(seq_len, batch_size, input_size)"
        if x.dim() not in (2, 3):
            raise LSTMInputError(f"LSTM input must be 3-D {layout} or unbatched 2-D (seq_len, input_size), "
                             f"got {x.dim()}-D input of shape {tuple(x.shape)}")
        self._check_features(x)
        time_dim = 1 if (x.dim() == 3 and self.batch_first) else 0
        if x.shape[time_dim] == 0:
            raise LSTMInputError(f"LSTM input has no time steps: shape {tuple(x.shape)}")
        unbatched = x.dim() == 2
        x = x.unsqueeze(1) if unbatched else (x.transpose(0, 1) if self.batch_first else x)
        return x, unbatched

    def _state_or_zeros(self, hx, x, batch_size, unbatched=False):
        """(h_0, c_0), each (L*D, B, H): hx after checking its shapes, or zeros like x if hx is None."""
        layers = self.num_layers * (2 if self.bidirectional else 1)
        if hx is None:
            zeros = x.new_zeros(layers, batch_size, self.hidden_size)
            return zeros, zeros
        check_state_pair(hx, "LSTM state", "h_0, c_0")
        expected = (layers, self.hidden_size) if unbatched else (layers, batch_size, self.hidden_size)
        layers_name = "num_layers * 2" if self.bidirectional else "num_layers"
        for name, state in zip(("h_0", "c_0"), hx):
            if tuple(state.shape) != expected:
                raise LSTMInputError(f"LSTM state {name} must have shape {expected} ({layers_name}, batch_size, "
                                 f"hidden_size) — never batch-first — got {tuple(state.shape)}")
        return tuple(s.unsqueeze(1) for s in hx) if unbatched else tuple(hx)

    def _autocast_and_check(self, x, state, dtype):
        """Cast input and state to dtype as autocast would (None: no cast), then check devices and dtypes."""
        x, h_0, c_0 = (t.to(autocast_dtype_for(t.dtype, dtype)) for t in (x, *state))
        weight = self.weight_ih_l0
        weight_dtype = autocast_dtype_for(weight.dtype, dtype)  # what F.linear will cast the weights to
        check_same_device_dtype({"input": x}, (weight.device, weight_dtype, "the LSTM's weights"))
        check_same_device_dtype({"h_0": h_0, "c_0": c_0}, (x.device, x.dtype, "the input"))
        return x, (h_0, c_0)


torch.serialization.add_safe_globals([LSTM])  # torch.load(weights_only=True) may rebuild it, as it may nn.LSTM
