"""The known bugs as variants of the reference LSTM: the hypotheses a check tests against a student's outputs.

`variant_cell` is `lstm_lab.cells.cell_update` after the gate projections, with a knob for each bug students
make (`CellVariant`); `variant_stack` steps several layers together, as reports write them, with knobs for the
bugs between layers (`StackVariant`).  With every knob at its default both are exactly `nn.LSTMCell` and
`nn.LSTM` (the tests hold them to it).  A check copies the same weights into the student's code and into a
variant: the variant whose outputs the student's match to rounding names the bug.  Introduced with the
coursework checks (chapter 4).
"""
import itertools
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F

from lstm_lab.cells import GATES

__all__ = ["CellVariant", "StackVariant", "variant_gates", "variant_update", "variant_cell", "variant_stack",
           "cell_hypotheses", "stack_hypotheses"]

ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "none": lambda a: a}


@dataclass(frozen=True)
class CellVariant:
    """One cell's bugs, each off by default.  Chapter 4."""
    order: tuple = (0, 1, 2, 3)  # the row block each of i, f, g, o is computed from
    bias: tuple = (1, 1)  # how many times bias_ih and bias_hh are added
    transpose_ih: bool = False  # W_ih's per-gate blocks used transposed (square only)
    transpose_hh: bool = False  # W_hh's per-gate blocks used transposed
    activations: tuple = ("sigmoid", "sigmoid", "tanh", "sigmoid")  # of i, f, g, o
    cell_activation: str = "tanh"  # h = o * cell_activation(c)
    c_from_h: bool = False  # c' = f * h + i * g
    h_from_old_c: bool = False  # h = o * tanh(c) with the old c
    swap_outputs: bool = False  # returns (c, h)


@dataclass(frozen=True)
class StackVariant:
    """A multi-layer LSTM's bugs, each off by default; `cell` applies to every layer.  Chapter 4."""
    cell: CellVariant = field(default_factory=CellVariant)
    reads_below: str = ""  # layers above 0 use the layer below's "i", "f", "g", "o" gate, or its "c" or "h"
    input_x: bool = False  # layers above 0 read x, not the layer below's output
    same_initial_state: bool = False  # every layer starts from h_0[0], c_0[0]
    reversed_state: bool = False  # h_n, c_n list the layers top first
    weight_sets: tuple = ()  # layer k uses weight set weight_sets[k] (shared weights); () is one set per layer


def blockwise_transpose(W, H):
    """Each (H, H) gate block of a (4H, H) matrix transposed."""
    return torch.cat([b.T for b in W.split(H)])


def variant_gates(x, h, weights, v):
    """{"i", "f", "g", "o"}: the gate activations, each (B, H), for input x (B, I) and state h (B, H).
    Chapter 4."""
    W_ih, W_hh, b_ih, b_hh = weights
    H = W_hh.shape[1]
    W_ih = blockwise_transpose(W_ih, H) if v.transpose_ih else W_ih
    W_hh = blockwise_transpose(W_hh, H) if v.transpose_hh else W_hh
    a = F.linear(x, W_ih) + F.linear(h, W_hh)  # (B, 4H)
    if b_ih is not None:
        a = a + v.bias[0] * b_ih + v.bias[1] * b_hh
    blocks = a.split(H, dim=-1)
    return {gate: ACTIVATIONS[act](blocks[k]) for gate, k, act in zip(GATES, v.order, v.activations)}


def variant_update(gates, h, c, v):
    """(h', c') from the gate activations and the old state, with the variant's update bugs.  Chapter 4."""
    c_new = gates["f"] * (h if v.c_from_h else c) + gates["i"] * gates["g"]
    h_new = gates["o"] * ACTIVATIONS[v.cell_activation](c if v.h_from_old_c else c_new)
    return (c_new, h_new) if v.swap_outputs else (h_new, c_new)


def variant_cell(x, h, c, weights, v):
    """One step of the variant cell: x (B, I), h and c (B, H), weights (W_ih, W_hh, b_ih, b_hh) in PyTorch's
    layout.  Returns (h', c'), each (B, H).  Chapter 4."""
    return variant_update(variant_gates(x, h, weights, v), h, c, v)


def variant_stack(x, h_0, c_0, layer_weights, v):
    """A multi-layer LSTM stepped layer after layer inside one loop over time, with the variant's bugs.

    x (T, B, I); h_0, c_0 (L, B, H); layer_weights: one (W_ih, W_hh, b_ih, b_hh) per weight set.
    Returns output (T, B, H), (h_n, c_n) each (L, B, H).  Chapter 4."""
    L = h_0.shape[0]
    sets = v.weight_sets or tuple(range(L))
    first = [0] * L if v.same_initial_state else range(L)
    h, c = [h_0[k] for k in first], [c_0[k] for k in first]
    outputs = []
    for x_t in x:
        below, below_gates, below_state = x_t, None, None
        for k in range(L):
            layer_input = x_t if (v.input_x and k > 0) else below
            recurrent = below_state[0] if (v.reads_below == "h" and k > 0) else h[k]
            gates = variant_gates(layer_input, recurrent, layer_weights[sets[k]], v.cell)
            own_gates = dict(gates)
            if k > 0 and v.reads_below in GATES:
                gates[v.reads_below] = below_gates[v.reads_below]
            c_old = below_state[1] if (v.reads_below == "c" and k > 0) else c[k]
            h[k], c[k] = variant_update(gates, recurrent, c_old, v.cell)
            below, below_gates, below_state = h[k], own_gates, (h[k], c[k])
        outputs.append(below)
    order = slice(None, None, -1) if v.reversed_state else slice(None)
    return torch.stack(outputs), (torch.stack(h[order]), torch.stack(c[order]))


def gate_names(order):
    """"i, f, o, g": what each row block is used as, for a variant's order."""
    used_as = {block: gate for gate, block in zip(GATES, order)}
    return ", ".join(used_as[k] for k in range(4))


def cell_hypotheses(square_input=False):
    """[(cause id, evidence, CellVariant)]: every single bug a cell check tests, most common first.
    square_input: also W_ih used transposed (only possible when input_size == hidden_size).  Chapter 4."""
    base = CellVariant()
    found = [("gate_order", f"it reads the 4H rows as {gate_names(p)}", replace(base, order=p))
             for p in itertools.permutations(range(4)) if p != (0, 1, 2, 3)]
    found += [("missing_bias", "it matches PyTorch's cell with no bias", replace(base, bias=(0, 0))),
              ("one_bias_missing", "it matches with bias_ih only", replace(base, bias=(1, 0))),
              ("one_bias_missing", "it matches with bias_hh only", replace(base, bias=(0, 1))),
              ("doubled_bias", "it matches with both biases added twice", replace(base, bias=(2, 2))),
              ("doubled_bias", "it matches with bias_ih twice, no bias_hh", replace(base, bias=(2, 0))),
              ("doubled_bias", "it matches with bias_hh twice, no bias_ih", replace(base, bias=(0, 2))),
              ("transposed_weights", "it matches with every (H, H) block of W_hh transposed",
               replace(base, transpose_hh=True))]
    if square_input:
        found.append(("transposed_weights", "it matches with W_ih's blocks transposed",
                      replace(base, transpose_ih=True)))
    for k, gate in enumerate(GATES):
        swapped = list(base.activations)
        swapped[k] = "sigmoid" if gate == "g" else "tanh"
        found.append(("activation_swapped", f"it matches with {swapped[k]} for gate {gate}",
                      replace(base, activations=tuple(swapped))))
    found += [("activation_swapped", "it matches with tanh and sigmoid swapped in every gate",
               replace(base, activations=("tanh", "tanh", "sigmoid", "tanh"))),
              ("activation_swapped", "it matches with h = o * sigmoid(c)", replace(base, cell_activation="sigmoid")),
              ("missing_tanh", "it matches with h = o * c", replace(base, cell_activation="none")),
              ("h_for_c", "it matches with c' = f * h + i * g", replace(base, c_from_h=True)),
              ("stale_c", "it matches with h = o * tanh(old c)", replace(base, h_from_old_c=True)),
              ("state_swapped", "its h is PyTorch's c and its c is PyTorch's h", replace(base, swap_outputs=True))]
    return found


def stack_hypotheses(num_layers, weight_sets, square_input=False):
    """[(cause id, evidence, StackVariant)]: the bugs a multi-layer check tests, most common first.

    weight_sets: how many distinct sets of weights the student's module holds; fewer than num_layers adds the
    ways of sharing them.  Chapter 4."""
    base = StackVariant()
    found = []
    if weight_sets < num_layers:
        patterns = {(0,) * num_layers: "every layer uses layer 0's weights",
                    (0,) + (1,) * (num_layers - 1): "layers 1 and above share one set of weights"}
        found += [("shared_weights", text, replace(base, weight_sets=p)) for p, text in patterns.items()
                  if max(p) < weight_sets]
    if num_layers > 1:
        found += [("reads_other_layer_gate", f"layer k's cell update uses layer k-1's {gate} gate",
                   replace(base, reads_below=gate)) for gate in GATES]
        found += [("reads_other_layer_state", "layer k's cell update uses layer k-1's c", replace(base, reads_below="c")),
                  ("reads_other_layer_state", "layer k's recurrent input is layer k-1's h",
                   replace(base, reads_below="h")),
                  ("same_initial_state", "every layer starts from h_0[0], c_0[0]",
                   replace(base, same_initial_state=True)),
                  ("h_n_layer_order", "h_n and c_n hold the top layer first", replace(base, reversed_state=True))]
        if square_input:
            found.append(("layer_reads_input", "every layer reads x", replace(base, input_x=True)))
    found += [(cause_id, f"in every layer, {evidence}", replace(base, cell=variant))
              for cause_id, evidence, variant in cell_hypotheses(square_input)]
    return found
