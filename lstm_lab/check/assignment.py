"""The coursework assignment's fixed parts: its settings, its data, the language models it trains with the
student's functions, and the results a correct solution reached when it was recorded.

    config = preset_for(device)                      # AssignmentConfig: the CPU or the GPU settings
    data = assignment_data(config)                   # Tiny Shakespeare, character level, as BPTT windows
    rows = compare({"your LSTM, 1 layer": (MyLSTM, 1), ...}, train_windows, evaluate, data, config, device)
    expected_results()                               # the recorded runs of the package's solutions

The blanks.  Each blank of `appendix/assignment.ipynb` defines a function or class that raises
NotImplementedError until the student writes it.  A cell right after it, hidden from the rendered page, runs
`name = fill_blank("name", name)`: the student's definition comes back unchanged, unless $LSTM_LAB_SOLUTIONS is
"1", when the package's solution (`lstm_lab.check.solutions`) replaces it.  The book's build sets that variable
(`make book`, `tools/run_chapters.py`), so every build runs the whole assignment with correct code and measures
what a correct solution reaches; a student (on Colab the hidden cells are there too) never gets a solution
without asking for one.  Appendix, "The coursework assignment".
"""
import math
import os
import time
from dataclasses import dataclass

import torch
from lstm_lab.check.solutions import SOLUTIONS
from lstm_lab.config import ModelConfig
from lstm_lab.data.corpus import batchify, bptt_windows, load_corpus
from lstm_lab.experiments.records import load_recorded
from lstm_lab.model import LanguageModel, count_parameters

__all__ = ["SOLUTIONS_VARIABLE", "solutions_filled", "fill_blank", "AssignmentConfig", "PRESETS", "preset_for",
           "assignment_data", "language_model", "train_and_measure", "assignment_models", "compare", "RECORDS",
           "RECORD_COMMAND", "expected_results", "expected_rows"]

SOLUTIONS_VARIABLE = "LSTM_LAB_SOLUTIONS"  # "1": the blanks are filled with the package's solutions


def solutions_filled(environ=None):
    """Whether the blanks are to be filled with the package's solutions: $LSTM_LAB_SOLUTIONS is "1".
    The coursework assignment (appendix), on chapters 1 to 6."""
    return (os.environ if environ is None else environ).get(SOLUTIONS_VARIABLE, "0") == "1"


def fill_blank(name, yours, environ=None):
    """`yours` (the student's definition of the blank `name`), or the package's solution when $LSTM_LAB_SOLUTIONS
    is "1" (the book's build).  name: "MyLSTMCell", "MyLSTM", "train_windows" or "evaluate".
    The coursework assignment (appendix), on chapters 1 to 6."""
    if name not in SOLUTIONS:
        raise KeyError(f"no blank named {name!r}; the blanks are {', '.join(SOLUTIONS)}")
    return SOLUTIONS[name] if solutions_filled(environ) else yours


@dataclass(frozen=True)
class AssignmentConfig:
    """The assignment's run: a character-level language model on Tiny Shakespeare, trained for a fixed number of
    windows with Adam, measured by validation perplexity.  The coursework assignment (appendix), on chapters 1 to 6."""
    name: str = "cpu"  # the preset's name, recorded with the results
    corpus: str = "tinyshakespeare"  # read at character level (65 characters)
    embed_size: int = 32  # width of a character vector
    hidden_size: int = 128  # H, units per LSTM layer
    seq_len: int = 50  # T, steps per truncated-BPTT window
    batch_size: int = 32  # B, streams the training text is cut into
    windows: int = 300  # training windows per model: 300 x 50 x 32 = 480,000 characters, half the training text
    valid_chars: int = 20_000  # the first characters of the validation split, read as 10 streams
    lr: float = 3e-3  # Adam's learning rate
    clip_norm: float = 1.0  # the global gradient norm is clipped to this
    seed: int = 0  # seeds every model's initialisation


PRESETS = {"cpu": AssignmentConfig(),  # about a minute for all four models on a 2-core CPU, one thread
           "gpu": AssignmentConfig(name="gpu", hidden_size=256, windows=600)}  # nearly all the training text, wider


def preset_for(device):
    """The preset for a torch.device: "gpu" on CUDA, else "cpu".
    The coursework assignment (appendix), on chapters 1 to 6."""
    return PRESETS["gpu" if torch.device(device).type == "cuda" else "cpu"]


def assignment_data(config, data_dir=None):
    """{"vocab_size", "train": [(inputs, targets)] of config.windows windows, each (T, B), "valid": the windows of
    the validation slice (10 streams)}, from the corpus at character level.
    The coursework assignment (appendix), on chapters 1 to 6."""
    corpus = load_corpus(config.corpus, level="char", data_dir=data_dir, progress=False)
    train = corpus.splits["train"][: config.batch_size * (config.windows * config.seq_len + 1)]
    valid = corpus.splits["valid"][: config.valid_chars]
    return {"vocab_size": len(corpus.vocab), "train": list(bptt_windows(batchify(train, config.batch_size),
                                                                        config.seq_len)),
            "valid": list(bptt_windows(batchify(valid, 10), config.seq_len))}


def language_model(vocab_size, config, num_layers=1, lstm=None):
    """`LanguageModel` (embedding -> LSTM -> decoder) with the assignment's sizes, seeded with config.seed.

    lstm: a class called as lstm(input_size, hidden_size, num_layers) -> a module called like nn.LSTM (the
    student's `MyLSTM`); None: nn.LSTM.  The coursework assignment (appendix), on chapters 1 to 6."""
    model_config = ModelConfig(vocab_size=vocab_size, embed_size=config.embed_size, hidden_size=config.hidden_size,
                               num_layers=num_layers, rnn="torch")
    torch.manual_seed(config.seed)
    rnn = None if lstm is None else lstm(config.embed_size, config.hidden_size, num_layers)
    return LanguageModel(model_config, rnn=rnn)


def train_and_measure(model, train_windows, evaluate, data, config, device):
    """Train `model` with the student's train_windows(model, windows, lr, clip_norm) at the config's rate and
    clipping, then measure it with evaluate(model, windows).  Returns {"parameters", "windows", "seconds",
    "train ppl", "valid ppl"}: the training time (device synchronised), the perplexity of the last 20 training
    windows and of the validation windows.  The coursework assignment (appendix), on chapters 1 to 6."""
    model.to(device)
    train = [(x.to(device), y.to(device)) for x, y in data["train"]]
    valid = [(x.to(device), y.to(device)) for x, y in data["valid"]]
    start = time.perf_counter()
    losses = train_windows(model, train, lr=config.lr, clip_norm=config.clip_norm)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    last = [float(v) for v in losses[-20:]]
    return {"parameters": count_parameters(model), "windows": len(train), "seconds": round(seconds, 1),
            "train ppl": math.exp(sum(last) / len(last)), "valid ppl": float(evaluate(model, valid))}


def assignment_models(my_lstm):
    """{label: (lstm class, num_layers)}: the four models the assignment compares, the student's LSTM `my_lstm`
    and nn.LSTM (None), each with one and two layers.  The coursework assignment (appendix), on chapters 1 to 6."""
    return {"your LSTM, 1 layer": (my_lstm, 1), "your LSTM, 2 layers": (my_lstm, 2),
            "nn.LSTM, 1 layer": (None, 1), "nn.LSTM, 2 layers": (None, 2)}


def compare(models, train_windows, evaluate, data, config, device):
    """[row] for each {label: (lstm class or None for nn.LSTM, num_layers)}: `train_and_measure` of a fresh
    `language_model`, each from the same seed.  A row: {"model", "layers", ...train_and_measure's}.
    The coursework assignment (appendix), on chapters 1 to 6."""
    rows = []
    for label, (lstm, num_layers) in models.items():
        model = language_model(data["vocab_size"], config, num_layers, lstm)
        rows.append({"model": label, "layers": num_layers,
                     **train_and_measure(model, train_windows, evaluate, data, config, torch.device(device))})
    return rows


RECORDS = {"CPU": "assignment-cpu.json", "GPU": "assignment-gpu.json"}  # in lstm_lab/recorded/
RECORD_COMMAND = "python tools/record_assignment.py"  # runs the package's solutions, writes the record


def expected_results():
    """{"CPU": record or None, "GPU": record or None}: the recorded runs of `compare` with the package's
    solutions (written by tools/record_assignment.py): provenance, the config and the rows.
    The coursework assignment (appendix), on chapters 1 to 6."""
    return {kind: load_recorded(name) for kind, name in RECORDS.items()}



def expected_rows(records, live=None):
    """[row] to show as the expected results: each recorded model's validation perplexity and training time on a
    CPU and on a GPU, with where and when it was recorded; a missing record is one row saying how to make it.
    records: `expected_results()`.  The coursework assignment (appendix), on chapters 1 to 6."""
    rows = []
    for kind, record in records.items():
        if record is None:
            command = RECORD_COMMAND + (" --device cuda" if kind == "GPU" else "")
            rows.append({"device": kind, "model": "not yet recorded", "valid ppl": "", "seconds": "",
                         "recorded": f"waits for `{command}` on a {kind} (Colab: a GPU runtime)"})
            continue
        config = record["config"]
        for row in record["rows"]:
            rows.append({"device": kind, "model": row["model"], "valid ppl": f"{row['valid ppl']:.2f}",
                         "seconds": f"{row['seconds']:.0f}",
                         "recorded": f"{config['windows']} windows, H={config['hidden_size']}; {record['device']}, "
                                     f"{record['date'][:10]}, commit {(record['commit'] or '?')[:7]}"})
    return rows
