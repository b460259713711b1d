"""Mixed precision (`TrainConfig.amp`, `train --amp`): autocast in the training step, a GradScaler that is
unscaled before clipping, and runs that record, checkpoint and resume their precision like any other setting."""
import copy
import json

import pytest
import torch

from lstm_lab.checkpoint import load_checkpoint, save_checkpoint
from lstm_lab.cli import main
from lstm_lab.config import ModelConfig, TrainConfig
from lstm_lab.data.corpus import batchify
from lstm_lab.lm_train import lm_epoch, lm_loss, train
from lstm_lab.model import LanguageModel
from lstm_lab.runs import restore_training
from lstm_lab.runtime import grad_scaler
from lstm_lab.train import backward_and_step, new_run_state
from test_run_folders import tiny, train_argv  # noqa: F401  (tiny: the fixture)

TINY = ModelConfig(vocab_size=20, embed_size=8, hidden_size=8, num_layers=2, dropout=0.0)


def tiny_loss(model):
    """Zaremba's loss of one window of 5 steps over 4 streams of random tokens."""
    tokens = batchify(torch.randint(0, TINY.vocab_size, (44,), generator=torch.Generator().manual_seed(0)), 4)
    logits, _ = model(tokens[:5], model.init_state(4))
    return lm_loss(logits, tokens[1:6])[0]


def grad_norm(model):
    """The global gradient norm, as clip_grad_norm_ measures it."""
    return torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()])).item()


def test_the_scaled_step_unscales_before_clipping():
    config = TrainConfig(clip_norm=0.5)
    plain = LanguageModel(TINY)
    scaled = copy.deepcopy(plain)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**20)
    backward_and_step(plain, tiny_loss(plain), torch.optim.SGD(plain.parameters(), lr=1.0), config.clip_norm)
    backward_and_step(scaled, tiny_loss(scaled), torch.optim.SGD(scaled.parameters(), lr=1.0), config.clip_norm,
                      scaler)
    assert grad_norm(scaled) == pytest.approx(config.clip_norm, rel=1e-5)  # not 2**20 x clip_norm
    assert grad_norm(plain) == pytest.approx(config.clip_norm, rel=1e-5)
    for a, b in zip(plain.parameters(), scaled.parameters()):  # the same step as without a scaler
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert scaler.get_scale() == 2.0**20  # no overflow: the step was taken and the scale kept


@pytest.mark.parametrize("amp", ["bfloat16", "float16"])
def test_an_epoch_under_autocast_is_close_to_float32_but_not_equal(amp):
    source = batchify(torch.randint(0, TINY.vocab_size, (400,), generator=torch.Generator().manual_seed(1)), 4)
    nll = {}
    for precision in (None, amp):
        torch.manual_seed(0)
        model = LanguageModel(TINY)
        config = TrainConfig(batch_size=4, seq_len=5, max_batches=3, amp=precision)
        scaler = grad_scaler(precision, "cpu")
        nll[precision] = lm_epoch(model, source, torch.optim.SGD(model.parameters(), lr=1.0), config,
                                  scaler=scaler)["nll"].item()
        assert model.decoder.weight.dtype == torch.float32  # autocast keeps float32 weights
    assert nll[amp] == pytest.approx(nll[None], rel=1e-3) and nll[amp] != nll[None]


def test_a_checkpoint_carries_the_gradient_scale_on(tmp_path):
    model = LanguageModel(TINY)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=1)
    backward_and_step(model, tiny_loss(model), optimizer, TrainConfig().clip_norm, scaler)  # grows the scale to 2**11
    config = TrainConfig(amp="float16")
    save_checkpoint(tmp_path / "c.pt", model, optimizer, {"model": TINY, "train": config}, new_run_state(config.lr),
                    scaler=scaler)
    resumed = torch.amp.GradScaler("cpu")
    restore_training(LanguageModel(TINY), torch.optim.SGD(model.parameters(), lr=1.0),
                     load_checkpoint(tmp_path / "c.pt"), resumed)
    assert resumed.get_scale() == scaler.get_scale() == 2.0**11
    assert resumed.state_dict() == scaler.state_dict()


def test_amp_must_be_a_low_precision_dtype():
    with pytest.raises(ValueError, match="unknown amp 'float8'; choose one of: bfloat16, float16"):
        TrainConfig(amp="float8")


def test_train_amp_on_a_cpu_records_bfloat16_and_resumes_only_with_it(tmp_path, tiny):
    run = tmp_path / "run"
    assert main(train_argv(run, 1, "--amp", "--max-batches", "2")) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["amp"] == results["train_config"]["amp"] == "bfloat16"
    assert load_checkpoint(run / "checkpoint.pt")["config"]["train"]["amp"] == "bfloat16"
    with pytest.raises(SystemExit, match=r"other settings \(amp: saved 'bfloat16', requested None\)"):
        main(train_argv(run, 2, "--max-batches", "2", "--resume"))
    assert main(train_argv(run, 2, "--amp", "--max-batches", "2", "--resume")) == 0
    results = json.loads((run / "results.json").read_text())
    assert results["complete"] and results["epochs"] == 2 and results["amp"] == "bfloat16"


def test_a_run_without_amp_records_none(tmp_path, tiny):
    assert main(train_argv(tmp_path / "run", 1, "--max-batches", "2")) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["amp"] is None and (results["world_size"], results["backend"]) == (1, None)


def test_amp_with_cuda_graphs_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--preset", "smoke", "--out", str(tmp_path / "run"), "--device", "cpu", "--cuda-graphs",
              "--amp"])
    assert info.value.code == 2
    assert "--cuda-graphs and --amp do not go together" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_makes_a_grad_scaler_for_float16_when_none_is_given(monkeypatch):
    made = []

    def recording_scaler(device, **kwargs):
        made.append(real_scaler(device, **kwargs))
        return made[-1]
    real_scaler = torch.amp.GradScaler
    monkeypatch.setattr(torch.amp, "GradScaler", recording_scaler)
    torch.manual_seed(0)
    model = LanguageModel(ModelConfig(vocab_size=30, embed_size=8, hidden_size=8))
    tokens = torch.randint(30, (400,))
    config = TrainConfig(batch_size=4, seq_len=5, epochs=1, max_batches=3, amp="float16")
    train(model, {"train": tokens, "valid": tokens[:100]}, config, progress=False)
    assert len(made) == 1 and isinstance(made[0], real_scaler)
    assert made[0].get_scale() > 0 and made[0]._get_growth_tracker() > 0  # it stepped: 3 scaled steps
