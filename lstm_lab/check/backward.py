"""`check_backward`: a student's hand-written LSTM backward pass against autograd and finite differences.

    from lstm_lab.check import check_backward
    report = check_backward(my_gradients, forward=my_loss)     # numpy in, numpy out (inputs="torch": tensors)
    print(report); assert report

The interface is chapter 2's: `gradients(problem)` takes a `lstm_lab.numpy_lstm.random_lstm_problem` dict (x,
h0, c0, W_ih, W_hh, b_ih, b_hh in PyTorch's layout, and the loss weights R_hs, R_h, R_c) and returns the gradients
of loss = sum(hs * R_hs) + sum(h_T * R_h) + sum(c_T * R_c) with respect to x, h0, c0, W_ih, W_hh, b_ih, b_hh;
`forward(problem)` returns that loss.  The check runs one step, then several, and says where the first wrong
gradient appears: which gate's rows, which time step, one step or through time.  Introduced in chapter 2.
"""
import numpy as np
import torch

from lstm_lab.check.report import Report, cause
from lstm_lab.config import InputError
from lstm_lab.numpy_lstm import INPUTS, hand_gradients, numerical_gradient, random_lstm_problem, relative_error
from lstm_lab.reference import autograd_gradients

__all__ = ["check_backward", "TOLERANCE_FLOAT64", "as_inputs", "as_array", "gate_blocks"]

TOLERANCE_FLOAT64 = 1e-7  # relative error: autograd vs a right float64 backward ~1e-15, finite differences ~1e-9
SIZES = {"batch_size": 2, "input_size": 3, "hidden_size": 4}  # small: finite differences take a forward per number
WEIGHTS = ("W_ih", "W_hh", "b_ih", "b_hh")
GATE_NAMES = ("i", "f", "g", "o")


def as_inputs(problem, inputs, device=None):
    """The problem as the student's function takes it: numpy arrays, or float64 tensors on `device`.  Chapter 2."""
    if inputs == "numpy":
        return {name: value.copy() for name, value in problem.items()}
    return {name: torch.tensor(value, dtype=torch.float64, device=device) for name, value in problem.items()}


def as_array(value):
    """A numpy float64 array from a numpy array or a tensor (any device, detached).  Chapter 2."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def student_gradients(gradients, problem, inputs, device):
    """{name: array} the student's function returns, or raise ValueError naming what is missing or misshaped."""
    got = gradients(as_inputs(problem, inputs, device))
    if not isinstance(got, dict):
        raise ValueError(f"gradients(problem) must return a dict {{name: gradient}}, got {type(got).__name__}")
    missing = [n for n in INPUTS if n not in got]
    if missing:
        raise ValueError(f"gradients(problem) returned no {', '.join(missing)} (expected keys {', '.join(INPUTS)})")
    got = {n: as_array(got[n]) for n in INPUTS}
    wrong = [f"{n} {got[n].shape} (expected {problem[n].shape})" for n in INPUTS if got[n].shape != problem[n].shape]
    if wrong:
        raise ValueError(f"gradients with the wrong shape: {', '.join(wrong)}")
    return got


def gate_blocks(grads, name):
    """The four (H, ...) row blocks of a weight's or bias's gradient, in gate order i, f, g, o.  Chapter 2."""
    return np.split(grads[name], 4, axis=0)


def wrong_names(got, expected):
    return [n for n in INPUTS if relative_error(got[n], expected[n]) > TOLERANCE_FLOAT64]


def wrong_gates(got, expected):
    """The gates whose rows of W_ih, W_hh or the biases have a wrong gradient."""
    return [gate for k, gate in enumerate(GATE_NAMES)
            if any(relative_error(gate_blocks(got, n)[k], gate_blocks(expected, n)[k]) > TOLERANCE_FLOAT64
                   for n in WEIGHTS)]


def first_wrong_step(got, expected):
    """The time step where the gradient of x first goes wrong, walking backward from the last step, or None."""
    for t in reversed(range(expected["x"].shape[0])):
        if relative_error(got["x"][t], expected["x"][t]) > TOLERANCE_FLOAT64:
            return t
    return None


def sign_or_scale(got, expected):
    """A `Cause` if some wrong gradient (or one gate's block of one) is the true one times a constant."""
    pieces = [(n, None, got[n], expected[n]) for n in INPUTS]
    pieces += [(n, GATE_NAMES[k], g, e) for n in WEIGHTS for k, (g, e) in
               enumerate(zip(gate_blocks(got, n), gate_blocks(expected, n)))]
    for name, gate, g, e in pieces:
        if relative_error(g, e) <= TOLERANCE_FLOAT64 or not np.any(e):
            continue
        factor = float(np.sum(g * e) / np.sum(e * e))
        if relative_error(g, factor * e) <= TOLERANCE_FLOAT64:
            where = f"{name}" + (f", gate {gate}'s rows" if gate else "")
            if abs(factor + 1) < 1e-6:
                return cause("sign_error", f"{where}: exactly minus the true gradient")
            return cause("scale_error", f"{where}: {factor:.4g} times the true gradient")
    return None


def typo_cause(gradients, problem, inputs, device, got):
    """The printed-derivation typo, if the student's gradients are exactly those of `hand_gradients` with it."""
    typo = lambda g: (1 - g) ** 2
    for where, kwargs in (("on the path back to x and h (the report's equation 7)", {"tanh_grad_back": typo}),
                          ("everywhere", {"tanh_grad": typo})):
        if not wrong_names(got, hand_gradients(problem, **kwargs)):
            return cause("tanh_derivative_typo", f"the gradients equal chapter 2's backward with (1 - g)^2 {where}")
    return None


def diagnose(results, typo):
    """The most likely cause, from where the wrong gradients are.  results: [(got, expected)] for one step with the
    loss on its own output only, one step with gradients arriving from a next step (R_h, R_c), several steps."""
    if typo:
        return typo
    for got, expected in results:
        if wrong_names(got, expected):
            found = sign_or_scale(got, expected)
            if found:
                return found
            break
    (alone, alone_expected), (one, one_expected), (several, several_expected) = results
    wrong_alone = set(wrong_names(alone, alone_expected)) - {"h0", "c0"}
    if not wrong_alone:
        step = first_wrong_step(several, several_expected)
        wrong_one = wrong_names(one, one_expected)
        return cause("bptt_carry", f"one step on its own is right{'; with a gradient from the next step wrong: ' + ', '.join(wrong_one) if wrong_one else ''}; "
                                   f"through time, x's gradient first goes wrong at step {step} of "
                                   f"{several_expected['x'].shape[0]} (counting from 0; backward starts at the last)")
    if not wrong_alone & set(WEIGHTS):
        return cause("input_path_error", f"one step: wrong {', '.join(sorted(wrong_alone))}; W and b right")
    gates = wrong_gates(alone, alone_expected)
    if len(gates) == 1:
        return cause("gate_derivative", f"one step: only gate {gates[0]}'s rows of W and b are wrong")
    return cause("one_step_error", f"one step: wrong {', '.join(sorted(wrong_alone))}; gates {', '.join(gates)}")


def isolated_step(problem):
    """The one-step problem with no gradient arriving from a next step: R_h = R_c = 0."""
    return {**problem, "R_h": np.zeros_like(problem["R_h"]), "R_c": np.zeros_like(problem["R_c"])}


def check_backward(gradients, forward=None, inputs="numpy", device=None, seq_len=4, seed=0):
    """Check a hand-written LSTM backward pass against autograd (nn.LSTM, float64) and finite differences.

    gradients(problem) -> {"x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh": gradient}, as
    `lstm_lab.numpy_lstm.hand_gradients` (see the module docstring for the problem and its loss).
    forward(problem) -> the loss, optional: if given, the gradients are also checked against central finite
    differences of it (does your backward differentiate your forward?) and the loss against nn.LSTM's.
    inputs: "numpy" (arrays) or "torch" (float64 tensors on `device`); the gradients may be either.
    Runs a problem of one step, then one of seq_len steps.  Returns a `Report` that says where the first wrong
    gradient is: which gate's rows, which time step, and the most likely cause (chapter 2's typo among them).
    Introduced in chapter 2."""
    if not callable(gradients) or (forward is not None and not callable(forward)):
        raise InputError("gradients (and forward, if given) must be functions of a problem dict")
    if inputs not in ("numpy", "torch"):
        raise InputError(f"inputs must be 'numpy' or 'torch', got {inputs!r}")
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 2:
        raise InputError(f"seq_len must be an int of 2 or more (one step is always checked too), got {seq_len!r}")
    report = Report(f"check_backward({getattr(gradients, '__name__', type(gradients).__name__)}, inputs={inputs})")
    problems = [random_lstm_problem(T, seed=seed + T, **SIZES) for T in (1, seq_len)]
    problems.insert(0, isolated_step(problems[0]))
    expected = [autograd_gradients(p) for p in problems]
    got = []
    for problem in problems:
        try:
            got.append(student_gradients(gradients, problem, inputs, device))
        except Exception as error:  # the student's code may raise anything; the report says what
            report.add("gradients(problem) runs", False, f"{type(error).__name__}: {str(error)[:160]}")
            return report
    for label, g, e in (("one step", got[1], expected[1]), (f"{seq_len} steps", got[2], expected[2])):
        worst = max((relative_error(g[n], e[n]), n) for n in INPUTS)
        report.add(f"matches autograd (nn.LSTM, float64), {label}", not wrong_names(g, e),
                   f"largest relative error {worst[0]:.1e} ({worst[1]})" + (
                       f"; wrong gates: {', '.join(wrong_gates(g, e)) or 'none'}" if wrong_names(g, e) else ""))
    if forward is not None:
        check_against_own_forward(report, forward, problems[2], got[2], inputs, device)
    if any(wrong_names(g, e) for g, e in zip(got, expected)):
        typo = typo_cause(gradients, problems[2], inputs, device, got[2])
        report.diagnose(diagnose(list(zip(got, expected)), typo))
    return report


def check_against_own_forward(report, forward, problem, got, inputs, device):
    """The student's forward against nn.LSTM's loss, and their gradients against central differences of it."""
    loss = lambda: float(as_array(forward(as_inputs(problem, inputs, device))))
    true_loss = float(sum(np.sum(part) for part in reference_loss_parts(problem)))
    report.add("your forward's loss matches nn.LSTM's", abs(loss() - true_loss) <= 1e-9 * (1 + abs(true_loss)),
               f"{loss():.6f} vs {true_loss:.6f}")
    numeric = {n: numerical_gradient(loss, problem[n]) for n in INPUTS}
    worst = max((relative_error(got[n], numeric[n]), n) for n in INPUTS)
    report.add("matches finite differences of your forward", worst[0] < 1e-6,
               f"largest relative error {worst[0]:.1e} ({worst[1]})")


def reference_loss_parts(problem):
    """The three terms of the problem's loss, computed by nn.LSTM in float64."""
    lstm = torch.nn.LSTM(problem["x"].shape[2], problem["h0"].shape[1]).double()
    with torch.no_grad():
        for key, name in (("weight_ih_l0", "W_ih"), ("weight_hh_l0", "W_hh"), ("bias_ih_l0", "b_ih"),
                          ("bias_hh_l0", "b_hh")):
            getattr(lstm, key).copy_(torch.from_numpy(problem[name]))
        x, h0, c0 = (torch.from_numpy(problem[n]) for n in ("x", "h0", "c0"))
        hs, (h_T, c_T) = lstm(x, (h0[None], c0[None]))
    return [(hs.numpy() * problem["R_hs"]), (h_T[0].numpy() * problem["R_h"]), (c_T[0].numpy() * problem["R_c"])]
