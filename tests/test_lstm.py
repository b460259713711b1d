"""lstm_lab.LSTM against torch.nn.LSTM: state dicts, outputs, states, gradients, dropout, errors."""
import pytest
import torch
from torch import nn

from lstm_lab import LSTM

CASES = [  # (seq_len, batch_size, input_size, hidden_size, num_layers, batch_first)
    (1, 1, 1, 1, 1, False),
    (1, 3, 4, 5, 2, True),
    (6, 1, 3, 1, 3, False),
    (5, 4, 2, 6, 3, True),
    (9, 2, 7, 3, 2, False),
    (12, 8, 16, 20, 1, True),
]
TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}


def twin_lstms(input_size, hidden_size, num_layers, batch_first, dtype, bias=True):
    """An nn.LSTM and an lstm_lab.LSTM with the same weights (loaded strictly from nn.LSTM's state dict)."""
    ref = nn.LSTM(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first).to(dtype)
    lab = LSTM(input_size, hidden_size, num_layers, bias=bias, batch_first=batch_first).to(dtype)
    lab.load_state_dict(ref.state_dict(), strict=True)
    return ref, lab


def forward_backward(lstm, x, state):
    """Outputs, final states and the gradients of every parameter, the input and the initial state."""
    x, h0, c0 = (t.detach().clone().requires_grad_() for t in (x, *state))
    out, (h_n, c_n) = lstm(x, (h0, c0))
    gen = torch.Generator().manual_seed(1)
    loss = sum((t * torch.randn(t.shape, generator=gen, dtype=t.dtype)).sum() for t in (out, h_n, c_n))
    loss.backward()
    grads = {name: p.grad for name, p in lstm.named_parameters()}
    grads.update(x=x.grad, h0=h0.grad, c0=c0.grad)
    return [t.detach() for t in (out, h_n, c_n)], grads


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("seq_len,batch_size,input_size,hidden_size,num_layers,batch_first", CASES)
def test_lstm_matches_torch(dtype, seq_len, batch_size, input_size, hidden_size, num_layers, batch_first):
    ref, lab = twin_lstms(input_size, hidden_size, num_layers, batch_first, dtype)
    x_shape = (batch_size, seq_len, input_size) if batch_first else (seq_len, batch_size, input_size)
    x = torch.randn(x_shape, dtype=dtype)
    state = torch.randn(2, num_layers, batch_size, hidden_size, dtype=dtype)
    outs_ref, grads_ref = forward_backward(ref, x, state)
    outs_lab, grads_lab = forward_backward(lab, x, state)
    tol = TOLERANCE[dtype]
    for name, a, b in zip(("output", "h_n", "c_n"), outs_lab, outs_ref):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=tol, rtol=0, msg=name)
    assert grads_lab.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_lab[name], grads_ref[name], atol=tol, rtol=0, msg=name)


def test_state_dict_keys_and_shapes_match_torch_both_ways():
    ref, lab = nn.LSTM(3, 4, num_layers=3), LSTM(3, 4, num_layers=3)
    assert {k: v.shape for k, v in lab.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(lab.state_dict(), strict=True)  # and the other way round


def test_no_bias_and_default_zero_state():
    ref, lab = twin_lstms(3, 4, 2, False, torch.float64, bias=False)
    assert not any("bias" in name for name, _ in lab.named_parameters())
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    (out_ref, (h_ref, _)), (out_lab, (h_lab, _)) = ref(x), lab(x)
    torch.testing.assert_close(out_lab, out_ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(h_lab, h_ref, atol=1e-12, rtol=0)


def test_h_n_is_never_batch_first():
    lab = LSTM(3, 4, num_layers=2, batch_first=True)
    out, (h_n, c_n) = lab(torch.randn(5, 7, 3))  # batch 5, seq_len 7
    assert out.shape == (5, 7, 4)
    assert h_n.shape == c_n.shape == (2, 5, 4)
    torch.testing.assert_close(out[:, -1], h_n[-1])  # the last output is the top layer's final h


def test_unbatched_input_like_torch():
    ref, lab = twin_lstms(3, 4, 2, False, torch.float64)
    x, state = torch.randn(6, 3, dtype=torch.float64), torch.randn(2, 2, 4, dtype=torch.float64)
    (out_ref, (h_ref, c_ref)), (out_lab, (h_lab, c_lab)) = ref(x, tuple(state)), lab(x, tuple(state))
    assert out_lab.shape == (6, 4) and h_lab.shape == (2, 4)
    for a, b in ((out_lab, out_ref), (h_lab, h_ref), (c_lab, c_ref)):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def test_dropout_only_between_layers():
    lab = LSTM(3, 4, num_layers=2, dropout=1.0).double()  # p = 1: layer 2 sees only zeros
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, (h_n, _) = lab.train()(x)
    top_alone = LSTM(4, 4).double()
    top_alone.load_state_dict({k.replace("_l1", "_l0"): v for k, v in lab.state_dict().items() if "_l1" in k})
    expected, _ = top_alone(torch.zeros(5, 2, 4, dtype=torch.float64))
    torch.testing.assert_close(out, expected, atol=1e-12, rtol=0)  # no dropout on the top layer's output
    assert out.abs().min() > 0
    out_eval, _ = lab.eval()(x)  # eval mode: dropout off, so layer 2 sees layer 1's real output
    assert not torch.allclose(out_eval, out)


def test_dropout_with_one_layer_warns_like_torch():
    with pytest.warns(UserWarning, match="num_layers=1"):
        LSTM(3, 4, num_layers=1, dropout=0.5)
    with pytest.raises(ValueError, match=r"dropout should be a number in range \[0, 1\]"):
        LSTM(3, 4, num_layers=2, dropout=1.5)


def test_lstm_rejects_bad_input_with_a_clear_message():
    lab = LSTM(3, 4, num_layers=2)
    with pytest.raises(ValueError, match=r"3-D \(seq_len, batch_size, input_size\).*got 4-D"):
        lab(torch.randn(5, 2, 3, 1))
    with pytest.raises(ValueError, match=r"input_size=3.*got shape \(5, 2, 6\)"):
        lab(torch.randn(5, 2, 6))
    with pytest.raises(ValueError, match=r"h_0 must have shape \(2, 2, 4\).*never batch-first.*got \(2, 4\)"):
        lab(torch.randn(5, 2, 3), (torch.randn(2, 4), torch.randn(2, 4)))
    with pytest.raises(ValueError, match=r"c_0 must have shape \(2, 2, 4\).*got \(1, 2, 4\)"):
        lab(torch.randn(5, 2, 3), (torch.randn(2, 2, 4), torch.randn(1, 2, 4)))
    with pytest.raises(ValueError, match=r"h_0 has dtype torch.float64, expected torch.float32 to match the input"):
        lab(torch.randn(5, 2, 3), (torch.randn(2, 2, 4, dtype=torch.float64), torch.randn(2, 2, 4)))
    with pytest.raises(ValueError, match=r"input is on meta, expected cpu to match the LSTM's weights"):
        lab(torch.randn(5, 2, 3, device="meta"))
    with pytest.raises(ValueError, match=r"no time steps"):
        lab(torch.randn(0, 2, 3))
    batch_first = LSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match=r"3-D \(batch_size, seq_len, input_size\)"):
        batch_first(torch.randn(3))
