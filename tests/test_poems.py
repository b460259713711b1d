"""Chapter 8's Tang poems: split, forms, vocabulary, padded batches, the masked loss, the packed model and
poems generated to a form."""
import json
import math
import os
from pathlib import Path

import pytest
import torch

from lstm_lab.cli import main
from lstm_lab.data.corpus import PAD, UNK
from lstm_lab.data.poems import (FORMS, batches, encode_poem, load_poems, pad_batch, pad_fixed, padding_share,
                                 poem_form, poem_split, poem_vocab)
from lstm_lab.generate import sample_next
from lstm_lab.init import INIT_SCHEMES, initialise_, unit_spread
from lstm_lab.poem_model import PoemLM, batching_candidates, generate_poem, masked_nll
from lstm_lab.poems_train import (PoemsConfig, TimedBatches, cost_estimate, load_poems_model, poem_perplexity,
                                  poem_scores, train_poems)

QUATRAIN = "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。"
POEMS = [QUATRAIN, "床前明月光，疑是地上霜。举头望明月，低头思故乡。", "春眠不觉晓，处处闻啼鸟。",
         "两个黄鹂鸣翠柳，一行白鹭上青天。窗含西岭千秋雪，门泊东吴万里船。"]
SHARED = os.environ.get("LSTM_LAB_DATA")
needs_tang = pytest.mark.skipif(not (SHARED and (Path(SHARED) / "tang" / "poems.txt").is_file()),
                                reason="needs the Tang corpus in $LSTM_LAB_DATA")


def test_forms_are_read_from_lines_and_punctuation():
    assert poem_form(QUATRAIN) == "5x4"
    assert poem_form(POEMS[3]) == "7x4"
    assert poem_form(QUATRAIN * 2) == "5x8"
    assert poem_form(POEMS[2]) is None  # two lines: no form of the four
    assert poem_form(QUATRAIN.replace("。", "，")) is None  # every line must close as the form says
    assert poem_form("白日依山尽黄河入海流") is None


def test_the_split_depends_on_the_text_only():
    assert [poem_split(p) for p in POEMS] == [poem_split(p) for p in reversed(POEMS)][::-1]
    shares = {s: 0 for s in ("train", "valid", "test")}
    for k in range(4000):
        shares[poem_split(f"诗{k}。")] += 1
    assert 0.03 < shares["test"] / 4000 < 0.07 and 0.03 < shares["valid"] / 4000 < 0.07


def test_vocabulary_batches_and_the_masked_loss():
    vocab = poem_vocab(POEMS)
    assert vocab.itos[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"] and vocab.stoi[PAD] == 0
    assert encode_poem("白龘", vocab).tolist() == [1, vocab.stoi["白"], 3, 2]  # unknown -> <unk>
    inputs, targets, lengths = pad_batch(POEMS, vocab)
    assert inputs.shape == targets.shape == (len(POEMS[3]) + 1, 4)
    assert lengths.tolist() == [len(p) + 1 for p in POEMS]
    assert targets[lengths[2] - 1, 2] == vocab.stoi["<eos>"] and targets[lengths[2]:, 2].eq(0).all()
    logits = torch.randn(*targets.shape, len(vocab), dtype=torch.float64)
    by_hand = torch.stack([-torch.log_softmax(logits[t, b], 0)[targets[t, b]]
                           for b in range(4) for t in range(int(lengths[b]))]).mean()
    torch.testing.assert_close(masked_nll(logits, targets, 0), by_hand)
    torch.testing.assert_close(masked_nll(logits, targets, 0, how="mask"), by_hand)
    assert padding_share([QUATRAIN], 30) == pytest.approx(1 - 25 / 30)  # 24 characters and <eos> of 30
    inputs, targets = pad_fixed(POEMS, vocab, 30)
    assert inputs.shape == targets.shape == (30, 4)
    assert targets[:25, 0].tolist() == encode_poem(QUATRAIN, vocab)[1:].tolist() and targets[25:, 0].eq(0).all()
    assert targets[:, 3].ne(0).all() and targets[-1, 3] == vocab.stoi[POEMS[3][29]]  # cut: target 30 is character 30
    assert (targets == 0).float().mean() == pytest.approx(1 - sum(min(len(p) + 1, 30) for p in POEMS) / 120)


def test_bucketed_batches_hold_every_poem_once_and_similar_lengths_together():
    poems = [("字" * n) + "。" for n in range(1, 201)]
    groups = batches(poems, 10, torch.Generator().manual_seed(0))
    assert sorted(p for g in groups for p in g) == sorted(poems)
    assert max(max(map(len, g)) - min(map(len, g)) for g in groups) <= 10  # sorted within chunks
    assert batches(poems, 10, bucket=False)[0] == poems[:10]


def test_the_packed_model_reads_each_poem_as_if_alone():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = PoemLM(len(vocab), 8, 12, num_layers=2).double().eval()
    inputs, _, lengths = pad_batch(POEMS, vocab)
    logits = model(inputs, lengths)
    unpacked = model(inputs)  # no lengths: every position runs, so only the longest poem is read right
    torch.testing.assert_close(unpacked[:, 3], logits[:, 3])
    assert not torch.allclose(unpacked[-1, 0], logits[-1, 0])  # padding went through the state
    for b in range(4):
        n = int(lengths[b])
        alone = model(inputs[:n, b:b + 1], lengths[b:b + 1])
        torch.testing.assert_close(logits[:n, b], alone[:, 0])
        state, steps = None, []
        for t in range(n):  # one character at a time, as generation does
            step_logits, state = model.step(inputs[t, b:b + 1], state)
            steps.append(step_logits[0])
        torch.testing.assert_close(torch.stack(steps), alone[:, 0])


def test_generated_poems_keep_the_form_and_the_acrostic():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = PoemLM(len(vocab), 8, 12, num_layers=1)
    for form, (width, lines) in FORMS.items():
        poem = generate_poem(model, vocab, form, seed=1)
        assert poem_form(poem) == form
    poem = generate_poem(model, vocab, "5x4", acrostic="白黄欲更", top_k=5)
    assert [line[0] for line in poem.replace("。", "，").split("，")[:4]] == list("白黄欲更")
    assert generate_poem(model, vocab, "7x4", first="春").startswith("春")
    assert generate_poem(model, vocab, "5x4", temperature=0) == generate_poem(model, vocab, "5x4", temperature=0,
                                                                                 seed=9)  # greedy: no sampling
    with pytest.raises(ValueError, match="unknown form '6x4'; choose one of: 5x4, 7x4, 5x8, 7x8"):
        generate_poem(model, vocab, "6x4")
    with pytest.raises(ValueError, match="never saw in training: 龘"):
        generate_poem(model, vocab, "5x4", acrostic="白龘欲更")
    with pytest.raises(ValueError, match="needs 4 characters, got 2"):
        generate_poem(model, vocab, "5x4", acrostic="白黄")
    with pytest.raises(ValueError, match="first must be one character"):
        generate_poem(model, vocab, "5x4", first="白日")


def test_every_call_draws_a_fresh_seed_and_reports_it():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = PoemLM(len(vocab), 8, 12, num_layers=1)
    poems = [generate_poem(model, vocab, "5x4", acrostic="白黄欲更", temperature=1.0) for _ in range(5)]
    assert len({poem.seed for poem in poems}) == 5 and len(set(poems)) > 1
    torch.manual_seed(0)  # seeding torch does not fix the fresh seeds: they come from the operating system
    again = generate_poem(model, vocab, "5x4", acrostic="白黄欲更", temperature=1.0)
    assert again.seed not in {poem.seed for poem in poems}
    for poem in poems:  # the reported seed writes the same poem again
        assert generate_poem(model, vocab, "5x4", acrostic="白黄欲更", temperature=1.0, seed=poem.seed) == poem
    assert generate_poem(model, vocab, "5x4", seed=5).seed == 5 and isinstance(poems[0], str)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        generate_poem(model, vocab, "5x4", seed=-1)


def reference_pick(logits, temperature, top_k, generator, banned):
    """The poems' own sampler before `sample_next` took its place, kept here as the reference."""
    logits = logits.clone()
    logits[banned] = float("-inf")
    if temperature == 0:
        return int(logits.argmax())
    logits = logits / temperature
    if top_k is not None:
        cutoff = logits.topk(top_k).values[-1]
        logits[logits < cutoff] = float("-inf")
    return int(torch.multinomial(torch.softmax(logits, dim=0).cpu(), 1, generator=generator))


def test_poems_draw_with_the_one_sampler_as_they_did_with_their_own():
    banned = [0, 1, 2, 3, 7]
    for temperature, top_k in [(0.8, 20), (1.0, None), (1.5, 5), (0.5, 1), (0.3, 40)]:
        for seed in range(30):
            logits = torch.randn(40)
            a, b = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
            assert sample_next(logits, temperature, top_k, a, banned) == reference_pick(logits, temperature, top_k, b,
                                                                                       banned)
    for _ in range(30):  # temperature 0, greedy: generate_poem asks sample_next for the top 1
        logits = torch.randn(40)
        logits[7] = 10.0  # the most likely, but banned
        assert sample_next(logits, 1.0, 1, None, banned) == reference_pick(logits, 0, None, None, banned) != 7


def test_a_prompt_starts_the_poem_and_must_fit_the_form():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = PoemLM(len(vocab), 8, 12, num_layers=1)
    for prompt in ["白日依山尽，黄", "白日依山尽", "白日依山尽，黄河入海流。"]:
        poem = generate_poem(model, vocab, "5x4", prompt=prompt, seed=3)
        assert poem.startswith(prompt) and poem_form(poem) == "5x4"
    assert generate_poem(model, vocab, "5x4", prompt=QUATRAIN) == QUATRAIN
    with pytest.raises(ValueError, match="character 6 is '黄', the form has '，' there"):
        generate_poem(model, vocab, "5x4", prompt="白日依山尽黄")
    with pytest.raises(ValueError, match="character 3 is '，', the form has a character there"):
        generate_poem(model, vocab, "5x4", prompt="白日，")
    with pytest.raises(ValueError, match="a 5x4 prompt has 1 to 24 characters, got 48"):
        generate_poem(model, vocab, "5x4", prompt=QUATRAIN * 2)
    with pytest.raises(ValueError, match="never saw in training: 龘"):
        generate_poem(model, vocab, "5x4", prompt="龘")
    with pytest.raises(ValueError, match="at most one of first, prompt and acrostic"):
        generate_poem(model, vocab, "5x4", prompt="白", acrostic="白黄欲更")


def one_step(model, vocab):
    """One Adam step of `model` on POEMS; returns the last layer's h over the real positions after it."""
    inputs, targets, lengths = pad_batch(POEMS, vocab)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    masked_nll(model(inputs, lengths), targets, 0).backward()
    optimizer.step()
    return model.hidden(inputs, lengths)[targets != 0]


@pytest.mark.parametrize("scheme", ["zeros", "constant"])
def test_symmetric_inits_keep_every_hidden_unit_identical_after_training(scheme):
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = initialise_(PoemLM(len(vocab), 8, 12, num_layers=2), scheme)
    h = one_step(model, vocab)
    assert unit_spread(h) == 0 and torch.equal(h, h[:, :1].expand_as(h))  # 12 copies of one unit
    if scheme == "zeros":
        assert h.abs().max() == 0  # g = tanh(0) = 0 writes nothing: h stays 0, and the decoder never learns
    else:
        assert h.abs().max() > 0
    default = PoemLM(len(vocab), 8, 12, num_layers=2)
    assert unit_spread(one_step(default, vocab)) > 0.1


def test_every_init_scheme_does_what_it_says():
    torch.manual_seed(0)
    H = 6
    models = {name: initialise_(PoemLM(30, 5, H, num_layers=2), name) for name in INIT_SCHEMES}
    rnn = {name: dict(model.rnn.named_parameters()) for name, model in models.items()}
    assert all(p.abs().max() == 0 for p in models["zeros"].parameters())
    assert rnn["constant"]["weight_hh_l1"].eq(0.05).all() and models["constant"].decoder.weight.eq(0.05).all()
    assert rnn["normal-1"]["weight_ih_l0"].std() > 0.5  # against 1/sqrt(6) = 0.41 at most for the default
    w = rnn["orthogonal"]["weight_hh_l1"]
    for gate in range(4):
        block = w[gate * H:(gate + 1) * H]
        torch.testing.assert_close(block @ block.T, torch.eye(H))
    forget = rnn["forget-bias-1"]["bias_ih_l0"][H:2 * H] + rnn["forget-bias-1"]["bias_hh_l0"][H:2 * H]
    torch.testing.assert_close(forget, torch.ones(H))
    with pytest.raises(ValueError, match="unknown initialisation 'ones'; choose one of: default, zeros"):
        initialise_(models["default"], "ones")
    assert unit_spread(torch.ones(3, 4, 5)) == 0 and unit_spread(torch.zeros(2, 5)) == 0
    assert unit_spread(torch.tensor([[1.0, -1.0]])) == pytest.approx(2 ** 0.5)  # std of (1, -1) / mean |h|


@needs_tang
def test_the_corpus_splits_into_disjoint_parts_of_the_whole():
    splits = load_poems()
    assert sum(map(len, splits.values())) == 57_580
    assert not set(splits["test"]) & set(splits["train"]) and not set(splits["valid"]) & set(splits["train"])
    assert all(poem_split(p) == "test" for p in splits["test"][:100])


TINY = ["--max-poems", "300", "--hidden-size", "16", "--embed-size", "16", "--num-layers", "1", "--batch-size", "32",
        "--device", "cpu"]


@needs_tang
def test_the_command_line_trains_resumes_and_writes_poems(tmp_path, capsys):
    straight, parts = tmp_path / "straight", tmp_path / "parts"
    assert main(["poems", "train", "--out", str(straight), "--epochs", "2", *TINY]) == 0
    assert main(["poems", "train", "--out", str(parts), "--epochs", "1", *TINY]) == 0
    assert main(["poems", "train", "--out", str(parts), "--epochs", "2", "--resume", *TINY]) == 0
    a, b = (json.loads((folder / "results.json").read_text()) for folder in (straight, parts))
    assert [r["valid_ppl"] for r in a["history"]] == [r["valid_ppl"] for r in b["history"]]
    assert a["test_ppl"] == b["test_ppl"] and a["complete"]
    assert 0 < a["test_unk_share"] < 1 and a["test_ppl_without_unk"] != a["test_ppl"]  # 300 training poems: many <unk>
    assert {(x["form"], poem_form(x["poem"])) for x in a["samples"]} == {("5x4", "5x4"), ("7x4", "7x4")}
    assert len(a["history"][0]["loss_curve"]) == 10 and 0 < a["history"][0]["unit_spread"]  # 10 batches of 32
    capsys.readouterr()
    lines = []
    for seed in ([], [], ["--seed", "7"]):
        assert main(["poems", "generate", "--out", str(straight), "--acrostic", "春夏秋冬", "--form", "5x4", *seed]) == 0
        lines.append(capsys.readouterr().out.strip())
    poems = [line.split("  (seed ")[0] for line in lines]
    assert all(poem_form(poem) == "5x4" and poem[0] == "春" for poem in poems)
    seeds = [int(line.split("(seed ")[1].split(":")[0]) for line in lines]
    assert seeds[0] != seeds[1] and seeds[2] == 7  # a fresh seed each time, unless one is given; it is printed
    assert main(["poems", "generate", "--out", str(straight), "--acrostic", "春夏秋冬", "--seed", str(seeds[0])]) == 0
    assert capsys.readouterr().out.strip() == lines[0]  # the printed seed writes the same poem again
    with pytest.raises(SystemExit) as info:
        main(["poems", "generate", "--out", str(straight), "--form", "9x9"])
    assert info.value.code == 2 and "unknown form '9x9'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="lr: saved"):
        main(["poems", "train", "--out", str(parts), "--resume", "--lr", "0.5", *TINY])
    for bad, message in [(["--optimizer", "rmsprop"], "invalid choice: 'rmsprop'"),
                         (["--init", "ones"], "invalid choice: 'ones'"),
                         (["--forms", "5x4,6x6"], "unknown form '6x6'; choose one of: 5x4, 7x4, 5x8, 7x8")]:
        with pytest.raises(SystemExit) as info:
            main(["poems", "train", "--out", str(tmp_path / "x"), *bad])
        assert info.value.code == 2 and message in capsys.readouterr().err


def test_fixed_length_batches_pad_in_front_or_at_the_end():
    vocab = poem_vocab(POEMS)
    pad = vocab.stoi[PAD]
    for side in ("front", "end"):
        inputs, targets = pad_fixed(POEMS, vocab, 30, side)
        assert inputs.shape == targets.shape == (30, 4)
        assert (targets == pad).float().mean().item() == pytest.approx(padding_share(POEMS, 30, side))
        short = encode_poem(POEMS[2], vocab)  # 12 characters: 14 ids, 16 of padding
        whole = torch.cat([inputs[:1, 2], targets[:, 2]])
        assert whole.tolist() == (short.tolist() + [pad] * 17 if side == "end" else [pad] * 17 + short.tolist())
    assert padding_share(POEMS, 30, "front") < padding_share(POEMS, 30, "end")  # <bos> is a target in front
    with pytest.raises(ValueError, match="side must be 'front' or 'end'"):
        pad_fixed(POEMS, vocab, 30, "pre")


def test_the_first_batches_are_timed_and_the_run_extrapolated_by_characters():
    groups = [[POEMS[k % 4]] * 2 for k in range(6)]
    reports = []
    timed = TimedBatches(groups, "cpu", lambda seconds, characters: reports.append((seconds, characters)), measured=3)
    assert len(timed) == 6 and list(timed) == groups  # the batches pass unchanged
    assert len(reports) == 1 and reports[0][1] == sum(len(p) + 1 for group in groups[1:4] for p in group)
    short = []
    list(TimedBatches(groups[:2], "cpu", lambda *measured: short.append(measured), measured=20))
    assert len(short) == 1 and short[0][1] == 2 * (len(POEMS[1]) + 1)  # fewer batches: what was measured
    assert cost_estimate(2.0, 1000, 50_000, 3) == {"characters_per_second": 500.0, "epoch_seconds": 100.0,
                                                   "run_seconds": 300.0}


@needs_tang
def test_estimate_times_a_few_batches_and_training_says_its_cost_once(tmp_path, capsys):
    record = tmp_path / "estimate.json"
    assert main(["poems", "estimate", *TINY, "--epochs", "3", "--batches", "3", "--json", str(record)]) == 0
    out = capsys.readouterr().out
    estimate = json.loads(record.read_text())
    assert estimate["batches_measured"] == 3 and estimate["epoch_batches"] == 10 and estimate["epochs"] == 3
    assert estimate["run_seconds"] == pytest.approx(3 * estimate["epoch_seconds"])
    assert estimate["config"]["hidden_size"] == 16 and "poems estimate" in estimate["command"]
    assert "measured on cpu" in out and list(tmp_path.iterdir()) == [record]  # no run folder
    assert main(["poems", "train", "--out", str(tmp_path / "run"), "--epochs", "2", *TINY]) == 0
    assert capsys.readouterr().out.count("measured on cpu") == 1  # in the first epoch of the session only


@needs_tang
def test_a_run_on_one_form_keeps_that_form_in_every_split(tmp_path):
    config = PoemsConfig(forms="5x4", epochs=1, max_poems=64, hidden_size=8, embed_size=8, num_layers=1,
                         min_count=2)
    results = train_poems(config, tmp_path, device="cpu")
    assert {x["form"] for x in results["samples"]} == {"5x4"}
    vocab = load_poems_model(tmp_path)[1]
    splits = load_poems()
    kept = [p for p in splits["train"] if poem_form(p) == "5x4"][:64]
    twice = {ch for ch in set("".join(kept)) if sum(p.count(ch) for p in kept) >= 2}
    assert set(vocab.itos[4:]) == twice  # the vocabulary comes from the kept training poems only


def test_poem_scores_count_the_unk_targets_apart():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS[:2])  # the other poems' new characters become <unk>
    model = PoemLM(len(vocab), 8, 12, num_layers=1).eval()
    held_out = POEMS[1:]
    known, unknown = [], []  # each target's NLL, poem by poem, one at a time
    for poem in held_out:
        ids = encode_poem(poem, vocab)
        log_probs = torch.log_softmax(model(ids[:-1, None])[:, 0], dim=-1)
        for t, target in enumerate(ids[1:].tolist()):
            (unknown if target == vocab.stoi[UNK] else known).append(-log_probs[t, target].item())
    scores = poem_scores(model, held_out, vocab)
    assert 0 < scores["unk_share"] == pytest.approx(len(unknown) / (len(known) + len(unknown)))
    assert scores["ppl"] == pytest.approx(math.exp(sum(known + unknown) / len(known + unknown)), rel=1e-5)
    assert scores["ppl_without_unk"] == pytest.approx(math.exp(sum(known) / len(known)), rel=1e-5)
    assert poem_perplexity(model, held_out, vocab) == scores["ppl"]


def test_the_batching_candidates_compute_what_they_say():
    torch.manual_seed(0)
    vocab = poem_vocab(POEMS)
    model = PoemLM(len(vocab), 8, 12, num_layers=1)
    poems = POEMS + [POEMS[2]] * 2
    candidates, positions = batching_candidates(model, poems, vocab, batch_size=3, fixed_len=40)
    real = sum(len(p) + 1 for p in poems)
    assert positions["bucketed, packed"] == real and positions["fixed length, padding in the loss"] == 40 * 6
    assert real < positions["bucketed, padded"] < positions["corpus order, padded"]  # sorting groups lengths
    for name, run in candidates.items():
        losses = run()
        assert len(losses) == 2 and all(torch.isfinite(loss) for loss in losses), name
    assert model.decoder.weight.grad is not None  # each call ran a backward
