"""Chapter 7's tools: the timing helper's synchronisation, recompilation counts, packing, throughput steps."""
import json

import pytest
import torch
from torch import nn

from lstm_lab import LSTM, cli
from lstm_lab.book.plots import plot_packed_layout
from lstm_lab.config import ModelConfig, TrainConfig
from lstm_lab.data.corpus import batchify, bptt_windows
from lstm_lab.experiments.compiling import count_compilations, window_lengths
from lstm_lab.experiments.ladder import layer_inputs
from lstm_lab.experiments.packing import forward_backward_candidates, last_states_alone, padded_batch, run_packed
from lstm_lab.experiments.throughput import build_variants, make_step, measure
from lstm_lab.experiments.timing import cuda_event_ms, time_call
from lstm_lab.lstm import lstm_layer
from lstm_lab.model import LanguageModel

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_time_call_synchronises_before_and_after_the_call():
    calls = []
    time_call(lambda: calls.append("fn"), "cuda:3", sync=lambda device: calls.append(("sync", device)))
    assert calls == [("sync", "cuda:3"), "fn", ("sync", "cuda:3")]


@cuda
def test_time_call_waits_for_the_gpu():
    a = torch.randn(4096, 4096, device="cuda")
    work = lambda: [a @ a for _ in range(20)]  # noqa: E731
    work()
    torch.cuda.synchronize()
    synced = time_call(work, "cuda")
    unsynced = time_call(work, "cuda", sync=lambda device: None)
    torch.cuda.synchronize()
    assert synced > 2 * unsynced  # the unsynchronised timer saw only the launches
    assert cuda_event_ms(work, warmup=1, repeats=3) > 0.5 * synced * 1e3


def test_a_loop_over_time_compiles_once_per_sequence_length():
    assert count_compilations(lstm_layer, [5, 5, 2, 5, 2, 7], layer_inputs()) == [1, 1, 2, 2, 2, 3]


@pytest.mark.parametrize("make", [lambda: nn.LSTM(3, 4), lambda: LSTM(3, 4)])
def test_lstm_modules_are_not_traced_by_torch_compile(make):
    assert count_compilations(make(), [5, 2, 7]) == [0, 0, 0]


MARKED_DYNAMIC = "(specialized it|was inferred) to be a constant"  # torch 2.11 on | torch 2.4 (chapter 7's cell)


def test_marking_time_dynamic_names_the_specialisation():
    from torch.fx.experimental.symbolic_shapes import ConstraintViolationError
    with pytest.raises(ConstraintViolationError, match=MARKED_DYNAMIC):
        count_compilations(lstm_layer, [5, 2], layer_inputs(), mark_dynamic=True)


@pytest.mark.parametrize("tokens, batch_size, seq_len", [(1000, 4, 35), (4 * 71, 4, 35), (97, 3, 5)])
def test_window_lengths_counts_what_bptt_windows_yields(tokens, batch_size, seq_len):
    source = batchify(torch.arange(tokens), batch_size)
    counted = {}
    for inputs, _ in bptt_windows(source, seq_len):
        counted[inputs.shape[0]] = counted.get(inputs.shape[0], 0) + 1
    assert window_lengths(tokens, batch_size, seq_len) == counted


def test_padded_batch_zeroes_the_padding_and_keeps_the_order():
    x, lengths = padded_batch([2, 5, 1], input_size=3)
    assert x.shape == (5, 3, 3) and lengths.tolist() == [2, 5, 1]
    assert (x[2:, 0] == 0).all() and (x[1:, 2] == 0).all() and (x[:, 1] != 0).all()


@pytest.mark.parametrize("lengths", [[], [3, 0], [[1, 2]]])
def test_padded_batch_rejects_lengths_that_are_not_positive_integers(lengths):
    with pytest.raises(ValueError, match="lengths must be a non-empty list of positive integers"):
        padded_batch(lengths, 3)


@pytest.mark.parametrize("make", [lambda: nn.LSTM(3, 5, num_layers=2), lambda: LSTM(3, 5, num_layers=2)])
def test_packed_h_n_is_each_sequence_alone_and_padded_h_n_is_not(make):
    torch.manual_seed(0)
    lstm = make().double()
    x, lengths = padded_batch([4, 1, 6, 2], 3, dtype=torch.float64)
    alone = last_states_alone(lstm, x, lengths)
    output, (h_n, _) = run_packed(lstm, x, lengths)
    torch.testing.assert_close(h_n, alone, rtol=0, atol=1e-12)
    assert output.shape == (6, 4, 5) and (output[1:, 1] == 0).all()  # padded back with zeros
    padded_h_n = lstm(x)[1][0]
    torch.testing.assert_close(padded_h_n[:, 2], alone[:, 2])  # the longest read no padding
    assert (padded_h_n[:, 1] - alone[:, 1]).abs().max() > 1e-3  # the others read it


def test_padded_and_packed_steps_compute_the_same_gradients():
    torch.manual_seed(0)
    lstm = LSTM(3, 5).double()
    x, lengths = padded_batch([4, 1, 6], 3, dtype=torch.float64)
    grads = {}
    for name, step in forward_backward_candidates(lstm, x, lengths).items():
        step()
        grads[name] = [p.grad.clone() for p in lstm.parameters()]
    for padded, packed in zip(grads["padded"], grads["packed"]):
        torch.testing.assert_close(padded, packed, rtol=1e-10, atol=1e-12)
    assert any(g.abs().max() > 0 for g in grads["packed"])


def test_packed_layout_draws_every_step_twice():
    fig = plot_packed_layout((3, 1, 2))
    left, right = fig.axes
    assert len(left.patches) == len(right.patches) == 6
    assert [t.get_text() for t in right.texts if len(t.get_text()) == 2] == ["a0", "c0", "b0", "a1", "c1", "a2"]


@pytest.mark.parametrize("amp", [None, "bfloat16", "float16"])
def test_a_throughput_step_trains_its_model(amp):
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=50, embed_size=8, hidden_size=8))
    tokens = torch.randint(50, (6, 3))
    step = make_step(model, TrainConfig(), tokens[:-1], tokens[1:], model.init_state(3), amp)
    before = [p.detach().clone() for p in model.parameters()]
    step()
    assert all(not torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_throughput_variants_that_need_a_gpu_are_left_out_on_a_cpu():
    steps, words = build_variants("zaremba-small", torch.device("cpu"), ["nn.LSTM", "CUDA graph"])
    assert list(steps) == ["nn.LSTM"] and words == 20 * 20


def test_throughput_rows_are_words_per_second_against_nn_lstm():
    rows = measure(["zaremba-small"], torch.device("cpu"), ["nn.LSTM", "lstm_lab.LSTM"], repeats=1, warmup=1)
    rows = rows["zaremba-small"]
    assert rows["nn.LSTM"]["ratio"] == 1.0
    for row in rows.values():
        assert row["words_per_second"] == pytest.approx(400 / row["median_ms"] * 1e3)


def test_the_throughput_command_writes_results_with_provenance(tmp_path, capsys):
    out = tmp_path / "throughput.json"
    argv = ["throughput", "--device", "cpu", "--sizes", "zaremba-small", "--repeats", "1",
            "--json", str(out)]
    assert cli.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["provenance"]["command"] == "python -m lstm_lab " + " ".join(argv)
    assert record["provenance"]["tf32"] is False
    assert set(record["results"]["zaremba-small"]) == {"nn.LSTM", "lstm_lab.LSTM", "nn.LSTM, AMP"}
    assert "words/s" in capsys.readouterr().out


def test_the_throughput_command_rejects_a_repeat_count_below_one(capsys, monkeypatch):
    monkeypatch.setattr("lstm_lab.experiments.throughput.measure", lambda *args: pytest.fail("measured"))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["throughput", "--repeats", "0"])
    assert exit_info.value.code == 2
    assert "argument --repeats: expected an integer from 1 to 1000, got 0" in capsys.readouterr().err
