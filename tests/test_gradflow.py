"""lstm_lab.experiments.gradflow: the tanh RNN, forget-bias surgery, and gradient norms through time."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from lstm_lab import LSTM, LSTMCell
from lstm_lab.experiments.gradflow import (decay_per_step, forget_gate_activations, geometric_mean,
                                           gradient_norms_over_seeds, gradient_norms_through_time, tanh_rnn_layer)
from lstm_lab.init import forget_bias, set_forget_bias


def test_tanh_rnn_layer_matches_nn_rnn():
    torch.manual_seed(0)
    rnn = nn.RNN(3, 5).double()
    x, h0 = torch.randn(7, 2, 3, dtype=torch.float64), torch.randn(1, 2, 5, dtype=torch.float64)
    expected, h_n = rnn(x, h0)
    output, h = tanh_rnn_layer(x, h0[0], rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, h_n[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: nn.LSTM(3, 4, num_layers=2), lambda: LSTM(3, 4, num_layers=2),
                                  lambda: nn.LSTMCell(3, 4), lambda: LSTMCell(3, 4)])
@pytest.mark.parametrize("value", [0.0, 1.0, -2.5])
def test_set_forget_bias_sets_the_sum_and_nothing_else(make, value):
    torch.manual_seed(0)
    model = make()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    assert set_forget_bias(model, value) is model
    H = 4
    for name, p in model.named_parameters():
        if name.startswith("bias_ih"):
            total = p + dict(model.named_parameters())[name.replace("bias_ih", "bias_hh")]
            assert torch.equal(total[H:2 * H], torch.full((H,), value))
        # every entry outside the forget rows of the biases is untouched
        changed = p.detach() != before[name]
        if name.startswith("bias"):
            changed[H:2 * H] = False
        assert not changed.any(), name
    assert torch.equal(forget_bias(model), torch.full((forget_bias(model).shape[0], H), value))


def test_set_forget_bias_changes_the_forget_gate_value():
    torch.manual_seed(0)
    cell = set_forget_bias(LSTMCell(2, 3).double(), 50.0)
    with torch.no_grad():
        cell.weight_ih.zero_()
        cell.weight_hh.zero_()
        _, c = cell(torch.zeros(1, 2, dtype=torch.float64),
                    (torch.zeros(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)))
    # f = sigmoid(50) = 1 keeps c_prev = 1; i * g adds sigmoid(b_i) tanh(b_g)
    b = cell.bias_ih + cell.bias_hh
    expected = 1.0 + torch.sigmoid(b[:3]) * torch.tanh(b[6:9])
    torch.testing.assert_close(c[0], expected.detach(), rtol=0, atol=1e-12)


def test_set_forget_bias_without_biases_raises():
    with pytest.raises(ValueError, match="bias=False"):
        set_forget_bias(nn.LSTM(3, 4, bias=False), 1.0)


def test_gradient_norms_of_hand_computable_models():
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    # output_t = 2 x_t: only the last input matters, with gradient 2 everywhere
    norms = gradient_norms_through_time(lambda x: 2 * x, x)
    np.testing.assert_allclose(norms, [2 * math.sqrt(3), 0, 0, 0], atol=1e-12)
    # output_t = x_0 + ... + x_t: every input has gradient 1; (output, state) tuples are accepted
    norms = gradient_norms_through_time(lambda x: (x.cumsum(0), None), x)
    np.testing.assert_allclose(norms, np.full(4, math.sqrt(3)), atol=1e-12)


def test_gradient_norms_match_a_jacobian_computed_by_autograd():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 5).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    norms = gradient_norms_through_time(lstm, x)
    jacobian = torch.autograd.functional.jacobian(lambda x: lstm(x)[0][-1].sum(), x)  # (T, B, I)
    expected = jacobian.norm(dim=2).mean(dim=1).flip(0).numpy()
    np.testing.assert_allclose(norms, expected, rtol=1e-12)
    assert norms.shape == (6,)


def test_gradient_norms_reject_unbatched_input():
    with pytest.raises(ValueError, match="3-D"):
        gradient_norms_through_time(nn.LSTM(3, 4), torch.randn(5, 3))


def test_gradient_norms_over_seeds_is_reproducible_and_varies_with_the_seed():
    make = lambda: nn.RNN(3, 4)
    a = gradient_norms_over_seeds(make, [0, 1], seq_len=5, batch_size=2, input_size=3)
    b = gradient_norms_over_seeds(make, [0, 1], seq_len=5, batch_size=2, input_size=3)
    assert a.shape == (2, 5) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a[0], a[1])


def test_rnn_gradient_vanishes_faster_than_lstm_with_forget_bias():
    make_lstm = lambda: set_forget_bias(nn.LSTM(4, 16), 3.0)
    rnn = gradient_norms_over_seeds(lambda: nn.RNN(4, 16), [0, 1], seq_len=30, batch_size=4, input_size=4)
    lstm = gradient_norms_over_seeds(make_lstm, [0, 1], seq_len=30, batch_size=4, input_size=4)
    assert decay_per_step(rnn, 5, 30) < decay_per_step(lstm, 5, 30)


def test_decay_per_step_recovers_a_geometric_rate():
    norms = 3.0 * 0.8 ** np.arange(20)
    assert decay_per_step(norms, 0, 20) == pytest.approx(0.8, rel=1e-12)
    rows = np.stack([norms, 5 * norms])  # rows averaged in log space: same rate
    assert decay_per_step(rows, 2, 15) == pytest.approx(0.8, rel=1e-12)


@pytest.mark.parametrize("make", [lambda: nn.LSTM(3, 4), lambda: LSTM(3, 4)])
def test_forget_gate_activations_match_a_step_by_step_unroll(make):
    torch.manual_seed(0)
    lstm = make().double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    cell = LSTMCell(3, 4).double()
    cell.load_state_dict({name.replace("_l0", ""): p for name, p in lstm.state_dict().items()})
    h = c = torch.zeros(2, 4, dtype=torch.float64)
    expected = []
    with torch.no_grad():
        for x_t in x:
            a = x_t @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh  # (B, 4H)
            expected.append(torch.sigmoid(a[:, 4:8]))  # rows H:2H are the forget gate
            h, c = cell(x_t, (h, c))
    torch.testing.assert_close(forget_gate_activations(lstm, x), torch.stack(expected), rtol=0, atol=1e-14)


def test_geometric_mean_averages_in_log_space():
    np.testing.assert_allclose(geometric_mean(np.array([[1.0, 1e-10], [100.0, 1e-20]])), [10.0, 1e-15])
    np.testing.assert_allclose(geometric_mean(np.array([2.0, 3.0])), [2.0, 3.0])


def test_every_initialisation_lives_in_lstm_lab_init():
    import lstm_lab.cells, lstm_lab.experiments.gradflow, lstm_lab.model
    for module in (lstm_lab.cells, lstm_lab.experiments.gradflow, lstm_lab.model):
        defined = {name for name, obj in vars(module).items()
                   if callable(obj) and getattr(obj, "__module__", None) == module.__name__}
        assert not {n for n in defined if "init" in n or "forget_bias" in n} - {"__init__"}, module.__name__
