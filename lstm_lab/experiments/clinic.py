"""The autograd error clinic: each error of chapter 4 reproduced by a small function, and its fix.

Errors that raise:
    run_windows(state_fix="none")           backward through the graph a second time
    run_windows(state_fix="retain_graph")   the usual "fix"; with an optimizer step it raises the next error
    preallocated_layer                      a variable needed for gradient computation modified inplace
    StudentLM(register=False).to(other)     tensors on different devices: raw tensors stay behind
Bugs that raise nothing:
    StudentLM(register=False)               weights that are not parameters never train
    two_layer_lstm(bug=True)                layer 2 reads layer 1's input gate
    batch_first_report                      output is batch-first, h_n never is
Each fix is beside its error: state_fix="detach", `lstm_lab.lstm.lstm_layer`, register=True, ...
"""
import collections
import contextlib
import itertools
import time
import warnings
import weakref

import torch
from torch import nn
import torch.nn.functional as F

from lstm_lab.cells import GATES, cell_update
from lstm_lab.data.corpus import bptt_windows
from lstm_lab.lm_train import graph_size
from lstm_lab.lstm import LSTM

__all__ = ["StudentLSTM", "StudentLM", "unregistered_named_tensors", "unregistered_tensors", "train_lm", "SavedTensorMeter", "run_windows",
           "preallocated_layer", "anomaly_trace", "two_layer_lstm", "SteppedTwoLayerLSTM", "batch_first_report"]


class StudentLSTM(nn.Module):
    """One LSTM layer as student reports write it: per gate, x @ W_x? (I, H) + h @ W_h? (H, H) + b_?,
    every weight drawn as randn * init_scale (the reports' 0.01 by default).

    register=True wraps each in nn.Parameter; register=False keeps plain tensor attributes, which is
    what `self.W_xi = (torch.randn(I, H) * 0.01).to(device)` does: `device` is where they are created
    (the reports' `.to(device)`; `model.to(device)` will not move them).  forward(x (T, B, I), state=None)
    -> output (T, B, H), (h, c) each (B, H).  Introduced in chapter 4."""

    def __init__(self, input_size, hidden_size, register=True, seed=0, device=None, init_scale=0.01):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight = lambda *shape: (torch.randn(*shape, generator=generator) * init_scale).to(device)
        wrap = nn.Parameter if register else (lambda t: t)
        self.hidden_size = hidden_size
        for gate in GATES:
            setattr(self, f"W_x{gate}", wrap(weight(input_size, hidden_size)))
            setattr(self, f"W_h{gate}", wrap(weight(hidden_size, hidden_size)))
            setattr(self, f"b_{gate}", wrap(weight(hidden_size)))

    def gate(self, name, x_t, h):
        """Pre-activation of gate `name` (one of i, f, g, o): (B, H)."""
        return x_t @ getattr(self, f"W_x{name}") + h @ getattr(self, f"W_h{name}") + getattr(self, f"b_{name}")

    def forward(self, x, state=None):
        if state is None:
            zeros = x.new_zeros(x.shape[1], self.hidden_size)
            state = (zeros, zeros)
        h, c = state
        outputs = []
        for x_t in x:
            i, f = torch.sigmoid(self.gate("i", x_t, h)), torch.sigmoid(self.gate("f", x_t, h))
            g, o = torch.tanh(self.gate("g", x_t, h)), torch.sigmoid(self.gate("o", x_t, h))
            c = f * c + i * g
            h = o * torch.tanh(c)
            outputs.append(h)
        return torch.stack(outputs), (h, c)


class StudentLM(nn.Module):
    """Embedding -> StudentLSTM -> linear decoder: forward(tokens (T, B), state) -> logits (T, B, V), state.

    Only the LSTM's weights depend on `register` and `init_scale`; `device` is where the LSTM's weights are
    created (see `StudentLSTM`).  Introduced in chapter 4."""

    def __init__(self, vocab_size, hidden_size, register=True, seed=0, device=None, init_scale=0.01):
        super().__init__()
        torch.manual_seed(seed)
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.lstm = StudentLSTM(hidden_size, hidden_size, register, seed, device, init_scale)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens, state=None):
        output, state = self.lstm(self.embedding(tokens), state)
        return self.decoder(output), state


def unregistered_named_tensors(module):
    """Floating-point tensors a module holds (as attributes, or in lists, tuples, dicts, also as the parameters of
    modules kept in a plain list) that are not its registered parameters or buffers: an optimizer built from
    `module.parameters()` never updates them, `module.to(device)` never moves them, `state_dict()` never saves
    them.

    Returns [(name, tensor)] with dotted names like "lstm.W_xi" or "layers[0]".  Introduced in chapter 4."""
    registered = {id(t) for t in itertools.chain(module.parameters(), module.buffers())}
    internal = set(vars(nn.Module()))  # _parameters, _buffers, _modules, hooks...
    found = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr in internal:
                continue
            name = f"{prefix}.{attr}" if prefix else attr
            for item_name, t in _tensors_in(name, value):
                if t.is_floating_point() and id(t) not in registered:
                    found.append((item_name, t))
    return found


def unregistered_tensors(module):
    """`unregistered_named_tensors` as a table: [{"name", "shape", "requires_grad"}], one row per tensor.
    Introduced in chapter 4."""
    return [{"name": name, "shape": tuple(t.shape), "requires_grad": t.requires_grad}
            for name, t in unregistered_named_tensors(module)]


def _tensors_in(name, value):
    """(name, tensor) pairs for a tensor, or for the tensors and the modules' parameters directly
    inside a list, tuple or dict (a plain list of modules hides their parameters too)."""
    if isinstance(value, torch.Tensor):
        return [(name, value)]
    if isinstance(value, (list, tuple)):
        items = [(f"{name}[{k}]", v) for k, v in enumerate(value)]
    elif isinstance(value, dict):
        items = [(f"{name}[{k!r}]", v) for k, v in value.items()]
    else:
        return []
    found = [(n, v) for n, v in items if isinstance(v, torch.Tensor)]
    for n, v in items:
        if isinstance(v, nn.Module):
            found += [(f"{n}.{p_name}", p) for p_name, p in v.named_parameters()]
    return found


def train_lm(model, source, seq_len, steps, lr=1e-2):
    """Adam on `model.parameters()` for `steps` truncated-BPTT windows of a batchified source (S, B).

    The state is detached between windows.  Returns the training loss (mean NLL, nats) of every window.
    Introduced in chapter 4."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, state = [], None
    for inputs, targets in itertools.islice(bptt_windows(source, seq_len), steps):
        logits, state = model(inputs, state)
        state = tuple(s.detach() for s in state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


class SavedTensorMeter:
    """Counts the bytes autograd graphs hold for backward right now: every tensor an operation saves
    passes through `torch.autograd.graph.saved_tensors_hooks`; a storage counts once while any
    graph still holds it.  Use as a context manager around the forward passes.  Chapter 4."""

    def __init__(self):
        self.holders = collections.Counter()  # storage address -> graphs' references to it
        self.nbytes = {}

    def pack(self, tensor):
        """Pack hook: count the tensor's storage and box it, so its release can be observed."""
        key = tensor.untyped_storage().data_ptr()
        self.holders[key] += 1
        self.nbytes[key] = tensor.untyped_storage().nbytes()
        box = _Saved(tensor)
        weakref.finalize(box, self._release, key)  # runs when the graph holding `box` is freed
        return box

    @staticmethod
    def unpack(box):
        """Unpack hook: the saved tensor, for the backward pass."""
        return box.tensor

    def _release(self, key):
        self.holders[key] -= 1

    def live_bytes(self):
        """Bytes of the distinct storages that some graph still holds for backward."""
        return sum(self.nbytes[key] for key, n in self.holders.items() if n > 0)

    def __enter__(self):
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, self.unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        return self._hooks.__exit__(*exc)


class _Saved:
    """A box around a saved tensor, so a finalizer can tell when autograd lets go of it."""

    def __init__(self, tensor):
        self.tensor = tensor


def run_windows(model, source, seq_len, windows, state_fix="detach", optimizer=None, meter=None):
    """Forward and backward over consecutive windows, the state carried from each window to the next.

    state_fix: "none" (carry the state as it is), "detach" (cut it from the previous window's graph)
    or "retain_graph" (carry it and call backward(retain_graph=True)).  optimizer: stepped after every
    backward if given.  meter: a SavedTensorMeter to read after each forward (its hooks switch off
    autograd's inplace checks, so only pass one to measure).  Windows are moved to the model's device.
    Returns one row per window: {"window", "seconds", "saved_mb" (None without a meter), "graph_nodes"
    (autograd nodes behind the loss: what backward walks), "loss"}.  Introduced in chapter 4; chapter 6
    uses the graph sizes."""
    state, rows = None, []
    device = next(model.parameters()).device
    with meter or contextlib.nullcontext():
        for k, (inputs, targets) in enumerate(itertools.islice(bptt_windows(source, seq_len), windows)):
            start = time.perf_counter()
            if state_fix == "detach" and state is not None:
                state = tuple(s.detach() for s in state)  # keep the values, drop the history
            logits, state = model(inputs.to(device), state)
            saved_mb = meter.live_bytes() / 2**20 if meter else None  # what backward will need
            loss = F.cross_entropy(logits.flatten(0, 1), targets.to(device).flatten())
            graph_nodes = graph_size(loss)
            loss.backward(retain_graph=(state_fix == "retain_graph"))
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad()
            rows.append({"window": k, "seconds": time.perf_counter() - start, "saved_mb": saved_mb,
                         "graph_nodes": graph_nodes, "loss": loss.item()})
    return rows


def preallocated_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """`lstm_layer` written with a preallocated output tensor: each step reads hs[t - 1] and then
    writes hs[t] in place.  Autograd saved hs[t - 1] for the weight gradient, so backward raises
    "modified by an inplace operation".  Same signature as `lstm_layer`.  Chapter 4."""
    hs = x.new_zeros(x.shape[0], x.shape[1], weight_hh.shape[1])  # (T, B, H), filled step by step
    for t in range(x.shape[0]):
        h_prev = hs[t - 1] if t > 0 else h
        gates = F.linear(x[t], weight_ih, bias_ih) + F.linear(h_prev, weight_hh, bias_hh)
        h_t, c = cell_update(gates, c)
        hs[t] = h_t  # in place: bumps the version of hs, which step t's matmul saved
    return hs, (hs[-1], c)


def anomaly_trace(fn):
    """Run fn() (a forward and backward that fails) under `torch.autograd.detect_anomaly` and return
    (the error, the lines of the forward traceback anomaly mode attaches to it).  Chapter 4."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with torch.autograd.detect_anomaly():
                fn()
        except RuntimeError as error:
            trace = [str(w.message) for w in caught if "Traceback of forward call" in str(w.message)]
            lines = trace[0].splitlines() if trace else []
            return error, [line for line in lines if not line.startswith(" (Triggered internally")]
    raise AssertionError("fn() did not raise")


def two_layer_lstm(x, h0, c0, weights, bug=False):
    """Two stacked LSTM layers stepped together inside one loop over time, as report 003 writes them.

    bug=True reproduces its slip: layer 2's cell update uses layer 1's input gate.  Same signature as
    the rungs of `lstm_lab.experiments.ladder` (weights: two tuples).  Introduced in chapter 4."""
    (h1, h2), (c1, c2) = h0, c0
    (W_ih1, W_hh1, b_ih1, b_hh1), (W_ih2, W_hh2, b_ih2, b_hh2) = weights
    outputs = []
    for x_t in x:
        i1, f1, g1, o1 = (F.linear(x_t, W_ih1, b_ih1) + F.linear(h1, W_hh1, b_hh1)).chunk(4, dim=1)
        i1, f1, g1, o1 = torch.sigmoid(i1), torch.sigmoid(f1), torch.tanh(g1), torch.sigmoid(o1)
        c1 = f1 * c1 + i1 * g1
        h1 = o1 * torch.tanh(c1)
        i2, f2, g2, o2 = (F.linear(h1, W_ih2, b_ih2) + F.linear(h2, W_hh2, b_hh2)).chunk(4, dim=1)
        i2, f2, g2, o2 = torch.sigmoid(i2), torch.sigmoid(f2), torch.tanh(g2), torch.sigmoid(o2)
        c2 = f2 * c2 + (i1 if bug else i2) * g2  # the bug: i1 where i2 belongs
        h2 = o2 * torch.tanh(c2)
        outputs.append(h2)
    return torch.stack(outputs), (torch.stack([h1, h2]), torch.stack([c1, c2]))


class SteppedTwoLayerLSTM(nn.Module):
    """Two layers stepped together in one loop, as report 003 writes them (`two_layer_lstm`), with or without
    its bug (layer 2's cell update reads layer 1's input gate): an nn.LSTM-shaped module a model can use.

    Holds its weights in a 2-layer `lstm_lab.LSTM` (same names and shapes as nn.LSTM), so the same weights
    can run with and without the bug.  forward(x (T, B, I), hx=None) -> output (T, B, H), (h_n, c_n) (2, B, H).
    No dropout.  Used in chapter 5."""

    def __init__(self, input_size, hidden_size, bug=False):
        super().__init__()
        self.hidden_size, self.num_layers, self.bug = hidden_size, 2, bug
        self.lstm = LSTM(input_size, hidden_size, num_layers=2)

    def forward(self, x, hx=None):
        if hx is None:
            zeros = x.new_zeros(2, x.shape[1], self.hidden_size)  # (2, B, H)
            hx = (zeros, zeros)
        weights = [self.lstm.layer_weights(0), self.lstm.layer_weights(1)]
        return two_layer_lstm(x, hx[0], hx[1], weights, bug=self.bug)


def batch_first_report(seq_len=4, batch_size=4, input_size=3, hidden_size=5, num_layers=2):
    """Shapes nn.LSTM returns with batch_first False and True, and which slice is the last step.

    Returns one row per layout: the shapes of x, output and h_n, and whether output[-1] or
    output[:, -1] equals h_n[-1] (the top layer's last h).  With seq_len == batch_size the wrong slice
    has the right shape, so nothing raises.  Introduced in chapter 4."""
    rows = []
    for batch_first in (False, True):
        torch.manual_seed(0)
        lstm = nn.LSTM(input_size, hidden_size, num_layers, batch_first=batch_first)
        shape = (batch_size, seq_len, input_size) if batch_first else (seq_len, batch_size, input_size)
        x = torch.randn(shape)
        output, (h_n, _) = lstm(x)
        rows.append({"batch_first": batch_first, "x": tuple(x.shape), "output": tuple(output.shape),
                     "h_n": tuple(h_n.shape), "output[-1] is last step": torch.allclose(output[-1], h_n[-1]),
                     "output[:, -1] is last step": torch.allclose(output[:, -1], h_n[-1])})
    return rows
