"""The numpy LSTM and its hand-written backward pass against finite differences and torch autograd."""
import numpy as np
import pytest
import torch
from torch import nn

from lstm_lab.numpy_lstm import (INPUTS, gradient_check, hand_gradients, lstm_backward, lstm_forward,
                                 numerical_gradient, random_lstm_problem, relative_error, sigmoid)
from lstm_lab.reference import NUMPY_NAMES, autograd_gradients

SIZES = [  # (seq_len, batch_size, input_size, hidden_size)
    (1, 1, 1, 1), (1, 2, 3, 4), (4, 1, 2, 1), (5, 3, 4, 3), (8, 2, 1, 5),
]


@pytest.mark.parametrize("sizes", SIZES)
def test_backward_matches_finite_differences(sizes):
    errors = gradient_check(random_lstm_problem(*sizes, seed=sum(sizes)))
    assert set(errors) == set(INPUTS)
    for name, error in errors.items():
        assert error < 1e-7, f"{name}: relative error {error:.2e}"


@pytest.mark.parametrize("sizes", SIZES)
def test_forward_matches_torch(sizes):
    p = random_lstm_problem(*sizes, seed=7)
    hs, (h_T, c_T), _ = lstm_forward(*(p[name] for name in INPUTS))
    T, B, I = p["x"].shape
    lstm = nn.LSTM(I, p["h0"].shape[1]).double()
    lstm.load_state_dict({key: torch.from_numpy(p[name]) for key, name in NUMPY_NAMES.items()})
    out, (h_n, c_n) = lstm(torch.from_numpy(p["x"]), (torch.from_numpy(p["h0"])[None], torch.from_numpy(p["c0"])[None]))
    assert relative_error(hs, out.detach().numpy()) < 1e-12
    assert relative_error(c_T, c_n[0].detach().numpy()) < 1e-12


@pytest.mark.parametrize("sizes", SIZES)
def test_backward_matches_torch_autograd(sizes):
    p = random_lstm_problem(*sizes, seed=7)
    grads, reference = hand_gradients(p), autograd_gradients(p)
    assert set(grads) == set(reference) == set(INPUTS)
    for name in INPUTS:
        assert grads[name].shape == p[name].shape, name
        assert relative_error(grads[name], reference[name]) < 1e-10, name


def test_autograd_gradients_see_a_change_in_the_loss_weights():
    p = random_lstm_problem(3, 2, 2, 2, seed=1)
    before = autograd_gradients(p)["W_hh"]
    p["R_c"] = 2 * p["R_c"]
    assert relative_error(autograd_gradients(p)["W_hh"], before) > 1e-3


def test_a_wrong_backward_fails_the_check():
    """The checker must be able to fail: a gradient off by a small amount is caught."""
    p = random_lstm_problem(3, 2, 2, 3, seed=1)
    _, _, cache = lstm_forward(*(p[name] for name in INPUTS))
    grads = lstm_backward(p["R_hs"], p["R_h"], p["R_c"], cache)

    def loss():
        hs, (h_T, c_T), _ = lstm_forward(*(p[name] for name in INPUTS))
        return np.sum(hs * p["R_hs"]) + np.sum(h_T * p["R_h"]) + np.sum(c_T * p["R_c"])

    numeric = numerical_gradient(loss, p["W_hh"])
    assert relative_error(grads["W_hh"], numeric) < 1e-7
    assert relative_error(grads["W_hh"] * 1.001, numeric) > 1e-4


def test_numerical_gradient_of_a_known_function_and_restores_the_array():
    a = np.array([[1.0, -2.0], [0.5, 3.0]])
    before = a.copy()
    grad = numerical_gradient(lambda: np.sum(a ** 3), a)
    np.testing.assert_allclose(grad, 3 * before ** 2, rtol=1e-8)
    assert np.array_equal(a, before)


def test_sigmoid_is_stable_and_correct():
    a = np.array([-1000.0, -2.0, 0.0, 2.0, 1000.0])
    with np.errstate(over="raise"):
        s = sigmoid(a)
    np.testing.assert_allclose(s, [0.0, 1 / (1 + np.exp(2)), 0.5, 1 / (1 + np.exp(-2)), 1.0], atol=1e-15)


def test_relative_error_scale():
    assert relative_error(np.ones(3), np.ones(3)) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(np.ones(3), -np.ones(3)) == pytest.approx(1.0)


def test_a_misprint_on_the_path_back_only_leaves_one_step_weight_gradients_exact():
    # report 002 misprints tanh' as (1 - g)^2 in its equation for the gradient to h_{t-1} and x_t only
    typo = lambda g: (1 - g) ** 2
    one_step = random_lstm_problem(1, 3, 4, 5, seed=0)
    right, back_only = hand_gradients(one_step), hand_gradients(one_step, tanh_grad_back=typo)
    for name in ("W_ih", "W_hh", "b_ih", "b_hh", "c0"):
        np.testing.assert_array_equal(back_only[name], right[name])
    assert relative_error(back_only["x"], right["x"]) > 1e-2 and relative_error(back_only["h0"], right["h0"]) > 1e-2
    everywhere = hand_gradients(one_step, tanh_grad=typo)
    assert relative_error(everywhere["W_ih"], right["W_ih"]) > 1e-2  # the misprint in every equation
    two_steps = random_lstm_problem(2, 3, 4, 5, seed=0)
    errors = gradient_check(two_steps, tanh_grad_back=typo)
    assert min(errors.values()) > 1e-3  # from two steps on, every gradient is wrong
