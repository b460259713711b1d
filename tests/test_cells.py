"""lstm_lab's cells against torch.nn.LSTMCell, and the notation conversions."""
import math

import pytest
import torch
from torch import nn

from lstm_lab import ConcatLSTMCell, GateLSTMCell, LSTMCell, concat_to_fused, fused_to_concat
from lstm_lab.cells import from_tf_basic_lstm, tf_basic_lstm_step, unroll

SIZES = [  # (batch_size, input_size, hidden_size)
    (1, 1, 1), (1, 3, 5), (4, 1, 7), (3, 8, 2), (16, 10, 32),
]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def reference_and_copy(input_size, hidden_size, dtype, bias=True):
    """An nn.LSTMCell and an lstm_lab.LSTMCell holding the same weights."""
    ref = nn.LSTMCell(input_size, hidden_size, bias=bias).to(dtype)
    cell = LSTMCell(input_size, hidden_size, bias=bias).to(dtype)
    cell.load_state_dict(ref.state_dict(), strict=True)
    return ref, cell


def run_with_grads(cell, x, h, c):
    """Forward, backward through a random projection of (h, c); returns outputs and every gradient."""
    x, h, c = (t.detach().clone().requires_grad_() for t in (x, h, c))
    h_new, c_new = cell(x, (h, c))
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (h_new, c_new)]
    (h_new * weights[0] + c_new * weights[1]).sum().backward()
    grads = {name: p.grad for name, p in cell.named_parameters()}
    grads.update(x=x.grad, h=h.grad, c=c.grad)
    return (h_new.detach(), c_new.detach()), grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("batch_size,input_size,hidden_size", SIZES)
def test_lstm_cell_matches_torch_outputs_and_gradients(dtype, batch_size, input_size, hidden_size):
    ref, cell = reference_and_copy(input_size, hidden_size, dtype)
    x = torch.randn(batch_size, input_size, dtype=dtype)
    h, c = torch.randn(2, batch_size, hidden_size, dtype=dtype)
    (h_ref, c_ref), g_ref = run_with_grads(ref, x, h, c)
    (h_lab, c_lab), g_lab = run_with_grads(cell, x, h, c)
    tol = TOLERANCE[dtype]
    torch.testing.assert_close(h_lab, h_ref, atol=tol, rtol=0)
    torch.testing.assert_close(c_lab, c_ref, atol=tol, rtol=0)
    assert g_lab.keys() == g_ref.keys()
    for name in g_ref:
        torch.testing.assert_close(g_lab[name], g_ref[name], atol=tol, rtol=0, msg=name)


def test_lstm_cell_has_torch_parameter_names_shapes_and_init():
    ref, cell = nn.LSTMCell(6, 4), LSTMCell(6, 4)
    assert {n: p.shape for n, p in cell.named_parameters()} == {n: p.shape for n, p in ref.named_parameters()}
    bound = 1 / math.sqrt(4)
    for name, p in cell.named_parameters():
        assert p.abs().max() <= bound, name
        assert p.abs().max() > 0.5 * bound, f"{name} does not use the full U(-1/sqrt(H), 1/sqrt(H)) range"


def test_lstm_cell_without_bias_and_default_state():
    ref, cell = reference_and_copy(3, 5, torch.float64, bias=False)
    assert [n for n, _ in cell.named_parameters()] == ["weight_ih", "weight_hh"]
    x = torch.randn(2, 3, dtype=torch.float64)
    for a, b in zip(cell(x), ref(x)):  # no state given: zeros, as in nn.LSTMCell
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_lstm_cell_accepts_unbatched_input_like_torch():
    ref, cell = reference_and_copy(3, 5, torch.float64)
    x, h, c = torch.randn(3, dtype=torch.float64), torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    for a, b in zip(cell(x, (h, c)), ref(x, (h, c))):
        assert a.shape == (5,)
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@pytest.mark.parametrize("teaching_cell", [GateLSTMCell, ConcatLSTMCell])
@pytest.mark.parametrize("bias", [True, False])
def test_teaching_notations_compute_the_same_function(teaching_cell, bias):
    ref = nn.LSTMCell(4, 6, bias=bias).double()
    cell = teaching_cell.from_fused(ref)
    x = torch.randn(5, 4, dtype=torch.float64)
    h, c = torch.randn(2, 5, 6, dtype=torch.float64)
    for a, b in zip(cell(x, (h, c)), ref(x, (h, c))):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    back = cell.to_fused()  # and back again: still the same function
    for a, b in zip(back(x, (h, c)), ref(x, (h, c))):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_gate_cell_conversion_copies_weights_bit_for_bit():
    ref = nn.LSTMCell(3, 2)
    gates = GateLSTMCell.from_fused(ref)
    H = 2
    assert torch.equal(gates.W_ii, ref.weight_ih[:H]) and torch.equal(gates.W_if, ref.weight_ih[H:2 * H])
    assert torch.equal(gates.W_hg, ref.weight_hh[2 * H:3 * H]) and torch.equal(gates.b_ho, ref.bias_hh[3 * H:])
    back = gates.to_fused()
    for name, p in ref.named_parameters():
        assert torch.equal(getattr(back, name), p), name


def test_concat_conversion_layout():
    weight_ih, weight_hh = torch.randn(8, 3), torch.randn(8, 2)
    bias_ih, bias_hh = torch.randn(8), torch.randn(8)
    W, b = fused_to_concat(weight_ih, weight_hh, bias_ih, bias_hh)
    assert W.shape == (8, 5) and torch.equal(W[:, :2], weight_hh) and torch.equal(W[:, 2:], weight_ih)
    torch.testing.assert_close(b, bias_ih + bias_hh)
    w_ih, w_hh, b_ih, b_hh = concat_to_fused(W, b, hidden_size=2)
    assert torch.equal(w_ih, weight_ih) and torch.equal(w_hh, weight_hh)
    assert torch.equal(b_ih, b) and torch.equal(b_hh, torch.zeros(8))


@pytest.mark.parametrize("cell_class", [LSTMCell, GateLSTMCell, ConcatLSTMCell])
def test_cell_rejects_bad_input_with_a_clear_message(cell_class):
    cell = cell_class(3, 4)
    with pytest.raises(ValueError, match=r"2-D \(batch_size, input_size\).*got 3-D"):
        cell(torch.randn(2, 5, 3))
    with pytest.raises(ValueError, match=r"input_size=3.*got shape \(2, 7\)"):
        cell(torch.randn(2, 7))
    with pytest.raises(ValueError, match=r"state h must have shape \(2, 4\).*got \(2, 5\)"):
        cell(torch.randn(2, 3), (torch.randn(2, 5), torch.randn(2, 4)))
    with pytest.raises(ValueError, match=r"pair \(h, c\)"):
        cell(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"h has dtype torch.float64, expected torch.float32 to match input"):
        cell(torch.randn(2, 3), (torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4)))
    with pytest.raises(ValueError, match=r"input has dtype torch.float64, expected torch.float32 to match the cell's weights"):
        cell(torch.randn(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"input is on meta, expected cpu to match the cell's weights"):
        cell(torch.randn(2, 3, device="meta"))
    with pytest.raises(TypeError, match="torch.Tensor"):
        cell([[1.0, 2.0, 3.0]])


def test_unroll_runs_a_cell_over_a_sequence_like_nn_lstm():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4).double()
    cell = LSTMCell(3, 4).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in lstm.state_dict().items()})
    x, h0, c0 = torch.randn(5, 2, 3, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    hs, cs = unroll(cell, x, (h0, c0))
    output, (h_n, c_n) = lstm(x, (h0[None], c0[None]))
    assert hs.shape == cs.shape == (5, 2, 4)
    torch.testing.assert_close(hs, output, atol=1e-12, rtol=0)
    torch.testing.assert_close(cs[-1], c_n[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("forget_bias", [0.0, 1.0])
def test_tensorflow_basic_lstm_weights_convert_exactly(forget_bias):
    I, H = 3, 4
    kernel, bias = torch.randn(I + H, 4 * H, dtype=torch.float64), torch.randn(4 * H, dtype=torch.float64)
    converted = LSTMCell(I, H).double()
    with torch.no_grad():
        for name, value in zip(["weight_ih", "weight_hh", "bias_ih", "bias_hh"],
                               from_tf_basic_lstm(kernel, bias, I, forget_bias)):
            getattr(converted, name).copy_(value)
    x, state = torch.randn(6, 2, I, dtype=torch.float64), (torch.randn(2, H, dtype=torch.float64),) * 2
    h_tf, c_tf = unroll(lambda x_t, hc: tf_basic_lstm_step(x_t, *hc, kernel, bias, forget_bias), x, state)
    h_ours, c_ours = unroll(converted, x, state)
    torch.testing.assert_close(h_ours, h_tf, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_ours, c_tf, atol=1e-12, rtol=0)


def test_tensorflow_conversion_with_the_gate_order_left_alone_is_wrong():
    # the test above would catch a conversion that keeps TF's i, j, f, o order: check it can fail
    I, H = 2, 3
    kernel, bias = torch.randn(I + H, 4 * H, dtype=torch.float64), torch.randn(4 * H, dtype=torch.float64)
    cell = LSTMCell(I, H).double()
    with torch.no_grad():
        cell.weight_ih.copy_(kernel.T[:, :I]); cell.weight_hh.copy_(kernel.T[:, I:])
        cell.bias_ih.copy_(bias); cell.bias_hh.zero_()
    x, state = torch.randn(4, 2, I, dtype=torch.float64), (torch.zeros(2, H, dtype=torch.float64),) * 2
    h_tf, _ = unroll(lambda x_t, hc: tf_basic_lstm_step(x_t, *hc, kernel, bias), x, state)
    assert (unroll(cell, x, state)[0] - h_tf).abs().max() > 1e-3


def test_tensorflow_kernel_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"kernel must be \(input_size \+ H, 4H\)"):
        from_tf_basic_lstm(torch.randn(5, 8), torch.randn(8), input_size=4)
