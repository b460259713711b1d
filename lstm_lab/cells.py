"""LSTM cells in PyTorch: the drop-in `LSTMCell` and the two teaching notations.

Every cell here computes the same function as `torch.nn.LSTMCell` (chapter 1):

    i = sigmoid(W_ii x + b_ii + W_hi h + b_hi)      input gate
    f = sigmoid(W_if x + b_if + W_hf h + b_hf)      forget gate
    g = tanh   (W_ig x + b_ig + W_hg h + b_hg)      candidate cell state (c_tilde)
    o = sigmoid(W_io x + b_io + W_ho h + b_ho)      output gate
    c' = f * c + i * g
    h' = o * tanh(c')

Three ways to store the weights:

    LSTMCell        weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,)   PyTorch's layout
    GateLSTMCell    one (H, I) and one (H, H) matrix per gate: W_ii, W_hi, ...      the naive cell
    ConcatLSTMCell  W (4H, H + I) acting on [h, x], one bias b (4H,)               the textbook notation

The 4H rows are stacked in gate order i, f, g, o, so one matrix multiply computes all four gates.
"""
import torch
from torch import nn
import torch.nn.functional as F

from lstm_lab.init import init_uniform_

__all__ = ["GATES", "LSTMInputError", "fx_leaf", "cell_update", "check_sizes", "check_state_pair", "check_same_device_dtype", "autocast_dtype_for",
           "LSTMCell", "GateLSTMCell", "fused_to_concat", "concat_to_fused", "ConcatLSTMCell", "unroll",
           "tf_basic_lstm_step", "from_tf_basic_lstm"]

GATES = ("i", "f", "g", "o")  # PyTorch's gate order along the 4H axis


class LSTMInputError(ValueError, RuntimeError):
    """An input or state an LSTM cannot take: its shape, size, device or dtype.  A ValueError, which it is, and
    a RuntimeError, which is what nn.LSTM and nn.LSTMCell raise for most of these (ValueError for the rest),
    so code written to catch either catches it.  Chapter 1."""


def fx_leaf(module, input, hx):
    """If torch.fx is tracing this call (`input` is an fx Proxy): the Proxy of one call_module node for it, as fx
    records nn.LSTM and nn.LSTMCell, the "leaf" modules of torch.nn it never traces into.  Otherwise None.

    fx runs forward with Proxies in place of tensors, and our forward needs real sizes for its checks and its
    loop over time steps; the node instead calls the module when the traced graph runs, at any length.
    Chapter 3."""
    if not isinstance(input, torch.fx.Proxy):
        return None
    tracer = input.tracer
    path = tracer.path_of_module(module)
    if not path:  # the module is the root: a graph that calls itself would never end
        raise torch.fx.proxy.TraceError(f"torch.fx can trace a model that holds a {type(module).__name__}, not "
                                        f"the {type(module).__name__} itself (nor can it trace torch.nn's)")
    return tracer.create_proxy("call_module", path, (input, hx), {})


def cell_update(gates, c):
    """Turn pre-activations into the new state: the nonlinear half of an LSTM step.

    gates: (B, 4H) in order i, f, g, o;  c: (B, H).  Returns (h_new, c_new), each (B, H).
    Introduced in chapter 1."""
    i, f, g, o = gates.chunk(4, dim=-1)  # four (B, H) slices of the stacked gates
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c_new = f * c + i * g  # forget some of the old memory, write some of the candidate
    h_new = o * torch.tanh(c_new)  # expose a squashed, gated view of the memory
    return h_new, c_new


def check_cell_input(x, hx, input_size, hidden_size):
    """Raise an LSTMInputError naming what was expected if `x` or `hx` has a shape that cannot feed an LSTM cell.

    x: (B, I) or (I,);  hx: None or a pair (h, c), each shaped like x but with H features.  Devices and
    dtypes are checked after autocast has had its say (`_Cell.forward`).  Introduced in chapter 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"LSTM cell input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (1, 2):
        raise LSTMInputError(f"LSTM cell input must be 2-D (batch_size, input_size) or 1-D (input_size,), "
                         f"got {x.dim()}-D input of shape {tuple(x.shape)}")
    if x.shape[-1] != input_size:
        raise LSTMInputError(f"LSTM cell input must have input_size={input_size} features in its last "
                         f"dimension, got shape {tuple(x.shape)}")
    if hx is None:
        return
    check_state_pair(hx, "LSTM cell state", "h, c")
    expected = tuple(x.shape[:-1]) + (hidden_size,)
    for name, state in zip(("h", "c"), hx):
        if tuple(state.shape) != expected:
            raise LSTMInputError(f"LSTM cell state {name} must have shape {expected} "
                             f"(batch_size, hidden_size), got {tuple(state.shape)}")


def check_sizes(**sizes):
    """Raise TypeError for a size that is not an int (a float, a str, a numpy integer: refused as nn.LSTM refuses
    them), ValueError for one below 1.  check_sizes(input_size=10, hidden_size=20).  Chapter 1."""
    for name, value in sizes.items():
        if not isinstance(value, int):
            raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")
    if min(sizes.values()) < 1:
        raise ValueError(f"{', '.join(sizes)} must be positive, got {', '.join(map(str, sizes.values()))}")


def check_state_pair(hx, what, names):
    """Raise LSTMInputError unless `hx` is a pair (a tuple or list of two), TypeError unless both are tensors (a None
    or a numpy array in it would otherwise end in an AttributeError deep inside).  what: "LSTM state", names:
    "h_0, c_0".  Chapter 1."""
    if not (isinstance(hx, (tuple, list)) and len(hx) == 2):
        raise LSTMInputError(f"{what} must be a pair ({names}) of tensors, got {type(hx).__name__}")
    if not all(isinstance(state, torch.Tensor) for state in hx):
        raise TypeError(f"{what} must be a pair ({names}) of tensors, got ({type(hx[0]).__name__}, "
                        f"{type(hx[1]).__name__})")


def check_same_device_dtype(tensors, reference=None):
    """Raise an LSTMInputError if the named tensors do not all share one device and one dtype.

    tensors: dict name -> tensor; reference: optional (device, dtype, what) the tensors must match,
    e.g. the module's weights.  Introduced in chapter 1."""
    items = list(tensors.items())
    device, dtype, what = reference or (items[0][1].device, items[0][1].dtype, items[0][0])
    for name, t in items:
        if t.device != device:
            raise LSTMInputError(f"{name} is on {t.device}, expected {device} to match {what}: "
                             f"move both to one device, e.g. with .to({str(device)!r})")
        if t.dtype != dtype:
            raise LSTMInputError(f"{name} has dtype {t.dtype}, expected {dtype} to match {what}: "
                             f"convert one, e.g. with .to({dtype})")


def autocast_dtype_for(tensor_dtype, dtype):
    """The dtype autocast gives a tensor of `tensor_dtype` on its way into an op it runs in `dtype`.

    float32, float16 and bfloat16 tensors become `dtype`; float64 (and anything else) is never cast;
    dtype None (autocast does not cast this op) leaves every dtype as it is.  Introduced with
    mixed-precision training (chapter 7)."""
    if dtype is None or tensor_dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return tensor_dtype
    return dtype


def cell_autocast_dtype(device_type):
    """The dtype `nn.LSTMCell` runs in under `torch.autocast` on this device type, or None: as given.

    Autocast lists LSTMCell among the CUDA ops it runs in float16 (input, state and weights cast, so h
    and c come back in float16), but not among the CPU ops: there only the matrix multiplies inside run
    in bfloat16, and h and c stay float32, as `cell_update` gives with no cast.  Chapter 7."""
    if device_type != "cuda" or not torch.is_autocast_enabled("cuda"):
        return None
    return torch.get_autocast_dtype("cuda")


def _as_batch(x, hx, hidden_size):
    """Add a batch dimension to unbatched input and fill in a zero state.  Returns (x, (h, c), unbatched)."""
    unbatched = x.dim() == 1
    if unbatched:
        x = x.unsqueeze(0)
        hx = None if hx is None else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
    if hx is None:
        zeros = x.new_zeros(x.shape[0], hidden_size)
        hx = (zeros, zeros)
    return x, hx, unbatched


class _Cell(nn.Module):
    """What every cell shares: input checks, batching, autocast, torch.fx.  Subclasses have input_size,
    hidden_size and bias, and define `step(x, h, c)`."""

    def _set_sizes(self, input_size, hidden_size, bias):
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias

    def reset_parameters(self):
        init_uniform_(self.parameters(), self.hidden_size)

    def forward(self, input, hx=None):
        """input: (B, I) or (I,);  hx: (h, c) each (B, H) or (H,), zeros if None.  Returns (h, c).

        Under torch.autocast on CUDA, input, h and c are cast to float16 first, as nn.LSTMCell's are."""
        fx_node = fx_leaf(self, input, hx)
        if fx_node is not None:
            return fx_node
        check_cell_input(input, hx, self.input_size, self.hidden_size)
        x, (h, c), unbatched = _as_batch(input, hx, self.hidden_size)
        dtype = cell_autocast_dtype(x.device.type)  # None unless autocast casts nn.LSTMCell
        x, h, c = (t.to(autocast_dtype_for(t.dtype, dtype)) for t in (x, h, c))
        check_same_device_dtype({"input": x, "h": h, "c": c})
        weight = next(self.parameters())
        weight_dtype = autocast_dtype_for(weight.dtype, dtype)  # what F.linear will cast the weights to
        check_same_device_dtype({"input": x}, (weight.device, weight_dtype, "the cell's weights"))
        h, c = self.step(x, h, c)
        return (h.squeeze(0), c.squeeze(0)) if unbatched else (h, c)

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias is True else f", bias={self.bias}")


class LSTMCell(_Cell, nn.LSTMCell):
    """`nn.LSTMCell` with its step written out: same arguments, parameter names, shapes, gate order,
    initialisation and autocast dtypes, because it is one (a subclass that replaces `forward`).

    LSTMCell(input_size, hidden_size, bias=True, device=None, dtype=None)
    weight_ih (4H, I), weight_hh (4H, H), bias_ih (4H,), bias_hh (4H,).
    forward(input, (h, c)) -> (h, c) with input (B, I), h and c (B, H).  Introduced in chapter 1.
    As with `lstm_lab.LSTM` (chapter 3): isinstance(cell, nn.LSTMCell) holds; torch.fx records one node for it;
    torch.jit.script compiles an nn.LSTMCell sharing its parameters (`to_nn`); a bad input raises an
    `LSTMInputError`; exact-type tools (quantize_dynamic) do not see it."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        check_sizes(input_size=input_size, hidden_size=hidden_size)  # nn.LSTMCell would fail later, less clearly
        # nn.LSTMCell makes weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,) and initialises them
        super().__init__(input_size, hidden_size, bias, device=device, dtype=dtype)

    def to_nn(self):
        """An `nn.LSTMCell` whose parameters are this cell's own (shared, not copied)."""
        twin = nn.LSTMCell(self.input_size, self.hidden_size, self.bias, device="meta")
        for name, parameter in self.named_parameters():
            setattr(twin, name, parameter)
        return twin.train(self.training)

    def __prepare_scriptable__(self):
        """What torch.jit.script compiles in this cell's place: `to_nn()`."""
        return self.to_nn()

    def step(self, x, h, c):
        # all four gates in two matrix multiplies: (B, I) @ (I, 4H) + (B, H) @ (H, 4H) -> (B, 4H)
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        return cell_update(gates, c)


class GateLSTMCell(_Cell):
    """The naive LSTM cell: one weight matrix and bias per gate, eight matrix multiplies per step.

    Parameters W_ii, W_if, W_ig, W_io (H, I); W_hi, W_hf, W_hg, W_ho (H, H); b_ii, ..., b_ho (H,).
    Same function as `LSTMCell`; convert with `from_fused` / `to_fused`.  Introduced in chapter 1."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self._set_sizes(input_size, hidden_size, bias)
        for gate in GATES:
            setattr(self, f"W_i{gate}", nn.Parameter(torch.empty(hidden_size, input_size)))
            setattr(self, f"W_h{gate}", nn.Parameter(torch.empty(hidden_size, hidden_size)))
            if bias:
                setattr(self, f"b_i{gate}", nn.Parameter(torch.empty(hidden_size)))
                setattr(self, f"b_h{gate}", nn.Parameter(torch.empty(hidden_size)))
        self.reset_parameters()

    def gate(self, name, x, h):
        """Pre-activation of one gate: W_i? x + b_i? + W_h? h + b_h?, shape (B, H)."""
        b_i, b_h = (getattr(self, f"b_i{name}"), getattr(self, f"b_h{name}")) if self.bias else (None, None)
        return F.linear(x, getattr(self, f"W_i{name}"), b_i) + F.linear(h, getattr(self, f"W_h{name}"), b_h)

    def step(self, x, h, c):
        i = torch.sigmoid(self.gate("i", x, h))
        f = torch.sigmoid(self.gate("f", x, h))
        c_tilde = torch.tanh(self.gate("g", x, h))
        o = torch.sigmoid(self.gate("o", x, h))
        c = f * c + i * c_tilde
        return o * torch.tanh(c), c

    @classmethod
    def from_fused(cls, cell):
        """A GateLSTMCell with exactly the weights of `cell` (an `LSTMCell` or `nn.LSTMCell`)."""
        new = cls(cell.input_size, cell.hidden_size, cell.bias).to(cell.weight_ih.device, cell.weight_ih.dtype)
        with torch.no_grad():
            tensors = {"W_i": cell.weight_ih, "W_h": cell.weight_hh}
            if cell.bias:
                tensors.update({"b_i": cell.bias_ih, "b_h": cell.bias_hh})
            for prefix, fused in tensors.items():
                for gate, block in zip(GATES, fused.chunk(4, dim=0)):  # rows i, f, g, o
                    getattr(new, f"{prefix}{gate}").copy_(block)
        return new

    def to_fused(self):
        """An `LSTMCell` with exactly these weights, stacked in gate order i, f, g, o."""
        cell = LSTMCell(self.input_size, self.hidden_size, self.bias).to(self.W_ii.device, self.W_ii.dtype)
        stacks = {"weight_ih": "W_i", "weight_hh": "W_h"}
        if self.bias:
            stacks.update({"bias_ih": "b_i", "bias_hh": "b_h"})
        with torch.no_grad():
            for fused_name, prefix in stacks.items():
                getattr(cell, fused_name).copy_(torch.cat([getattr(self, prefix + g) for g in GATES]))
        return cell


def fused_to_concat(weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """PyTorch's two-matrix weights -> the textbook's single matrix on [h, x].

    weight_ih (4H, I), weight_hh (4H, H) -> W (4H, H + I) = [weight_hh | weight_ih];
    the two biases only ever appear as a sum, so b = bias_ih + bias_hh (4H,).  Chapter 1."""
    W = torch.cat([weight_hh, weight_ih], dim=1)
    b = None
    if bias_ih is not None:
        b = bias_ih + bias_hh
    return W, b


def concat_to_fused(W, b, hidden_size):
    """The textbook's W (4H, H + I), b (4H,) -> (weight_ih, weight_hh, bias_ih, bias_hh).

    The sum b is put in bias_ih and bias_hh is zero: any split with the same sum is the same model.
    Chapter 1."""
    weight_hh, weight_ih = W[:, :hidden_size], W[:, hidden_size:]
    bias_ih = b
    bias_hh = None if b is None else torch.zeros_like(b)
    return weight_ih, weight_hh, bias_ih, bias_hh


class ConcatLSTMCell(_Cell):
    """The textbook notation: gates = W [h, x] + b, one (4H, H + I) matrix and one (4H,) bias.

    Same function as `LSTMCell`; convert with `from_fused` / `to_fused`.  Introduced in chapter 1."""

    def __init__(self, input_size, hidden_size, bias=True):
        super().__init__()
        self._set_sizes(input_size, hidden_size, bias)
        self.W = nn.Parameter(torch.empty(4 * hidden_size, hidden_size + input_size))
        self.b = nn.Parameter(torch.empty(4 * hidden_size)) if bias else None
        self.reset_parameters()

    def step(self, x, h, c):
        hx = torch.cat([h, x], dim=1)  # (B, H + I): the concatenation [h, x]
        return cell_update(F.linear(hx, self.W, self.b), c)

    @classmethod
    def from_fused(cls, cell):
        """A ConcatLSTMCell computing the same function as `cell` (`LSTMCell` or `nn.LSTMCell`)."""
        new = cls(cell.input_size, cell.hidden_size, cell.bias).to(cell.weight_ih.device, cell.weight_ih.dtype)
        W, b = fused_to_concat(cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
        with torch.no_grad():
            new.W.copy_(W)
            if cell.bias:
                new.b.copy_(b)
        return new

    def to_fused(self):
        """An `LSTMCell` computing the same function (the summed bias goes into bias_ih)."""
        cell = LSTMCell(self.input_size, self.hidden_size, self.bias).to(self.W.device, self.W.dtype)
        tensors = concat_to_fused(self.W, self.b, self.hidden_size)
        with torch.no_grad():
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), tensors):
                if value is not None:
                    getattr(cell, name).copy_(value)
        return cell


def unroll(cell, x, state):
    """Run a cell over a sequence: x (T, B, I) from state (h, c), each (B, H).

    cell(x_t, (h, c)) -> (h, c) is any LSTM cell (this module's, `nn.LSTMCell`, or a function).
    Returns every h_t and every c_t, each stacked to (T, B, H).  Introduced in chapter 1."""
    h, c = state
    hs, cs = [], []
    for x_t in x:
        h, c = cell(x_t, (h, c))
        hs.append(h)
        cs.append(c)
    return torch.stack(hs), torch.stack(cs)


def tf_basic_lstm_step(x_t, h, c, kernel, bias, forget_bias=1.0):
    """One step of TensorFlow 1's `BasicLSTMCell`, written out: its own weight layout and gate order.

    kernel (I + H, 4H) multiplies the concatenation [x, h] (input first); columns in gate order i, j, f, o
    (j is the candidate, PyTorch's g); one bias (4H,); `forget_bias` is added to the forget gate's
    pre-activation inside the cell.  Returns (h, c), each (B, H).  Introduced in chapter 1 (exercise 4)."""
    i, j, f, o = (torch.cat([x_t, h], dim=1) @ kernel + bias).chunk(4, dim=1)
    c = c * torch.sigmoid(f + forget_bias) + torch.sigmoid(i) * torch.tanh(j)
    return torch.tanh(c) * torch.sigmoid(o), c


def from_tf_basic_lstm(kernel, bias, input_size, forget_bias=1.0):
    """Convert a TensorFlow 1 `BasicLSTMCell`'s (kernel, bias) into (weight_ih, weight_hh, bias_ih, bias_hh)
    for `LSTMCell` / `nn.LSTMCell`: the same function, in PyTorch's layout.

    Transpose the kernel to (4H, I + H) and split its columns into the x part and the h part; reorder the
    row blocks from (i, j, f, o) to (i, f, g, o); fold the constant forget bias into the forget rows of
    bias_ih (bias_hh is zero).  Introduced in chapter 1 (exercise 4)."""
    if kernel.dim() != 2 or kernel.shape[1] % 4 or kernel.shape[0] != input_size + kernel.shape[1] // 4:
        raise ValueError(f"kernel must be (input_size + H, 4H) = ({input_size} + H, 4H), got {tuple(kernel.shape)}")
    i, j, f, o = kernel.T.chunk(4, dim=0)  # (H, I + H) each
    W = torch.cat([i, f, j, o])  # (4H, I + H) in PyTorch's gate order
    b_i, b_j, b_f, b_o = bias.chunk(4)
    b = torch.cat([b_i, b_f + forget_bias, b_j, b_o])
    return W[:, :input_size], W[:, input_size:], b, torch.zeros_like(b)


torch.serialization.add_safe_globals([LSTMCell, GateLSTMCell, ConcatLSTMCell])  # for torch.load(weights_only=True)
