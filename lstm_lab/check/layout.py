"""Where a student's cell keeps its weights, worked out from names and shapes, so `nn.LSTMCell`'s can be copied in.

A `Layout` is a list of slots, one per tensor of the student's cell, each with a function that builds that tensor
from PyTorch's four weights (weight_ih (4H, I), weight_hh (4H, H), bias_ih, bias_hh (4H,), rows in gate order
i, f, g, o).  The layouts it recognises:

    fused        a (4H, I) and a (4H, H) matrix (or their transposes, for x @ W), one or two (4H,) biases
    concat       one (4H, H + I) matrix on [h, x] or on [x, h] (or its transpose), one or two (4H,) biases
    per gate     for each gate, a (H, I) and a (H, H) matrix (or transposes) or one (H, H + I); one or two biases
                 (H,); the gate is read from the last letter of the name: W_xi, W_hf, b_c, U_o, W_ii ...
    per layer    any of these for each layer, with the layer's number at the end of the names (weight_ih_l0,
                 W_xi_1), or kept in submodules (an nn.ModuleList of cells)

Where a choice cannot be read from the shapes ([h, x] or [x, h]; a square matrix used as W x or as x @ W) every
reading is returned, and the check keeps the one under which the cell matches.  Introduced with the coursework
checks (chapter 4), on the layouts of chapter 1.
"""
import itertools
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from lstm_lab.config import InputError
from lstm_lab.experiments.clinic import unregistered_named_tensors

__all__ = ["Slot", "Layout", "held_tensors", "cell_layouts", "layer_groups"]

GATE_OF_LETTER = {"i": 0, "f": 1, "g": 2, "c": 2, "o": 3}  # c: the candidate c~ is PyTorch's g


@dataclass
class Slot:
    """One tensor of the student's cell and `fill(W_ih, W_hh, b_ih, b_hh, grad)`: its value built from PyTorch's
    weights (grad=True: the expected gradient, which differs for a bias that stands for the sum of two).
    Chapter 4."""
    name: str
    tensor: torch.Tensor
    fill: Callable


@dataclass
class Layout:
    """How one cell's tensors hold PyTorch's weights: a description, the slots, and whether it has biases.
    Chapter 4."""
    description: str
    slots: list
    has_bias: bool

    def load(self, weights):
        """Copy PyTorch's (W_ih, W_hh, b_ih, b_hh) into the student's tensors (b_ih, b_hh may be None)."""
        with torch.no_grad():
            for slot in self.slots:
                slot.tensor.copy_(slot.fill(*weights, grad=False))

    def expected_grads(self, grads):
        """{slot name: the gradient the student's tensor should get}, from the gradients of PyTorch's weights."""
        return {slot.name: slot.fill(*grads, grad=True) for slot in self.slots}


def held_tensors(module):
    """[(name, tensor)]: a module's registered parameters, then the floating-point tensors it holds without
    registering them (`lstm_lab.experiments.clinic.unregistered_named_tensors`).  Chapter 4."""
    return list(module.named_parameters()) + unregistered_named_tensors(module)


def short_name(name):
    """The last part of a dotted name, lower case, without a trailing layer number: "layers.0.W_xi_1" -> "w_xi"."""
    return re.sub(r"(_?l?\d+)+$", "", name.split(".")[-1].split("[")[0].lower())


def gate_of(name):
    """The gate index (0-3) a per-gate tensor's name ends in, or None."""
    letters = re.sub(r"[^a-z]", "", short_name(name))
    return GATE_OF_LETTER.get(letters[-1:]) if letters else None


def reads_hidden(name):
    """Whether a name says its matrix or bias multiplies h: weight_hh, W_h?, b_h?, U_?; not W_x?, W_i?, b_i?."""
    name = short_name(name)
    return "hh" in name or bool(re.match(r"^(u|w_?h|b_?h|bias_?h|h)", name))


def in_order(pair):
    """Two (name, tensor) pairs as (input side, hidden side): by name, else in the order they were defined."""
    a, b = pair
    if reads_hidden(a[0]) and not reads_hidden(b[0]):
        return b, a
    return a, b


def orient(value, transposed):
    return value.T if transposed else value


def block(tensor, k, H):
    """Rows k*H .. (k+1)*H of a (4H, ...) tensor: gate k's share."""
    return tensor[k * H:(k + 1) * H]


def joined(first_hidden, a, b):
    """[h-part | x-part] or [x-part | h-part] along the columns: a is the x part, b the h part."""
    return torch.cat([b, a], dim=1) if first_hidden else torch.cat([a, b], dim=1)


def bias_slots(vectors, H):
    """Slots for the biases: none, one or two (4H,) vectors, or four or eight per-gate (H,) ones.  None if the
    vectors fit none of these."""
    sizes = {tuple(t.shape) for _, t in vectors}
    if not vectors:
        return []
    if sizes == {(4 * H,)} and len(vectors) in (1, 2):
        if len(vectors) == 1:
            return [Slot(vectors[0][0], vectors[0][1], lambda wi, wh, bi, bh, grad: bi if grad else bi + bh)]
        (n_i, t_i), (n_h, t_h) = in_order(vectors)
        return [Slot(n_i, t_i, lambda wi, wh, bi, bh, grad: bi), Slot(n_h, t_h, lambda wi, wh, bi, bh, grad: bh)]
    gates = [gate_of(n) for n, _ in vectors]
    if sizes != {(H,)} or len(vectors) not in (4, 8) or None in gates or sorted(set(gates)) != [0, 1, 2, 3]:
        return None
    slots = []
    for k in range(4):
        mine = [v for v, g in zip(vectors, gates) if g == k]
        if len(mine) == 1:
            slots.append(Slot(*mine[0], lambda wi, wh, bi, bh, grad, k=k: block(bi if grad else bi + bh, k, H)))
        elif len(mine) == 2:
            (n_i, t_i), (n_h, t_h) = in_order(mine)
            slots.append(Slot(n_i, t_i, lambda wi, wh, bi, bh, grad, k=k: block(bi, k, H)))
            slots.append(Slot(n_h, t_h, lambda wi, wh, bi, bh, grad, k=k: block(bh, k, H)))
        else:
            return None
    return slots


def fused_matrix_slots(matrices, I, H):
    """[(description, slots)] readings of one (4H, H + I) concat matrix or a (4H, I) and a (4H, H) pair."""
    shapes = [tuple(t.shape) for _, t in matrices]
    if len(matrices) == 1 and shapes[0] in ((4 * H, H + I), (H + I, 4 * H)):
        (name, t), transposed = matrices[0], shapes[0][0] != 4 * H
        return [(f"one matrix {tuple(t.shape)} on [{order}]",
                 [Slot(name, t, lambda wi, wh, bi, bh, grad, first=order == "h, x": orient(joined(first, wi, wh),
                                                                                            transposed))])
                for order in ("h, x", "x, h")]
    if len(matrices) != 2:
        return []
    fits = lambda t, cols: tuple(t.shape) in ((4 * H, cols), (cols, 4 * H))
    pairs = [p for p in (in_order(matrices), in_order(matrices)[::-1]) if fits(p[0][1], I) and fits(p[1][1], H)]
    if not pairs:
        return []
    (n_i, t_i), (n_h, t_h) = pairs[0]
    t_ih, t_hh = t_i.shape[0] != 4 * H, t_h.shape[0] != 4 * H  # stored (in, 4H): used as x @ W
    return [(f"fused {n_i} {tuple(t_i.shape)}, {n_h} {tuple(t_h.shape)}",
             [Slot(n_i, t_i, lambda wi, wh, bi, bh, grad: orient(wi, t_ih)),
              Slot(n_h, t_h, lambda wi, wh, bi, bh, grad: orient(wh, t_hh))])]


def per_gate_matrix_slots(matrices, I, H):
    """[(description, slots)] readings of per-gate matrices: (H, I) and (H, H) per gate, or (H, H + I) per gate."""
    gates = [gate_of(n) for n, _ in matrices]
    if None in gates or sorted(set(gates)) != [0, 1, 2, 3] or len(matrices) not in (4, 8):
        return []
    by_gate = {k: [m for m, g in zip(matrices, gates) if g == k] for k in range(4)}
    if len(matrices) == 4:  # one matrix per gate on the concatenation
        if any(tuple(m[0][1].shape) not in ((H, H + I), (H + I, H)) for m in by_gate.values()):
            return []
        return [(f"one matrix per gate on [{order}]",
                 [Slot(*by_gate[k][0], lambda wi, wh, bi, bh, grad, k=k, first=order == "h, x", m=by_gate[k][0][1]:
                       orient(joined(first, block(wi, k, H), block(wh, k, H)), m.shape[0] != H)) for k in range(4)])
                for order in ("h, x", "x, h")]
    if any(len(m) != 2 for m in by_gate.values()):
        return []
    pairs = {}
    for k, pair in by_gate.items():
        pair = in_order(pair) if I == H else sorted(pair, key=lambda m: tuple(m[1].shape) == (H, H))  # x side first
        if tuple(sorted(pair[0][1].shape)) != tuple(sorted((H, I))) or tuple(pair[1][1].shape) != (H, H):
            return []
        pairs[k] = pair
    # the input matrices' shape says W x ((H, I)) or x @ W ((I, H)); the square ones follow it, unless I == H
    readings = [pairs[0][0][1].shape[0] != H] if I != H else [False, True]
    return [("one (H, I) and one (H, H) matrix per gate" + (", used as x @ W" if transposed else ""),
             [Slot(*pairs[k][side], lambda wi, wh, bi, bh, grad, k=k, side=side, t=transposed:
                   orient(block(wh if side else wi, k, H), t)) for k in range(4) for side in (0, 1)])
            for transposed in readings]


def cell_layouts(named, input_size, hidden_size):
    """Every way the tensors `named` [(name, tensor)] can hold one LSTM cell's weights, most likely first: a list
    of `Layout`.  Empty if they fit none of the module docstring's layouts.  Chapter 4."""
    named = [(n, t) for n, t in named if t.dim() in (1, 2)]
    matrices = [(n, t) for n, t in named if t.dim() == 2]
    vectors = [(n, t) for n, t in named if t.dim() == 1]
    biases = bias_slots(vectors, hidden_size)
    if biases is None:
        return []
    readings = fused_matrix_slots(matrices, input_size, hidden_size)
    readings += per_gate_matrix_slots(matrices, input_size, hidden_size)
    bias_words = {0: "no bias", 1: "one bias"}.get(len(biases), f"{len(biases)} biases")
    return [Layout(f"{description}, {bias_words}", slots + biases, bool(biases)) for description, slots in readings]


def submodules_in_order(module):
    """The modules directly inside `module`, in the order they were set, with those in plain lists and tuples,
    and repeats kept (`[cell] * 2` gives the same cell twice)."""
    found = []
    for attr, value in vars(module).items():
        if attr == "_modules":
            for sub in value.values():
                found += list(sub) if isinstance(sub, (nn.ModuleList, nn.Sequential)) else [sub]
        elif isinstance(value, (list, tuple)):
            found += [v for v in value if isinstance(v, nn.Module)]
    return [m for m in found if m is not None]


def own_tensors(module):
    """(name, tensor) of the tensors a module holds itself, registered or not, not those of its submodules."""
    own = list(module.named_parameters(recurse=False))
    inner = {id(t) for sub in module.children() for t in sub.parameters()}
    return own + [(n, t) for n, t in unregistered_named_tensors(module) if "." not in n and id(t) not in inner]


def cell_modules(module, input_size, hidden_size):
    """The cells inside `module`, depth first, in order: submodules whose own tensors form a cell layout for an
    input of input_size or hidden_size features.  Repeats kept."""
    found = []
    for sub in submodules_in_order(module):
        tensors = held_tensors(sub)
        if any(cell_layouts(tensors, size, hidden_size) for size in (input_size, hidden_size)):
            found.append(sub)
        else:
            found += cell_modules(sub, input_size, hidden_size)
    return found


def layer_groups(model, input_size, hidden_size):
    """[(where, [(name, tensor)])]: one group of tensors per layer of a multi-layer LSTM, in layer order, read
    from layer numbers at the end of the names (weight_ih_l0, W_xi_1, ...) or from the cells it holds.  A cell
    used for several layers appears once per use.  Chapter 4."""
    cells = cell_modules(model, input_size, hidden_size)
    if cells:
        return [(f"{type(cell).__name__} #{k}", held_tensors(cell)) for k, cell in enumerate(cells)]
    tensors = held_tensors(model)
    layer = lambda name: (name.rpartition(".")[0], int(re.search(r"(\d+)\D*$", name.split(".")[-1]).group(1)))
    if tensors and all(re.search(r"\d", n.split(".")[-1]) for n, _ in tensors):
        keys = list(dict.fromkeys(layer(n) for n, _ in tensors))  # (owner, number) in the order first seen
        return [(f"tensors numbered {k}", [(n, t) for n, t in tensors if layer(n) == key])
                for k, key in sorted(enumerate(keys), key=lambda item: item[1][1])]
    return [("the whole module", tensors)]


def describe_tensors(named, most=12):
    """"name (shape), ..." for an error message."""
    text = ", ".join(f"{n} {tuple(t.shape)}" for n, t in itertools.islice(named, most))
    return text + (", ..." if len(named) > most else "")


def no_layout_error(what, named, input_size, hidden_size):
    """The InputError saying the check cannot tell where the weights are, and what to pass instead."""
    return InputError(f"cannot tell how {what} holds an LSTM's weights (input_size={input_size}, hidden_size="
                      f"{hidden_size}; found: {describe_tensors(named) or 'no tensors'}): expected one of the layouts "
                      f"of lstm_lab.check.layout, or pass load_weights=fn(cell, weight_ih, weight_hh, bias_ih, "
                      f"bias_hh) that copies PyTorch's weights into yours")
