"""Configuration of a language model and of its training: two small frozen dataclasses and named presets.

The presets are the three configurations of Zaremba, Sutskever and Vinyals (2014), "Recurrent Neural Network
Regularization", Penn Treebank word level, exactly as the paper gives them; `depth-200`, the small one cut to four
epochs for chapter 5's depth study on a CPU; and `smoke`, a tiny one that trains in seconds on a CPU (CI runs
it).  Introduced in chapter 6.
"""
from dataclasses import dataclass, fields, replace
from typing import Optional

__all__ = ["InputError", "RNN_CHOICES", "LEVEL_CHOICES", "PRESETS", "MAX_LR", "MAX_EPOCHS", "ModelConfig",
           "TrainConfig", "whole_number", "check_choice", "check_epochs", "check_lr", "preset", "config_from_dict"]

RNN_CHOICES = ("lab", "torch")  # lstm_lab.LSTM (this book's) or torch.nn.LSTM (cuDNN on a GPU)
SCHEDULE_CHOICES = ("zaremba", "plateau", "constant")
LEVEL_CHOICES = ("word", "char")
AMP_CHOICES = ("bfloat16", "float16")  # the low precision of mixed-precision training (None: all float32)


class InputError(ValueError):
    """Input a run cannot use, found before any training: a text too short for its splits or its batch size, a file
    that is not text, a vocabulary setting that keeps no real token, a filter that keeps no poem.  The command
    line reports it in one line with exit status 2, as it does a bad option.  Chapter 6."""


MAX_LR = 1e6  # a larger learning rate cannot train any model; past 3.4e38 a float32 optimizer step overflows
MAX_EPOCHS = 10_000  # a larger count is a typo, not a plan


@dataclass(frozen=True)
class ModelConfig:
    """The shape of a `LanguageModel`.  Introduced in chapter 6."""
    vocab_size: int = 10_000  # PTB: 9,999 words (with <unk>) plus <eos>
    embed_size: int = 200  # width of a word vector; Zaremba uses embed_size == hidden_size
    hidden_size: int = 200  # H, units per LSTM layer
    num_layers: int = 2  # stacked LSTM layers
    dropout: float = 0.0  # Zaremba's non-recurrent dropout: embedding output and every layer's output
    tie_weights: bool = False  # decoder shares the embedding matrix (Press & Wolf 2016); needs embed == hidden
    init_range: float = 0.1  # every parameter (biases too) starts U(-init_range, init_range)
    rnn: str = "lab"  # "lab": lstm_lab.LSTM, "torch": torch.nn.LSTM
    tie_layers: bool = False  # layers 2..L share one set of weights (chapter 5's experiment; rnn "lab" only)

    def __post_init__(self):
        check_choice("rnn", self.rnn, RNN_CHOICES)
        sizes = {"vocab_size": self.vocab_size, "embed_size": self.embed_size, "hidden_size": self.hidden_size,
                 "num_layers": self.num_layers}
        for name, value in sizes.items():
            if not whole_number(value):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if min(sizes.values()) < 1:
            raise ValueError(f"vocab_size, embed_size, hidden_size and num_layers must be positive: {self}")
        if not 0 < self.init_range < float("inf"):  # also false for nan
            raise ValueError(f"init_range must be positive and finite, got {self.init_range}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tie_layers and self.rnn != "lab":
            raise ValueError(f"tie_layers=True needs rnn 'lab' (lstm_lab's TiedLayersLSTM), got {self.rnn!r}")
        if self.tie_weights and self.embed_size != self.hidden_size:
            raise ValueError("tie_weights=True needs embed_size == hidden_size, got "
                             f"{self.embed_size} and {self.hidden_size}")


@dataclass(frozen=True)
class TrainConfig:
    """How a `LanguageModel` is trained.  Introduced in chapter 6."""
    corpus: str = "ptb"  # a name in lstm_lab.data.download.CORPORA, or the path of your own text file or folder
    level: str = "word"  # tokens: "word" (words, <eos> after each line) or "char" (every character)
    max_vocab: int = 0  # keep the most frequent training tokens only, <unk> for the rest; 0 = all
    batch_size: int = 20  # B, parallel streams the training text is cut into
    seq_len: int = 20  # T, time steps per truncated-BPTT window ("unroll")
    eval_batch_size: int = 20  # streams for the per-epoch validation pass (TensorFlow's ptb_word_lm: 20)
    test_batch_size: int = 1  # one stream through the whole test text, state carried (ptb_word_lm: 1)
    epochs: int = 13  # passes over the training text
    lr: float = 1.0  # plain SGD learning rate
    schedule: str = "zaremba"  # "zaremba": fixed decay; "plateau": decay when valid stalls; "constant"
    decay_after: int = 4  # zaremba: epochs at the full rate; epoch e > decay_after gets lr * decay**(e - decay_after)
    lr_decay: float = 0.5  # multiplier per decay step (zaremba and plateau)
    clip_norm: float = 5.0  # clip the global gradient norm to this; 0 turns clipping off
    sum_over_time: bool = True  # Zaremba's loss: NLL summed over the T steps, averaged over the B streams
    patience: int = 0  # early stopping: stop after this many epochs without a better valid loss; 0 = never
    max_batches: int = 0  # stop each training epoch after this many windows (quick runs); 0 = whole epoch
    seed: int = 0  # seeds initialisation and dropout
    amp: Optional[str] = None  # mixed precision: None (float32), "bfloat16" or "float16" (with a GradScaler); chapter 7

    def __post_init__(self):
        check_choice("schedule", self.schedule, SCHEDULE_CHOICES)
        check_choice("level", self.level, LEVEL_CHOICES)
        if self.max_vocab == 1 or self.max_vocab < 0:
            raise ValueError(f"max_vocab must be 0 (all) or at least 2 (a token and <unk>), got {self.max_vocab}")
        if self.amp is not None:
            check_choice("amp", self.amp, AMP_CHOICES)
        if min(self.batch_size, self.seq_len, self.eval_batch_size, self.test_batch_size, self.epochs) < 1:
            raise ValueError(f"batch sizes, seq_len and epochs must be positive: {self}")
        check_epochs(self.epochs)
        check_lr(self.lr)
        if not 0 < self.lr_decay <= 1:
            raise ValueError(f"need 0 < lr_decay <= 1, got lr_decay={self.lr_decay}")


def whole_number(value):
    """Whether `value` is an int and not a bool (True is an int to Python, but never a count or an id).
    Chapter 6."""
    return isinstance(value, int) and not isinstance(value, bool)


def check_epochs(epochs):
    """Raise ValueError unless `epochs` is at most MAX_EPOCHS.  Chapter 6."""
    if epochs > MAX_EPOCHS:
        raise ValueError(f"epochs must be at most {MAX_EPOCHS:,}, got {epochs}")


def check_lr(lr):
    """Raise ValueError unless `lr` is a learning rate a model can train with: above 0, at most MAX_LR.  Chapter 6."""
    if not 0 < lr <= MAX_LR:  # also false for nan
        raise ValueError(f"lr must be above 0 and at most {MAX_LR:g}, got {lr}")


def check_choice(name, value, choices):
    """Raise a ValueError naming the valid choices when `value` is not one of them.  Chapter 6."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")


# Zaremba et al. (2014), section 4.1.  All: batch 20, SGD starting at lr 1, forget-gate bias 0.
PRESETS = {
    "zaremba-small": (  # 2 x 200, no dropout, 13 epochs, halve lr after each epoch from epoch 5, clip 5
        ModelConfig(hidden_size=200, embed_size=200, dropout=0.0, init_range=0.1),
        TrainConfig(seq_len=20, epochs=13, decay_after=4, lr_decay=0.5, clip_norm=5.0)),
    "zaremba-medium": (  # 2 x 650, dropout 0.5, 39 epochs, lr / 1.2 per epoch after 6, unroll 35, clip 5
        ModelConfig(hidden_size=650, embed_size=650, dropout=0.5, init_range=0.05),
        TrainConfig(seq_len=35, epochs=39, decay_after=6, lr_decay=1 / 1.2, clip_norm=5.0)),
    "zaremba-large": (  # 2 x 1500, dropout 0.65, 55 epochs, lr / 1.15 per epoch after 14, unroll 35, clip 10
        ModelConfig(hidden_size=1500, embed_size=1500, dropout=0.65, init_range=0.04),
        TrainConfig(seq_len=35, epochs=55, decay_after=14, lr_decay=1 / 1.15, clip_norm=10.0)),
    "depth-200": (  # chapter 5's CPU depth study: zaremba-small's shape, 4 epochs, lr halved after epoch 2
        ModelConfig(hidden_size=200, embed_size=200, dropout=0.0, init_range=0.1),
        TrainConfig(seq_len=20, epochs=4, decay_after=2, lr_decay=0.5, clip_norm=5.0)),
    "smoke": (  # tiny: a few seconds on a CPU; 30 windows an epoch
        ModelConfig(hidden_size=16, embed_size=16, dropout=0.0, init_range=0.1),
        TrainConfig(batch_size=8, seq_len=10, eval_batch_size=64, test_batch_size=64, epochs=3,
                    decay_after=1, max_batches=30)),
}


def preset(name, **overrides):
    """The (ModelConfig, TrainConfig) of a named preset; keyword overrides go to whichever config has the field.

    preset("zaremba-small", rnn="torch", epochs=2).  Unknown names raise ValueError listing the valid ones.
    Introduced in chapter 6."""
    check_choice("preset", name, tuple(PRESETS))
    model_config, train_config = PRESETS[name]
    model_fields = {f.name for f in fields(ModelConfig)}
    train_fields = {f.name for f in fields(TrainConfig)}
    unknown = set(overrides) - model_fields - train_fields
    if unknown:
        raise ValueError(f"unknown config field(s) {sorted(unknown)}; valid: {sorted(model_fields | train_fields)}")
    model_config = replace(model_config, **{k: v for k, v in overrides.items() if k in model_fields})
    train_config = replace(train_config, **{k: v for k, v in overrides.items() if k in train_fields})
    return model_config, train_config


def config_from_dict(cls, values):
    """Rebuild a config dataclass from `asdict` output, rejecting fields it does not have.  Chapter 6."""
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {sorted(unknown)}")
    return cls(**values)

