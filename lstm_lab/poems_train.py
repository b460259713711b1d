"""Training the Tang poem model of chapter 8: optimizers, the masked loss, early stopping, a resumable run folder.

    config = PoemsConfig(optimizer="adam", lr=1e-3, epochs=20)
    results = train_poems(config, Path("runs/poems-adam"), device)   # checkpoint.pt after every epoch
    model, vocab = load_poems_model(Path("runs/poems-adam"))
    generate_poem(model, vocab, "5x4", acrostic="春夏秋冬")

The poems' part of the book's one training loop (`lstm_lab.train`): batches of poems bucketed by length, the
masked loss as the step (`poem_step`), validation perplexity per character (`PoemsTask`).  The run folder is
the same as every model's (`lstm_lab.runs`): checkpoint.pt, best.pt, vocab.json, results.json (validation
perplexity per character after every epoch, then the test perplexity of the best epoch -- with the share of
<unk> targets and the perplexity without them, `poem_scores` -- and sample poems, with provenance).  The order of the batches in epoch e depends only on the seed and e, and the checkpoint holds
every random generator's state, so a resumed run equals an uninterrupted one, dropout included.  Introduced in
chapter 8.
"""
import math
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch
import torch.nn.functional as F

from lstm_lab.config import InputError, check_epochs, check_lr
from lstm_lab.data.corpus import PAD, UNK, Vocab
from lstm_lab.data.poems import FORMS, batches, check_form, load_poems, pad_batch, poem_form, poem_vocab
from lstm_lab.distributed import SINGLE
from lstm_lab.init import INIT_SCHEMES, initialise_, unit_spread
from lstm_lab.poem_model import PoemLM, generate_poem, masked_nll
from lstm_lab.runs import open_run, train_in_folder, train_run
from lstm_lab.runtime import pick_device
from lstm_lab.train import best_epoch, constant_lr, perplexity, train_epoch

__all__ = ["OPTIMIZERS", "PoemsConfig", "make_optimizer", "poem_perplexity", "poem_scores", "loss_curve", "PoemsTask",
           "train_poems", "load_poems_model", "TimedBatches", "cost_estimate", "cost_line", "measure_cost"]

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
        check_lr(self.lr)
        check_epochs(self.epochs)
        if self.forms and not self.form_names():
            raise ValueError(f"forms {self.forms!r} names no form: expected e.g. 5x4 or 5x4,7x4")
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
    """The optimizer `name` (see OPTIMIZERS) over `parameters` at learning rate `lr`.  Chapter 8."""
    if name in ("sgd", "momentum"):
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9 if name == "momentum" else 0.0)
    return {"adagrad": torch.optim.Adagrad, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name](parameters,
                                                                                                      lr=lr)


@torch.no_grad()
def poem_perplexity(model, poems, vocab, device=None, batch_size=256):
    """Perplexity per character of `poems` (their characters and <eos>, never the padding; a character the
    vocabulary lacks is a <unk> target and counts like any other: see `poem_scores`).  Chapter 8."""
    return poem_scores(model, poems, vocab, device, batch_size)["ppl"]


@torch.no_grad()
def poem_scores(model, poems, vocab, device=None, batch_size=256):
    """The perplexity per character of `poems` and what <unk> does to it:

      ppl              over every real target (characters and <eos>), <unk> targets included: `poem_perplexity`
      unk_share        the share of those targets that are <unk> (characters outside the vocabulary)
      ppl_without_unk  over the other targets only: the <unk> targets left out of the mean

    A model predicts <unk> for every rare character at once, so <unk> targets are easier than real ones, and the
    more of them a split holds the lower its `ppl`.  Chapter 8."""
    model.eval()
    device = device or next(model.parameters()).device
    pad, unk = vocab.stoi[PAD], vocab.stoi.get(UNK)
    nll, count = {"all": 0.0, "known": 0.0}, {"all": 0, "known": 0}
    for group in batches(poems, batch_size):
        inputs, targets, lengths = (t.to(device) for t in pad_batch(group, vocab))  # (T, B), (T, B), (B,)
        token_nll = F.cross_entropy(model(inputs, lengths).flatten(0, 1), targets.flatten(), reduction="none")
        real = targets.flatten() != pad  # (T*B,)
        known = real & (targets.flatten() != unk)
        for name, mask in (("all", real), ("known", known)):
            nll[name] += token_nll[mask].double().sum().item()
            count[name] += int(mask.sum())
    return {"ppl": perplexity(nll["all"], count["all"]), "unk_share": 1 - count["known"] / count["all"],
            "ppl_without_unk": perplexity(nll["known"], count["known"]) if count["known"] else math.nan}


def poem_step(model, poems, vocab):
    """The poem model's step for `lstm_lab.train.train_epoch`: a batch of poems padded, the masked loss.

    Returns (loss, {"nll": summed NLL of the real characters, "characters": their number, "losses": [loss]})."""
    device = next(model.parameters()).device
    inputs, targets, lengths = (t.to(device) for t in pad_batch(poems, vocab))  # (T, B), (T, B), (B,)
    loss = masked_nll(model(inputs, lengths), targets, vocab.stoi[PAD])
    real = int((targets != vocab.stoi[PAD]).sum())
    return loss, {"nll": loss.item() * real, "characters": real, "losses": [loss.item()]}


def epoch_batches(poems, config, epoch):
    """The bucketed batches of epoch `epoch`, in an order fixed by (seed, epoch)."""
    return batches(poems, config.batch_size, torch.Generator().manual_seed(config.seed * 1000 + epoch))


def poems_epoch(model, poems, optimizer, config, epoch, vocab, progress=False, timed=None):
    """One pass over the training poems in bucketed batches, in an order fixed by (seed, epoch).
    timed(groups) -> groups: wraps the batches (`TimedBatches` measures the speed of the first ones).

    Returns `train_epoch`'s stats: "nll", "characters", "losses" (one per batch), "seconds"."""
    groups = epoch_batches(poems, config, epoch)
    return train_epoch(model, timed(groups) if timed else groups, partial(poem_step, vocab=vocab), optimizer,
                       config.clip_norm, progress=progress, desc=f"epoch {epoch}")


class TimedBatches:
    """The batches of poems `groups`, unchanged (a list `train_epoch` can count), with the training of batches 2 to
    measured + 1 timed -- the first warms up: allocations, kernel choices -- and report(seconds, characters trained
    in them) called once they are done.  An epoch of fewer batches reports what it measured.  Chapter 8."""

    def __init__(self, groups, device, report, measured=20):
        self.groups, self.device, self.report, self.measured = groups, torch.device(device), report, measured

    def __len__(self):
        return len(self.groups)

    def now(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the GPU's queued work is part of the batches' time
        return time.perf_counter()

    def __iter__(self):
        start, characters = None, 0
        for k, group in enumerate(self.groups):  # resumed here once batch k - 1 was trained
            if k == 1:
                start = self.now()
            elif k == self.measured + 1:
                self.report(self.now() - start, characters)
                start = None
            if 1 <= k <= self.measured:
                characters += sum(len(poem) + 1 for poem in group)  # its real targets: characters and <eos>
            yield group
        if start is not None and characters:
            self.report(self.now() - start, characters)


def cost_estimate(seconds, characters, epoch_characters, epochs):
    """{"characters_per_second", "epoch_seconds", "run_seconds"}: an epoch of `epoch_characters` real characters
    and `epochs` of them, at the speed measured (`characters` trained in `seconds`).  Chapter 8."""
    speed = characters / seconds
    return {"characters_per_second": speed, "epoch_seconds": epoch_characters / speed,
            "run_seconds": epochs * epoch_characters / speed}


def duration(seconds):
    """"40 s", "12 min", "3.4 h": a time as a reader takes it in."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min" if seconds < 7200 else \
        f"{seconds / 3600:.1f} h"


def cost_line(estimate, device, epochs):
    """One line: the measured speed and what it means for an epoch and for the run.  Chapter 8."""
    return (f"measured on {device}: {estimate['characters_per_second']:,.0f} characters/s, so about "
            f"{duration(estimate['epoch_seconds'])} an epoch and {duration(estimate['run_seconds'])} for {epochs} "
            "epochs (fewer if early stopping ends the run)")


def loss_curve(losses, points=20):
    """The training losses of an epoch averaged in `points` consecutive groups of batches (fewer if short).
    Chapter 8."""
    size = max(1, math.ceil(len(losses) / points))
    return [sum(losses[k:k + size]) / len(losses[k:k + size]) for k in range(0, len(losses), size)]


@torch.no_grad()
def hidden_unit_spread(model, poems, vocab, device=None, count=64):
    """`lstm_lab.init.unit_spread` of the last layer's h over the real positions of the first `count` poems."""
    model.eval()
    device = device or next(model.parameters()).device
    inputs, targets, lengths = (t.to(device) for t in pad_batch(poems[:count], vocab))
    return unit_spread(model.hidden(inputs, lengths)[targets != vocab.stoi[PAD]])


class PoemsTask:
    """The poem model as a task of the book's training loop (`lstm_lab.train.fit`) and of a run folder
    (`lstm_lab.runs.train_run`).  splits: {"train", "valid", "test"}: lists of poems of the config's forms and
    lengths.  Chapter 8."""
    kind = "poems"  # the run-folder kind: `python -m lstm_lab poems train`
    monitor = "valid_ppl"  # early stopping and best.pt follow the validation perplexity per character
    next_lr = staticmethod(constant_lr)
    data_sha256 = None  # the Tang corpus is pinned by its own sha256 (lstm_lab.data.manifest): nothing to recheck

    def __init__(self, config, splits, vocab, device):
        self.config, self.configs, self.splits, self.vocab = config, {"poems": config}, splits, vocab
        self.training = splits["train"][:config.max_poems or None]
        self.device = torch.device(device)
        self.estimated = False  # the speed is measured, and the run's time estimated, once per session

    @classmethod
    def load(cls, configs, device, data_dir=None, world=SINGLE, progress=False):
        """The task of a run folder: the corpus read, the poems its config keeps, the vocabulary of the training
        poems.  One process only (world must be SINGLE)."""
        config = configs["poems"]
        splits = {name: [p for p in poems if config.keep(p)] for name, poems in load_poems(data_dir).items()}
        empty = [name for name, poems in splits.items() if not poems]
        if empty:
            raise InputError(f"no poem of forms {config.forms!r} and at most {config.max_len} characters is left in "
                             f"the {' and '.join(empty)} split(s): choose other forms")
        vocab = poem_vocab(splits["train"][:config.max_poems or None], config.min_count)
        return cls(config, splits, vocab, device)

    # --- the training loop's part (`fit`)
    def train_epoch(self, model, optimizer, epoch, scaler=None, progress=False):
        timed = None
        if not self.estimated:  # the first epoch of this session: say early how long the run will take
            self.estimated = True
            epochs_left = self.config.epochs - epoch + 1
            epoch_characters = sum(len(poem) + 1 for poem in self.training)

            def report(seconds, characters):
                estimate = cost_estimate(seconds, characters, epoch_characters, epochs_left)
                print(cost_line(estimate, self.device, epochs_left), flush=True)

            timed = partial(TimedBatches, device=self.device, report=report)
        return poems_epoch(model, self.training, optimizer, self.config, epoch, self.vocab, progress, timed)

    def train_record(self, stats):
        return {"train_ppl": perplexity(stats["nll"], stats["characters"]), "loss_curve": loss_curve(stats["losses"])}

    def validate(self, model):
        valid = self.splits["valid"]
        return {"valid_ppl": poem_perplexity(model, valid, self.vocab, self.device),
                "unit_spread": hidden_unit_spread(model, valid, self.vocab, self.device)}

    # --- the run folder's part (`lstm_lab.runs.train_run`)
    @property
    def settings(self):
        c = self.config
        return {"seed": c.seed, "epochs": c.epochs, "patience": c.patience, "lr": c.lr, "amp": None}

    def vocab_tokens(self):
        return self.vocab.itos

    def build_model(self):
        return self.config.build_model(len(self.vocab))

    def make_optimizer(self, model):
        return make_optimizer(self.config.optimizer, model.parameters(), self.config.lr)

    def epoch_line(self, r):
        return (f"epoch {r['epoch']:3d}  train ppl {r['train_ppl']:8.2f}  valid ppl {r['valid_ppl']:8.2f}  "
                f"{r['train_seconds']:6.0f} s")

    def results(self, run_state, model):
        """The results JSON of a run so far (complete: False until it is tested)."""
        history = run_state["history"]
        return {"config": asdict(self.config), "history": history, "complete": False,
                "best_epoch": best_epoch(history), "best_valid_ppl": run_state["best_valid"],
                "train_seconds": sum(r["train_seconds"] for r in history)}

    def finish(self, model, run_state, load_best):
        """Test perplexity of the best validation epoch, and sample poems of each form trained on.  Returns the
        fields to add to the results."""
        best_at = best_epoch(run_state["history"])  # >= 1: a run that diverged is not tested (`lstm_lab.runs`)
        if best_at != run_state["epoch"]:
            load_best(model)
        test = poem_scores(model, self.splits["test"], self.vocab, self.device)
        print(f"test perplexity per character {test['ppl']:.2f} (best validation epoch {best_at}); "
              f"{test['unk_share']:.1%} of the test targets are <unk> (characters outside the vocabulary): "
              f"without them {test['ppl_without_unk']:.2f}")
        return {"test_ppl": test["ppl"], "test_unk_share": test["unk_share"],
                "test_ppl_without_unk": test["ppl_without_unk"],
                "samples": sample_poems(model, self.vocab, self.config.form_names() or ["5x4", "7x4"])}


def train_poems(config, out, device=None, resume=False, argv=(), data_dir=None, results=None, progress=False):
    """Train (or resume) the poem model of `config` in run folder `out`: checkpoint every epoch, stop early after
    `patience` epochs without a better validation perplexity, then test the best epoch and write sample poems.

    resume: go on with the run in `out`, trained with the same config (config.epochs may be larger: the run is
    extended).  device: None picks the GPU when there is one (`lstm_lab.runtime.pick_device`).  Returns the
    results dict also written to out/results.json (and to `results`).  Chapter 8."""
    device = pick_device(device)
    return train_in_folder(out, resume, lambda has_run: train_run(
        PoemsTask, {"poems": config}, out, has_run, device, argv, results, config.epochs, progress,
        data_dir=data_dir))


def measure_cost(config, device=None, measured=20, data_dir=None):
    """How long training `config` takes here, without a run folder: trains batches 1 to measured + 1 of epoch 1
    (`TimedBatches`: the first warms up) and extrapolates by characters to an epoch and to config.epochs.

    Returns `cost_estimate`'s numbers plus "device", "batches_measured", "epoch_batches", "epoch_characters",
    "epochs" and "parameters".  Chapter 8."""
    device = pick_device(device)
    task = PoemsTask.load({"poems": config}, device, data_dir)
    torch.manual_seed(config.seed)
    model = task.build_model().to(device)
    groups = epoch_batches(task.training, config, 1)
    if len(groups) < 2:
        raise InputError(f"{len(task.training)} training poems make {len(groups)} batch of {config.batch_size}: "
                         "measuring needs two or more (one warms up)")
    found = []
    timed = TimedBatches(groups[:measured + 1], device, lambda seconds, chars: found.append((seconds, chars)),
                         measured)
    train_epoch(model, timed, partial(poem_step, vocab=task.vocab), task.make_optimizer(model), config.clip_norm)
    epoch_characters = sum(len(poem) + 1 for poem in task.training)
    return {**cost_estimate(*found[0], epoch_characters, config.epochs), "device": str(device),
            "batches_measured": min(measured, len(groups) - 1), "epoch_batches": len(groups),
            "epoch_characters": epoch_characters, "epochs": config.epochs,
            "parameters": sum(p.numel() for p in model.parameters())}


SAMPLE_SETTINGS = (  # the poems a finished run writes into its results, per form; each drawn one with its seed
    {"temperature": 0.0},  # greedy: nothing is drawn
    {"temperature": 0.8, "top_k": 20, "seed": 0},
    {"temperature": 0.8, "top_k": 20, "seed": 1},
    {"temperature": 1.0, "seed": 0},
    {"first": "月", "temperature": 0.8, "top_k": 20, "seed": 0},
    {"acrostic": "春夏秋冬", "temperature": 0.8, "top_k": 20, "seed": 0},
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
            poem = generate_poem(model, vocab, form, **{"seed": 0, **settings})  # greedy too: nothing left to chance
            samples.append({"form": form, **settings, "poem": str(poem)})
    return samples


def load_poems_model(out, device=None, weights="best"):
    """(model, vocabulary) of a trained run folder, in eval mode: by default at its best validation epoch.

    RunError (one line) for a folder that holds no poem run, or whose files do not fit together.  Chapter 8."""
    device = pick_device(device)
    checkpoint, chosen, tokens = open_run(out, device, "poems", weights)
    config = PoemsConfig(**checkpoint["config"]["poems"])
    vocab = Vocab(tokens)
    model = config.build_model(len(vocab)).to(device)
    model.load_state_dict(chosen["state_dict"])
    return model.eval(), vocab
