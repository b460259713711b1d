"""Chapter 9: the date task, the packed bidirectional encoder, Luong attention, decoding, training and the CLI."""
import datetime
import json
import re

import pytest
import torch

from lstm_lab.cli import main
from lstm_lab.data.dates import (KINDS, NOT_DATES, REALISTIC_FORMATS, SPLITS, TRAIN_FORMATS, UNSEEN_FORMATS,
                                 check_source, encode_batch, format_kind, make_examples, make_non_dates, render,
                                 source_vocab, split_dates, split_of, target_vocab)
from lstm_lab.runs import RunError
from lstm_lab.seq2seq import SCORES, Encoder, LuongAttention, Seq2Seq, beam_search, greedy_decode
from lstm_lab.seq2seq_train import (DatesConfig, accuracy, calibrate, dates_report, is_real_date, load_dates_model,
                                    load_threshold, output_probability, read_dates, train_dates, translate_dates)

STRPTIME = {"d": "%d", "dd": "%d", "o": "%d", "m": "%m", "mm": "%m", "B": "%B", "b": "%b", "A": "%A", "a": "%a",
            "Y": "%Y", "y": "%y"}


def parse_with_python(text, pattern):
    """The date Python's own strptime reads from `text` written in `pattern` (ordinal suffixes removed)."""
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE)
    return datetime.datetime.strptime(text, re.sub(r"\{(\w+)\}", lambda m: STRPTIME[m.group(1)], pattern)).date()


PROBE_DATES = [datetime.date(1969, 1, 1), datetime.date(1999, 3, 3), datetime.date(2000, 2, 29),
               datetime.date(2011, 11, 11), datetime.date(2022, 8, 22), datetime.date(2068, 12, 31)]


@pytest.mark.parametrize("pattern, case", TRAIN_FORMATS + UNSEEN_FORMATS + REALISTIC_FORMATS, ids=lambda p: str(p))
def test_every_format_parses_back_with_python(pattern, case):
    for date in PROBE_DATES:
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
    assert SPLITS == ("train", "valid", "test", "unseen", "realistic")
    assert set(split_dates("realistic")) == dates["test"]


def everything_the_generator_writes(dates, unseen=True):
    """Every string make_examples can write for these dates in a training format in any case, or an unseen one."""
    return {render(date, pattern, case) for date in dates for pattern, _ in TRAIN_FORMATS
            for case in (None, "upper", "lower")} | {render(date, *f) for date in dates for f in UNSEEN_FORMATS
                                                      if unseen}


def test_the_unseen_and_realistic_examples_are_never_written_by_the_generator():
    for split in ("unseen", "realistic"):
        examples = make_examples(split, 2000)
        days = {datetime.date.fromisoformat(target) for _, target, _ in examples}
        assert not {source for source, *_ in examples} & everything_the_generator_writes(days, split == "realistic")
        assert len({k for *_, k in examples}) == len(UNSEEN_FORMATS if split == "unseen" else REALISTIC_FORMATS)
    padded = [source for source, _, k in make_examples("realistic", 2000) if REALISTIC_FORMATS[k][0] == "{a}, {dd} {b} {Y}"]
    assert padded and all(source[5] == "0" for source in padded)  # from the 10th on it is "{a}, {d} {b} {Y}", a training format
    patterns = {pattern for pattern, _ in TRAIN_FORMATS + UNSEEN_FORMATS}
    assert not patterns & {pattern for pattern, _ in REALISTIC_FORMATS}
    assert len(set(REALISTIC_FORMATS)) == len(REALISTIC_FORMATS)
    kinds = [format_kind(pattern) for pattern, _ in REALISTIC_FORMATS]
    assert {kind: kinds.count(kind) for kind in KINDS} == {"names": 12, "numbers": 7, "iso": 3}
    assert format_kind("{Y}-{mm}-{dd}") == "iso" and format_kind("{Y}{mm}{dd}") == "numbers" \
        and format_kind("the {o} of {B} {Y}") == "names"


def test_training_examples_come_in_three_cases_and_the_tests_in_their_formats_own():
    train = make_examples("train", 3000, seed=0)
    written = [(source, render(datetime.date.fromisoformat(target), TRAIN_FORMATS[k][0])) for source, target, k in train]
    cases = [None if s == plain else "upper" if s == plain.upper() else "lower" if s == plain.lower() else "?"
             for s, plain in written if plain.upper() != plain.lower()]  # a layout of digits only has no case
    assert "?" not in cases and 0.07 < cases.count("upper") / len(cases) < 0.13 \
        and 0.07 < cases.count("lower") / len(cases) < 0.13
    for source, target, k in make_examples("realistic", 200):
        assert source == render(datetime.date.fromisoformat(target), *REALISTIC_FORMATS[k])


def reads_as_a_date(text):
    """The dates in 1969-2068 that `text` writes in any of the book's formats, in any case (found with strptime)."""
    found = set()
    for pattern, _ in TRAIN_FORMATS + UNSEEN_FORMATS + REALISTIC_FORMATS:
        try:
            date = parse_with_python(text, pattern)
        except ValueError:
            continue
        if datetime.date(1969, 1, 1) <= date <= datetime.date(2068, 12, 31) \
                and render(date, pattern).lower() == text.lower():  # strptime also reads "1999" as 19-9-9
            found.add(date)
    return found


def test_the_non_dates_name_no_date_in_any_format():
    assert len(set(NOT_DATES)) == len(NOT_DATES)
    for text in NOT_DATES:
        assert not reads_as_a_date(text), text
    generated = make_non_dates("test", 300)
    assert generated == make_non_dates("test", 300) and generated != make_non_dates("valid", 300)
    assert {kind for _, kind in generated} == {"partial", "impossible", "noise"}
    for text, kind in generated:
        assert not reads_as_a_date(text), (text, kind)
    assert reads_as_a_date("3 March 1999") == {datetime.date(1999, 3, 3)}  # so the checks above can fail
    with pytest.raises(ValueError, match="train, valid or test split, got 'unseen'"):
        make_non_dates("unseen", 1)


def test_bad_input_is_rejected_in_one_line():
    vocab = source_vocab()
    with pytest.raises(ValueError, match=r"characters 'zä' of '3 März 1999' are not among the 59 the model reads "
                                         r"\(upper and lower case count as different characters\)"):
        check_source("3 März 1999", vocab)
    with pytest.raises(ValueError, match="the year 1850 of '3 March 1850' is outside 1969-2068, the years the model"):
        check_source("3 March 1850", vocab)
    with pytest.raises(ValueError, match="the year 2069"):
        check_source("2069-01-01", vocab)
    for text in ("19990303", "1/1/68", "wednesday, march 3rd, 1999", "WEDNESDAY 3 MARCH 1969", "3 March 2068"):
        check_source(text, vocab)  # eight digits are not a year; lower- and upper-case weekdays are read
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


def test_calibrate_picks_the_lowest_threshold_that_keeps_the_error_share():
    confidences, right = [0.9, 0.8, 0.7, 0.6, 0.5], [True, True, False, True, False]
    assert calibrate(confidences, right, max_error=0.01) == 0.8  # 0.7 would let 1 wrong in 3 through
    assert calibrate(confidences, right, max_error=0.25) == 0.6  # 1 wrong in 4
    assert calibrate(confidences, right, max_error=0.4) == 0.5  # 2 wrong in 5
    assert calibrate([0.9, 0.2], [False, True]) == 1.0  # the most confident answer is wrong: nothing is safe
    assert calibrate([], []) == 1.0  # a model that wrote no real date
    with pytest.raises(ValueError, match="one right/wrong per confidence, got 2 and 1"):
        calibrate([0.9, 0.2], [True])


def test_the_confidence_is_the_product_of_the_greedy_steps_probabilities():
    torch.manual_seed(0)
    src_vocab, tgt_vocab = source_vocab(), target_vocab()
    model = Seq2Seq(len(src_vocab), len(tgt_vocab), 8, 16, "general").double().eval()
    sources = [s for s, *_ in make_examples("test", 4)]
    src, lengths, _, _ = encode_batch([(s, "") for s in sources], src_vocab, tgt_vocab)
    bos, eos = tgt_vocab.stoi["<bos>"], tgt_vocab.stoi["<eos>"]
    with torch.no_grad():
        state, h_tilde, memory, keys, mask = model.encode(src, lengths)
        y, product = torch.full((4,), bos), torch.ones(4, dtype=torch.float64)
        for _ in range(11):  # every step's most likely character, its probability multiplied in
            logits, state, h_tilde, _ = model.decoder.step(y, state, h_tilde, memory, keys, mask)
            p, y = torch.softmax(logits, dim=1).max(dim=1)
            product *= p
    outputs = translate_dates(model, sources, src_vocab, tgt_vocab, "cpu")
    assert all(len(o) == 11 for o in outputs)  # untrained: no <eos> in 11 steps, so the product has no <eos> term
    with torch.no_grad():
        eos_p = []
        for b, output in enumerate(outputs):  # the <eos> after the 11 characters, one more step
            ids = torch.tensor([bos] + [tgt_vocab.stoi[c] for c in output]).unsqueeze(1)
            logits, _ = model(src[:int(lengths[b]), b:b + 1], lengths[b:b + 1], ids)
            eos_p.append(torch.softmax(logits[-1, 0], dim=0)[eos].item())
    expected = [p * q for p, q in zip(product.tolist(), eos_p)]
    assert output_probability(model, sources, outputs, src_vocab, tgt_vocab, "cpu") == pytest.approx(expected, rel=1e-9)


@pytest.fixture(scope="module")
def dates_run(tmp_path_factory):
    """A small translator trained for one epoch, with its report: (run folder, results)."""
    out = tmp_path_factory.mktemp("dates") / "run"
    config = DatesConfig(epochs=1, train_size=3000, valid_size=200, test_size=200, hidden_size=64, embed_size=16)
    return out, train_dates(config, out, "cpu")


def test_read_dates_answers_only_real_dates_it_is_sure_of(dates_run):
    out, _ = dates_run
    model, src_vocab, tgt_vocab = load_dates_model(out, "cpu")
    texts = [s for s, *_ in make_examples("test", 60)] + ["3 March 1850", "3 März 1999"]
    for threshold in (0.0, 0.5, 1.0):
        readings = read_dates(model, texts, src_vocab, tgt_vocab, threshold)
        assert [r["input"] for r in readings] == texts
        for r in readings[:-2]:
            real = is_real_date(r["output"])
            assert 0 <= r["confidence"] <= 1
            assert r["why"] == (None if real and r["confidence"] >= threshold else
                                "not sure" if real else "not a real date")
            assert r["date"] == (r["output"] if r["why"] is None else None)
        assert readings[-2]["output"] is None and "the year 1850" in readings[-2]["why"]
        assert readings[-1]["output"] is None and "characters 'zä'" in readings[-1]["why"]
    answered = [sum(r["date"] is not None for r in read_dates(model, texts, src_vocab, tgt_vocab, t))
                for t in (0.0, 0.5, 0.999)]
    assert answered[0] >= answered[1] >= answered[2] and answered[0] > answered[2]
    with pytest.raises(ValueError, match="threshold must be a probability from 0 to 1, got 2"):
        read_dates(model, texts, src_vocab, tgt_vocab, 2)
    with pytest.raises(TypeError, match="write \\['3 March 1999'\\]"):
        read_dates(model, "3 March 1999", src_vocab, tgt_vocab, 0.5)


def test_the_report_holds_every_measure_and_the_threshold_is_calibrated(dates_run):
    out, results = dates_run
    assert load_threshold(out) == results["confidence"]["threshold"]
    assert len(results["unseen"]["formats"]) == len(UNSEEN_FORMATS)
    assert len(results["realistic"]["formats"]) == len(REALISTIC_FORMATS) and set(results["realistic"]["kinds"]) == set(KINDS)
    confidence = results["confidence"]
    assert set(confidence["answered"]) == {"test", "unseen", "realistic"}
    assert confidence["calibration_inputs"] == 200 + 200 and confidence["max_error"] == 0.01
    written = confidence["non_dates"]["written"]
    assert written["refused"] == pytest.approx(1 - len(written["examples"]) / len(NOT_DATES))
    assert sum(written["why"].values()) == pytest.approx(written["refused"])
    model, src_vocab, tgt_vocab = load_dates_model(out, "cpu")
    data = {split: make_examples(split, 200) for split in ("valid", "test", "unseen", "realistic")}
    again = dates_report(model, data, src_vocab, tgt_vocab, "cpu")
    assert again["realistic"] == results["realistic"] and again["confidence"] == confidence  # the same model, the same report
    assert load_threshold(out.parent / "nowhere") is None


def test_the_command_line_trains_and_translates(tmp_path, capsys, dates_run):
    out = tmp_path / "run"
    assert main(["dates", "train", "--out", str(out), "--epochs", "1", "--train-size", "200", "--score", "none",
                 "--results", str(tmp_path / "r.json")]) == 0
    assert (tmp_path / "r.json").is_file()
    capsys.readouterr()
    assert main(["dates", "translate", "--out", str(out), "3 March 1999", "Mar 3, 99"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["3 March 1999", "Mar 3, 99"]  # one line per input, in order
    assert main(["dates", "translate", "--out", str(out), "3 März 1999"]) == 1
    printed = capsys.readouterr()
    assert printed.out == "(not read)\t-\t3 März 1999\n" and "error: argument 1: characters 'zä'" in printed.err
    run, _ = dates_run
    for threshold in ("0", "1"):  # everything real answered; nothing the model is less than certain of
        assert main(["dates", "translate", "--out", str(run), "--threshold", threshold, "3 March 1999", "3/3/99"]) == 0
        for line in capsys.readouterr().out.splitlines():
            answer, confidence, _ = line.split("\t")
            if threshold == "1" and float(confidence) < 1:
                assert answer == "not sure" or answer.endswith("(not a real date)")
            elif threshold == "0":
                assert answer != "not sure" and (is_real_date(answer) or answer.endswith("(not a real date)"))
    results = json.loads((run / "results.json").read_text())
    (run / "results.json").write_text(json.dumps({k: v for k, v in results.items() if k != "confidence"}))
    try:
        assert main(["dates", "translate", "--out", str(run), "3 March 1999"]) == 0
        assert "has no calibrated threshold (its run has not finished)" in capsys.readouterr().err
    finally:
        (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(SystemExit):
        main(["dates", "translate", "--out", str(run), "--threshold", "1.5", "3 March 1999"])
    assert "expected a probability from 0 to 1, got 1.5" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="already holds a run"):
        main(["dates", "train", "--out", str(out)])
    with pytest.raises(SystemExit, match="holds no checkpoint.pt"):
        main(["dates", "translate", "--out", str(tmp_path / "none"), "x"])
    with pytest.raises(SystemExit) as info:
        main(["dates", "train", "--out", str(out), "--score", "additive"])
    assert info.value.code == 2 and "invalid choice: 'additive'" in capsys.readouterr().err
