"""`check_lstm`: a student's multi-layer LSTM module against `nn.LSTM` with the same weights.

    from lstm_lab.check import check_lstm
    report = check_lstm(MyLSTM(10, 20, num_layers=2))   # forward(x, (h_0, c_0)) -> output, (h_n, c_n)
    print(report); assert report

Besides every bug of one cell (`check_cell`), it tells apart the bugs between layers: a layer that reads another
layer's gate or state (report 003), weights that are not registered (report 000), layers that share weights,
dropout in the wrong place, and h_n laid out batch-first.  Introduced in chapter 4; the layers in chapter 5.
"""
import copy

import torch
from torch import nn

from lstm_lab.check.cell import (best_hypothesis, check_device, explain_gradients, gradient_leaves,
                                 registered_property, student_sizes)
from lstm_lab.check.compare import call_student, check_size, relative_error, same, seeded_randn, tolerance
from lstm_lab.check.layout import cell_layouts, held_tensors, layer_groups, no_layout_error
from lstm_lab.check.report import Report, cause, describe_error
from lstm_lab.check.variants import StackVariant, stack_hypotheses, variant_stack
from lstm_lab.config import InputError

__all__ = ["check_lstm", "lstm_parameter_count", "student_layers", "dropout_of"]

SEQ_LEN = 5  # time steps of the check's input; the batch is larger than both it and num_layers


def lstm_parameter_count(I, H, L):
    """Parameters of nn.LSTM(I, H, L): 4H (I + H + 2) for layer 0, 4H (2H + 2) for each layer above.  Chapter 5."""
    return 4 * H * (I + H + 2) + (L - 1) * 4 * H * (2 * H + 2)


def dropout_of(model, dropout):
    """The dropout probability to check: the argument, else the module's `dropout` (a float or an nn.Dropout).
    Chapter 5."""
    if dropout is None:
        dropout = getattr(model, "dropout", 0.0)
        dropout = dropout.p if isinstance(dropout, nn.Dropout) else dropout
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise InputError(f"dropout must be a probability in [0, 1), got {dropout!r}")
    return float(dropout)


class StackLayout:
    """The student's weight sets (distinct groups of tensors), which set each layer uses, and their layouts."""

    def __init__(self, sets, pattern, layouts, description, reads_x):
        self.sets, self.pattern, self.layouts, self.description = sets, pattern, layouts, description
        self.reads_x = reads_x  # layer numbers whose input weights are sized for x, not for the layer below

    def load(self, weights):
        for layout, w in zip(self.layouts, weights):
            layout.load(w)

    @property
    def slots(self):
        return [slot for layout in self.layouts for slot in layout.slots]


def student_layers(work, I, H, L):
    """[StackLayout]: the readings of a module's weights as layer weight sets (one per distinct group of tensors
    of `layer_groups`), most likely first.  Chapter 4."""
    groups = layer_groups(work, I, H)
    sets, pattern = [], []
    for where, named in groups:
        ids = tuple(id(t) for _, t in named)
        if ids not in [s[0] for s in sets]:
            sets.append((ids, where, named))
        pattern.append([s[0] for s in sets].index(ids))
    per_set, reads_x = [], []
    for k, (_, where, named) in enumerate(sets):
        sizes = (I, H) if k == 0 else (H, I)
        found = [(size, cell_layouts(named, size, H)) for size in dict.fromkeys(sizes)]
        found = [(size, layouts) for size, layouts in found if layouts]
        if not found:
            raise no_layout_error(f"layer {k} of your LSTM ({where})", named, sizes[0], H)
        if k > 0 and found[0][0] != H:
            reads_x.append(k)
        per_set.append(found[0][1])
    readings = max(len(layouts) for layouts in per_set)
    description = f"{len(groups)} layer(s), {len(sets)} weight set(s); {per_set[0][0].description}"
    return [StackLayout(sets, tuple(pattern), [layouts[min(j, len(layouts) - 1)] for layouts in per_set],
                        description, reads_x) for j in range(readings)]


class CallbackStack(StackLayout):
    """Weights copied by the student's `load_weights(model, [(W_ih, W_hh, b_ih, b_hh) per layer])`."""

    def __init__(self, model, load_weights, L):
        super().__init__([None] * L, tuple(range(L)), [], "copied by load_weights", [])
        self.model, self.load_weights = model, load_weights

    def load(self, weights):
        with torch.no_grad():
            self.load_weights(self.model, list(weights))


def run_lstm(model, x, state):
    """(output, (h_n, c_n)) of the student's module, or raise ValueError saying what it returned instead."""
    out = model(x, state)
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and isinstance(out[1], (tuple, list))
            and len(out[1]) == 2 and all(isinstance(t, torch.Tensor) for t in (out[0], *out[1]))):
        raise ValueError("the module must return output, (h_n, c_n), as nn.LSTM does")
    return out[0], tuple(out[1])


def time_major(output, state, batch_first, T, B, L, H):
    """(the student's (output (T, B, H), h_n, c_n (L, B, H)) or None if no reading fits, whether the shapes are
    nn.LSTM's, [causes of a wrong layout], the shapes in words)."""
    output, (h_n, c_n) = output.detach(), tuple(t.detach() for t in state)
    expected_out = (B, T, H) if batch_first else (T, B, H)
    shapes = f"output {tuple(output.shape)}, h_n {tuple(h_n.shape)}; nn.LSTM: {expected_out}, {(L, B, H)}"
    good = tuple(output.shape) == expected_out and tuple(h_n.shape) == (L, B, H) == tuple(c_n.shape)
    causes = []
    if tuple(h_n.shape) == (B, L, H) == tuple(c_n.shape):
        causes.append(cause("h_n_batch_first", shapes))
        h_n, c_n = h_n.transpose(0, 1), c_n.transpose(0, 1)
    if tuple(output.shape) == ((T, B, H) if batch_first else (B, T, H)):
        causes.append(cause("output_layout", f"{shapes} with batch_first={batch_first}"))
        batch_first = not batch_first
    if tuple(h_n.shape) != (L, B, H) or tuple(c_n.shape) != (L, B, H) or tuple(output.shape) not in (
            (T, B, H), (B, T, H)):
        return None, good, [cause("shape_error", shapes)], shapes
    return (output.transpose(0, 1) if batch_first else output, h_n, c_n), good, causes, shapes


def explain_stack_mismatch(report, out, stack, weights, inputs, dtype, I, H, L):
    """Name the bug between or inside layers that the student's outputs match, else localise the difference."""
    x, h_0, c_0 = inputs
    if len(stack.sets) < L or stack.pattern != tuple(range(L)):
        report.diagnose(cause("shared_weights", f"{L} layers, {len(stack.sets)} distinct weight set(s); layer -> "
                                                f"set: {stack.pattern}"))
    if stack.reads_x:
        report.diagnose(cause("layer_reads_input", f"layer {stack.reads_x[0]}'s input weights are sized for x "
                                                   f"({I} features), not for the layer below ({H})"))
    sets = weights[:len(stack.sets)]
    hypotheses = stack_hypotheses(L, len(stack.sets), I == H)
    if len(stack.pattern) == L and stack.pattern != tuple(range(L)):  # the same cell object used by several layers
        hypotheses.insert(0, ("shared_weights", f"layer -> weight set {stack.pattern}",
                              StackVariant(weight_sets=stack.pattern)))
    match, closest = best_hypothesis(out, lambda v: flat(variant_stack(x, h_0, c_0, sets, v)), hypotheses, dtype)
    if match:
        report.diagnose(cause(match[0], match[1]))
        return
    if report.causes:
        return
    pattern = stack.pattern if len(stack.pattern) == L else ()
    expected = flat(variant_stack(x, h_0, c_0, sets if pattern else weights, StackVariant(weight_sets=pattern)))
    layers = [k for k in range(L) if not same(out[1][k], expected[1][k], dtype)]
    report.diagnose(cause("unexplained", f"h_n differs from layer {layers[0] if layers else '?'} up; closest known "
                                         f"bug {closest[1]} (relative error {closest[0]:.2g})"))


def flat(result):
    """output, (h_n, c_n) -> (output, h_n, c_n)."""
    return (result[0], *result[1])


def dropout_properties(report, model, p, L, x, zeros, batch_first):
    """In train mode with dropout p: layer 0's state must not change, the top output must equal h_n[-1], and with
    two layers or more something must change.  Records the property and the cause."""
    def run(train, steps):
        model.train(train)
        with torch.random.fork_rng(devices=[]), torch.no_grad():  # the caller's random state is left as it was
            torch.manual_seed(0)
            xs = x[:, :steps] if batch_first else x[:steps]
            output, (h_n, c_n) = run_lstm(model, xs, zeros)
        return (output[:, -1] if batch_first else output[-1]), h_n
    (top_t, h_t), (_, h_e) = run(True, x.shape[1 if batch_first else 0]), run(False, x.shape[1 if batch_first else 0])
    dtype = x.dtype
    found = None
    if not same(h_t[0], h_e[0], dtype):
        first_step_same = same(run(True, 1)[1][0], run(False, 1)[1][0], dtype)
        found = ("dropout_in_recurrence", "layer 0's state changes in train mode after the first step only") \
            if first_step_same else ("dropout_on_input", "layer 0's state changes in train mode from the first step")
    elif not same(top_t, h_t[-1], dtype):
        found = ("dropout_on_output", "in train mode the top layer's output differs from its h_n")
    elif L > 1 and same(h_t[-1], h_e[-1], dtype):
        found = ("dropout_missing", f"dropout={p}, yet train and eval mode give the same outputs")
    model.eval()
    report.add(f"dropout {p} only between layers (train mode)", found is None,
               f"{found[1]}" if found else "layer 0 untouched, output = h_n[-1]" + (", upper layers dropped" if L > 1
                                                                                    else ""))
    if found:
        report.diagnose(cause(*found))


def check_lstm(model, input_size=None, hidden_size=None, num_layers=None, batch_first=None, dropout=None,
               load_weights=None, device=None, dtype=None, seed=0):
    """Check a student's multi-layer LSTM module against `torch.nn.LSTM` holding the same weights.

    model: an nn.Module called as model(x, (h_0, c_0)) -> output, (h_n, c_n), as nn.LSTM: x (T, B, I), or
    (B, T, I) if batch_first; h_0, c_0 and h_n, c_n (num_layers, B, H) always; output (T, B, H) or (B, T, H).
    Its weights may be nn.LSTM's (weight_ih_l0, ...), numbered per layer (W_xi_0, W_xi_1, ...), or held by one
    cell per layer (an nn.ModuleList); any layout `check_cell` reads.  The sizes, batch_first and dropout default
    to the module's attributes of those names.  load_weights: fn(model, [(W_ih, W_hh, b_ih, b_hh) per layer])
    for a layout the check cannot read.  The check works on a copy, in eval mode except for the dropout check.
    Returns a `Report`: the module runs, its weights are registered, its shapes, output and state match nn.LSTM,
    the gradients match, dropout is only between layers; for a failure, the bug its outputs match.
    Introduced in chapter 4 (the layers in chapter 5)."""
    if not isinstance(model, nn.Module):
        raise InputError(f"model must be an nn.Module called like nn.LSTM, got {type(model).__name__}")
    I, H = student_sizes(model, input_size, hidden_size)
    L = check_size("num_layers", num_layers if num_layers is not None else getattr(model, "num_layers", 1))
    batch_first = bool(batch_first if batch_first is not None else getattr(model, "batch_first", False))
    p = dropout_of(model, dropout)
    work = copy.deepcopy(model).eval()
    stacks = [CallbackStack(work, load_weights, L)] if load_weights else student_layers(work, I, H, L)
    tensors = held_tensors(work)
    device = check_device(device, tensors)
    dtype = dtype or (tensors[0][1].dtype if tensors else torch.float32)
    tolerance(dtype)
    report = Report(f"check_lstm({type(model).__name__}, input_size={I}, hidden_size={H}, num_layers={L}"
                    f"{', batch_first' if batch_first else ''}) on {device}, {dtype}")
    registered_property(report, work)
    count = sum(t.numel() for t in {id(t): t for _, t in tensors}.values())
    own = load_weights is not None or (len(stacks[0].sets) == L and stacks[0].pattern == tuple(range(L)))
    report.add("every layer has its own weights", own, f"{len(stacks[0].sets)} weight set(s) for {L} layers; "
               f"{count:,} numbers held, nn.LSTM has {lstm_parameter_count(I, H, L):,}")
    generator = torch.Generator().manual_seed(seed)
    reference = nn.LSTM(I, H, L, device=device, dtype=dtype)
    has_bias = not stacks[0].layouts or stacks[0].layouts[0].has_bias  # no bias tensors: compare with zero biases
    weights = []
    for k in range(L):
        w = [seeded_randn(generator, *getattr(reference, f"{n}_l{k}").shape, dtype=dtype, device=device, scale=0.5)
             for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        weights.append(tuple(w) if has_bias else (w[0], w[1], torch.zeros_like(w[2]), torch.zeros_like(w[3])))
    with torch.no_grad():
        for k, w in enumerate(weights):
            for n, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), w):
                getattr(reference, f"{n}_l{k}").copy_(value)
    B = max(L, SEQ_LEN) + 1
    x = seeded_randn(generator, SEQ_LEN, B, I, dtype=dtype, device=device)
    h_0, c_0 = (seeded_randn(generator, L, B, H, dtype=dtype, device=device) for _ in range(2))
    student_x = x.transpose(0, 1).contiguous() if batch_first else x
    ref = flat(reference(x, (h_0, c_0)))
    runs = []
    for stack in stacks:
        stack.load(weights)
        out, error = call_student(lambda: run_lstm(work, student_x, (h_0, c_0)))
        if error is not None:
            report.add("the module runs", False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
            report.diagnose(describe_error(error))
            return report
        runs.append((stack, out))
    readings = [(s, time_major(o, st, batch_first, SEQ_LEN, B, L, H)) for s, (o, st) in runs]
    stack, (out, good, causes, shapes) = readings[0]
    report.add("output and h_n have nn.LSTM's shapes", good, shapes)
    report.diagnose(*causes)
    if out is None:
        return report
    matched = [s for s, (o, _, _, _) in readings if o is not None and all(same(a, b, dtype) for a, b in zip(o, ref))]
    report.add("output, h_n and c_n match nn.LSTM", bool(matched),
               f"relative error output {relative_error(out[0], ref[0]):.1e}, h_n {relative_error(out[1], ref[1]):.1e}"
               f", c_n {relative_error(out[2], ref[2]):.1e}; {stack.description}")
    if not matched:
        explain_stack_mismatch(report, out, stack, weights, (x, h_0, c_0), dtype, I, H, L)
        return report
    if not good:  # gradients of differently laid out outputs cannot be compared: fix the shapes first
        return report
    stack = matched[0]
    stack.load(weights)
    got, error = call_student(lambda: stack_gradients(work, (student_x, h_0, c_0), stack.slots, seed + 1))
    if error is not None:
        report.add("backward runs", False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
        report.diagnose(describe_error(error))
        return report
    expected = reference_gradients(reference, (student_x, h_0, c_0), batch_first, stack, seed + 1)
    explain_gradients(report, got, expected, dtype, "nn.LSTM")
    if p > 0:
        zeros = torch.zeros_like(h_0)
        dropout_properties(report, work, p, L, student_x, (zeros, zeros.clone()), batch_first)
    return report


def loss_of(result, seed):
    """sum of every output and state element times a fixed random weight: a loss that reaches every gradient."""
    output, (h_n, c_n) = result
    generator = torch.Generator().manual_seed(seed)
    return sum((t * seeded_randn(generator, *t.shape, dtype=t.dtype, device=t.device)).sum()
               for t in (output, h_n, c_n))


def stack_gradients(model, inputs, slots, loss_seed):
    """Gradients of `loss_of` with respect to x, h_0, c_0 and the student's tensors."""
    x, h_0, c_0 = gradient_leaves(inputs, slots)
    loss_of(run_lstm(model, x, (h_0, c_0)), loss_seed).backward()
    grads = {"x": x.grad, "h_0": h_0.grad, "c_0": c_0.grad}
    for slot in slots:  # a tensor used by several layers appears once, with the sum of its gradients
        grads[slot.name] = slot.tensor.grad
    return grads


def reference_gradients(reference, inputs, batch_first, stack, loss_seed):
    """The gradients `stack_gradients` must give, from nn.LSTM and autograd, mapped to the student's tensors."""
    reference.batch_first = batch_first
    reference.zero_grad()
    x, h_0, c_0 = (t.detach().clone().requires_grad_() for t in inputs)
    loss_of(reference(x, (h_0, c_0)), loss_seed).backward()
    reference.batch_first = False
    expected = {"x": x.grad, "h_0": h_0.grad, "c_0": c_0.grad}
    for k, layout in enumerate(stack.layouts):
        grads = [getattr(reference, f"{n}_l{k}").grad for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        expected.update(layout.expected_grads(grads))
    return expected
