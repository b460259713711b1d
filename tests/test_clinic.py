"""The error clinic (chapter 4): each error is raised exactly as the chapter shows it, each fix runs clean."""
import pytest
import torch
from torch import nn

from lstm_lab.config import ModelConfig
from lstm_lab.data.corpus import batchify
from lstm_lab.experiments.clinic import (SavedTensorMeter, StudentLM, anomaly_trace, batch_first_report,
                                         preallocated_layer, run_windows, train_lm, two_layer_lstm,
                                         unregistered_tensors)
from lstm_lab.experiments.ladder import assert_same_as_nn_lstm, lstm_weights
from lstm_lab.lstm import lstm_layer
from lstm_lab.model import LanguageModel

VOCAB = 20


@pytest.fixture
def source():
    return batchify(torch.randint(VOCAB, (2000,), generator=torch.Generator().manual_seed(0)), 4)  # (500, 4)


@pytest.fixture
def model():
    return LanguageModel(ModelConfig(vocab_size=VOCAB, embed_size=8, hidden_size=12, num_layers=1, rnn="torch"))


def test_carrying_the_state_raises_backward_twice(model, source):
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        run_windows(model, source, seq_len=5, windows=2, state_fix="none")


def test_retain_graph_then_an_optimizer_step_raises_inplace(model, source):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        run_windows(model, source, seq_len=5, windows=2, state_fix="retain_graph", optimizer=optimizer)


def test_detaching_trains_without_error(model, source):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = run_windows(model, source, seq_len=5, windows=4, state_fix="detach", optimizer=optimizer)
    assert [r["window"] for r in rows] == [0, 1, 2, 3] and rows[0]["saved_mb"] is None


def test_retain_graph_memory_grows_while_detach_stays_flat(model, source):
    retained = run_windows(model, source, 5, 12, "retain_graph", meter=SavedTensorMeter())
    detached = run_windows(model, source, 5, 12, "detach", meter=SavedTensorMeter())
    assert detached[-1]["saved_mb"] == pytest.approx(detached[1]["saved_mb"])
    assert retained[-1]["saved_mb"] > 5 * retained[0]["saved_mb"]
    assert [r["loss"] for r in retained] == pytest.approx([r["loss"] for r in detached])  # same forward values


def test_the_graph_grows_by_one_window_per_window_unless_the_state_is_detached(model, source):
    retained = [r["graph_nodes"] for r in run_windows(model, source, 5, 4, "retain_graph")]
    detached = [r["graph_nodes"] for r in run_windows(model, source, 5, 4, "detach")]
    assert len(set(detached[1:])) == 1  # window 0 starts from no state; every later window is the same size
    growth = [b - a for a, b in zip(retained, retained[1:])]
    assert retained[0] == detached[0] and growth[0] > 0 and len(set(growth[1:])) == 1


def test_meter_counts_saved_tensors_until_the_graph_is_freed():
    w = torch.randn(100, 100, requires_grad=True)
    with SavedTensorMeter() as meter:
        loss = (torch.randn(100, 100) @ w).tanh().sum()
        assert meter.live_bytes() >= 2 * 100 * 100 * 4  # the input of the matmul and the tanh output
        loss.backward()
        assert meter.live_bytes() == 0


def layer_problem():
    lstm = nn.LSTM(4, 5)
    x, h = torch.randn(3, 2, 4), torch.zeros(2, 5)
    return x, h, lstm_weights(lstm)[0]


def test_preallocated_outputs_raise_inplace():
    x, h, weights = layer_problem()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        preallocated_layer(x, h, h, *weights)[0].sum().backward()


def test_the_fix_is_lstm_layer():
    x, h, weights = layer_problem()
    lstm_layer(x, h, h, *weights)[0].sum().backward()
    assert weights[1].grad is not None


def test_anomaly_mode_points_at_the_matmul_that_saved_the_tensor():
    x, h, weights = layer_problem()
    error, trace = anomaly_trace(lambda: preallocated_layer(x, h, h, *weights)[0].sum().backward())
    assert "modified by an inplace operation" in str(error)
    assert any("in preallocated_layer" in line for line in trace)
    assert "F.linear(h_prev, weight_hh, bias_hh)" in trace[-1]


def test_raw_tensors_stay_behind_when_the_model_moves():
    model = StudentLM(VOCAB, 6, register=False).to("meta")
    with pytest.raises(RuntimeError, match="is not on the expected device"):
        model(torch.randint(VOCAB, (3, 2), device="meta"))


def test_registered_weights_move_with_the_model():
    logits, _ = StudentLM(VOCAB, 6, register=True).to("meta")(torch.randint(VOCAB, (3, 2), device="meta"))
    assert logits.device.type == "meta" and logits.shape == (3, 2, VOCAB)


def test_raw_tensors_created_on_the_device_run_there_but_stay_unregistered():
    model = StudentLM(VOCAB, 6, register=False, device="meta").to("meta")
    logits, _ = model(torch.randint(VOCAB, (3, 2), device="meta"))
    assert model.lstm.W_xi.device.type == "meta" and logits.shape == (3, 2, VOCAB)
    assert {t["name"] for t in unregistered_tensors(model)} >= {"lstm.W_xi", "lstm.W_hi", "lstm.b_i"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_raw_tensors_stay_behind_on_cuda():
    model = StudentLM(VOCAB, 6, register=False).to("cuda")
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        model(torch.randint(VOCAB, (3, 2), device="cuda"))


class Planted(nn.Module):
    """Tensors an optimizer would miss (planted), next to things that are fine."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(3, 4)  # registered, through a submodule
        self.scale = nn.Parameter(torch.ones(4))  # registered
        self.register_buffer("mask", torch.ones(4))  # a buffer: not trained on purpose
        self.alias = self.scale  # the same registered tensor under another name
        self.ids = torch.arange(4)  # integer: not a weight
        self.steps = 3
        self.raw = torch.randn(3, 4) * 0.01  # planted: the student's weight
        self.leaf = torch.zeros(4, requires_grad=True)  # planted: requires grad, not registered
        self.layers = [nn.Parameter(torch.randn(2, 2))]  # planted: a Parameter in a plain list
        self.gates = {"i": torch.randn(2)}  # planted: a tensor in a dict
        self.blocks = [nn.Linear(2, 2)]  # planted: a module in a plain list (not an nn.ModuleList)
        self.stack = nn.ModuleList([nn.Linear(2, 2)])  # registered


def test_unregistered_tensors_finds_the_planted_ones_and_nothing_else():
    found = unregistered_tensors(Planted())
    assert [f["name"] for f in found] == ["raw", "leaf", "layers[0]", "gates['i']", "blocks[0].weight",
                                          "blocks[0].bias"]
    assert [f["requires_grad"] for f in found] == [False, True, True, False, True, True]
    assert found[0]["shape"] == (3, 4)


def test_unregistered_tensors_in_the_student_model():
    assert unregistered_tensors(StudentLM(VOCAB, 6, register=True)) == []
    found = unregistered_tensors(StudentLM(VOCAB, 6, register=False))
    assert len(found) == 12 and found[0]["name"] == "lstm.W_xi"


def test_unregistered_weights_never_change(source):
    model = StudentLM(VOCAB, 6, register=False)
    raw_before = model.lstm.W_xi.clone()
    decoder_before = model.decoder.weight.detach().clone()
    losses = train_lm(model, source, seq_len=5, steps=5)
    assert len(losses) == 5
    assert torch.equal(model.lstm.W_xi, raw_before)
    assert not torch.equal(model.decoder.weight, decoder_before)


def test_registered_weights_train(source):
    model = StudentLM(VOCAB, 6, register=True)
    before = model.lstm.W_xi.detach().clone()
    train_lm(model, source, seq_len=5, steps=3)
    assert not torch.equal(model.lstm.W_xi, before)


SIZE = {"seq_len": 4, "batch_size": 3, "input_size": 5, "hidden_size": 6, "num_layers": 2}


def test_the_correct_two_layer_loop_equals_nn_lstm():
    assert_same_as_nn_lstm(two_layer_lstm, SIZE)


def test_the_two_layer_bug_fails_the_equivalence_test():
    with pytest.raises(AssertionError, match="not the same function as nn.LSTM: output differs by"):
        assert_same_as_nn_lstm(lambda *args: two_layer_lstm(*args, bug=True), SIZE)


def test_batch_first_report():
    plain, batch_first = batch_first_report(seq_len=4, batch_size=4)
    assert plain["output"] == (4, 4, 5) and plain["h_n"] == (2, 4, 5)
    assert batch_first["h_n"] == (2, 4, 5)  # never batch-first
    assert plain["output[-1] is last step"] and not plain["output[:, -1] is last step"]
    assert batch_first["output[:, -1] is last step"] and not batch_first["output[-1] is last step"]
