"""`check_cell`: a student's LSTM cell against `nn.LSTMCell` with the same weights, and the bug when it differs.

    from lstm_lab.check import check_cell
    report = check_cell(MyCell(10, 20))        # any nn.Module cell(x, (h, c)) -> (h, c), either notation
    print(report); assert report

The check copies `nn.LSTMCell`'s weights into the student's layout (`lstm_lab.check.layout`), compares h, c and
the gradients of x, h, c and every weight; when the outputs differ it copies the same weights into every known
bug (`lstm_lab.check.variants`) and names the one the student's outputs match.  Introduced in chapter 4.
"""
import copy

import torch
from torch import nn

from lstm_lab.check.compare import call_student, check_size, relative_error, same, seeded_randn, tolerance
from lstm_lab.check.layout import Layout, cell_layouts, held_tensors, no_layout_error
from lstm_lab.check.report import Report, cause, describe_error
from lstm_lab.check.variants import CellVariant, cell_hypotheses, variant_cell
from lstm_lab.config import InputError
from lstm_lab.experiments.clinic import unregistered_named_tensors

__all__ = ["check_cell", "student_sizes", "check_device", "registered_property", "best_hypothesis",
           "explain_gradients", "gradient_leaves"]


def student_sizes(module, input_size, hidden_size):
    """(input_size, hidden_size): the arguments, else the module's attributes of those names.  Chapter 4."""
    sizes = {"input_size": input_size, "hidden_size": hidden_size}
    for name in sizes:
        if sizes[name] is None:
            sizes[name] = getattr(module, name, None)
        if sizes[name] is None:
            raise InputError(f"{name} is needed: pass {name}=... (your module has no attribute {name})")
        sizes[name] = check_size(name, sizes[name])
    return sizes["input_size"], sizes["hidden_size"]


def check_device(device, tensors):
    """The device to check on: `device`, else where the student's first tensor lives, else the CPU.  Chapter 4."""
    if device is not None:
        try:
            return torch.device(device)
        except (RuntimeError, TypeError) as error:
            raise InputError(f"device must be a torch.device or a name like 'cpu' or 'cuda', got {device!r}") from error
    return tensors[0][1].device if tensors else torch.device("cpu")


def registered_property(report, module):
    """Add "weights are registered parameters" to `report`, and the cause if some are not.  Chapter 4."""
    hidden = [name for name, _ in unregistered_named_tensors(module)]
    if not report.add("weights are registered parameters", not hidden,
                      f"not registered: {', '.join(hidden[:4])}{', ...' if len(hidden) > 4 else ''}" if hidden
                      else f"{sum(p.numel() for p in module.parameters()):,} parameters"):
        report.diagnose(cause("unregistered_parameters", f"{len(hidden)} tensors are not in parameters(), "
                                                         f"e.g. {hidden[0]}"))


class CallbackLayout(Layout):
    """A layout the student fills with their own `load_weights(cell, W_ih, W_hh, b_ih, b_hh)`: no gradients of
    the weights can be mapped back, so only those of x, h and c are compared."""

    def __init__(self, cell, load_weights):
        super().__init__("copied by load_weights", [], True)
        self.cell, self.load_weights = cell, load_weights

    def load(self, weights):
        with torch.no_grad():
            self.load_weights(self.cell, *weights)


def student_layouts(work, I, H, load_weights):
    """The ways to copy weights into the student's cell: their callback, or those `cell_layouts` finds."""
    if load_weights is not None:
        return [CallbackLayout(work, load_weights)]
    if not isinstance(work, nn.Module):
        raise InputError("a cell given as a plain function has no weights the check can reach: pass "
                         "load_weights=fn(cell, weight_ih, weight_hh, bias_ih, bias_hh), or give an nn.Module")
    layouts = cell_layouts(held_tensors(work), I, H)
    if not layouts:
        raise no_layout_error("your cell", held_tensors(work), I, H)
    return layouts


def reference_weights(I, H, bias, dtype, device, generator):
    """(W_ih, W_hh, b_ih, b_hh) drawn large enough that every bug moves the outputs well past rounding."""
    shapes = [(4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]
    weights = [seeded_randn(generator, *s, dtype=dtype, device=device, scale=0.5) for s in shapes]
    return tuple(weights) if bias else (weights[0], weights[1], None, None)


def run_cell(cell, x, h, c):
    """(h', c') the student's cell returns, or raise ValueError saying what it returned instead."""
    out = cell(x, (h, c))
    if not (isinstance(out, (tuple, list)) and len(out) == 2 and all(isinstance(t, torch.Tensor) for t in out)):
        raise ValueError(f"the cell must return a pair (h, c) of tensors, got {type(out).__name__}")
    if any(tuple(t.shape) != tuple(h.shape) for t in out):
        raise ValueError(f"the cell must return h and c of shape {tuple(h.shape)} (batch_size, hidden_size), "
                         f"got {tuple(out[0].shape)} and {tuple(out[1].shape)}")
    return tuple(out)


def best_hypothesis(outputs, expected_for, hypotheses, dtype):
    """(cause id, evidence, variant) of the first hypothesis whose outputs equal the student's, else None, and the
    closest one's (relative error, evidence).  outputs: the student's tensors; expected_for(variant): the
    variant's.  Chapter 4."""
    closest = (float("inf"), "")
    for cause_id, evidence, variant in hypotheses:
        try:
            expected = expected_for(variant)
        except (RuntimeError, IndexError):  # a variant the student's weights cannot run (shapes of shared layers)
            continue
        if any(tuple(a.shape) != tuple(b.shape) for a, b in zip(outputs, expected)):
            continue
        error = max(relative_error(a, b) for a, b in zip(outputs, expected))
        if error <= tolerance(dtype):
            return (cause_id, evidence, variant), closest
        closest = min(closest, (error, f"{cause_id}: {evidence}"))
    return None, closest


def explain_mismatch(report, runs, weights, x, h, c, dtype, square_input):
    """Find the known bug the student's outputs match, in any of the layouts tried, and record it."""
    for layout, out in runs:
        match, closest = best_hypothesis(out, lambda v: variant_cell(x, h, c, weights, v),
                                         cell_hypotheses(square_input), dtype)
        if match:
            report.diagnose(cause(match[0], f"{match[1]} (weights copied as: {layout.description})"))
            return
    layout, (h_out, c_out) = runs[0]
    ref_h, ref_c = variant_cell(x, h, c, weights, CellVariant())
    where = "h differs but c matches: the bug is in h = o * tanh(c)" if same(c_out, ref_c, dtype) else \
        "c differs too: the bug is in the gates or the cell update"
    report.diagnose(cause("unexplained", f"{where}; closest known bug {closest[1]} (relative error "
                                         f"{closest[0]:.2g})"))


def gradient_leaves(inputs, slots):
    """Fresh leaf copies of the inputs, and the student's tensors made ready to collect gradients.  Chapter 4."""
    for slot in slots:
        slot.tensor.grad = None
        if slot.tensor.is_leaf:
            slot.tensor.requires_grad_(True)
    return [t.detach().clone().requires_grad_() for t in inputs]


def cell_gradients(cell, inputs, R, slots):
    """Gradients of sum(h' R_h) + sum(c' R_c) with respect to x, h, c and the student's tensors (None if none)."""
    x, h, c = gradient_leaves(inputs, slots)
    h_new, c_new = run_cell(cell, x, h, c)
    ((h_new * R[0]).sum() + (c_new * R[1]).sum()).backward()
    grads = {"x": x.grad, "h": h.grad, "c": c.grad}
    grads.update({slot.name: slot.tensor.grad for slot in slots})
    return grads


def explain_gradients(report, got, expected, dtype, reference="nn.LSTMCell"):
    """Compare gradients {name: tensor or None}; record the property and the cause.  Chapter 4."""
    missing = [n for n in expected if (got[n] is None or got[n].abs().max() == 0) and expected[n].abs().max() > 0]
    wrong = {n: relative_error(got[n], expected[n]) for n in expected if n not in missing
             and not same(got[n], expected[n], dtype)}
    worst = max(((relative_error(got[n], expected[n]) if n not in missing else 1.0), n) for n in expected)
    report.add(f"gradients match autograd through {reference}", not (missing or wrong),
               f"{len(expected)} gradients, largest relative error {worst[0]:.1e} ({worst[1]})")
    if missing:
        report.diagnose(cause("gradient_blocked", f"no gradient reaches {', '.join(missing[:4])}"))
    elif wrong:
        names = ", ".join(f"{n} ({e:.1e})" for n, e in list(wrong.items())[:4])
        report.diagnose(cause("wrong_custom_backward", f"outputs match, gradients differ: {names}"))


def check_cell(cell, input_size=None, hidden_size=None, load_weights=None, device=None, dtype=None, batch_size=3,
               seed=0):
    """Check a student's LSTM cell against `torch.nn.LSTMCell` holding the same weights.

    cell: an nn.Module or function called as cell(x, (h, c)) -> (h', c'), with x (B, I) and h, c (B, H), in
    PyTorch's notation (W_ih x + b_ih + W_hh h + b_hh) or the textbook's (W [h, x] + b), fused or per gate (see
    `lstm_lab.check.layout` for the layouts it reads; the check works on a copy and leaves yours untouched).
    input_size, hidden_size: default to the module's attributes of those names.
    load_weights: fn(cell, weight_ih, weight_hh, bias_ih, bias_hh) copying PyTorch's weights into your cell,
    needed for a plain function or a layout the check cannot read; it is called on the check's copy of a module.
    device: default where the cell's weights live; dtype: default theirs (float32 or float64).
    Returns a `Report`: the cell runs, its weights are registered, h and c match, the gradients of x, h, c and of
    every weight match autograd; for a failure, the bug its outputs match.  Introduced in chapter 4."""
    if not callable(cell):
        raise InputError(f"cell must be an nn.Module or a function cell(x, (h, c)) -> (h, c), got "
                         f"{type(cell).__name__}")
    I, H = student_sizes(cell, input_size, hidden_size)
    B = check_size("batch_size", batch_size)
    work = copy.deepcopy(cell) if isinstance(cell, nn.Module) else cell
    layouts = student_layouts(work, I, H, load_weights)
    tensors = held_tensors(work) if isinstance(work, nn.Module) else []
    device = check_device(device, tensors)
    dtype = dtype or (tensors[0][1].dtype if tensors else torch.float32)
    tolerance(dtype)  # refuses any dtype but float32 and float64
    report = Report(f"check_cell({type(cell).__name__}, input_size={I}, hidden_size={H}) on {device}, {dtype}")
    if isinstance(work, nn.Module):
        registered_property(report, work)
    generator = torch.Generator().manual_seed(seed)
    weights = reference_weights(I, H, layouts[0].has_bias, dtype, device, generator)
    x, h, c = (seeded_randn(generator, B, n, dtype=dtype, device=device) for n in (I, H, H))
    reference = nn.LSTMCell(I, H, bias=layouts[0].has_bias, device=device, dtype=dtype)
    with torch.no_grad():
        for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights):
            if value is not None:
                getattr(reference, name).copy_(value)
    ref_h, ref_c = reference(x, (h, c))
    runs = []
    for layout in layouts:
        layout.load(weights)
        out, error = call_student(lambda: run_cell(work, x, h, c))
        if error is not None:
            report.add("the cell runs", False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
            report.diagnose(describe_error(error))
            return report
        runs.append((layout, tuple(t.detach() for t in out)))
    matched = [(layout, out) for layout, out in runs if same(out[0], ref_h, dtype) and same(out[1], ref_c, dtype)]
    layout, (h_out, c_out) = (matched or runs)[0]
    report.add("h and c match nn.LSTMCell", bool(matched), f"relative error h {relative_error(h_out, ref_h):.1e}, "
               f"c {relative_error(c_out, ref_c):.1e}; weights copied as: {layout.description}")
    if not matched:
        explain_mismatch(report, runs, weights, x, h, c, dtype, I == H)
        return report
    layout.load(weights)
    R = [seeded_randn(generator, B, H, dtype=dtype, device=device) for _ in range(2)]
    got, error = call_student(lambda: cell_gradients(work, (x, h, c), R, layout.slots))
    if error is not None:
        report.add("backward runs", False, f"{type(error).__name__}: {str(error).splitlines()[0][:120]}")
        report.diagnose(describe_error(error))
        return report
    reference.zero_grad()
    leaves = [t.detach().clone().requires_grad_() for t in (x, h, c)]
    h_ref, c_ref = reference(leaves[0], (leaves[1], leaves[2]))
    ((h_ref * R[0]).sum() + (c_ref * R[1]).sum()).backward()
    expected = {"x": leaves[0].grad, "h": leaves[1].grad, "c": leaves[2].grad}
    if layout.slots:
        ref_grads = [getattr(reference, n).grad if getattr(reference, n) is not None else None
                     for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        expected.update(layout.expected_grads(ref_grads))
    explain_gradients(report, got, expected, dtype)
    return report
