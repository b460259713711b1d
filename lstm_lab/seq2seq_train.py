"""Training the date translator of chapter 9: teacher forcing, accuracy, and a resumable run folder.

    config = DatesConfig(score="general", epochs=8)
    results = train_dates(config, Path("runs/dates-general"))      # checkpoint.pt after every epoch
    model, src_vocab, tgt_vocab = load_dates_model(Path("runs/dates-general"))
    translate_dates(model, ["3 March 1999"], src_vocab, tgt_vocab)  # ['1999-03-03']

A run folder holds checkpoint.pt (model, optimizer, history, config: everything to resume) and results.json
(the accuracy after every epoch, then on the test and unseen-format splits, with provenance).  The order of the
training examples in epoch e depends only on the seed and e, so a resumed run equals an uninterrupted one.
Introduced in chapter 9.
"""
import datetime
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from lstm_lab.checkpoint import (SettingsMismatch, atomic_save, atomic_write_json, config_differences,
                                 load_checkpoint, settings_mismatch)
from lstm_lab.dates import BOS, EOS, PAD, check_source, encode_batch, make_examples, source_vocab, target_vocab
from lstm_lab.provenance import provenance
from lstm_lab.seq2seq import SCORES, Seq2Seq, beam_search, greedy_decode

TARGET_LEN = 10  # "YYYY-MM-DD"


@dataclass(frozen=True)
class DatesConfig:
    """A date translator and its training.  Chapter 9."""
    score: str = "general"  # Luong score: "dot", "general", "concat", or "none" (no attention)
    input_feeding: bool = True  # feed the last attentional state h̃ back into the next step's input
    embed_size: int = 32  # character vectors, source and target
    hidden_size: int = 128  # H: decoder state; the encoder's two directions have H/2 each
    train_size: int = 20_000  # training examples, drawn once from the training dates and formats
    valid_size: int = 1_000  # checked after every epoch
    test_size: int = 2_000  # test dates in training formats, and again in unseen formats
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


def build_model(config, src_vocab, tgt_vocab):
    """The Seq2Seq model a DatesConfig describes (seeded by config.seed)."""
    torch.manual_seed(config.seed)
    score = None if config.score == "none" else config.score
    return Seq2Seq(len(src_vocab), len(tgt_vocab), config.embed_size, config.hidden_size, score,
                   config.input_feeding, pad_id=src_vocab.stoi[PAD])


def dates_data(config):
    """{"train", "valid", "test", "unseen"}: lists of examples for a config (the same for the same seed)."""
    sizes = {"train": config.train_size, "valid": config.valid_size, "test": config.test_size,
             "unseen": config.test_size}
    return {split: make_examples(split, n, config.seed) for split, n in sizes.items()}


def train_epoch(model, examples, optimizer, config, epoch, src_vocab, tgt_vocab, device):
    """One pass over the examples in an order fixed by (seed, epoch), with teacher forcing.

    The loss is the cross-entropy per target character, padding ignored.  Returns the mean loss."""
    model.train()
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
    total, count = 0.0, 0
    for start in range(0, len(examples), config.batch_size):
        batch = [examples[i] for i in order[start:start + config.batch_size].tolist()]
        src, lengths, tgt_in, tgt_out = (t.to(device) for t in encode_batch(batch, src_vocab, tgt_vocab))
        logits, _ = model(src, lengths, tgt_in)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=tgt_vocab.stoi[PAD])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        total, count = total + loss.item() * len(batch), count + len(batch)
    return total / count


def decode(model, sources, src_vocab, tgt_vocab, device, beam=1, batch_size=256):
    """The model's output string for each source string: greedy (beam=1) or beam search."""
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


def accuracy(model, examples, src_vocab, tgt_vocab, device, beam=1):
    """{"exact": share of outputs equal to the target, "chars": share of target characters right in place}."""
    outputs = decode(model, [source for source, *_ in examples], src_vocab, tgt_vocab, device, beam)
    targets = [target for _, target, *_ in examples]
    exact = sum(o == t for o, t in zip(outputs, targets)) / len(targets)
    chars = sum(sum(a == b for a, b in zip(o, t)) for o, t in zip(outputs, targets)) / sum(map(len, targets))
    return {"exact": exact, "chars": chars}


def translate_dates(model, texts, src_vocab, tgt_vocab, device="cpu", beam=1):
    """ISO dates for strings a person typed; ValueError (one line) for text the model cannot read.

    The model writes ten characters whatever it reads: `is_real_date` says whether they name a real date."""
    for text in texts:
        check_source(text, src_vocab)
    return decode(model, list(texts), src_vocab, tgt_vocab, torch.device(device), beam)


def is_real_date(text):
    """Whether text is a date in ISO 8601 form, YYYY-MM-DD, that exists (no 30 February)."""
    try:
        return len(text) == TARGET_LEN and datetime.date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def train_dates(config, out, device="cpu", resume=False, argv=(), log=print):
    """Train (or resume) the run in folder `out`; checkpoint after every epoch; test at the end.

    Returns the results dict also written to out/results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src_vocab, tgt_vocab = source_vocab(), target_vocab()
    model = build_model(config, src_vocab, tgt_vocab).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    history = []
    if resume:
        checkpoint = load_checkpoint(out / "checkpoint.pt", map_location=device)
        saved = DatesConfig(**checkpoint["config"]["dates"])
        differences = config_differences(saved, replace(config, epochs=saved.epochs))
        if differences:
            raise SettingsMismatch(settings_mismatch(out, differences))
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history = checkpoint["history"]
    data = dates_data(config)
    for epoch in range(len(history) + 1, config.epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(model, data["train"], optimizer, config, epoch, src_vocab, tgt_vocab, device)
        seconds = time.perf_counter() - start
        valid = accuracy(model, data["valid"], src_vocab, tgt_vocab, device)
        history.append({"epoch": epoch, "train_loss": loss, "valid_exact": valid["exact"],
                        "valid_chars": valid["chars"], "train_seconds": seconds})
        atomic_save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                     "config": {"dates": asdict(config)}}, out / "checkpoint.pt")
        atomic_write_json(dates_results(config, history, model, argv, device), out / "results.json")
        log(f"epoch {epoch:2d}  loss {loss:.4f}  valid exact {valid['exact']:.3f}  chars {valid['chars']:.4f}  "
            f"{seconds:.0f} s")
    results = dates_results(config, history, model, argv, device)
    for split in ("test", "unseen"):
        results[split] = accuracy(model, data[split], src_vocab, tgt_vocab, device)
    results["complete"] = True
    atomic_write_json(results, out / "results.json")
    return results


def dates_results(config, history, model, argv, device):
    """The results JSON of a run so far (complete: False until it is tested), with provenance."""
    return {"config": asdict(config), "history": history, "complete": False,
            "train_seconds": sum(r["train_seconds"] for r in history),
            "parameters": sum(p.numel() for p in model.parameters()),
            **provenance(list(argv), torch.device(device))}


def load_dates_model(out, device="cpu"):
    """(model, src_vocab, tgt_vocab) of a trained run folder, in eval mode."""
    checkpoint = load_checkpoint(Path(out) / "checkpoint.pt", map_location=device)
    config = DatesConfig(**{k: v for k, v in checkpoint["config"]["dates"].items()
                            if k in {f.name for f in fields(DatesConfig)}})
    src_vocab, tgt_vocab = source_vocab(), target_vocab()
    model = build_model(config, src_vocab, tgt_vocab).to(device)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), src_vocab, tgt_vocab
