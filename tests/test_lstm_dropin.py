"""lstm_lab.LSTM and LSTMCell as drop-ins that real nn.LSTM scripts accept, each option against torch.nn.

flatten_parameters, bidirectional, PackedSequence (sorted and not), device= and dtype=, dropout's type,
and the output dtypes under torch.autocast.  Outputs and every gradient (input, h_0, c_0, each parameter)
are compared with nn.LSTM to 1e-10 in float64 and 1e-5 in float32.
"""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from lstm_lab import LSTM, LSTMCell

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5}
SEQ_LEN, BATCH_SIZE, INPUT_SIZE, HIDDEN_SIZE = 6, 5, 3, 4
LENGTHS = [3, 6, 1, 4, 1]  # unsorted, with two length-1 sequences; the longest fills SEQ_LEN
CASES = [  # (num_layers, bidirectional, batch_first, input, hx given)
    (1, True, False, "tensor", True),
    (1, True, False, "tensor", False),
    (3, True, False, "tensor", True),
    (3, True, True, "tensor", True),
    (3, True, True, "tensor", False),
    (2, True, False, "unbatched", True),
    (2, True, True, "unbatched", False),
    (1, False, False, "packed", True),
    (2, False, False, "packed", False),
    (3, False, True, "packed", True),
    (1, True, False, "packed", True),
    (1, True, False, "packed", False),
    (3, True, False, "packed", True),
    (3, True, True, "packed", False),
    (2, True, False, "packed sorted", True),
]
cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def twin_lstms(num_layers, dtype=torch.float64, device="cpu", bidirectional=False, **kwargs):
    """An nn.LSTM and an lstm_lab.LSTM with the same weights (loaded strictly from nn.LSTM's state dict).

    bidirectional is passed on only when True, so a unidirectional test checks one option at a time."""
    if bidirectional:
        kwargs["bidirectional"] = True
    ref = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, **kwargs).to(device, dtype)
    lab = LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, **kwargs).to(device, dtype)
    lab.load_state_dict(ref.state_dict(), strict=True)
    return ref, lab


def make_input(lstm, kind, dtype=torch.float64, device="cpu"):
    """A random input x, padded (T, B, I) or (B, T, I) as the LSTM reads it, or unbatched (T, I); and
    random (h_0, c_0) of nn.LSTM's shape: (num_layers * D, B, H), or (num_layers * D, H) if unbatched."""
    layers = lstm.num_layers * (2 if lstm.bidirectional else 1)
    if kind == "unbatched":
        x, state_shape = torch.randn(SEQ_LEN, INPUT_SIZE), (2, layers, HIDDEN_SIZE)
    else:
        x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE)
        x = x.transpose(0, 1).contiguous() if lstm.batch_first else x
        state_shape = (2, layers, BATCH_SIZE, HIDDEN_SIZE)
    return x.to(device, dtype), tuple(torch.randn(state_shape).to(device, dtype))


def pack(x, kind, batch_first):
    """x itself, or x packed with LENGTHS (sorted first for "packed sorted", so enforce_sorted holds)."""
    if kind == "packed":
        return pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False)
    if kind == "packed sorted":
        return pack_padded_sequence(x, sorted(LENGTHS, reverse=True), batch_first=batch_first)
    return x


def forward_backward(lstm, x, state, kind):
    """Outputs (output or its packed data, h_n, c_n), packing metadata, and the gradients of every
    parameter, the padded input and the initial state, through a fixed random projection of the outputs."""
    x = x.detach().clone().requires_grad_()
    state = None if state is None else tuple(s.detach().clone().requires_grad_() for s in state)
    output, (h_n, c_n) = lstm(pack(x, kind, lstm.batch_first), state)
    meta = None
    if isinstance(output, PackedSequence):
        meta = (output.batch_sizes, output.sorted_indices, output.unsorted_indices)
        output = output.data
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device) for t in (output, h_n, c_n)]
    sum((t * w).sum() for t, w in zip((output, h_n, c_n), weights)).backward()
    grads = {name: p.grad for name, p in lstm.named_parameters()}
    grads["input"] = x.grad
    if state is not None:
        grads.update(h_0=state[0].grad, c_0=state[1].grad)
    return [t.detach() for t in (output, h_n, c_n)], meta, grads


def assert_same_as_nn_lstm(ref, lab, x, state, kind, tol):
    outs_ref, meta_ref, grads_ref = forward_backward(ref, x, state, kind)
    outs_lab, meta_lab, grads_lab = forward_backward(lab, x, state, kind)
    for name, a, b in zip(("output", "h_n", "c_n"), outs_lab, outs_ref):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, atol=tol, rtol=0, msg=name)
    if meta_ref is not None:
        for name, a, b in zip(("batch_sizes", "sorted_indices", "unsorted_indices"), meta_lab, meta_ref):
            assert (a is None and b is None) or torch.equal(a, b), name
    assert grads_lab.keys() == grads_ref.keys()
    for name in grads_ref:
        torch.testing.assert_close(grads_lab[name], grads_ref[name], atol=tol, rtol=0, msg=f"gradient of {name}")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,kind,with_hx", CASES)
def test_matches_nn_lstm_outputs_and_all_gradients(dtype, num_layers, bidirectional, batch_first, kind, with_hx):
    ref, lab = twin_lstms(num_layers, dtype, bidirectional=bidirectional, batch_first=batch_first)
    x, state = make_input(ref, kind, dtype)
    assert_same_as_nn_lstm(ref, lab, x, state if with_hx else None, kind, TOLERANCE[dtype])


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda_only)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_flatten_parameters_is_nn_lstms_and_forward_reads_the_flattened_weights(bidirectional, device):
    """flatten_parameters is nn.LSTM's own (scripts call it, many at every forward): on a GPU it moves the weights
    into one cuDNN buffer; the readable forward reads the parameters themselves, so its outputs do not change."""
    ref, lab = twin_lstms(2, bidirectional=bidirectional, device=device)
    assert LSTM.flatten_parameters is nn.LSTM.flatten_parameters
    before = {name: p.detach().clone() for name, p in lab.named_parameters()}
    assert lab.flatten_parameters() is None
    for name, p in lab.named_parameters():
        assert torch.equal(p, before[name]), name
    x, state = make_input(ref, "tensor", device=device)
    assert_same_as_nn_lstm(ref, lab, x, state, "tensor", 1e-10)


def test_bidirectional_parameters_have_nn_lstm_names_shapes_and_order_both_ways():
    ref, lab = nn.LSTM(3, 4, num_layers=3, bidirectional=True), LSTM(3, 4, num_layers=3, bidirectional=True)
    assert [(n, p.shape) for n, p in lab.named_parameters()] == [(n, p.shape) for n, p in ref.named_parameters()]
    assert lab.weight_ih_l1_reverse.shape == (16, 8)  # layer 1 reads both directions of layer 0
    lab.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(lab.state_dict(), strict=True)  # and the other way round
    positional = LSTM(3, 4, 2, True, False, 0.0, True)  # bidirectional is nn.LSTM's 7th argument
    assert positional.bidirectional and "weight_hh_l1_reverse" in positional.state_dict()
    bound = 1 / math.sqrt(4)
    for name, p in LSTM(3, 4, num_layers=3, bidirectional=True).named_parameters():  # initialised as nn.LSTM
        assert 0.5 * bound < p.abs().max() <= bound, name


def test_bidirectional_state_layout():
    lab = LSTM(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(7, 2, 3, dtype=torch.float64)
    output, (h_n, c_n) = lab(x)
    assert output.shape == (7, 2, 8) and h_n.shape == c_n.shape == (4, 2, 4)
    # rows of h_n: layer 0 forward, layer 0 reverse, layer 1 forward, layer 1 reverse
    torch.testing.assert_close(h_n[2], output[-1, :, :4], atol=0, rtol=0)  # forward ends at the last step
    torch.testing.assert_close(h_n[3], output[0, :, 4:], atol=0, rtol=0)  # reverse ends at step 0


def test_packed_final_state_is_each_sequences_state_at_its_own_last_step():
    lab = LSTM(3, 4, num_layers=2, bidirectional=True).double()
    x = torch.randn(SEQ_LEN, BATCH_SIZE, 3, dtype=torch.float64)
    output, (h_n, c_n) = lab(pack_padded_sequence(x, LENGTHS, enforce_sorted=False))
    padded, lengths = pad_packed_sequence(output)
    assert lengths.tolist() == LENGTHS
    for b, length in enumerate(LENGTHS):  # each sequence alone, with no padding, gives the same numbers
        alone, (h_alone, c_alone) = lab(x[:length, b])
        torch.testing.assert_close(padded[:length, b], alone, atol=1e-12, rtol=0)
        torch.testing.assert_close(h_n[:, b], h_alone, atol=1e-12, rtol=0)
        torch.testing.assert_close(c_n[:, b], c_alone, atol=1e-12, rtol=0)
        assert not padded[length:, b].any()


@pytest.mark.parametrize("kind", ["tensor", "packed"])
def test_bidirectional_dropout_only_between_layers(kind):
    lab = LSTM(3, 4, num_layers=2, dropout=1.0, bidirectional=True).double()  # p = 1: layer 2 sees zeros
    x = torch.randn(SEQ_LEN, BATCH_SIZE, 3, dtype=torch.float64)
    output, (h_n, _) = lab.train()(pack(x, kind, False))
    top_alone = LSTM(8, 4, bidirectional=True).double()  # layer 1 of lab on its own
    top_alone.load_state_dict({k.replace("_l1", "_l0"): v for k, v in lab.state_dict().items() if "_l1" in k})
    expected, (h_top, _) = top_alone(pack(torch.zeros(SEQ_LEN, BATCH_SIZE, 8, dtype=torch.float64), kind, False))
    data = (lambda o: o.data) if kind == "packed" else (lambda o: o)
    torch.testing.assert_close(data(output), data(expected), atol=1e-12, rtol=0)  # no dropout on the top output
    torch.testing.assert_close(h_n[2:], h_top, atol=1e-12, rtol=0)
    output_eval, _ = lab.eval()(pack(x, kind, False))  # eval mode: layer 2 reads layer 1's real output
    assert not torch.allclose(data(output_eval), data(output))


@pytest.mark.parametrize("kind", ["tensor", "packed"])
def test_dropout_draws_the_same_masks_as_nn_lstm(kind):
    ref, lab = twin_lstms(3, bidirectional=True, dropout=0.5)
    x, state = make_input(ref, "tensor")
    results = []
    for lstm in (ref.train(), lab.train()):
        torch.manual_seed(5)
        output, (h_n, c_n) = lstm(pack(x, kind, False), state)
        results.append([output.data if kind == "packed" else output, h_n, c_n])
    for a, b in zip(*results):
        torch.testing.assert_close(b, a, atol=1e-10, rtol=0)


@pytest.mark.parametrize("device", ["cpu", "meta"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
@pytest.mark.parametrize("module", ["LSTMCell", "LSTM", "bidirectional LSTM"])
def test_device_and_dtype_arguments_like_torch(module, device, dtype):
    def layout(module):
        return [(name, p.shape, p.device, p.dtype) for name, p in module.named_parameters()]
    kwargs = {"device": device, "dtype": dtype}
    if module == "LSTMCell":
        lab, ref = LSTMCell(3, 4, **kwargs), nn.LSTMCell(3, 4, **kwargs)
    else:
        if module == "bidirectional LSTM":
            kwargs["bidirectional"] = True
        lab, ref = LSTM(3, 4, 2, **kwargs), nn.LSTM(3, 4, 2, **kwargs)
    assert layout(lab) == layout(ref)


@pytest.mark.parametrize("dropout", [True, False, "0.5"])
def test_dropout_that_is_not_a_number_is_rejected_like_torch(dropout):
    with pytest.raises(ValueError) as torchs:
        nn.LSTM(3, 4, 2, dropout=dropout)
    with pytest.raises(ValueError) as ours:
        LSTM(3, 4, 2, dropout=dropout)
    assert str(ours.value) == str(torchs.value)  # nn.LSTM's own check: ours is its subclass


def test_integer_dropout_is_accepted_and_stored_as_a_float_like_torch():
    for dropout in (0, 1):
        lab, ref = LSTM(3, 4, 2, dropout=dropout), nn.LSTM(3, 4, 2, dropout=dropout)
        assert lab.dropout == ref.dropout and type(lab.dropout) is float


def test_new_options_reject_bad_input_with_a_clear_message():
    lab = LSTM(3, 4, num_layers=2, bidirectional=True)
    with pytest.raises(ValueError, match=r"h_0 must have shape \(4, 2, 4\) \(num_layers \* 2, batch_size, "
                                         r"hidden_size\).*got \(2, 2, 4\)"):
        lab(torch.randn(5, 2, 3), (torch.randn(2, 2, 4), torch.randn(2, 2, 4)))
    packed = pack_padded_sequence(torch.randn(5, 2, 6), [5, 2])
    with pytest.raises(ValueError, match=r"input_size=3.*got shape \(7, 6\)"):
        lab(packed)
    packed = pack_padded_sequence(torch.randn(5, 2, 3), [5, 2])
    with pytest.raises(ValueError, match=r"c_0 must have shape \(4, 2, 4\).*got \(4, 3, 4\)"):
        lab(packed, (torch.randn(4, 2, 4), torch.randn(4, 3, 4)))
    with pytest.raises(ValueError, match=r"proj_size must be 0, got 2"):
        LSTM(3, 4, proj_size=2)
    with pytest.raises(TypeError, match="torch.Tensor or a PackedSequence"):
        lab([[1.0, 2.0, 3.0]])


# torch.autocast.  nn.LSTM hands its recurrence to one fused kernel whose inputs autocast casts: on CPU
# oneDNN's (tensor input; bfloat16), on CUDA cuDNN's (tensor and packed input; float16).  On CPU a
# PackedSequence runs PyTorch's own loop instead, whose output and state stay float32.

def cpu_runs_nn_lstm_in_bfloat16():
    """Whether nn.LSTM runs at all under CPU autocast here: oneDNN fails on CPUs without bfloat16 support."""
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(1, 1)(torch.zeros(1, 1, 1))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cpu_returns_bfloat16_output_and_state(bidirectional):
    ref, lab = twin_lstms(2, torch.float32, bidirectional=bidirectional)
    x, state = make_input(ref, "tensor", torch.float32)
    for hx in (None, state):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, (h_n, c_n) = lab(x, hx)
        assert output.dtype == h_n.dtype == c_n.dtype == torch.bfloat16
        expected, (h_ref, c_ref) = ref(x, hx)  # the same LSTM in float32, outside autocast
        for a, b in ((output, expected), (h_n, h_ref), (c_n, c_ref)):
            torch.testing.assert_close(a.float(), b, atol=5e-2, rtol=0)
    output.float().sum().backward()  # gradients still reach the float32 weights, in float32
    assert lab.weight_hh_l1.grad.dtype == torch.float32 and lab.weight_hh_l1.grad.abs().sum() > 0


@pytest.mark.skipif(not cpu_runs_nn_lstm_in_bfloat16(),
                    reason="this CPU's oneDNN has no bfloat16 LSTM: nn.LSTM itself fails under CPU autocast")
@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cpu_dtypes_equal_nn_lstm(bidirectional):
    ref, lab = twin_lstms(2, torch.float32, bidirectional=bidirectional)
    x, state = make_input(ref, "tensor", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        results = [lstm(x, state) for lstm in (ref, lab)]
    (out_ref, (h_ref, c_ref)), (out_lab, (h_lab, c_lab)) = results
    assert (out_lab.dtype, h_lab.dtype, c_lab.dtype) == (out_ref.dtype, h_ref.dtype, c_ref.dtype)
    for a, b in ((out_lab, out_ref), (h_lab, h_ref), (c_lab, c_ref)):
        torch.testing.assert_close(a.float(), b.float(), atol=5e-2, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cpu_accepts_low_precision_input_like_nn_lstm(bidirectional):
    # e.g. the output of an nn.Linear under autocast, fed to an LSTM whose weights are float32
    ref, lab = twin_lstms(2, torch.float32, bidirectional=bidirectional)
    x = torch.randn(SEQ_LEN, BATCH_SIZE, INPUT_SIZE).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out_ref, (h_ref, c_ref)), (out_lab, (h_lab, c_lab)) = ref(x), lab(x)
    assert (out_lab.dtype, h_lab.dtype, c_lab.dtype) == (out_ref.dtype, h_ref.dtype, c_ref.dtype)
    torch.testing.assert_close(out_lab.float(), out_ref.float(), atol=5e-2, rtol=0)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cpu_packed_input_stays_float32_like_nn_lstm(bidirectional):
    ref, lab = twin_lstms(2, torch.float32, bidirectional=bidirectional)
    x, state = make_input(ref, "tensor", torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out_ref, (h_ref, c_ref)), (out_lab, (h_lab, c_lab)) = (lstm(pack(x, "packed", False), state)
                                                                for lstm in (ref, lab))
    assert (out_lab.data.dtype, h_lab.dtype, c_lab.dtype) == (out_ref.data.dtype, h_ref.dtype, c_ref.dtype)
    for a, b in ((out_lab.data, out_ref.data), (h_lab, h_ref), (c_lab, c_ref)):
        torch.testing.assert_close(a, b, atol=5e-2, rtol=0)


def test_autocast_never_casts_a_float64_lstm_like_nn_lstm():
    ref, lab = twin_lstms(2, torch.float64, bidirectional=True)
    x, state = make_input(ref, "tensor", torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (out_ref, (h_ref, _)), (out_lab, (h_lab, _)) = ref(x, state), lab(x, state)
    assert out_lab.dtype == h_lab.dtype == out_ref.dtype == h_ref.dtype == torch.float64
    torch.testing.assert_close(out_lab, out_ref, atol=1e-10, rtol=0)


def test_autocast_cpu_lstm_cell_stays_float32_like_nn_lstm_cell():
    ref = nn.LSTMCell(3, 4)
    cell = LSTMCell(3, 4)
    cell.load_state_dict(ref.state_dict())
    x, h, c = torch.randn(2, 3), torch.randn(2, 4), torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (h_ref, c_ref), (h_lab, c_lab) = ref(x, (h, c)), cell(x, (h, c))
    assert (h_lab.dtype, c_lab.dtype) == (h_ref.dtype, c_ref.dtype)
    torch.testing.assert_close(h_lab, h_ref, atol=5e-2, rtol=0)


@cuda_only
@pytest.mark.parametrize("kind", ["tensor", "packed"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_autocast_cuda_returns_float16_like_nn_lstm(kind, bidirectional):
    ref, lab = twin_lstms(2, torch.float32, "cuda", bidirectional=bidirectional)
    x, state = make_input(ref, "tensor", torch.float32, "cuda")
    with torch.autocast("cuda"):  # float16 by default
        (out_ref, (h_ref, c_ref)), (out_lab, (h_lab, c_lab)) = (lstm(pack(x, kind, False), state)
                                                                for lstm in (ref, lab))
    data = (lambda o: o.data) if kind == "packed" else (lambda o: o)
    assert (data(out_lab).dtype, h_lab.dtype, c_lab.dtype) == (data(out_ref).dtype, h_ref.dtype, c_ref.dtype)
    assert h_lab.dtype == torch.float16
    for a, b in ((data(out_lab), data(out_ref)), (h_lab, h_ref), (c_lab, c_ref)):
        torch.testing.assert_close(a.float(), b.float(), atol=1e-2, rtol=0)
    data(out_lab).float().sum().backward()
    assert lab.weight_hh_l1.grad.dtype == torch.float32


@cuda_only
def test_autocast_cuda_lstm_cell_returns_float16_like_nn_lstm_cell():
    ref = nn.LSTMCell(3, 4, device="cuda")
    cell = LSTMCell(3, 4, device="cuda")
    cell.load_state_dict(ref.state_dict())
    x, h, c = (torch.randn(2, n, device="cuda") for n in (3, 4, 4))
    with torch.autocast("cuda"):
        (h_ref, c_ref), (h_lab, c_lab) = ref(x, (h, c)), cell(x.half(), (h, c))  # mixed dtypes are fine
    assert (h_lab.dtype, c_lab.dtype) == (h_ref.dtype, c_ref.dtype) == (torch.float16, torch.float16)
    torch.testing.assert_close(h_lab.float(), h_ref.float(), atol=1e-2, rtol=0)


@cuda_only
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,kind,with_hx", CASES)
def test_matches_nn_lstm_on_cuda_in_float64(num_layers, bidirectional, batch_first, kind, with_hx):
    ref = nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  device="cuda", dtype=torch.float64)
    lab = LSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers, bidirectional=bidirectional, batch_first=batch_first,
               device="cuda", dtype=torch.float64)
    lab.load_state_dict(ref.state_dict(), strict=True)
    x, state = make_input(ref, kind, torch.float64, "cuda")
    assert_same_as_nn_lstm(ref, lab, x, state if with_hx else None, kind, 1e-10)
