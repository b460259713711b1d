"""lstm_lab.check.check_backward on a catalogue of hand-written backward passes with one slip each, and on the
package's own numpy backward and its torch port (chapter 3's LSTMFunction): each slip found where it is and named."""
import numpy as np
import pytest

from lstm_lab.check import check_backward
from lstm_lab.config import InputError
from lstm_lab.experiments.ladder import LSTMFunction
from lstm_lab.numpy_lstm import INPUTS, hand_gradients, lstm_forward


def student_backward(problem, slip=None):
    """A student's BPTT for chapter 2's problem, written from the equations; `slip` puts in one mistake, each on
    the line it changes."""
    x, h0, c0, W_ih, W_hh, b_ih, b_hh = (problem[n] for n in INPUTS)
    hs, _, cache = lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    grads = {"W_ih": np.zeros_like(W_ih), "W_hh": np.zeros_like(W_hh), "b_ih": 0.0, "b_hh": 0.0}
    dx, dh_next, dc_next = [], problem["R_h"], problem["R_c"]
    for t in reversed(range(len(x))):
        x_t, h_prev, c_prev, i, f, g, o, tanh_c = cache["steps"][t]
        dh = problem["R_hs"][t] + (0 if slip == "no dh from the next step" else dh_next)
        do = dh * tanh_c * (-1 if slip == "sign of do" else 1)
        dc = dc_next + dh * o * (1 - tanh_c ** 2)
        di, df, dg = dc * g, dc * c_prev, dc * i
        dc_next = dc if slip == "dc carried without f" else dc * f
        df_da = f if slip == "sigmoid' as s" else f * (1 - f)
        da = np.concatenate([di * i * (1 - i), df * df_da, dg * (1 - g ** 2), do * o * (1 - o)], axis=1)
        grads["W_ih"] += da.T @ x_t
        grads["W_hh"] += da.T @ (hs[t] if slip == "W_hh with h_t" else h_prev)
        db = da.mean(axis=0) if slip == "bias averaged over the batch" else da.sum(axis=0)
        grads["b_ih"] += db
        grads["b_hh"] += db
        dx.append(da @ W_ih)
        dh_next = da @ W_hh
    grads.update(x=np.stack(dx[::-1]), h0=dh_next, c0=dc_next)
    return grads


def loss(problem):
    hs, (h_T, c_T), _ = lstm_forward(*(problem[n] for n in INPUTS))
    return np.sum(hs * problem["R_hs"]) + np.sum(h_T * problem["R_h"]) + np.sum(c_T * problem["R_c"])


typo = lambda g: (1 - g) ** 2
BROKEN_BACKWARDS = [  # (slip, gradients(problem), the cause the check must name first)
    ("chapter 2's misprint on the path back (report 002's eq. 7)",
     lambda p: hand_gradients(p, tanh_grad_back=typo), "tanh_derivative_typo"),
    ("the misprint everywhere", lambda p: hand_gradients(p, tanh_grad=typo), "tanh_derivative_typo"),
    ("dc carried back without the forget gate", lambda p: student_backward(p, "dc carried without f"), "bptt_carry"),
    ("no gradient from the next step into h", lambda p: student_backward(p, "no dh from the next step"),
     "bptt_carry"),
    ("sign of the output gate's gradient", lambda p: student_backward(p, "sign of do"), "sign_error"),
    ("sigmoid' written s instead of s (1 - s)", lambda p: student_backward(p, "sigmoid' as s"), "gate_derivative"),
    ("bias gradient averaged over the batch", lambda p: student_backward(p, "bias averaged over the batch"),
     "scale_error"),
    ("W_hh's gradient with h_t, not h_{t-1}", lambda p: student_backward(p, "W_hh with h_t"), "one_step_error"),
]


@pytest.mark.parametrize("slip, gradients, expected", BROKEN_BACKWARDS, ids=[b[0] for b in BROKEN_BACKWARDS])
def test_a_broken_backward_is_caught_and_its_cause_named(slip, gradients, expected):
    report = check_backward(gradients, forward=loss)
    assert not report, report
    assert report.cause_ids[0] == expected, report


def test_the_report_says_which_gate_and_which_step():
    text = str(check_backward(lambda p: student_backward(p, "sigmoid' as s")))
    assert "gate f" in text
    text = str(check_backward(lambda p: student_backward(p, "dc carried without f")))
    assert "first goes wrong at step" in text


def torch_gradients(problem):
    """Chapter 3's LSTMFunction (a torch port of chapter 2's backward) on the problem, as tensors."""
    x, h0, c0, W_ih, W_hh, b_ih, b_hh = (problem[n].clone().requires_grad_() for n in INPUTS)
    hs, h_T, c_T = LSTMFunction.apply(x, h0, c0, W_ih, W_hh, b_ih, b_hh)
    ((hs * problem["R_hs"]).sum() + (h_T * problem["R_h"]).sum() + (c_T * problem["R_c"]).sum()).backward()
    return dict(zip(INPUTS, (t.grad for t in (x, h0, c0, W_ih, W_hh, b_ih, b_hh))))


@pytest.mark.parametrize("name, gradients, inputs", [
    ("chapter 2's numpy backward", hand_gradients, "numpy"),
    ("the student-style backward with no slip", student_backward, "numpy"),
    ("chapter 3's LSTMFunction", torch_gradients, "torch"),
])
def test_a_correct_backward_passes(name, gradients, inputs):
    report = check_backward(gradients, forward=loss if inputs == "numpy" else None, inputs=inputs)
    assert report, report
    assert report.causes == []


def test_finite_differences_catch_a_backward_that_does_not_fit_its_own_forward():
    report = check_backward(hand_gradients, forward=lambda p: 2 * loss(p))
    assert not report
    assert [p.name for p in report.properties if not p.passed] == [
        "your forward's loss matches nn.LSTM's", "matches finite differences of your forward"]


@pytest.mark.parametrize("kwargs, message", [
    ({"gradients": "grads"}, "must be functions"),
    ({"gradients": hand_gradients, "inputs": "jax"}, "inputs must be 'numpy' or 'torch'"),
    ({"gradients": hand_gradients, "seq_len": 1}, "seq_len must be an int of 2 or more"),
])
def test_bad_input_is_refused_in_one_line(kwargs, message):
    with pytest.raises(InputError, match=message):
        check_backward(**kwargs)


def test_a_gradient_missing_from_the_answer_is_reported_not_raised():
    report = check_backward(lambda p: {k: v for k, v in hand_gradients(p).items() if k != "c0"})
    assert not report and "returned no c0" in str(report)
