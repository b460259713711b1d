"""Training the Tang poem model of chapter 8: optimizers, the masked loss, early stopping, a resumable run folder.

    config = PoemsConfig(optimizer="adam", lr=1e-3, epochs=20)
    results = train_poems(config, Path("runs/poems-adam"))            # checkpoint.pt after every epoch
    model, vocab = load_poems_model(Path("runs/poems-adam"))
    generate_poem(model, vocab, "5x4", acrostic="春夏秋冬")

A run folder holds checkpoint.pt (model, optimizer, history, config, vocabulary: everything to resume) and
results.json (validation perplexity per character after every epoch, then test perplexity and sample poems,
with provenance).  The order of the batches in epoch e depends only on the seed and e, so a resumed run
equals an uninterrupted one.  Introduced in chapter 8.
"""
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from lstm_lab.checkpoint import (SettingsMismatch, atomic_save, atomic_write_json, config_differences,
                                 load_checkpoint, settings_mismatch)
from lstm_lab.corpus import Vocab
from lstm_lab.init import INIT_SCHEMES, initialise_, unit_spread
from lstm_lab.poems import (FORMS, PAD, PoemLM, batches, check_form, generate_poem, load_poems, masked_nll,
                            pad_batch, poem_form, poem_vocab)
from lstm_lab.provenance import provenance

OPTIMIZERS = ("sgd", "momentum", "adagrad", "adam", "adamw")


@dataclass(frozen=True)
class PoemsConfig:
    """A poem model and its training.  Chapter 8."""
    optimizer: str = "adam"  # one of OPTIMIZERS; momentum is SGD with momentum 0.9
    lr: float = 1e-3
    embed_size: int = 256
    hidden_size: int = 512  # seed 002's sizes: 512 / 512
    num_layers: int = 2
    dropout: float = 0.0
    batch_size: int = 128
    epochs: int = 20
    patience: int = 10  # stop after this many epochs without a better validation loss (0: never)
    clip_norm: float = 5.0
    max_len: int = 125  # poems of at most this many characters, in every split (92.8% of the corpus)
    max_poems: int = 0  # train on the first N training poems only (0: all); quick runs and CI
    forms: str = ""  # keep only poems of these forms in every split, e.g. "5x4" or "5x4,7x4" ("": every poem)
    min_count: int = 1  # the vocabulary: characters seen at least this often in the training poems
    init: str = "default"  # one of lstm_lab.init.INIT_SCHEMES
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be positive and finite, got {self.lr}")
        for form in self.form_names():
            check_form(form)
        if self.init not in INIT_SCHEMES:
            raise ValueError(f"unknown initialisation {self.init!r}; choose one of: {', '.join(INIT_SCHEMES)}")

    def form_names(self):
        """The forms kept, as a list ([]: every poem)."""
        return [form for form in self.forms.split(",") if form]

    def keep(self, poem):
        """Whether a poem belongs to this run's data: short enough, and of one of its forms if it names any."""
        return len(poem) <= self.max_len and (not self.forms or poem_form(poem) in self.form_names())

    def build_model(self, vocab_size):
        """The PoemLM of this config, initialised by its scheme (seeded by the caller)."""
        model = PoemLM(vocab_size, self.embed_size, self.hidden_size, self.num_layers, self.dropout)
        return initialise_(model, self.init)


def make_optimizer(name, parameters, lr):
    """The optimizer `name` (see OPTIMIZERS) over `parameters` at learning rate `lr`."""
    if name in ("sgd", "momentum"):
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9 if name == "momentum" else 0.0)
    return {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](parameters,
                                                                                                      lr=lr)


@torch.no_grad()
def poem_perplexity(model, poems, vocab, device, batch_size=256):
    """Perplexity per character of `poems` (their characters and <eos>, never the padding)."""
    model.eval()
    total, count = 0.0, 0
    for group in batches(poems, batch_size):
        inputs, targets, lengths = (t.to(device) for t in pad_batch(group, vocab))
        real = int((targets != vocab.stoi[PAD]).sum())
        total += masked_nll(model(inputs, lengths), targets, vocab.stoi[PAD]).item() * real
        count += real
    return math.exp(total / count)


def train_epoch(model, poems, optimizer, config, epoch, vocab, device):
    """One pass over the training poems in bucketed batches, in an order fixed by (seed, epoch).
    Returns the training perplexity per character."""
    model.train()
    generator = torch.Generator().manual_seed(config.seed * 1000 + epoch)
    total, count, losses = 0.0, 0, []
    for group in batches(poems, config.batch_size, generator):
        inputs, targets, lengths = (t.to(device) for t in pad_batch(group, vocab))
        loss = masked_nll(model(inputs, lengths), targets, vocab.stoi[PAD])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
        optimizer.step()
        real = int((targets != vocab.stoi[PAD]).sum())
        total, count = total + loss.item() * real, count + real
        losses.append(loss.item())
    return math.exp(total / count), losses


def loss_curve(losses, points=20):
    """The training losses of an epoch averaged in `points` consecutive groups of batches (fewer if short)."""
    size = max(1, math.ceil(len(losses) / points))
    return [sum(losses[k:k + size]) / len(losses[k:k + size]) for k in range(0, len(losses), size)]


@torch.no_grad()
def hidden_unit_spread(model, poems, vocab, device, count=64):
    """`lstm_lab.init.unit_spread` of the last layer's h over the real positions of the first `count` poems."""
    model.eval()
    inputs, targets, lengths = (t.to(device) for t in pad_batch(poems[:count], vocab))
    return unit_spread(model.hidden(inputs, lengths)[targets != vocab.stoi[PAD]])


def train_poems(config, out, device="cpu", resume=False, argv=(), data_dir=None, log=print):
    """Train (or resume) the run in folder `out`, checkpointing every epoch, stopping early after `patience`
    epochs without a better validation perplexity; then test the best epoch and write sample poems.
    Returns the results dict also written to out/results.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    splits = {name: [p for p in poems if config.keep(p)] for name, poems in load_poems(data_dir).items()}
    training = splits["train"][:config.max_poems or None]
    checkpoint = load_checkpoint(out / "checkpoint.pt", map_location=device) if resume else None
    if checkpoint is not None:
        saved = PoemsConfig(**checkpoint["config"]["poems"])
        differences = config_differences(saved, replace(config, epochs=saved.epochs))
        if differences:
            raise SettingsMismatch(settings_mismatch(out, differences))
    vocab = Vocab(checkpoint["vocab"]) if checkpoint is not None else poem_vocab(training, config.min_count)
    torch.manual_seed(config.seed)
    model = config.build_model(len(vocab)).to(device)
    optimizer = make_optimizer(config.optimizer, model.parameters(), config.lr)
    history, best = [], {"valid_ppl": float("inf"), "epoch": 0, "state_dict": None}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["state_dict"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        history, best = checkpoint["history"], checkpoint["best"]
    for epoch in range(len(history) + 1, config.epochs + 1):
        if config.patience and epoch - 1 - best["epoch"] >= config.patience:
            break  # early stopping
        start = time.perf_counter()
        train_ppl, losses = train_epoch(model, training, optimizer, config, epoch, vocab, device)
        seconds = time.perf_counter() - start
        valid_ppl = poem_perplexity(model, splits["valid"], vocab, device)
        if valid_ppl < best["valid_ppl"]:
            best = {"valid_ppl": valid_ppl, "epoch": epoch,
                    "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        history.append({"epoch": epoch, "train_ppl": train_ppl, "valid_ppl": valid_ppl, "train_seconds": seconds,
                        "loss_curve": loss_curve(losses),
                        "unit_spread": hidden_unit_spread(model, splits["valid"], vocab, device)})
        atomic_save({"state_dict": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history,
                     "best": best, "vocab": vocab.itos, "config": {"poems": asdict(config)}}, out / "checkpoint.pt")
        atomic_write_json(poems_results(config, history, best, argv, device), out / "results.json")
        log(f"epoch {epoch:3d}  train ppl {train_ppl:8.2f}  valid ppl {valid_ppl:8.2f}  {seconds:6.0f} s")
        if not math.isfinite(valid_ppl):
            break  # diverged: no later epoch can recover, and the best epoch so far is kept
    results = {**poems_results(config, history, best, argv, device), "complete": True,
               "diverged": not math.isfinite(history[-1]["valid_ppl"]), "test_ppl": None, "samples": []}
    if best["state_dict"] is not None:  # None: diverged in its first epoch
        model.load_state_dict(best["state_dict"])
        results["test_ppl"] = poem_perplexity(model, splits["test"], vocab, device)
        results["samples"] = sample_poems(model, vocab, config.form_names() or ["5x4", "7x4"])
    atomic_write_json(results, out / "results.json")
    return results


SAMPLE_SETTINGS = (  # the poems a finished run writes into its results, per form it was trained on
    {"temperature": 0.0},  # greedy
    {"temperature": 0.8, "top_k": 20, "seed": 0},
    {"temperature": 0.8, "top_k": 20, "seed": 1},
    {"temperature": 1.0, "seed": 0},
    {"first": "月", "temperature": 0.8, "top_k": 20},
    {"acrostic": "春夏秋冬", "temperature": 0.8, "top_k": 20},
)


def sample_poems(model, vocab, forms):
    """[{"form", settings..., "poem"}, ...]: SAMPLE_SETTINGS for every form in `forms`; settings whose
    characters or line count the model or form cannot take are skipped."""
    samples = []
    for form in forms:
        for settings in SAMPLE_SETTINGS:
            if "acrostic" in settings and len(settings["acrostic"]) != FORMS[form][1]:
                continue
            if any(ch not in vocab.stoi for ch in settings.get("acrostic", "") + settings.get("first", "")):
                continue
            samples.append({"form": form, **settings, "poem": generate_poem(model, vocab, form, **settings)})
    return samples


def poems_results(config, history, best, argv, device):
    """The results JSON of a run so far (complete: False until it is tested), with provenance."""
    return {"config": asdict(config), "history": history, "complete": False, "best_epoch": best["epoch"],
            "best_valid_ppl": best["valid_ppl"], "train_seconds": sum(r["train_seconds"] for r in history),
            **provenance(list(argv), torch.device(device))}


def load_poems_model(out, device="cpu"):
    """(model at its best validation epoch, vocabulary) of a trained run folder, in eval mode."""
    checkpoint = load_checkpoint(Path(out) / "checkpoint.pt", map_location=device)
    config = PoemsConfig(**checkpoint["config"]["poems"])
    vocab = Vocab(checkpoint["vocab"])
    model = config.build_model(len(vocab)).to(device)
    model.load_state_dict(checkpoint["best"]["state_dict"])
    return model.eval(), vocab
