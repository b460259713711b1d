"""lstm_lab.train and lm_train, model, checkpoint and generate: the one training loop, truncated BPTT, Zaremba's
loss and schedule, resume."""
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from lstm_lab.checkpoint import (CheckpointError, load_checkpoint, load_model_state, run_state_of, save_checkpoint,
                                 set_rng_state)
from lstm_lab.config import ModelConfig, TrainConfig, preset
from lstm_lab.data.corpus import Vocab, batchify, bptt_windows
from lstm_lab.generate import generate, sample_next
from lstm_lab.lm_train import evaluate, graph_size, lm_epoch, lm_loss, train, train_epoch_graphed, zaremba_lr
from lstm_lab.model import LanguageModel, count_parameters, detach_state
from lstm_lab.train import best_epoch, new_run_state, perplexity, train_epoch



@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest, and deterministically, on one thread (the machine is shared)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = ModelConfig(vocab_size=12, embed_size=8, hidden_size=8, num_layers=2, dropout=0.3)
TINY_TRAIN = TrainConfig(batch_size=4, seq_len=5, eval_batch_size=2, epochs=3, decay_after=1, max_batches=0)
CONFIGS = {"model": TINY, "train": TINY_TRAIN}


def toy_tokens(n=600, vocab_size=12, seed=0):
    """A learnable sequence: a repeating pattern with a little noise."""
    g = torch.Generator().manual_seed(seed)
    pattern = torch.arange(n) % 7
    noise = torch.randint(0, vocab_size, (n,), generator=g)
    return torch.where(torch.rand(n, generator=g) < 0.1, noise, pattern)


def toy_data():
    return {"train": toy_tokens(600), "valid": toy_tokens(120, seed=1)}


@pytest.mark.parametrize("detach", [True, False])
def test_graph_does_not_grow_across_windows_when_detached(detach):
    torch.manual_seed(0)
    model = LanguageModel(replace(TINY, dropout=0.0))
    source = batchify(toy_tokens(200), 4)
    state, sizes = model.init_state(4), []
    for inputs, targets in list(bptt_windows(source, 5))[:4]:
        state = detach_state(state) if detach else state
        logits, state = model(inputs, state)
        sizes.append(graph_size(lm_loss(logits, targets)[0]))
    if detach:
        assert sizes == [sizes[0]] * 4 and state[0].grad_fn is not None
        assert detach_state(state)[0].grad_fn is None
    else:
        assert sizes[0] < sizes[1] < sizes[2] < sizes[3]  # without detaching, every window adds a window's graph


def test_the_loop_adds_up_what_the_step_returns_and_steps_once_per_batch():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    batches = [torch.randn(4, 3) for _ in range(5)]
    calls = []

    def step(model, batch):
        calls.append(batch)
        loss = model(batch).pow(2).mean()
        return loss, {"loss": loss.item(), "count": 1, "losses": [loss.item()]}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    stats = train_epoch(model, batches, step, optimizer, clip_norm=1.0)
    assert calls == batches and stats["count"] == stats["batches"] == 5 and len(stats["losses"]) == 5
    assert stats["loss"] == pytest.approx(sum(stats["losses"])) and stats["seconds"] > 0
    assert stats["losses"][-1] < stats["losses"][0]  # it trained: one SGD step per batch


def test_a_diverged_perplexity_is_inf_not_an_overflow():
    assert perplexity(800.0, 1) == math.inf and perplexity(709.0, 1) == pytest.approx(math.exp(709.0))


def test_perplexity_is_exp_of_mean_nll_by_hand():
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]])  # two steps, one stream, V = 3
    logits = probs.log().reshape(2, 1, 3)
    targets = torch.tensor([[0], [2]])  # p = 0.5 then 0.7
    _, nll_sum = lm_loss(logits, targets)
    assert nll_sum.item() == pytest.approx(-(math.log(0.5) + math.log(0.7)), rel=1e-6)
    assert perplexity(nll_sum.item(), 2) == pytest.approx((0.5 * 0.7) ** -0.5, rel=1e-6)


def test_loss_scaling_is_sum_over_time_mean_over_batch():
    torch.manual_seed(0)
    T, B, V = 7, 3, 5
    logits = torch.randn(T, B, V, requires_grad=True)
    targets = torch.randint(0, V, (T, B))
    loss, _ = lm_loss(logits, targets, sum_over_time=True)
    per_step = torch.stack([F.cross_entropy(logits[t], targets[t]) for t in range(T)])  # mean over the batch
    torch.testing.assert_close(loss, per_step.sum())
    torch.testing.assert_close(loss, T * F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1)))
    mean_loss, _ = lm_loss(logits, targets, sum_over_time=False)
    g_sum, = torch.autograd.grad(loss, logits)
    g_mean, = torch.autograd.grad(mean_loss, logits)
    torch.testing.assert_close(g_sum, T * g_mean)


def test_zaremba_schedule_small():
    lrs = [zaremba_lr(e, 1.0, 4, 0.5) for e in range(1, 14)]
    assert lrs[:4] == [1.0] * 4 and lrs[4] == 0.5 and lrs[5] == 0.25 and lrs[-1] == 0.5 ** 9


def test_presets_match_the_paper_and_reject_unknown_names():
    model, training = preset("zaremba-small")
    assert (model.hidden_size, model.num_layers, model.dropout, model.init_range) == (200, 2, 0.0, 0.1)
    assert (training.batch_size, training.seq_len, training.epochs, training.clip_norm) == (20, 20, 13, 5.0)
    assert count_parameters(LanguageModel(model)) == 4_653_200  # the paper's 4.65M
    with pytest.raises(ValueError, match="zaremba-small, zaremba-medium, zaremba-large, depth-200, smoke"):
        preset("zaremba-huge")
    with pytest.raises(ValueError, match="lab, torch"):
        preset("smoke", rnn="cudnn")


def test_init_is_uniform_in_range_for_every_parameter():
    model = LanguageModel(replace(TINY, init_range=0.05))
    for name, p in model.named_parameters():
        assert p.abs().max() <= 0.05 and p.abs().max() > 0.03, name


def test_weight_tying_shares_one_matrix():
    tied = LanguageModel(replace(TINY, tie_weights=True))
    assert tied.decoder.weight is tied.embedding.weight
    assert count_parameters(LanguageModel(TINY)) - count_parameters(tied) == 12 * 8
    with pytest.raises(ValueError, match="embed_size == hidden_size"):
        replace(TINY, tie_weights=True, embed_size=4)


@pytest.mark.parametrize("rnn", ["lab", "torch"])
def test_smoke_preset_trains_and_loss_falls(rnn):
    model_config, train_config = preset("smoke", rnn=rnn, max_batches=0, epochs=3, eval_batch_size=4)
    model_config = replace(model_config, vocab_size=12)
    torch.manual_seed(0)
    model = LanguageModel(model_config)
    history = train(model, toy_data(), train_config, progress=False)
    train_nll = [r["train_nll"] for r in history]
    assert len(history) == 3 and train_nll[0] > train_nll[1] > train_nll[2]
    assert history[-1]["valid_ppl"] < history[0]["valid_ppl"] < 12  # better than uniform guessing


def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path):
    def fresh(seed):
        torch.manual_seed(seed)
        return LanguageModel(TINY)  # dropout 0.3: resuming must restore the random generator too

    uninterrupted = train(fresh(0), toy_data(), TINY_TRAIN, progress=False)

    path = tmp_path / "checkpoint.pt"
    model = fresh(0)
    train(model, toy_data(), replace(TINY_TRAIN, epochs=2), progress=False,
          on_epoch=lambda m, opt, state: save_checkpoint(path, m, opt, CONFIGS, state))
    torch.manual_seed(123)  # disturb every generator: the checkpoint must put them back
    checkpoint = load_checkpoint(path)
    resumed_model = load_model_state(fresh(1), checkpoint)
    optimizer = torch.optim.SGD(resumed_model.parameters(), lr=1.0)
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_state(checkpoint["rng"])
    resumed = train(resumed_model, toy_data(), TINY_TRAIN, run_state=run_state_of(checkpoint),
                    optimizer=optimizer, progress=False)
    keys = ("epoch", "lr", "train_nll", "valid_nll")
    assert [[r[k] for k in keys] for r in resumed] == [[r[k] for k in keys] for r in uninterrupted]
    assert (tmp_path / "config.json").is_file()


def test_loading_into_another_config_is_a_clear_error(tmp_path):
    save_checkpoint(tmp_path / "c.pt", LanguageModel(TINY), None, CONFIGS, new_run_state(1.0))
    other = LanguageModel(replace(TINY, hidden_size=16, embed_size=16))
    with pytest.raises(ValueError, match="hidden_size: checkpoint 8 vs model 16"):
        load_model_state(other, load_checkpoint(tmp_path / "c.pt"))
    load_model_state(LanguageModel(replace(TINY, rnn="torch")), load_checkpoint(tmp_path / "c.pt"))  # same shapes


def test_checkpoint_records_the_best_epoch_and_the_vocabulary(tmp_path):
    torch.manual_seed(0)
    history = train(LanguageModel(TINY), toy_data(), TINY_TRAIN, progress=False)
    state = {"epoch": 3, "lr": 1.0, "best_valid": 1.0, "bad_epochs": 0, "history": history}
    vocab = Vocab([str(i) for i in range(12)])
    save_checkpoint(tmp_path / "c.pt", LanguageModel(TINY), None, CONFIGS, state, "lm", vocab.sha256())
    checkpoint = load_checkpoint(tmp_path / "c.pt")
    assert checkpoint["best_epoch"] == best_epoch(history) == max(r["epoch"] for r in history if r["improved"])
    assert checkpoint["vocab_sha256"] == vocab.sha256() != Vocab([str(i) for i in reversed(range(12))]).sha256()
    assert best_epoch([]) == 0


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"not a checkpoint\n", b"\x80\x04\x95junk"])
def test_a_damaged_checkpoint_raises_checkpoint_error_naming_the_file(tmp_path, content, recwarn):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} is damaged: the file is ")
    assert "weights_only" not in str(info.value) and info.value.__cause__ is None
    assert [str(w.message) for w in recwarn] == []  # nothing else printed: one line says it all
    torch.save({"weights": torch.zeros(2)}, path)  # a readable file, but not a checkpoint
    with pytest.raises(CheckpointError, match="is not an lstm_lab checkpoint"):
        load_checkpoint(path)


def test_early_stopping_with_patience():
    torch.manual_seed(0)
    config = replace(TINY_TRAIN, epochs=10, lr=50.0, schedule="constant", patience=1, clip_norm=0.0)
    history = train(LanguageModel(TINY), toy_data(), config, progress=False)  # lr 50 diverges: valid stalls
    assert len(history) < 10 and not history[-1]["improved"]


def test_evaluate_with_one_stream_does_not_depend_on_window_length():
    torch.manual_seed(0)
    model = LanguageModel(TINY)
    tokens = toy_tokens(100)
    a, b = evaluate(model, tokens, 1, seq_len=7), evaluate(model, tokens, 1, seq_len=99)
    assert a["tokens"] == b["tokens"] == 99
    assert a["nll"] == pytest.approx(b["nll"], rel=1e-5)


def test_sampling_top_k_and_temperature():
    logits = torch.tensor([0.0, 3.0, 1.0, 2.0])
    g = torch.Generator().manual_seed(0)
    assert {sample_next(logits, top_k=1, generator=g) for _ in range(20)} == {1}
    assert {sample_next(logits, top_k=2, generator=g) for _ in range(200)} == {1, 3}
    assert {sample_next(logits, temperature=0.01, generator=g) for _ in range(20)} == {1}
    with pytest.raises(ValueError, match="temperature must be a positive, finite number, got 0"):
        sample_next(logits, temperature=0)


def test_generate_continues_a_prompt():
    vocab = Vocab([str(i) for i in range(12)])
    torch.manual_seed(0)
    words = generate(LanguageModel(TINY), vocab, ["1", "2"], steps=5, generator=torch.Generator().manual_seed(0))
    assert len(words) == 5 and all(w in vocab.stoi for w in words)


def test_cuda_graph_training_refuses_a_cpu():
    model = LanguageModel(ModelConfig(vocab_size=7, embed_size=4, hidden_size=4, num_layers=1))
    config = TrainConfig(batch_size=2, seq_len=3, epochs=1)
    with pytest.raises(ValueError, match="CUDA graphs need a CUDA device, got cpu"):
        train_epoch_graphed(model, torch.zeros(10, 2, dtype=torch.long), torch.optim.SGD(model.parameters(), lr=1.0),
                            config, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("rnn", ["lab", "torch"])
def test_a_graphed_epoch_trains_like_an_eager_one(rnn):
    # no dropout, so both see the same computation: same windows, same updates, same summed loss
    torch.manual_seed(0)
    config = TrainConfig(batch_size=4, seq_len=5, epochs=1, lr=0.5)
    source = batchify(torch.randint(11, (4 * 43,)), config.batch_size)  # 43 rows: 8 windows of 5, then one of 2
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(LanguageModel(ModelConfig(vocab_size=11, embed_size=6, hidden_size=8, num_layers=2,
                                                rnn=rnn)).cuda())
    eager = lm_epoch(models[0], source, torch.optim.SGD(models[0].parameters(), lr=0.5), config)
    eager["nll"] = eager["nll"].item()
    graphed = train_epoch_graphed(models[1], source, torch.optim.SGD(models[1].parameters(), lr=0.5), config,
                                  torch.device("cuda"))
    assert graphed["tokens"] == eager["tokens"]
    assert graphed["nll"] == pytest.approx(eager["nll"], rel=1e-4)
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=1e-4)
