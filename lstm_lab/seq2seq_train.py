"""Training the date translator of chapter 9: teacher forcing, accuracy, and a resumable run folder.

    config = DatesConfig(score="general", epochs=8)
    results = train_dates(config, Path("runs/dates-general"), device)   # checkpoint.pt after every epoch
    model, src_vocab, tgt_vocab = load_dates_model(Path("runs/dates-general"))
    translate_dates(model, ["3 March 1999"], src_vocab, tgt_vocab)  # ['1999-03-03']: what the model writes
    read_dates(model, ["3 March 1999", "March 1999"], src_vocab, tgt_vocab, results["confidence"]["threshold"])
    # a date where the model is sure enough, "not sure" where it is not (see `calibrate`)

The translator's part of the book's one training loop (`lstm_lab.train`): shuffled batches of examples, the
teacher-forced loss as the step (`dates_step`), validation accuracy (`DatesTask`).  The run folder is the same
as every model's (`lstm_lab.runs`): checkpoint.pt, best.pt, vocab.json, results.json (the accuracy after every
epoch, then `dates_report`: accuracy on the test, unseen and realistic formats, the confidence threshold
calibrated on validation data, and how often the tool answers, and rightly, on dates and on non-dates; with
provenance).  The order of the training examples in
epoch e depends only on the seed and e, and the checkpoint holds every random generator's state, so a resumed
run equals an uninterrupted one.  Introduced in chapter 9.
"""
import datetime
import json
from collections import Counter
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

from lstm_lab.config import check_epochs, check_lr
from lstm_lab.data.corpus import Vocab
from lstm_lab.data.dates import (BOS, EOS, KINDS, NOT_DATES, PAD, REALISTIC_FORMATS, UNSEEN_FORMATS, check_source,
                                 encode_batch, format_kind, make_examples, make_non_dates, source_vocab, target_vocab)
from lstm_lab.distributed import SINGLE
from lstm_lab.runs import open_run, train_in_folder, train_run
from lstm_lab.runtime import check_device, pick_device
from lstm_lab.seq2seq import SCORES, Seq2Seq, beam_search, check_beam, greedy_decode
from lstm_lab.train import constant_lr, train_epoch

__all__ = ["DatesConfig", "build_model", "dates_data", "dates_epoch", "decode", "accuracy", "output_probability",
           "calibrate", "translate_dates", "read_dates", "is_real_date", "dates_report", "DatesTask", "train_dates",
           "load_dates_model", "load_threshold"]

TARGET_LEN = 10  # "YYYY-MM-DD"
MAX_ERROR = 0.01  # the calibrated threshold lets through at most 1 wrong answer in 100 on the calibration dates
MAX_EXAMPLES = 1_000_000  # train_size: 50 times the default (drawing them takes a few seconds); more is a typo


@dataclass(frozen=True)
class DatesConfig:
    """A date translator and its training.  Chapter 9."""
    score: str = "general"  # Luong score: "dot", "general", "concat", or "none" (no attention)
    input_feeding: bool = True  # feed the last attentional state h̃ back into the next step's input
    embed_size: int = 32  # character vectors, source and target
    hidden_size: int = 128  # H: decoder state; the encoder's two directions have H/2 each
    train_size: int = 20_000  # training examples, drawn once from the training dates and formats
    valid_size: int = 1_000  # checked after every epoch
    test_size: int = 2_000  # test dates in training formats, again in unseen and in realistic formats
    epochs: int = 5
    batch_size: int = 64
    lr: float = 2e-3  # Adam
    clip_norm: float = 1.0  # clip the global gradient norm
    seed: int = 0  # examples, initialisation and the order of the examples

    def __post_init__(self):
        if self.score not in SCORES + ("none",):
            raise ValueError(f"unknown score {self.score!r}; choose one of: {', '.join(SCORES + ('none',))}")
        if min(self.embed_size, self.hidden_size, self.train_size, self.epochs, self.batch_size) < 1:
            raise ValueError(f"sizes, epochs and batch_size must be positive: {self}")
        check_epochs(self.epochs)
        if self.train_size > MAX_EXAMPLES:
            raise ValueError(f"train_size must be at most {MAX_EXAMPLES:,}, got {self.train_size}")
        check_lr(self.lr)


def build_model(config, src_vocab, tgt_vocab):
    """The Seq2Seq model a DatesConfig describes (seeded by config.seed).  Chapter 9."""
    torch.manual_seed(config.seed)
    score = None if config.score == "none" else config.score
    return Seq2Seq(len(src_vocab), len(tgt_vocab), config.embed_size, config.hidden_size, score,
                   config.input_feeding, pad_id=src_vocab.stoi[PAD])


def dates_data(config):
    """{"train", "valid", "test", "unseen", "realistic"}: lists of examples for a config (the same for the same
    seed).  Chapter 9."""
    sizes = {"train": config.train_size, "valid": config.valid_size, "test": config.test_size,
             "unseen": config.test_size, "realistic": config.test_size}
    return {split: make_examples(split, n, config.seed) for split, n in sizes.items()}


def dates_step(model, batch, src_vocab, tgt_vocab):
    """The translator's step for `lstm_lab.train.train_epoch`: a batch of examples, teacher forcing, the
    cross-entropy per target character (padding ignored).  Returns (loss, {"loss": loss x examples, "examples"})."""
    device = next(model.parameters()).device
    src, lengths, tgt_in, tgt_out = (t.to(device) for t in encode_batch(batch, src_vocab, tgt_vocab))
    logits, _ = model(src, lengths, tgt_in)  # (T, B, V)
    loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=tgt_vocab.stoi[PAD])
    return loss, {"loss": loss.item() * len(batch), "examples": len(batch)}


def shuffled_batches(examples, batch_size, generator):
    """The examples in an order drawn by `generator`, cut into lists of `batch_size` (the last may be smaller)."""
    order = torch.randperm(len(examples), generator=generator).tolist()
    return [[examples[i] for i in order[start:start + batch_size]] for start in range(0, len(examples), batch_size)]


def dates_epoch(model, examples, optimizer, config, epoch, src_vocab, tgt_vocab, progress=False):
    """One pass over the examples in an order fixed by (seed, epoch), with teacher forcing.

    Returns `train_epoch`'s stats: "loss" (summed over the examples: divide by "examples" for the mean loss per
    target character), "examples", "seconds".  Chapter 9."""
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    return train_epoch(model, shuffled_batches(examples, config.batch_size, generator),
                       partial(dates_step, src_vocab=src_vocab, tgt_vocab=tgt_vocab), optimizer, config.clip_norm,
                       progress=progress, desc=f"epoch {epoch}")


@torch.no_grad()
def teacher_forced_loss(model, examples, src_vocab, tgt_vocab, batch_size=256):
    """The mean cross-entropy per target character of `examples`, with teacher forcing (what training minimises)."""
    model.eval()
    total = 0.0
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        total += dates_step(model, batch, src_vocab, tgt_vocab)[1]["loss"]
    return total / len(examples)


def decode(model, sources, src_vocab, tgt_vocab, device, beam=1, batch_size=256):
    """The model's output string for each source string: greedy (beam=1) or beam search.  Chapters 6 and 9."""
    model.eval()
    bos, eos = tgt_vocab.stoi[BOS], tgt_vocab.stoi[EOS]
    outputs = []
    for start in range(0, len(sources), batch_size):
        chunk = [(s, "") for s in sources[start:start + batch_size]]
        src, lengths, _, _ = (t.to(device) for t in encode_batch(chunk, src_vocab, tgt_vocab))
        if beam == 1:
            tokens, _ = greedy_decode(model, src, lengths, bos, eos, TARGET_LEN + 1)
            token_lists = [[t for t in row if t != eos] for row in tokens.tolist()]
        else:
            token_lists = beam_search(model, src, lengths, bos, eos, TARGET_LEN + 1, beam)
        outputs += ["".join(tgt_vocab.decode(tokens)) for tokens in token_lists]
    return outputs


def score_outputs(outputs, examples):
    """{"exact": share of outputs equal to their target, "chars": share of target characters right in place}."""
    targets = [target for _, target, *_ in examples]
    exact = sum(o == t for o, t in zip(outputs, targets)) / len(targets)
    chars = sum(sum(a == b for a, b in zip(o, t)) for o, t in zip(outputs, targets)) / sum(map(len, targets))
    return {"exact": exact, "chars": chars}


def score_part(outputs, examples, keep):
    """The exact-match share of the examples whose format index k passes keep(k); None if there are none."""
    part = [(o, e) for o, e in zip(outputs, examples) if keep(e[2])]
    return score_outputs([o for o, _ in part], [e for _, e in part])["exact"] if part else None


def accuracy(model, examples, src_vocab, tgt_vocab, device, beam=1):
    """{"exact": share of outputs equal to the target, "chars": share of target characters right in place}.
    Chapters 7 and 9."""
    return score_outputs(decode(model, [source for source, *_ in examples], src_vocab, tgt_vocab, device, beam),
                         examples)


@torch.no_grad()
def output_probability(model, sources, outputs, src_vocab, tgt_vocab, device, batch_size=256):
    """The probability the model gives each output string, its characters and then <eos>, given its source: the
    product over the steps of p(character | source, characters before it).  The model's confidence in what it
    wrote.  Chapter 9."""
    model.eval()
    pad = tgt_vocab.stoi[PAD]
    probabilities = []
    for start in range(0, len(sources), batch_size):
        chunk = list(zip(sources[start:start + batch_size], outputs[start:start + batch_size]))
        src, lengths, tgt_in, tgt_out = (t.to(device) for t in encode_batch(chunk, src_vocab, tgt_vocab))
        logits, _ = model(src, lengths, tgt_in)  # (T, B, V)
        log_p = torch.log_softmax(logits, dim=2).gather(2, tgt_out.unsqueeze(2)).squeeze(2)  # (T, B)
        probabilities += log_p.masked_fill(tgt_out == pad, 0).sum(0).exp().tolist()
    return probabilities


def calibrate(confidences, right, max_error=MAX_ERROR):
    """The lowest confidence threshold t such that, of the answers with confidence >= t, at most a share
    `max_error` is wrong (right: whether each answer is right; a non-date's answer never is).  1.0 when no
    threshold is that safe, or when there are no answers to calibrate on.  Chapter 9."""
    if len(confidences) != len(right):
        raise ValueError(f"calibrate needs one right/wrong per confidence, got {len(confidences)} and {len(right)}")
    threshold, wrong = 1.0, 0
    for count, (confidence, ok) in enumerate(sorted(zip(confidences, right), reverse=True), 1):
        wrong += not ok
        if wrong <= max_error * count:
            threshold = confidence
    return threshold


def translate_dates(model, texts, src_vocab, tgt_vocab, device=None, beam=1):
    """ISO dates for a list of strings a person typed; ValueError (one line) for text the model cannot read or a
    beam outside 1 to the target vocabulary's size.

    device: where the model is (None: its parameters' device).  The model writes ten characters whatever it
    reads: `is_real_date` says whether they name a real date.  Chapter 9."""
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a date translator (lstm_lab.seq2seq.Seq2Seq, from load_dates_model), got "
                        f"{type(model).__name__}")
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings, got the str {texts[:40]!r}: write [{texts[:40]!r}]")
    check_beam(beam, len(tgt_vocab))
    for text in texts:
        check_source(text, src_vocab)
    device = check_device(device) if device is not None else next(model.parameters()).device
    return decode(model, list(texts), src_vocab, tgt_vocab, device, beam)


def is_real_date(text):
    """Whether text is a date in ISO 8601 form, YYYY-MM-DD, that exists (no 30 February).  Chapter 9."""
    try:
        return len(text) == TARGET_LEN and datetime.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def read_dates(model, texts, src_vocab, tgt_vocab, threshold, device=None, beam=1):
    """What a careful tool answers for each string a person typed: a list of dicts, one per text, with
    "input", "output" (the ten characters the model wrote, None if it could not read the text), "confidence"
    (`output_probability`, None if not read), "date" (the ISO date, or None) and "why" (None when there is a date,
    else "not sure": confidence below `threshold`, "not a real date", or why the text was not read: characters the
    model does not know, a year outside the trained ones, too long).  Chapter 9."""
    if not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a probability from 0 to 1, got {threshold!r}")
    if isinstance(texts, str):
        raise TypeError(f"texts must be a list of strings, got the str {texts[:40]!r}: write [{texts[:40]!r}]")
    readings, readable = [], []
    for text in texts:
        try:
            check_source(text, src_vocab)
            readable.append(text)
            readings.append({"input": text})
        except ValueError as error:
            readings.append({"input": text, "output": None, "confidence": None, "date": None, "why": str(error)})
    outputs = translate_dates(model, readable, src_vocab, tgt_vocab, device, beam)
    device = device if device is not None else next(model.parameters()).device
    confidences = output_probability(model, readable, outputs, src_vocab, tgt_vocab, device)
    answers = iter(zip(outputs, confidences))
    for reading in readings:
        if "why" in reading:
            continue
        output, confidence = next(answers)
        why = why_no_date(output, confidence, threshold)
        reading.update(output=output, confidence=confidence, date=None if why else output, why=why)
    return readings


def why_no_date(output, confidence, threshold):
    """Why an output of the model is not given as a date: "not a real date", "not sure" (its confidence is below
    `threshold`), or None when it is given."""
    return "not a real date" if not is_real_date(output) else "not sure" if confidence < threshold else None


def refusal_share(readings):
    """The share of readings without a date, and of them, why: {"refused": share, "why": {reason: share}}, the
    reasons cut to their kind ("not sure", "not a real date", "not read")."""
    kinds = Counter("not read" if r["output"] is None else r["why"] for r in readings if r["why"])
    return {"refused": sum(kinds.values()) / len(readings), "why": {k: n / len(readings) for k, n in kinds.items()}}


def dates_report(model, data, src_vocab, tgt_vocab, device, seed=0):
    """Everything chapter 9 measures of a trained translator, as a dict:

    "test", "unseen", "realistic"  accuracy (`accuracy`); unseen and realistic also per format ("formats", in
                                   the order of UNSEEN_FORMATS / REALISTIC_FORMATS) and realistic per kind
    "confidence"   "threshold": `calibrate`d on validation dates in training and unseen formats (no non-date:
                   the model never saw one, and a threshold is meant for the inputs a tool is built for);
                   "answered": for test, unseen and realistic, the share given a date and how many of those are
                   right; "non_dates": for generated test non-dates and the hand-written NOT_DATES, the share
                   refused and why ("examples": the written ones that got a date)
    data: `dates_data(config)` (at least its valid, test, unseen and realistic splits); the calibration draws as
    many dates in unseen formats as there are validation examples, the non-date test as many non-dates as there
    are test examples.  Chapter 9."""
    calibration_size, test_size = len(data["valid"]), len(data["test"])
    result, outputs = {}, {}
    for split, formats in (("test", None), ("unseen", UNSEEN_FORMATS), ("realistic", REALISTIC_FORMATS)):
        examples = data[split]
        outputs[split] = decode(model, [source for source, *_ in examples], src_vocab, tgt_vocab, device)
        result[split] = score_outputs(outputs[split], examples)
        if formats:
            result[split]["formats"] = [score_part(outputs[split], examples, lambda k: k == wanted)
                                        for wanted in range(len(formats))]
    kinds = [format_kind(pattern) for pattern, _ in REALISTIC_FORMATS]
    result["realistic"]["kinds"] = {kind: score_part(outputs["realistic"], data["realistic"],
                                                     lambda k: kinds[k] == kind) for kind in KINDS}
    # calibration: validation dates in training and unseen formats, never the test's dates or formats
    dates = data["valid"] + make_examples("valid", calibration_size, seed, UNSEEN_FORMATS)
    readings = read_dates(model, [s for s, *_ in dates], src_vocab, tgt_vocab, 0.0, device)
    given = [(r["confidence"], r["output"] == target) for r, (_, target, *_) in zip(readings, dates) if r["date"]]
    threshold = calibrate([c for c, _ in given], [ok for _, ok in given])
    confidence = {"threshold": threshold, "max_error": MAX_ERROR, "calibration_inputs": len(readings), "answered": {}}
    for split in ("test", "unseen", "realistic"):  # every source here is readable: reuse the outputs above
        sources = [s for s, *_ in data[split]]
        confidences = output_probability(model, sources, outputs[split], src_vocab, tgt_vocab, device)
        given = [o == t for o, c, (_, t, *_) in zip(outputs[split], confidences, data[split])
                 if why_no_date(o, c, threshold) is None]
        confidence["answered"][split] = {"answered": len(given) / len(sources), "right": sum(given) / max(len(given), 1)}
    generated = [text for text, _ in make_non_dates("test", test_size, seed)]
    written = read_dates(model, list(NOT_DATES), src_vocab, tgt_vocab, threshold, device)
    confidence["non_dates"] = {
        "generated": refusal_share(read_dates(model, generated, src_vocab, tgt_vocab, threshold, device)),
        "written": {**refusal_share(written), "examples": [[r["input"], r["date"]] for r in written if r["date"]]}}
    result["confidence"] = confidence
    return result


def load_threshold(out):
    """The confidence threshold calibrated at the end of the run in folder `out` (its results.json), or None if
    the run has not finished.  Chapter 9."""
    path = Path(out) / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    return results.get("confidence", {}).get("threshold")


class DatesTask:
    """The date translator as a task of the book's training loop (`lstm_lab.train.fit`) and of a run folder
    (`lstm_lab.runs.train_run`).  data: `dates_data(config)`.  Chapter 9."""
    kind = "dates"  # the run-folder kind: `python -m lstm_lab dates train`
    monitor = "valid_loss"  # best.pt follows the validation loss
    next_lr = staticmethod(constant_lr)
    data_sha256 = None  # the examples are generated from the config, which a resume checks already

    def __init__(self, config, data, device):
        self.config, self.configs, self.data = config, {"dates": config}, data
        self.src_vocab, self.tgt_vocab, self.device = source_vocab(), target_vocab(), torch.device(device)

    @classmethod
    def load(cls, configs, device, world=SINGLE, progress=False):
        """The task of a run folder: the examples its config draws.  One process only."""
        return cls(configs["dates"], dates_data(configs["dates"]), device)

    # --- the training loop's part (`fit`)
    def train_epoch(self, model, optimizer, epoch, scaler=None, progress=False):
        return dates_epoch(model, self.data["train"], optimizer, self.config, epoch, self.src_vocab, self.tgt_vocab,
                           progress)

    def train_record(self, stats):
        return {"train_loss": stats["loss"] / stats["examples"]}

    def validate(self, model):
        valid = self.data["valid"]
        right = accuracy(model, valid, self.src_vocab, self.tgt_vocab, self.device)
        return {"valid_exact": right["exact"], "valid_chars": right["chars"],
                "valid_loss": teacher_forced_loss(model, valid, self.src_vocab, self.tgt_vocab)}

    # --- the run folder's part (`lstm_lab.runs.train_run`)
    @property
    def settings(self):
        c = self.config
        return {"seed": c.seed, "epochs": c.epochs, "patience": 0, "lr": c.lr, "amp": None}

    def vocab_tokens(self):
        return {"source": self.src_vocab.itos, "target": self.tgt_vocab.itos}

    def build_model(self):
        return build_model(self.config, self.src_vocab, self.tgt_vocab)

    def make_optimizer(self, model):
        return torch.optim.Adam(model.parameters(), lr=self.config.lr)

    def epoch_line(self, r):
        return (f"epoch {r['epoch']:2d}  loss {r['train_loss']:.4f}  valid exact {r['valid_exact']:.3f}  "
                f"chars {r['valid_chars']:.4f}  {r['train_seconds']:.0f} s")

    def results(self, run_state, model):
        """The results JSON of a run so far (complete: False until it is tested)."""
        history = run_state["history"]
        return {"config": asdict(self.config), "history": history, "complete": False,
                "train_seconds": sum(r["train_seconds"] for r in history),
                "parameters": sum(p.numel() for p in model.parameters())}

    def finish(self, model, run_state, load_best):
        """`dates_report` of the final model: accuracy on the test dates in training, unseen and realistic
        formats, the calibrated confidence threshold and what the tool answers with it."""
        final = dates_report(model, self.data, self.src_vocab, self.tgt_vocab, self.device, self.config.seed)
        seconds = sum(r["train_seconds"] for r in run_state["history"])
        print(f"test exact match {final['test']['exact']:.4f}, unseen formats {final['unseen']['exact']:.4f}, "
              f"realistic formats {final['realistic']['exact']:.4f}; threshold "
              f"{final['confidence']['threshold']:.3f}, {seconds:.0f} s of training")
        return final


def train_dates(config, out, device=None, resume=False, argv=(), results=None, progress=False):
    """Train (or resume) the date translator of `config` in run folder `out`; checkpoint after every epoch; test
    at the end.  resume: go on with the run in `out`, trained with the same config (config.epochs may be
    larger: the run is extended).  device: None picks the GPU when there is one.  Returns the results dict also
    written to out/results.json (and to `results`).  Chapter 9."""
    device = pick_device(device)
    return train_in_folder(out, resume, lambda has_run: train_run(
        DatesTask, {"dates": config}, out, has_run, device, argv, results, config.epochs, progress))


def load_dates_model(out, device=None, weights="last"):
    """(model, src_vocab, tgt_vocab) of a trained run folder, in eval mode: by default after its last epoch (what
    its test results are of).  RunError (one line) for a folder that holds no date translator.  Chapter 9."""
    device = pick_device(device)
    checkpoint, chosen, tokens = open_run(out, device, "dates", weights)
    config = DatesConfig(**{k: v for k, v in checkpoint["config"]["dates"].items()
                            if k in {f.name for f in fields(DatesConfig)}})
    src_vocab, tgt_vocab = Vocab(tokens["source"]), Vocab(tokens["target"])  # the run's own, as it was trained
    model = build_model(config, src_vocab, tgt_vocab).to(device)
    model.load_state_dict(chosen["state_dict"])
    return model.eval(), src_vocab, tgt_vocab
