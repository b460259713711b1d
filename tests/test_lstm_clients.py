"""Small programs written for nn.LSTM and nn.LSTMCell, run unchanged with lstm_lab's classes swapped in.

Each program is the shape of real third-party code: a whole model saved and reloaded with weights_only=True, an
initialiser that picks modules with isinstance, the `_all_weights` bias idiom, a trace at one length run at
another, an ONNX export run by onnxruntime, torch.export, torch.fx, TorchScript, torch.compile, code that
catches nn.LSTM's exception types.  Each runs with the torch class and with ours, and the two must agree.
The differences that remain are decisions documented in `lstm_lab.LSTM`'s docstring and in chapter 3.

Before torch 2.11 two of these differ (seen on torch 2.4, the lowest torch lstm_lab supports; the README says so):
torch.export cannot record a model holding lstm_lab.LSTM (Dynamo steps into nn.LSTM.forward from our subclass and
stops at `_update_flat_weights`), and under the experimental allow_rnn switch Dynamo compiles ours differently
from nn.LSTM.  A third is torch's alone: a whole saved model holding nn.LSTM does not reload with weights_only=True
(builtins.set is not allowed).  Those three tests are skipped there, saying so.
"""
import io

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from lstm_lab import LSTM, LSTMCell
from lstm_lab.cells import LSTMInputError
from lstm_lab.experiments.compiling import compile_counting

LSTM_CLASSES = {"nn.LSTM": nn.LSTM, "lstm_lab.LSTM": LSTM}
BEFORE_2_11 = pytest.mark.skipif(torch.__version__ < (2, 11), reason=f"torch {torch.__version__}: Dynamo records "
                                 "lstm_lab.LSTM unlike nn.LSTM before torch 2.11 (this module's docstring)")
WHOLE_MODELS = pytest.mark.skipif(torch.__version__ < (2, 11), reason=f"torch {torch.__version__}: a whole nn.LSTM "
                                  "model does not load with weights_only=True either (builtins.set is not allowed)")
VOCAB, EMBED, HIDDEN, TAGS = 20, 6, 8, 5


class Tagger(nn.Module):
    """A sequence tagger as tutorials write it: embedding, a two-layer bidirectional LSTM, a linear layer."""

    def __init__(self, lstm_class):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, EMBED)
        self.lstm = lstm_class(EMBED, HIDDEN, 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * HIDDEN, TAGS)

    def forward(self, tokens):
        output, (h_n, c_n) = self.lstm(self.embed(tokens))
        return self.out(output)


class Encoder(nn.Module):
    """An encoder over packed sequences of different lengths: the last layer's final h of each sequence."""

    def __init__(self, lstm_class):
        super().__init__()
        self.lstm = lstm_class(EMBED, HIDDEN, 2)

    def forward(self, x, lengths):
        _, (h_n, _) = self.lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
        return h_n[-1]


class Forecaster(nn.Module):
    """A time-series model that steps an LSTMCell itself, one value per step."""

    def __init__(self, cell_class):
        super().__init__()
        self.cell = cell_class(1, HIDDEN)
        self.out = nn.Linear(HIDDEN, 1)

    def forward(self, series):  # (B, T)
        h = c = series.new_zeros(series.shape[0], self.cell.hidden_size)
        predictions = []
        for x_t in series.unbind(1):
            h, c = self.cell(x_t.unsqueeze(1), (h, c))
            predictions.append(self.out(h))
        return torch.cat(predictions, dim=1)


def twins(make, classes=LSTM_CLASSES):
    """{name: model} built by make(cls) from the same seed, so the torch and lstm_lab models start equal."""
    models = {}
    for name, cls in classes.items():
        torch.manual_seed(0)
        models[name] = make(cls).eval()
    return models


def tokens(T, batch_size=3):
    return torch.randint(VOCAB, (batch_size, T), generator=torch.Generator().manual_seed(T))


def test_the_classes_are_torchs_classes():
    assert isinstance(LSTM(3, 4), nn.LSTM) and isinstance(LSTM(3, 4), nn.RNNBase)
    assert isinstance(LSTMCell(3, 4), nn.LSTMCell) and isinstance(LSTMCell(3, 4), nn.RNNCellBase)
    for ours, theirs in [(LSTM(3, 4, 2, bidirectional=True), nn.LSTM(3, 4, 2, bidirectional=True)),
                         (LSTMCell(3, 4, bias=False), nn.LSTMCell(3, 4, bias=False))]:
        assert repr(ours) == repr(theirs)
    ours, theirs = LSTM(3, 4, 2), nn.LSTM(3, 4, 2)
    for attribute in ("mode", "_flat_weights_names", "_all_weights"):
        assert getattr(ours, attribute) == getattr(theirs, attribute), attribute
    assert [[w.shape for w in layer] for layer in ours.all_weights] == \
        [[w.shape for w in layer] for layer in theirs.all_weights]
    assert [w is p for w, p in zip(ours._flat_weights, ours.parameters())] == [True] * 8


@WHOLE_MODELS
def test_a_whole_saved_model_reloads_with_weights_only():
    """The reload scripts that allowlist their own classes and torch's; ours are registered on import."""
    for name, model in twins(Tagger).items():
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        with torch.serialization.safe_globals([Tagger, nn.Embedding, nn.Linear, nn.LSTM]):
            reloaded = torch.load(buffer, weights_only=True)
        assert type(reloaded.lstm) is type(model.lstm), name
        assert torch.equal(reloaded(tokens(7)), model(tokens(7))), name
    cell_model = twins(Forecaster, {"lstm_lab.LSTMCell": LSTMCell})["lstm_lab.LSTMCell"]
    buffer = io.BytesIO()
    torch.save(cell_model, buffer)
    buffer.seek(0)
    with torch.serialization.safe_globals([Forecaster, nn.Linear]):
        assert type(torch.load(buffer, weights_only=True).cell) is LSTMCell


def init_weights(model):
    """The initialiser of many language-model repositories: found by isinstance, orthogonal recurrent weights,
    and the forget-gate bias set to 1 through `_all_weights` (the rows n/4:n/2 of every bias)."""
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            for name, parameter in module.named_parameters():
                if "weight_hh" in name:
                    nn.init.orthogonal_(parameter)
            for names in module._all_weights:
                for name in filter(lambda n: "bias" in n, names):
                    bias = getattr(module, name)
                    n = bias.size(0)
                    bias.data[n // 4:n // 2].fill_(1.0)


def test_an_isinstance_initialiser_initialises_ours_as_torchs():
    models = twins(Tagger)
    for model in models.values():
        torch.manual_seed(1)
        init_weights(model)
    ours, theirs = models["lstm_lab.LSTM"], models["nn.LSTM"]
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
        assert torch.equal(p, q), name
    assert torch.equal(ours.lstm.bias_hh_l1[HIDDEN:2 * HIDDEN], torch.ones(HIDDEN))
    weight_hh = ours.lstm.weight_hh_l0.detach()  # (4H, H): orthonormal columns
    assert torch.allclose(weight_hh.T @ weight_hh, torch.eye(HIDDEN), atol=1e-5)


def test_a_model_traced_at_one_length_runs_at_another():
    for name, model in twins(Tagger).items():
        traced = torch.jit.trace(model, tokens(7))
        for T in (7, 13, 2):
            assert torch.allclose(traced(tokens(T)), model(tokens(T)), atol=1e-6), (name, T)
        assert len([n for n in traced.inlined_graph.nodes() if n.kind() == "aten::lstm"]) == 1, name


def onnx_export(model, example):
    buffer = io.BytesIO()
    torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["tokens"],
                      dynamic_axes={"tokens": {0: "batch", 1: "T"}})
    return buffer.getvalue()


def test_an_onnx_export_with_a_dynamic_length_runs_at_another_length():
    exported = {name: onnx_export(model, tokens(7)) for name, model in twins(Tagger).items()}
    graphs = {name: onnx.load_from_string(data).graph for name, data in exported.items()}
    assert [node.op_type for node in graphs["lstm_lab.LSTM"].node] == [node.op_type for node in graphs["nn.LSTM"].node]
    for name, data in exported.items():
        session = onnxruntime.InferenceSession(data)
        for T in (7, 19):
            expected = twins(Tagger)[name](tokens(T)).detach().numpy()
            got = session.run(None, {"tokens": tokens(T).numpy()})[0]
            assert np.abs(got - expected).max() < 1e-5, (name, T)


@BEFORE_2_11
def test_torch_export_saves_one_lstm_op_and_reloads():
    for name, model in twins(Tagger).items():
        program = torch.export.export(model, (tokens(7),))
        assert [str(n.target) for n in program.graph.nodes].count("aten.lstm.input") == 1, name
        buffer = io.BytesIO()
        torch.export.save(program, buffer)
        buffer.seek(0)
        reloaded = torch.export.load(buffer).module()
        assert torch.allclose(reloaded(tokens(7)), model(tokens(7)), atol=1e-6), name


def test_fx_records_one_node_and_the_traced_model_runs_at_any_length():
    for name, model in twins(Tagger).items():
        graph_module = torch.fx.symbolic_trace(model)
        assert [n.target for n in graph_module.graph.nodes if n.op == "call_module"] == ["embed", "lstm", "out"]
        for T in (7, 13):
            assert torch.equal(graph_module(tokens(T)), model(tokens(T))), (name, T)
    cell = LSTMCell(3, HIDDEN)
    one_step = nn.Sequential(nn.Linear(4, 3), cell)  # fx cannot loop over a traced length, for nn.LSTMCell either
    x = torch.randn(2, 4)
    graph_module = torch.fx.symbolic_trace(one_step)
    assert [n.op for n in graph_module.graph.nodes] == ["placeholder", "call_module", "call_module", "output"]
    assert all(torch.equal(a, b) for a, b in zip(graph_module(x), one_step(x)))


def test_fx_refuses_an_lstm_at_the_root_in_one_line():
    with pytest.raises(torch.fx.proxy.TraceError, match="can trace a model that holds a LSTM, not the LSTM itself"):
        torch.fx.symbolic_trace(LSTM(3, 4))


def test_torchscript_compiles_a_model_that_holds_ours():
    for name, model in twins(Tagger).items():
        expected = {T: model(tokens(T)) for T in (7, 13)}
        scripted = torch.jit.script(model)
        for T in (7, 13):
            assert torch.allclose(scripted(tokens(T)), expected[T], atol=1e-6), (name, T)
    classes = {"nn.LSTMCell": nn.LSTMCell, "lstm_lab.LSTMCell": LSTMCell}
    for name, model in twins(Forecaster, classes).items():
        series = torch.randn(2, 5)
        expected = model(series)
        assert torch.allclose(torch.jit.script(model)(series), expected, atol=1e-6), name


def test_to_nn_shares_the_parameters():
    ours = LSTM(3, 4, 2, bidirectional=True).train(False)
    twin = ours.to_nn()
    assert type(twin) is nn.LSTM and not twin.training
    assert all(p is q for p, q in zip(ours.parameters(), twin.parameters()))
    x = torch.randn(5, 2, 3)
    assert torch.allclose(twin(x)[0], ours(x)[0], atol=1e-6)
    cell = LSTMCell(3, 4)
    assert all(p is q for p, q in zip(cell.parameters(), cell.to_nn().parameters()))


def graph_counts(model, make_inputs, lengths):
    compiled, counter = compile_counting(model)
    counts = []
    for T in lengths:
        compiled(*make_inputs(T))
        counts.append(counter["graphs"])
    return counts


LENGTHS = [5, 7, 9, 11, 13, 15, 17, 19, 21, 23]  # more lengths than Dynamo's recompile limit of 8


def packed_inputs(T):
    return torch.randn(T, 3, EMBED), torch.tensor([T, 2, 3])


@pytest.mark.parametrize("allow_rnn", [False, pytest.param(True, marks=BEFORE_2_11)])
def test_torch_compile_makes_no_graph_per_length(allow_rnn):
    """By default Dynamo leaves LSTM modules out of its graphs, ours as nn.LSTM, and compiles no graph per length
    (before, ours compiled one per length up to the recompile limit).  With allow_rnn=True (experimental) it
    records nn.LSTM's one op for both, and recompiles exactly when it does for nn.LSTM."""
    with torch._dynamo.config.patch(allow_rnn=allow_rnn):
        counts = {name: (graph_counts(model, lambda T: (tokens(T),), LENGTHS),
                         graph_counts(twins(Encoder)[name], packed_inputs, LENGTHS))
                  for name, model in twins(Tagger).items()}
    assert counts["lstm_lab.LSTM"] == counts["nn.LSTM"]
    if not allow_rnn:
        assert counts["lstm_lab.LSTM"] == ([0] * len(LENGTHS), [0] * len(LENGTHS))


def bad_calls(model):
    """Calls nn.LSTM answers with an exception: {what: call}."""
    x = torch.randn(5, 3, EMBED)
    return {"wrong input size": lambda: model(torch.randn(5, 3, EMBED + 1)),
            "wrong batch in hx": lambda: model(x, (torch.zeros(2, 4, HIDDEN), torch.zeros(2, 4, HIDDEN))),
            "wrong hidden size in hx": lambda: model(x, (torch.zeros(2, 3, HIDDEN + 1),) * 2),
            "no time steps": lambda: model(torch.randn(0, 3, EMBED)),
            "hx not a pair": lambda: model(x, torch.zeros(2, 3, HIDDEN)),
            "float64 input": lambda: model(x.double()),
            "4-D input": lambda: model(x.unsqueeze(-1))}


def test_code_that_catches_torchs_exception_types_catches_ours():
    """Ours raise LSTMInputError, a ValueError and a RuntimeError, where nn.LSTM raises either."""
    torchs, ours = nn.LSTM(EMBED, HIDDEN, 2), LSTM(EMBED, HIDDEN, 2)
    for what, call in bad_calls(torchs).items():
        with pytest.raises(Exception) as expected:
            call()
        with pytest.raises(type(expected.value)) as got:
            bad_calls(ours)[what]()
        assert type(got.value) is LSTMInputError, what
        assert len(str(got.value).splitlines()) == 1, what


@pytest.mark.parametrize("arguments", [{"bias": 1}, {"batch_first": "yes"}, {"input_size": np.int64(3)},
                                       {"hidden_size": 0}, {"dropout": 1.5}, {"dropout": True}])
def test_the_constructor_refuses_what_torch_refuses_with_torchs_error(arguments):
    """Whatever this torch's nn.LSTM does with the arguments, LSTM does: the same error, or an LSTM."""
    arguments = {"input_size": 3, "hidden_size": 4, "num_layers": 2, **arguments}
    assert outcome(lambda: LSTM(**arguments)) == outcome(lambda: nn.LSTM(**arguments))
    if torch.__version__ >= (2, 11):  # recent torch refuses them all (torch 2.4 builds an LSTM from some, and so do we)
        assert outcome(lambda: nn.LSTM(**arguments)) is not None


def outcome(make):
    """None if make() returns, else the type and message of what it raised."""
    try:
        make()
    except Exception as error:
        return type(error), str(error)
    return None


def test_forward_takes_its_arguments_by_torchs_names():
    lstm, cell = LSTM(3, 4), LSTMCell(3, 4)
    x = torch.randn(5, 2, 3)
    assert torch.equal(lstm(input=x, hx=None)[0], lstm(x)[0])
    assert torch.equal(cell(input=x[0], hx=None)[0], cell(x[0])[0])


def test_quantize_dynamic_through_to_nn():
    """quantize_dynamic matches exact types, so it passes over ours (documented); to_nn() gives it an nn.LSTM with
    the same weights, which it quantizes as it would the torch model's."""
    models = twins(Tagger)
    quantized = {}
    for name, model in models.items():
        if name == "lstm_lab.LSTM":
            model.lstm = model.lstm.to_nn()
        quantized[name] = torch.ao.quantization.quantize_dynamic(model, {nn.LSTM, nn.Linear}, dtype=torch.qint8)
    assert type(quantized["lstm_lab.LSTM"].lstm) is torch.ao.nn.quantized.dynamic.LSTM
    assert torch.equal(quantized["lstm_lab.LSTM"](tokens(9)), quantized["nn.LSTM"](tokens(9)))
    assert "quantize_dynamic" in LSTM.__doc__ and "to_nn" in LSTM.__doc__
