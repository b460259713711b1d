"""Chapter 5: parameter counts of stacked LSTMs, the tied-layers model, report 003's stepped two-layer loop,
gradients through depth, and the depth study's configurations."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from lstm_lab.cli import build_parser, requested_configs
from lstm_lab.config import ModelConfig
from lstm_lab.experiments.clinic import SteppedTwoLayerLSTM
from lstm_lab.experiments.depth import (DEPTH_PRESET, DEPTH_RECORDED, DEPTH_SEEDS, DEPTH_STUDY, equal_parameter_hidden,
                                        language_model_parameters, lstm_parameters, result_name,
                                        tied_layers_parameters)
from lstm_lab.experiments.records import load_seeds
from lstm_lab.experiments.gradflow import gradient_norms_by_layer, layer_states
from lstm_lab.lstm import LSTM
from lstm_lab.model import TiedLayersLSTM
from lstm_lab.model import LanguageModel, count_parameters

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("input_size, hidden_size, num_layers", [(200, 200, 1), (200, 200, 2), (7, 5, 3), (3, 11, 4)])
def test_lstm_parameters_counts_what_nn_lstm_has(input_size, hidden_size, num_layers):
    lstm = nn.LSTM(input_size, hidden_size, num_layers)
    assert lstm_parameters(input_size, hidden_size, num_layers) == sum(p.numel() for p in lstm.parameters())


@pytest.mark.parametrize("num_layers", [1, 2, 3, 4])
def test_equal_parameter_hidden_is_the_closest_width(num_layers):
    budget = lstm_parameters(200, 200, 2)
    H = equal_parameter_hidden(200, num_layers, budget)
    misses = [abs(lstm_parameters(200, h, num_layers) - budget) for h in (H - 1, H, H + 1)]
    assert misses[1] == min(misses)
    assert equal_parameter_hidden(200, 2, budget) == 200


def test_the_study_has_the_parameter_counts_it_claims():
    budget = lstm_parameters(200, 200, 2)  # 643,200
    assert budget == 643_200
    by_name = {run.name: run for run in DEPTH_STUDY}
    assert len(by_name) == len(DEPTH_STUDY)  # names are unique: one results file per configuration and seed
    assert {by_name["L1-H313-d0"].hidden_size, by_name["L3-H160-d0"].hidden_size} == {313, 160}
    for run in DEPTH_STUDY:
        if run.sizing == "equal parameters":
            assert abs(lstm_parameters(200, run.hidden_size, run.num_layers) / budget - 1) < 0.005
        if run.sizing == "equal width":
            assert run.hidden_size == 200


@pytest.mark.parametrize("num_layers, hidden_size, tie_layers", [(1, 13, False), (2, 8, False), (3, 5, True)])
def test_language_model_parameters_count_the_whole_model_part_by_part(num_layers, hidden_size, tie_layers):
    config = ModelConfig(vocab_size=50, embed_size=7, hidden_size=hidden_size, num_layers=num_layers,
                         tie_layers=tie_layers)
    model = LanguageModel(config)
    parts = language_model_parameters(50, 7, hidden_size, num_layers, tie_layers)
    assert parts == {"embedding": count_parameters(model.embedding), "LSTM": count_parameters(model.rnn),
                     "decoder": count_parameters(model.decoder)}
    assert sum(parts.values()) == count_parameters(model)


@pytest.mark.parametrize("run", DEPTH_STUDY, ids=lambda run: run.name)
def test_every_recorded_run_of_the_study_is_complete_and_counts_the_model_it_names(run):
    runs = load_seeds(DEPTH_RECORDED, [result_name(run, seed) for seed in DEPTH_SEEDS])
    assert [r["train_config"]["seed"] for r in runs] == list(DEPTH_SEEDS)
    for r in runs:
        assert r["complete"] and r["epochs"] == r["planned_epochs"] == 4 and r["test_ppl"] > 0
        config = r["model_config"]
        assert (config["num_layers"], config["hidden_size"], config["dropout"]) == \
            (run.num_layers, run.hidden_size, run.dropout)
        assert r["parameters"] == sum(language_model_parameters(config["vocab_size"], config["embed_size"],
                                                                run.hidden_size, run.num_layers, run.tie_layers).values())


@pytest.mark.parametrize("run", DEPTH_STUDY, ids=lambda run: run.name)
def test_every_study_configuration_is_a_command_line(run):
    args = build_parser().parse_args(["train", "--preset", DEPTH_PRESET, "--rnn", "torch", "--out", "x",
                                      *run.overrides()])
    model_config, train_config = requested_configs(args)
    assert (model_config.num_layers, model_config.hidden_size, model_config.embed_size) == \
        (run.num_layers, run.hidden_size, 200)
    assert model_config.dropout == run.dropout and model_config.tie_layers == run.tie_layers
    assert model_config.rnn == ("lab" if run.tie_layers else "torch")
    assert train_config.epochs == 4 and train_config.lr == run.lr  # the same budget for every run
    assert (train_config.lr == 1.0) == (run.sizing != "learning rate")  # lr 1 unless the lr is what is studied


def test_the_study_tool_gives_each_run_the_command_the_study_means(tmp_path):
    spec = importlib.util.spec_from_file_location("depth_study", ROOT / "tools" / "depth_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    for run in DEPTH_STUDY:
        command = tool.train_command(run, 1, tmp_path, tmp_path, "cpu", "torch")
        model_config, _ = requested_configs(build_parser().parse_args(command[3:]))
        assert model_config.rnn == ("lab" if run.tie_layers else "torch") and model_config.tie_layers == run.tie_layers
        assert model_config.num_layers == run.num_layers and model_config.hidden_size == run.hidden_size


def untied_copy(tied):
    """An nn.LSTM with the tied model's weights: layer 0 from `bottom`, every layer above from `upper`."""
    lstm = nn.LSTM(tied.input_size, tied.hidden_size, tied.num_layers).double()
    with torch.no_grad():
        for k in range(tied.num_layers):
            source = tied.bottom if k == 0 else tied.upper
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(lstm, f"{name}_l{k}").copy_(getattr(source, f"{name}_l0"))
    return lstm


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_tied_layers_share_one_set_of_weights_above_the_first(num_layers):
    torch.manual_seed(0)
    tied = TiedLayersLSTM(4, 6, num_layers).double()
    assert sum(p.numel() for p in tied.parameters()) == tied_layers_parameters(4, 6, num_layers)
    untied = untied_copy(tied)
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    state = tuple(torch.randn(num_layers, 3, 6, dtype=torch.float64) for _ in range(2))
    output, (h_n, c_n) = tied(x, state)
    expected, (h_ref, c_ref) = untied(x, state)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close((h_n, c_n), (h_ref, c_ref))
    output.sum().backward()
    expected.sum().backward()
    if num_layers > 1:  # the shared matrix collects the gradient of every layer that uses it
        torch.testing.assert_close(tied.upper.weight_hh_l0.grad,
                                   sum(getattr(untied, f"weight_hh_l{k}").grad for k in range(1, num_layers)))


def test_a_language_model_with_tied_layers_counts_them_once():
    config = ModelConfig(vocab_size=50, embed_size=8, hidden_size=8, num_layers=3, tie_layers=True)
    model = LanguageModel(config)
    assert count_parameters(model) == 50 * 8 + tied_layers_parameters(8, 8, 3) + 8 * 50 + 50
    with pytest.raises(ValueError, match="tie_layers=True needs rnn 'lab'"):
        ModelConfig(tie_layers=True, rnn="torch")


def test_report_003s_stepped_loop_is_nn_lstm_without_the_bug_and_not_with_it():
    torch.manual_seed(0)
    stepped = SteppedTwoLayerLSTM(4, 6).double()
    reference = nn.LSTM(4, 6, 2).double()
    reference.load_state_dict(stepped.lstm.state_dict())
    x = torch.randn(7, 3, 4, dtype=torch.float64)
    output, (h_n, c_n) = stepped(x)
    expected, (h_ref, c_ref) = reference(x)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close((h_n, c_n), (h_ref, c_ref))
    stepped.bug = True
    buggy, (h_bug, _) = stepped(x)
    torch.testing.assert_close(h_bug[0], h_ref[0])  # layer 1 is untouched
    assert (buggy - expected).abs().max() > 1e-3  # layer 2 computes something else


@pytest.mark.parametrize("module", [nn.LSTM, "lab"])
def test_layer_states_follow_the_module(module):
    torch.manual_seed(0)
    lstm = (LSTM if module == "lab" else nn.LSTM)(3, 5, 3).double()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    states, output = layer_states(lstm, x)
    expected, (h_n, _) = lstm(x)
    assert len(states) == 3 and all(len(layer) == 6 for layer in states)
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(torch.stack([layer[-1] for layer in states]), h_n)


def test_gradient_norms_by_layer_match_finite_differences():
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, 2).double()
    x = torch.randn(5, 1, 3, dtype=torch.float64)  # one sequence: the norm is that of one gradient vector
    norms = gradient_norms_by_layer(lstm, x)
    assert norms.shape == (2, 5)

    def loss(inject):
        return layer_states(lstm, x, inject)[1][-1].sum().item()

    eps = 1e-6
    with torch.no_grad():
        for k in range(2):
            for t in range(5):
                grad = []
                for unit in range(4):
                    delta = torch.zeros(1, 4, dtype=torch.float64)
                    delta[0, unit] = eps
                    grad.append((loss({(k, t): delta}) - loss({(k, t): -delta})) / (2 * eps))
                assert norms[k, t] == pytest.approx(torch.tensor(grad).norm().item(), rel=1e-6, abs=1e-9)
    assert norms[1, -1] > 0 and norms[0, 0] > 0  # every layer and step reaches the loss
