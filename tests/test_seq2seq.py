"""Chapter 9: the date task, the packed bidirectional encoder, Luong attention, decoding, training and the CLI."""
import datetime
import re

import pytest
import torch

from lstm_lab.cli import main
from lstm_lab.data.dates import (SPLITS, TRAIN_FORMATS, UNSEEN_FORMATS, check_source, encode_batch, make_examples,
                                 render, source_vocab, split_dates, split_of, target_vocab)
from lstm_lab.runs import RunError
from lstm_lab.seq2seq import SCORES, Encoder, LuongAttention, Seq2Seq, beam_search, greedy_decode
from lstm_lab.seq2seq_train import DatesConfig, accuracy, is_real_date, load_dates_model, train_dates

STRPTIME = {"d": "%d", "dd": "%d", "o": "%d", "m": "%m", "mm": "%m", "B": "%B", "b": "%b", "A": "%A", "a": "%a",
            "Y": "%Y", "y": "%y"}


def parse_with_python(text, pattern):
    """The date Python's own strptime reads from `text` written in `pattern` (ordinal suffixes removed)."""
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE)
    return datetime.datetime.strptime(text, re.sub(r"\{(\w+)\}", lambda m: STRPTIME[m.group(1)], pattern)).date()


@pytest.mark.parametrize("pattern, case", TRAIN_FORMATS + UNSEEN_FORMATS, ids=lambda p: str(p))
def test_every_format_parses_back_with_python(pattern, case):
    for date in [datetime.date(1969, 1, 1), datetime.date(1999, 3, 3), datetime.date(2000, 2, 29),
                 datetime.date(2011, 11, 11), datetime.date(2022, 8, 22), datetime.date(2068, 12, 31)]:
        text = render(date, pattern, case)
        assert parse_with_python(text, pattern) == date, text
        if "{A}" in pattern or "{a}" in pattern:  # strptime does not check the weekday: check it here
            assert date.strftime("%A")[:3].lower() in text.lower()


def test_examples_are_deterministic_and_their_targets_are_right():
    first, again = make_examples("train", 300, seed=3), make_examples("train", 300, seed=3)
    assert first == again and first != make_examples("train", 300, seed=4)
    for source, target, k in first:
        assert parse_with_python(source, TRAIN_FORMATS[k][0]).isoformat() == target
    for source, target, k in make_examples("unseen", 50):
        assert parse_with_python(source, UNSEEN_FORMATS[k][0]).isoformat() == target


def test_splits_share_no_date_and_unseen_formats_never_appear_in_training():
    dates = {split: set(split_dates(split)) for split in ("train", "valid", "test")}
    assert not (dates["train"] & dates["valid"] or dates["train"] & dates["test"] or dates["valid"] & dates["test"])
    assert sum(map(len, dates.values())) == (datetime.date(2068, 12, 31) - datetime.date(1969, 1, 1)).days + 1
    assert 0.08 < len(dates["test"]) / len(dates["train"]) < 0.15
    assert set(split_dates("unseen")) == dates["test"]
    assert not set(TRAIN_FORMATS) & set(UNSEEN_FORMATS)
    assert {target for _, target, _ in make_examples("valid", 200)} <= {d.isoformat() for d in dates["valid"]}
    assert split_of(datetime.date(1999, 3, 3)) == split_of(datetime.date(1999, 3, 3))
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        make_examples("dev", 1)
    assert SPLITS == ("train", "valid", "test", "unseen")


def test_bad_input_is_rejected_in_one_line():
    vocab = source_vocab()
    with pytest.raises(ValueError, match=r"characters 'zä' of '3 März 1999' are not among the 58 the model reads"):
        check_source("3 März 1999", vocab)
    with pytest.raises(ValueError, match="longer than the model's limit of 48"):
        check_source("3" * 49, vocab)
    with pytest.raises(ValueError, match="empty input"):
        check_source("", vocab)
    check_source("Wednesday, the 3rd of March 1999", vocab)


def tiny_batch(seed=0):
    torch.manual_seed(seed)
    examples = make_examples("train", 5, seed)
    return encode_batch(examples, source_vocab(), target_vocab())


def test_packed_encoder_agrees_with_each_sequence_run_alone():
    torch.manual_seed(0)
    encoder = Encoder(len(source_vocab()), 8, 12).double()
    src, lengths, _, _ = tiny_batch()
    memory, (h, c) = encoder(src, lengths)
    for b in range(src.shape[1]):
        n = int(lengths[b])
        alone, (h_b, c_b) = encoder(src[:n, b:b + 1], lengths[b:b + 1])
        torch.testing.assert_close(memory[:n, b], alone[:, 0])
        torch.testing.assert_close((h[b], c[b]), (h_b[0], c_b[0]))
        assert torch.all(memory[n:, b] == 0)  # padding positions hold no state
    # the decoder's first state: the forward direction's last step and the backward direction's first
    torch.testing.assert_close(h[:, :6], memory[lengths - 1, torch.arange(len(lengths)), :6])
    torch.testing.assert_close(h[:, 6:], memory[0, :, 6:])


@pytest.mark.parametrize("score", SCORES)
def test_attention_weights_sum_to_one_and_are_exactly_zero_on_padding(score):
    torch.manual_seed(0)
    attention = LuongAttention(6, score)
    memory = torch.randn(3, 5, 6)
    mask = torch.arange(5) < torch.tensor([5, 2, 4]).unsqueeze(1)  # (B, S)
    weights, context = attention(torch.randn(3, 6), memory, attention.keys(memory), mask)
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    assert torch.all(weights[~mask] == 0) and torch.all(weights[mask] > 0)
    torch.testing.assert_close(context, (weights.unsqueeze(2) * memory).sum(dim=1))


def luong_step_by_hand(decoder, y_prev, h, c, h_tilde, memory, length):
    """One decoder step for one sentence, written from Luong et al.'s equations with plain loops."""
    p = dict(decoder.named_parameters())
    x = torch.cat([p["embedding.weight"][y_prev], h_tilde])
    gates = p["cell.weight_ih"] @ x + p["cell.bias_ih"] + p["cell.weight_hh"] @ h + p["cell.bias_hh"]
    H = h.shape[0]
    i, f, g, o = (torch.sigmoid(gates[:H]), torch.sigmoid(gates[H:2 * H]), torch.tanh(gates[2 * H:3 * H]),
                  torch.sigmoid(gates[3 * H:]))
    c = f * c + i * g
    h = o * torch.tanh(c)
    scores = []
    for s in range(length):  # only the real source positions
        if decoder.attention.score == "dot":
            scores.append(h @ memory[s])
        elif decoder.attention.score == "general":
            scores.append(h @ (p["attention.W_a.weight"] @ memory[s]))
        else:
            W_a, v_a = p["attention.W_a.weight"], p["attention.v_a.weight"][0]
            scores.append(v_a @ torch.tanh(W_a @ torch.cat([h, memory[s]])))
    a = torch.softmax(torch.stack(scores), dim=0)
    context = sum(a[s] * memory[s] for s in range(length))
    h_tilde = torch.tanh(p["W_c.weight"] @ torch.cat([context, h]))
    return p["W_s.weight"] @ h_tilde + p["W_s.bias"], h, c, h_tilde, a


@pytest.mark.parametrize("score", SCORES)
def test_the_decoder_step_is_luongs_equations(score):
    torch.manual_seed(0)
    model = Seq2Seq(len(source_vocab()), len(target_vocab()), embed_size=5, hidden_size=6, score=score).double()
    src, lengths, tgt_in, _ = tiny_batch()
    state, h_tilde, memory, keys, mask = model.encode(src, lengths)
    h_tilde = torch.randn_like(h_tilde)  # a non-zero previous h̃ exercises input feeding
    logits, (h, c), h_tilde_next, weights = model.decoder.step(tgt_in[1], state, h_tilde, memory, keys, mask)
    for b in range(src.shape[1]):
        n = int(lengths[b])
        expected = luong_step_by_hand(model.decoder, tgt_in[1, b], state[0][b], state[1][b], h_tilde[b], memory[b], n)
        for mine, theirs in zip((logits[b], h[b], c[b], h_tilde_next[b], weights[b, :n]), expected):
            torch.testing.assert_close(mine, theirs)


@pytest.mark.parametrize("score", [None, "general"])
def test_beam_search_of_width_one_is_greedy_and_wider_beams_score_at_least_as_well(score):
    torch.manual_seed(0)
    model = Seq2Seq(len(source_vocab()), len(target_vocab()), embed_size=8, hidden_size=12, score=score).eval()
    src, lengths, _, _ = tiny_batch()
    vocab = target_vocab()
    bos, eos = vocab.stoi["<bos>"], vocab.stoi["<eos>"]
    greedy, _ = greedy_decode(model, src, lengths, bos, eos, 11)
    greedy = [[t for t in row if t != eos] for row in greedy.tolist()]
    assert beam_search(model, src, lengths, bos, eos, 11, beam=1) == greedy

    def log_prob(b, tokens):  # of the output `tokens` then <eos>, by teacher forcing
        tgt = torch.tensor([bos] + tokens + [eos])
        logits, _ = model(src[:int(lengths[b]), b:b + 1], lengths[b:b + 1], tgt[:-1, None])
        return torch.log_softmax(logits[:, 0], dim=1).gather(1, tgt[1:, None]).sum().item()

    wide = beam_search(model, src, lengths, bos, eos, 11, beam=4)
    for b in range(src.shape[1]):
        assert log_prob(b, wide[b]) >= log_prob(b, greedy[b]) - 1e-6


def test_training_learns_and_a_resumed_run_equals_an_uninterrupted_one(tmp_path):
    config = DatesConfig(score="dot", epochs=2, train_size=600, valid_size=50, test_size=50, hidden_size=32,
                         embed_size=8)
    whole = train_dates(config, tmp_path / "whole", device="cpu")
    train_dates(DatesConfig(**{**config.__dict__, "epochs": 1}), tmp_path / "parts", device="cpu")
    parts = train_dates(config, tmp_path / "parts", "cpu", resume=True)
    assert [r["train_loss"] for r in parts["history"]] == [r["train_loss"] for r in whole["history"]]
    assert whole["history"][1]["train_loss"] < whole["history"][0]["train_loss"]
    assert whole["complete"] and whole["commit"] is not None and set(whole["test"]) == {"exact", "chars"}
    model, src_vocab, tgt_vocab = load_dates_model(tmp_path / "whole")
    assert accuracy(model, make_examples("test", 50), src_vocab, tgt_vocab, "cpu") == whole["test"]
    with pytest.raises(RunError, match="train_size: saved 600, requested 700"):
        train_dates(DatesConfig(**{**config.__dict__, "train_size": 700}), tmp_path / "whole", "cpu", resume=True)


def test_is_real_date():
    assert is_real_date("1999-03-03") and is_real_date("2000-02-29")
    assert not is_real_date("1999-02-29") and not is_real_date("1999-3-03") and not is_real_date("19990303xx")


def test_the_command_line_trains_and_translates(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["dates", "train", "--out", str(out), "--epochs", "1", "--train-size", "200", "--score", "none",
                 "--results", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()
    capsys.readouterr()
    assert main(["dates", "translate", "--out", str(out), "3 March 1999", "Mar 3, 99"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[1] for line in lines] == ["3 March 1999", "Mar 3, 99"]  # one line per input, in order
    assert main(["dates", "translate", "--out", str(out), "3 März 1999"]) == 1
    printed = capsys.readouterr()
    assert printed.out == "(not read)\t3 März 1999\n" and "error: argument 1: characters 'zä'" in printed.err
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["dates", "train", "--out", str(out)])
    with pytest.raises(SystemExit, match="holds no checkpoint.pt"):
        main(["dates", "translate", "--out", str(tmp_path / "none"), "x"])
    with pytest.raises(SystemExit) as info:
        main(["dates", "train", "--out", str(out), "--score", "additive"])
    assert info.value.code == 2 and "invalid choice: 'additive'" in capsys.readouterr().err
