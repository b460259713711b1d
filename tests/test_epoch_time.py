"""lstm_lab.experiments.epoch_time: report 000's loop and its fixes train the same windows; the summary says what
the windows measured."""
import pytest
import torch

from lstm_lab.data.corpus import batchify
from lstm_lab.experiments.epoch_time import LOOP_VARIANTS, LoopRunner, loop_model, time_variants, window_summary
from lstm_lab.lm_train import graph_size


def test_the_summary_gives_medians_of_the_early_and_last_windows_and_the_total():
    seconds = [9.0, 9.0] + [1.0 + 0.5 * k for k in range(2, 12)] + [100.0]  # warm-up, growth, one slow window
    summary = window_summary(seconds, warmup=2, early=4, last=3)
    assert summary["early"] == pytest.approx(1.0 + 0.5 * 3.5)  # the median of windows 2..5
    assert summary["last"] == pytest.approx(1.0 + 0.5 * 11)  # the median of the last three: 100 s does not count
    assert summary["total"] == pytest.approx(sum(seconds))
    with pytest.raises(ValueError, match="needs at least 6 timed windows, got 3"):
        window_summary([1.0, 2.0, 3.0], warmup=2, early=4)


def test_every_variant_trains_on_the_same_windows_and_only_registered_weights_learn():
    torch.manual_seed(0)
    source = batchify(torch.randint(0, 50, (2000,)), 8)
    runners = time_variants(LOOP_VARIANTS, source, 5, vocab_size=50, hidden_size=16, rounds=3, per_round=2)
    assert all(len(r.seconds) == 6 and len(r.losses) == 6 for r in runners.values())
    first_losses = {round(r.losses[0], 4) for name, r in runners.items() if "lstm_lab" in name or "nn.LSTM" in name}
    assert len(first_losses) == 1  # lstm_lab.LSTM and nn.LSTM: the same model, the same first window
    student = [r for name, r in runners.items() if name.startswith(("as written", "+ state detached"))]
    assert not any(p.requires_grad for p in [student[0].model.lstm.W_xi])  # plain tensors: never trained
    assert runners["+ weights registered as parameters"].model.lstm.W_xi.requires_grad


def test_retain_graph_keeps_every_earlier_window_behind_the_state():
    torch.manual_seed(0)
    source = batchify(torch.randint(0, 50, (2000,)), 8)
    sizes = {}
    for fix in ("retain_graph", "detach"):
        runner = LoopRunner(loop_model("student, unregistered", 50, 16), source, 5, fix)
        runner.run(3)
        sizes[fix] = graph_size(runner.state[0])  # autograd nodes the carried state still reaches
    assert sizes["retain_graph"] > 2.5 * sizes["detach"]  # three windows of graph behind the state, against one


def test_the_loss_scores_the_last_word_or_every_position():
    torch.manual_seed(0)
    source = batchify(torch.randint(0, 50, (2000,)), 8)
    inputs_targets = {}
    for targets in ("last", "all"):
        model = loop_model("student, registered", 50, 16)
        runner = LoopRunner(model, source, 5, "detach", targets=targets)
        runner.run(1)
        inputs_targets[targets] = runner.losses[0]
    model = loop_model("student, registered", 50, 16)
    x, y = source[:5], source[1:6]
    logits, _ = model(x)
    expected = {"last": torch.nn.functional.cross_entropy(logits[-1], y[-1]).item(),
                "all": torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten()).item()}
    assert inputs_targets == pytest.approx(expected)
