"""lstm_lab.check.check_training on a catalogue of broken training loops, run for a few windows of Tiny Shakespeare,
and on correct loops built from the package's own training pieces (chapter 6's WindowStep and
backward_and_step): each slip named by its cause, no false alarm."""
import math

import pytest
import torch
import torch.nn.functional as F

from lstm_lab.check import check_training
from lstm_lab.config import InputError, ModelConfig
from lstm_lab.data.corpus import load_corpus
from lstm_lab.experiments.clinic import StudentLM
from lstm_lab.lm_train import WindowStep
from lstm_lab.model import LanguageModel, detach_state
from lstm_lab.train import backward_and_step, perplexity


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("tinyshakespeare", level="char", progress=False)


def make_model(vocab_size):
    return LanguageModel(ModelConfig(vocab_size=vocab_size, embed_size=16, hidden_size=32, num_layers=1))


def book_loop(lr=1e-2, optimizer=torch.optim.Adam):
    """The right loop from the package's pieces: chapter 6's WindowStep (state carried, detached), mean NLL."""
    def train_windows(model, windows):
        opt, step, losses = optimizer(model.parameters(), lr=lr), WindowStep(sum_over_time=False), []
        for batch in windows:
            loss, stats = step(model, batch)
            backward_and_step(model, loss, opt, clip_norm=5.0)
            losses.append(stats["nll"].item() / stats["tokens"])
        return losses
    return train_windows


def student_loop(detach=True, retain_graph=False, reset=False, params=lambda m: m.parameters(),
                 zero_grad_late=False, reduction="mean", lr=1e-2):
    """A training loop as reports write it; each argument turns one slip on."""
    def train_windows(model, windows):
        opt, state, losses = torch.optim.Adam(params(model), lr=lr), None, []
        for inputs, targets in windows:
            if reset:
                state = None
            elif detach and state is not None:
                state = detach_state(state)
            logits, state = model(inputs, state)
            nll = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum")
            loss = {"mean": nll / targets.numel(), "sum over time": nll / targets.shape[1],
                    "bits": nll / targets.numel() / math.log(2)}[reduction]
            if not zero_grad_late:
                opt.zero_grad()
            loss.backward(retain_graph=retain_graph)
            if zero_grad_late:
                opt.zero_grad()  # clears the gradients before the step uses them
            opt.step()
            losses.append(loss.item())
        return losses
    return train_windows


@torch.no_grad()
def evaluate(model, windows, slip=None):
    """Perplexity of windows, state carried; `slip` computes it one of the wrong ways."""
    model.eval()
    state, rows = None, []
    for inputs, targets in windows:
        logits, state = model(inputs, None if slip == "reset" else state)
        rows.append((F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item(),
                     targets.numel()))
    if slip == "mean of windows":
        return sum(math.exp(nll / n) for nll, n in rows) / len(rows)
    if slip == "base 2":
        return 2 ** (sum(r[0] for r in rows) / sum(r[1] for r in rows))
    return perplexity(sum(r[0] for r in rows), sum(r[1] for r in rows))


def masked_loss(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def unmasked_loss(logits, targets, pad_id):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # the padding is scored too


unregistered_model = lambda V: StudentLM(V, 16, register=False)
BROKEN_LOOPS = [  # (slip, keyword arguments of check_training, the cause the check must name first)
    ("state carried without detaching", {"train_windows": student_loop(detach=False)}, "state_not_detached"),
    ("retain_graph=True as the fix (report 000)", {"train_windows": student_loop(detach=False, retain_graph=True)},
     "retain_graph"),
    ("state reset every window", {"train_windows": student_loop(reset=True)}, "state_reset"),
    ("optimizer given the decoder only", {"train_windows": student_loop(params=lambda m: m.decoder.parameters())},
     "parameters_frozen"),
    ("zero_grad between backward and step", {"train_windows": student_loop(zero_grad_late=True)},
     "parameters_frozen"),
    ("weights never registered (report 000)", {"train_windows": student_loop(), "make_model": unregistered_model},
     "unregistered_parameters"),
    ("loss summed over time", {"train_windows": student_loop(reduction="sum over time")}, "loss_not_per_token"),
    ("loss in bits", {"train_windows": student_loop(reduction="bits")}, "loss_wrong_base"),
    ("learning rate 100", {"train_windows": book_loop(100.0, torch.optim.SGD)}, "lr_too_high"),
    ("learning rate 1e-6", {"train_windows": book_loop(1e-6)}, "lr_too_low"),
    ("perplexity as the mean of window perplexities", {"evaluate": lambda m, w: evaluate(m, w, "mean of windows")},
     "perplexity_wrong_mean"),
    ("perplexity 2 ** nats", {"evaluate": lambda m, w: evaluate(m, w, "base 2")}, "perplexity_wrong_base"),
    ("evaluation resets the state", {"evaluate": lambda m, w: evaluate(m, w, "reset")}, "perplexity_state_reset"),
    ("padding counted in the loss (chapter 8)", {"loss_fn": unmasked_loss}, "padding_in_loss"),
]


@pytest.mark.parametrize("slip, kwargs, expected", BROKEN_LOOPS, ids=[b[0] for b in BROKEN_LOOPS])
def test_a_broken_loop_is_caught_and_its_cause_named(corpus, slip, kwargs, expected):
    arguments = {"train_windows": book_loop(), "make_model": make_model, "corpus": corpus, **kwargs}
    report = check_training(**arguments)
    assert not report, report
    assert report.cause_ids[0] == expected, report


@pytest.mark.parametrize("name, loop", [
    ("Adam 1e-2", book_loop()), ("Adam 1e-3 (PyTorch's default)", book_loop(1e-3)),
    ("SGD 1 with clipping (Zaremba's rate)", book_loop(1.0, torch.optim.SGD)), ("the student loop, no slip", student_loop()),
])
def test_a_correct_loop_passes(corpus, name, loop):
    report = check_training(loop, make_model, evaluate=evaluate, loss_fn=masked_loss, corpus=corpus)
    assert report, report
    assert report.causes == []


def test_the_check_takes_seconds(corpus):
    import time
    start = time.perf_counter()
    check_training(book_loop(), make_model, evaluate=evaluate, loss_fn=masked_loss, corpus=corpus)
    assert time.perf_counter() - start < 20


@pytest.mark.parametrize("kwargs, message", [
    ({"train_windows": None}, "must be functions"),
    ({"evaluate": 3}, "evaluate must be a function"),
    ({"windows": 0}, "windows must be a positive int"),
    ({"seq_len": 8}, "seq_len and batch_size must differ"),
    ({"make_model": lambda V: "model"}, "must return an nn.Module"),
])
def test_bad_input_is_refused_in_one_line(corpus, kwargs, message):
    with pytest.raises(InputError, match=message):
        check_training(**{"train_windows": book_loop(), "make_model": make_model, "corpus": corpus, **kwargs})
