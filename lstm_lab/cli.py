"""The command line: `python -m lstm_lab train | evaluate | generate | poems | dates | bench | throughput`, and nothing
else: every subcommand's options are parsed and checked here.

    python -m lstm_lab train --preset zaremba-small --rnn lab --out runs/small-lab [--resume] [--epochs N] [--amp]
    python -m lstm_lab train --preset zaremba-small --corpus wikitext-2 --out runs/wt2-small
    python -m lstm_lab train --preset smoke --text-file my_text.txt --level char --out runs/mine
    torchrun --nproc_per_node 2 -m lstm_lab train --preset zaremba-small --out runs/small-ddp   (DDP, chapter 7)
    python -m lstm_lab evaluate --out runs/small-lab [--split test --batch-size 1]
    python -m lstm_lab generate --out runs/small-lab --prompt "the market" --steps 30 --temperature 0.8 --top-k 40
    python -m lstm_lab poems train --out runs/poems --optimizer adam [--resume]
    python -m lstm_lab poems estimate --hidden-size 512 --num-layers 2   (how long that training takes here)
    python -m lstm_lab poems generate --out runs/poems --acrostic 春夏秋冬 --form 5x4
    python -m lstm_lab dates train --out runs/dates --score general [--resume]
    python -m lstm_lab dates translate --out runs/dates "3 March 1999" "Mar 3, 99"   (or one per line on stdin)
                                                 (a date, or "not sure" below the run's calibrated confidence)
    python -m lstm_lab bench --json lstm_lab/recorded/bench-cpu.json [--sizes ptb-small --repeats 5 --no-compile]
    python -m lstm_lab throughput --device cuda --json lstm_lab/recorded/throughput-gpu.json

Each subcommand checks its values first (a bad one ends in one line saying what was expected), then calls
the package: run folders, resuming and recording are `lstm_lab.runs`, provenance `lstm_lab.provenance`, the
benchmarks `lstm_lab.experiments.bench` (chapter 3) and `lstm_lab.experiments.throughput` (chapter 7).
Nothing in the package imports this module.  Introduced in chapter 6.
"""
import argparse
import math
from dataclasses import asdict
import os
import sys
import tempfile
from pathlib import Path

import torch

from lstm_lab.checkpoint import CheckpointError, atomic_write_json
from lstm_lab.config import LEVEL_CHOICES, MAX_EPOCHS, MAX_LR, PRESETS, RNN_CHOICES, InputError, check_lr, preset
from lstm_lab.data.corpus import EOS, load_corpus
from lstm_lab.data.download import ChecksumError, DataNotFoundError
from lstm_lab.distributed import (SINGLE, check_shards, from_rank0, rank_device, start_process_group,
                                  stop_process_group, world_from_env)
from lstm_lab.experiments import bench, throughput
from lstm_lab.files import WriteError
from lstm_lab.provenance import provenance
from lstm_lab.generate import generate
from lstm_lab.init import INIT_SCHEMES
from lstm_lab.lm_train import LanguageModelTask, check_streams, evaluate, load_lm_run
from lstm_lab.poem_model import generate_poem
from lstm_lab.poems_train import OPTIMIZERS, PoemsConfig, PoemsTask, cost_line, load_poems_model, measure_cost
from lstm_lab.runs import RunError, train_in_folder, train_run
from lstm_lab.runtime import amp_dtype, check_device, pick_device
from lstm_lab.seq2seq import SCORES, check_beam
from lstm_lab.seq2seq_train import MAX_EXAMPLES, DatesConfig, DatesTask, load_dates_model, load_threshold, read_dates

__all__ = ["build_parser", "main", "requested_configs", "train_command", "train_lm"]

LM_CORPORA = ("ptb", "wikitext-2", "tinyshakespeare")  # the registered corpora `train --corpus` reads
MAX_SEED = 2**32 - 1  # numpy accepts seeds from 0 to 2**32 - 1
MAX_LAYERS = 8  # --num-layers: more than any study in the book uses; a larger value is more likely a typo
MAX_WIDTH = 8192  # --hidden-size and --embed-size
MAX_STEPS = 100_000  # generate --steps: a long book's worth of tokens
MAX_REPEATS = 1_000  # bench and throughput --repeats and --warmup


class UsageError(Exception):
    """A command-line value that does not fit the run or the text it is used with (exit status 2, as argparse)."""


# ---------------------------------------------------------------------------------------------------------------
# Command-line values: each argparse type says what it expected, so a bad value ends in one line, not a traceback


def positive_int(text):
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text):
    """argparse type: an integer >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text):
    """argparse type: a finite float > 0 (not nan, not inf)."""
    value = float(text)
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be positive and finite, got {text}")
    return value


def int_in(low, high):
    """argparse type: an integer from `low` to `high`."""
    def parse(text):
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text}")
        return value
    parse.__name__ = "integer"  # argparse's message for text that is not a number: "invalid integer value: 'x'"
    return parse


def learning_rate(text):
    """argparse type: a learning rate, above 0 and at most `lstm_lab.config.MAX_LR`."""
    value = float(text)
    try:
        check_lr(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a learning rate above 0 and at most {MAX_LR:g}, got {text}") \
            from None
    return value


def fraction(text):
    """argparse type: a probability from 0 to 1 (a confidence threshold)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 to 1, got {text}")
    return value


def dropout_probability(text):
    """argparse type: a dropout probability, at least 0 and below 1."""
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a probability from 0 up to (not including) 1, got {text}")
    return value


def non_negative_float(text):
    """argparse type: a finite float >= 0."""
    value = float(text)
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be 0 or more and finite, got {text}")
    return value


def seed_value(text):
    """argparse type: a random seed, an integer from 0 to 2**32 - 1."""
    value = int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED}, got {text}")
    return value


def thread_count(text):
    """argparse type: CPU threads for torch, from 1 to the machine's core count.

    More threads than cores only slows torch down, and far more crash its OpenMP runtime."""
    value = int(text)
    cores = os.cpu_count() or 1
    if not 1 <= value <= cores:
        raise argparse.ArgumentTypeError(f"expected 1 to {cores} (the CPU cores of this machine), got {text}")
    return value


def device_name(text):
    """argparse type: a device this machine has (cpu, cuda, cuda:1, mps)."""
    try:
        check_device(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def prompt_text(text):
    """argparse type: a prompt of at least one space-separated token."""
    if not text.split():
        raise argparse.ArgumentTypeError("expected at least one space-separated token, e.g. '<eos>' or 'the market'")
    return text


def existing_folder(text):
    """argparse type: the path of a folder that exists."""
    if not Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is not a folder")
    return text


def text_path(text):
    """argparse type: a file or folder that exists, as an absolute path (a resumed run finds it from anywhere)."""
    if not text or not Path(text).exists():
        raise argparse.ArgumentTypeError(f"{text!r} does not exist: expected a text file or a folder of .txt files")
    return str(Path(text).resolve())


def writable_file(text):
    """argparse type: the path of a file this process can write (made or replaced): not a folder, and the nearest
    folder on its way that exists is a folder it may write in (the missing ones are made when it is written)."""
    if not text:
        raise argparse.ArgumentTypeError("expected the path of a file, got ''")
    check_names(text)
    if Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder: expected the path of a file")
    check_writable(Path(text).parent, text)
    return text


def run_folder(text):
    """argparse type: the run folder a training writes: a folder, or a path where one can be made, that this
    process may write in.  Checked before anything is trained or loaded."""
    if not text:
        raise argparse.ArgumentTypeError("expected the path of a run folder, got ''")
    check_names(text)
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file: expected a run folder (a folder, made if missing)")
    check_writable(path, text)
    return text


def trained_run(text):
    """argparse type: the run folder a command reads (evaluate, generate, translate): a path, not '' (which would
    read the current folder) and not a file.  What the folder holds is checked when it is opened."""
    if not text:
        raise argparse.ArgumentTypeError("expected the path of a run folder written by a train command, got ''")
    if Path(text).is_file():
        raise argparse.ArgumentTypeError(f"{text} is a file: expected a run folder written by a train command")
    return text


def check_names(text):
    """Raise argparse.ArgumentTypeError if a name in the path `text` is too long for the file system (255 bytes)."""
    if any(len(os.fsencode(part)) > 255 for part in Path(text).parts):
        raise argparse.ArgumentTypeError(f"cannot write {text[:60]}...: a name in it is longer than 255 bytes")


def check_writable(folder, text):
    """Raise argparse.ArgumentTypeError unless `folder`, or the nearest folder on its way that exists, is a folder
    this process can write in: its permissions, then a temporary file made (and removed) there, since permissions
    alone do not tell (root may write anywhere but in /proc; a read-only mount refuses everyone)."""
    while not folder.exists():  # ends: the current folder or / exists
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is not writable")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise argparse.ArgumentTypeError(f"cannot write {text}: {folder} is not writable ({error.strerror})") \
            from None


def add_subcommand(subparsers, name, help):
    """The parser of subcommand `name`: an error found after parsing (`UsageError`) is shown with its usage."""
    parser = subparsers.add_parser(name, help=help)
    parser.set_defaults(usage=parser)
    return parser


def add_device(parser):
    """--device: where a subcommand runs."""
    parser.add_argument("--device", type=device_name, default=None,
                        help="cpu, cuda, cuda:1 ... (default: $LSTM_LAB_DEVICE, else CUDA if available)")


def add_threads(parser):
    """--threads: torch's CPU threads."""
    parser.add_argument("--threads", type=thread_count, default=1,
                        help="CPU threads for torch (default 1, so runs side by side do not fight)")


def add_common(parser):
    """Options every subcommand that runs a model takes."""
    add_device(parser)
    add_threads(parser)
    parser.add_argument("--data-dir", type=existing_folder, default=None,
                        help="folder with the corpora (default: $LSTM_LAB_DATA, data/)")


def add_weights(parser):
    """--weights: which of a run's saved models to use."""
    parser.add_argument("--weights", choices=["last", "best"], default="last",
                        help="last: the latest epoch (checkpoint.pt; what the test_ppl in results is of); "
                             "best: the best validation epoch (best.pt)")


def build_parser():
    """The argparse parser of all subcommands.  Chapter 6."""
    parser = argparse.ArgumentParser(prog="python -m lstm_lab", description="LSTM Lab language models")
    sub = parser.add_subparsers(dest="command", required=True,
                                metavar="{train,evaluate,generate,poems,dates,bench,throughput}")
    train = add_subcommand(sub, "train", help="train a preset, checkpointing every epoch")
    train.add_argument("--preset", required=True, choices=list(PRESETS), help="named configuration")
    text = train.add_mutually_exclusive_group()
    text.add_argument("--corpus", choices=LM_CORPORA, default=None,
                      help="the corpus to train on (default: the preset's, ptb)")
    text.add_argument("--text-file", type=text_path, default=None,
                      help="train on your own text: a file (split by lines 90/5/5 into train/valid/test), or a folder "
                           "of .txt files (joined), or a folder with train.txt, valid.txt and test.txt")
    train.add_argument("--level", choices=LEVEL_CHOICES, default=None,
                       help="word: words and <eos> per line (default); char: every character")
    train.add_argument("--max-vocab", type=int_in(2, 10_000_000), default=None,
                       help="keep the N most frequent training tokens, <unk> included (default: all)")
    train.add_argument("--rnn", choices=RNN_CHOICES, default="lab", help="lab: lstm_lab.LSTM, torch: nn.LSTM")
    train.add_argument("--out", required=True, type=run_folder,
                       help="run folder for checkpoint.pt, best.pt, config.json")
    train.add_argument("--resume", action="store_true",
                       help="continue the run saved in --out (with the same options; --epochs may extend it)")
    train.add_argument("--results", type=writable_file, default=None,
                       help="also write the results JSON here (e.g. results/x.json)")
    train.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None, help="override the preset's epochs")
    train.add_argument("--max-batches", type=non_negative_int, default=None, help="windows per epoch (0 = all)")
    train.add_argument("--batch-size", type=positive_int, default=None,
                       help="override the preset's streams B (under torchrun: over all processes together)")
    train.add_argument("--tie-weights", action="store_true", help="share the embedding and decoder matrices")
    train.add_argument("--num-layers", type=int_in(1, MAX_LAYERS), default=None, help="override the preset's layers")
    train.add_argument("--hidden-size", type=int_in(1, MAX_WIDTH), default=None, help="override the preset's H")
    train.add_argument("--embed-size", type=int_in(1, MAX_WIDTH), default=None,
                       help="override the preset's word-vector width")
    train.add_argument("--dropout", type=dropout_probability, default=None,
                       help="override the preset's dropout (embedding output, between layers, top output)")
    train.add_argument("--tie-layers", action="store_true",
                       help="layers 2..L share one set of weights (chapter 5's experiment; needs --rnn lab)")
    train.add_argument("--lr", type=learning_rate, default=None, help="override the preset's first learning rate")
    train.add_argument("--seed", type=seed_value, default=None, help="override the preset's seed")
    train.add_argument("--no-progress", action="store_true", help="no progress bars")
    train.add_argument("--cuda-graphs", action="store_true",
                       help="replay each training window from a CUDA graph (GPU only; chapter 7)")
    train.add_argument("--amp", action="store_true",
                       help="mixed precision: float16 with a GradScaler on CUDA, bfloat16 on a CPU (chapter 7)")
    add_common(train)
    evaluate = add_subcommand(sub, "evaluate", help="perplexity of a trained run on a split")
    evaluate.add_argument("--out", required=True, type=trained_run, help="run folder written by train")
    evaluate.add_argument("--split", choices=["train", "valid", "test"], default="test")
    evaluate.add_argument("--batch-size", type=positive_int, default=1, help="streams (1 = whole text as context)")
    add_weights(evaluate)
    add_common(evaluate)
    generate = add_subcommand(sub, "generate", help="sample text from a trained run")
    generate.add_argument("--out", required=True, type=trained_run, help="run folder written by train")
    generate.add_argument("--prompt", type=prompt_text, default=None,
                          help="space-separated start tokens, or the start text of a character-level run "
                               "(default: a line break, <eos>)")
    generate.add_argument("--steps", type=int_in(1, MAX_STEPS), default=40)
    generate.add_argument("--temperature", type=positive_float, default=1.0)
    generate.add_argument("--top-k", type=positive_int, default=None)
    generate.add_argument("--seed", type=seed_value, default=0)
    add_weights(generate)
    add_common(generate)
    add_poems(sub)
    add_dates(sub)
    add_bench(sub)
    add_throughput(sub)
    return parser


def add_run_options(train):
    """--seed, --resume, --results and the common options of `poems train` and `dates train`."""
    train.add_argument("--seed", type=seed_value, default=0)
    train.add_argument("--resume", action="store_true", help="continue the run saved in --out")
    train.add_argument("--results", type=writable_file, default=None, help="also write the results JSON here")
    add_common(train)


def add_poems(sub):
    """`poems train | estimate | generate`: chapter 8's Tang poem model."""
    poems = add_subcommand(sub, "poems", help="chapter 8's Tang poems: train | estimate | generate")
    action = poems.add_subparsers(dest="poems_command", required=True, metavar="{train,estimate,generate}")
    train = add_subcommand(action, "train", help="train a character model of Tang poems, checkpointing every epoch")
    train.add_argument("--out", required=True, type=run_folder, help="run folder for checkpoint.pt and results.json")
    add_poems_config(train)
    add_run_options(train)
    estimate = add_subcommand(action, "estimate", help="how long `poems train` with these options takes here: a "
                                                       "few batches trained and timed, no run folder")
    add_poems_config(estimate)
    estimate.add_argument("--seed", type=seed_value, default=0)
    estimate.add_argument("--batches", type=int_in(1, MAX_REPEATS), default=20,
                          help="batches timed, after one that warms up (default 20)")
    estimate.add_argument("--json", type=writable_file, default=None, help="write the estimate and its provenance here")
    add_common(estimate)
    generate = add_subcommand(action, "generate", help="write a poem of a form, from a first character or an acrostic")
    generate.add_argument("--out", required=True, type=trained_run, help="run folder written by poems train")
    generate.add_argument("--form", default="5x4", help="characters x lines: 5x4, 7x4, 5x8 or 7x8")
    generate.add_argument("--first", default=None, help="the poem's first character")
    generate.add_argument("--prompt", default=None, help="the poem's beginning, punctuation included")
    generate.add_argument("--acrostic", default=None, help="one character per line, each line starts with it")
    generate.add_argument("--temperature", type=non_negative_float, default=0.8, help="0: greedy")
    generate.add_argument("--top-k", type=positive_int, default=None)
    generate.add_argument("--seed", type=seed_value, default=None,
                          help="the same seed writes the same poem again (default: a fresh one, printed)")
    add_common(generate)



def add_poems_config(parser):
    """The options of a poem model and its training (`PoemsConfig`), shared by `poems train` and `poems estimate`."""
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    parser.add_argument("--lr", type=learning_rate, default=None, help="learning rate (default: the config's)")
    parser.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None)
    parser.add_argument("--hidden-size", type=int_in(1, MAX_WIDTH), default=None)
    parser.add_argument("--embed-size", type=int_in(1, MAX_WIDTH), default=None)
    parser.add_argument("--num-layers", type=int_in(1, MAX_LAYERS), default=None)
    parser.add_argument("--batch-size", type=positive_int, default=None)
    parser.add_argument("--dropout", type=dropout_probability, default=None)
    parser.add_argument("--patience", type=non_negative_int, default=None,
                        help="stop after this many epochs without a better validation perplexity (0: never)")
    parser.add_argument("--max-poems", type=non_negative_int, default=None, help="train on the first N poems (0: all)")
    parser.add_argument("--forms", default=None, help="only poems of these forms, e.g. 5x4 or 5x4,7x4 (default: all)")
    parser.add_argument("--min-count", type=positive_int, default=None,
                        help="vocabulary: characters seen at least this often in training")
    parser.add_argument("--init", choices=INIT_SCHEMES, default=None, help="initialisation scheme (chapter 8)")

def add_dates(sub):
    """`dates train | translate`: chapter 9's date translator."""
    dates = add_subcommand(sub, "dates", help="chapter 9's date translator: train | translate")
    action = dates.add_subparsers(dest="dates_command", required=True, metavar="{train,translate}")
    train = add_subcommand(action, "train", help="train a date translator, checkpointing every epoch")
    train.add_argument("--out", required=True, type=run_folder, help="run folder for checkpoint.pt and results.json")
    train.add_argument("--score", choices=SCORES + ("none",), default="general",
                       help="Luong's attention score, or none (no attention)")
    train.add_argument("--no-input-feeding", action="store_true", help="do not feed h̃_{t-1} into step t")
    train.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=None)
    train.add_argument("--train-size", type=int_in(1, MAX_EXAMPLES), default=None, help="training examples")
    add_run_options(train)
    translate = add_subcommand(action, "translate", help="print the ISO date for each input (arguments, else stdin), "
                                                         "or 'not sure'")
    translate.add_argument("--out", required=True, type=trained_run, help="run folder written by dates train")
    translate.add_argument("--beam", type=positive_int, default=1, help="beam width (1: greedy)")
    translate.add_argument("--threshold", type=fraction, default=None,
                           help="answer 'not sure' below this confidence (default: the run's calibrated threshold)")
    translate.add_argument("texts", nargs="*", help="dates as people write them; none: one per line from stdin")
    add_common(translate)


def add_bench(sub):
    """`bench`: chapter 3's speed ladder, every rung against nn.LSTM."""
    command = add_subcommand(sub, "bench", help="chapter 3's speed ladder: forward + backward of every rung vs nn.LSTM")
    command.add_argument("--json", type=writable_file, default=None,
                         help="write results and provenance to this file")
    command.add_argument("--sizes", nargs="+", choices=list(bench.SIZES), default=None,
                         help=f"size sets (default: {' '.join(bench.CPU_SIZES)} on CPU; {' '.join(bench.GPU_SIZES)} "
                              "on GPU)")
    command.add_argument("--repeats", type=int_in(1, MAX_REPEATS), default=10,
                         help="timed rounds per size set (default 10)")
    command.add_argument("--warmup", type=int_in(1, MAX_REPEATS), default=2,
                         help="untimed calls per rung first (default 2)")
    add_threads(command)
    add_device(command)
    command.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rung")
    command.add_argument("--tf32", action="store_true", help="allow TF32 on GPU for every rung (default off)")
    command.add_argument("--no-graphs", action="store_true", help="on a GPU, leave out the CUDA-graph rungs")
    command.add_argument("--shapes", nargs="*", choices=list(bench.SHAPES), default=None, metavar="SHAPE",
                         help="instead of the ladder, the shape sweep: lstm_lab.LSTM against nn.LSTM, training and "
                              f"inference, on these shapes (none named: all of {', '.join(bench.SHAPES)})")


def add_throughput(sub):
    """`throughput`: chapter 7's training words per second, several ways."""
    command = add_subcommand(sub, "throughput", help="chapter 7's training words per second: nn.LSTM, the book's LSTM, "
                                                "graphed, AMP")
    add_device(command)
    command.add_argument("--sizes", nargs="+", choices=throughput.SIZES, default=list(throughput.SIZES))
    command.add_argument("--repeats", type=int_in(1, MAX_REPEATS), default=10,
                         help="timed rounds (after 3 warm-up rounds)")
    command.add_argument("--json", type=writable_file, default=None, help="write the results here")
    command.set_defaults(threads=None)  # torch's own thread count


def main(argv=None):
    """Entry point of `python -m lstm_lab`; returns the exit status.

    A bad command-line value, or input that does not fit it (a text too short for --batch-size), exits with status
    2 and one line saying what was expected, before any training; a run folder or data file that cannot be used, or
    a file that cannot be written (a full disk), exits with status 1 and one line saying what to do.  Chapter 6."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.device = pick_device(args.device)  # --device was checked by argparse; this checks $LSTM_LAB_DEVICE
    except ValueError as error:
        parser.error(str(error))
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    commands = {"train": train_command, "evaluate": evaluate_command, "generate": generate_command,
                "poems": poems_command, "dates": dates_command, "bench": bench_command,
                "throughput": throughput_command}
    try:
        return commands[args.command](args, argv) or 0
    except (UsageError, InputError) as error:
        args.usage.error(str(error))  # the subcommand's usage, then "python -m lstm_lab train: error: ..."
    except KeyboardInterrupt:
        raise SystemExit("interrupted (what a train command checkpointed is kept: --resume goes on from it)") \
            from None
    except (RunError, CheckpointError, DataNotFoundError, ChecksumError, WriteError) as error:
        raise SystemExit(f"error: {error}") from None


def requested_configs(args):
    """(ModelConfig, TrainConfig) of --preset with the command line's overrides (vocab_size: the preset's).
    Chapter 6."""
    overrides = {"corpus": args.text_file or args.corpus, "level": args.level, "max_vocab": args.max_vocab,
                 "rnn": args.rnn, "epochs": args.epochs, "max_batches": args.max_batches, "seed": args.seed,
                 "tie_weights": True if args.tie_weights else None, "num_layers": args.num_layers,
                 "hidden_size": args.hidden_size, "embed_size": args.embed_size, "dropout": args.dropout,
                 "lr": args.lr, "tie_layers": True if args.tie_layers else None, "batch_size": args.batch_size,
                 "amp": amp_dtype(args.device) if args.amp else None}
    try:
        return preset(args.preset, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:  # e.g. --tie-weights with --hidden-size other than the embedding's width
        raise UsageError(str(error)) from None


def train_command(args, argv):
    """`train`: fresh or resumed run; checkpoint, best model and results JSON written after every epoch.

    The run folder stays locked while it trains, and .part files left by a killed run are removed first.
    Started by torchrun (WORLD_SIZE > 1), every process trains its share of the streams: `train_distributed`.
    Chapter 6."""
    world = world_from_env(os.environ)
    check_train_options(args, world)
    out = Path(args.out)
    if world.world_size > 1:
        return train_distributed(args, argv, out, world)
    train_in_folder(out, args.resume, lambda has_run: train_lm(args, argv, out, has_run))
    return 0


def check_train_options(args, world):
    """Raise UsageError for `train` options that do not fit together, the device or the number of processes,
    before the run folder is made."""
    if args.cuda_graphs and args.amp:
        raise UsageError("--cuda-graphs and --amp do not go together (a GradScaler step cannot be captured): "
                         "choose one")
    if args.cuda_graphs and args.device.type != "cuda":
        raise UsageError(f"--cuda-graphs needs a CUDA device, got {args.device}")
    if args.cuda_graphs and world.world_size > 1:
        raise UsageError("--cuda-graphs trains in one process: run it without torchrun")
    _, train_config = requested_configs(args)  # overrides that do not fit together end here
    try:
        check_shards(train_config.batch_size, world.world_size)
        rank_device(args.device, world)
    except ValueError as error:
        raise UsageError(str(error)) from None


def train_distributed(args, argv, out, world):
    """`train` in one of the processes torchrun started (DistributedDataParallel, chapter 7).

    Rank 0 holds the run folder's lock and tells the others whether there is a run to resume; all train
    together, and only rank 0 writes and prints.  The process group is left however the run ends."""
    args.device = rank_device(args.device, world)
    world = start_process_group(world, args.device)
    try:
        if world.rank == 0:
            return lead_ranks(args, argv, out, world)
        has_run = from_rank0(None)  # or the RunError that stopped rank 0 from taking the run folder
        if isinstance(has_run, RunError):
            raise has_run
        train_lm(args, argv, out, has_run, world)
        return 0
    finally:
        stop_process_group()


def lead_ranks(args, argv, out, world):
    """Rank 0's part of `train_distributed`: take the run folder, then send the other ranks whether there is a
    run to resume, or the RunError that ends the run (so every rank ends with the same one line, none hangs)."""
    told = []  # not empty once the other ranks have heard from rank 0

    def run(has_run):
        told.append(from_rank0(has_run))  # rank 0 holds the lock now
        return train_lm(args, argv, out, has_run, world)
    try:
        train_in_folder(out, args.resume, run)
        return 0
    except RunError as error:
        if not told:
            from_rank0(error)
        raise


def train_lm(args, argv, out, has_run, world=SINGLE):
    """Train the language model run in `out` (rank 0 holding its lock) with `lstm_lab.runs.train_run`: build or
    resume it, train the epochs left, test it.  Under torchrun every rank builds the same model and loads the
    same checkpoint; only rank 0 records.  Returns the results (None on the other ranks).  Chapter 4."""
    model_config, train_config = requested_configs(args)
    return train_run(LanguageModelTask, {"model": model_config, "train": train_config}, out, has_run, args.device,
                     argv, args.results, args.epochs, world.rank == 0 and not args.no_progress, world,
                     data_dir=args.data_dir, graphed=args.cuda_graphs, preset=args.preset)


def evaluate_command(args, argv):
    """`evaluate`: perplexity of a run's model (last or best epoch) on a split."""
    model, vocab, train_config = load_lm_run(args.out, args.device, args.weights)
    corpus = load_corpus(train_config.corpus, train_config.level, args.data_dir, progress=False,
                         max_vocab=train_config.max_vocab or None)
    if corpus.vocab.itos != vocab.itos:
        raise RunError(f"the vocabulary in {args.out} does not match corpus {train_config.corpus}")
    check_streams(corpus.splits[args.split], args.batch_size, args.split, "--batch-size")
    result = evaluate(model, corpus.splits[args.split], args.batch_size, 100, args.device)
    print(f"{args.split} perplexity {result['ppl']:.2f} over {result['tokens']} tokens "
          f"(batch size {args.batch_size})")
    return 0


def generate_command(args, argv):
    """`generate`: sample text from a run's model (last or best epoch)."""
    model, vocab, train_config = load_lm_run(args.out, args.device, args.weights)
    if args.top_k is not None and args.top_k > len(vocab):
        raise UsageError(f"--top-k {args.top_k} is larger than the vocabulary of {args.out}: expected 1 to "
                         f"{len(vocab):,}")
    char_level = train_config.level == "char"
    text = args.prompt or ("\n" if char_level else EOS)
    prompt = list(text) if char_level else text.split()  # the prompt's tokens
    unknown = [t for t in prompt if t not in vocab.stoi]
    if unknown:
        raise UsageError(f"prompt token(s) {unknown} not in the vocabulary of {len(vocab):,} tokens")
    generator = torch.Generator().manual_seed(args.seed)
    tokens = generate(model, vocab, prompt, args.steps, args.temperature, args.top_k, generator)
    print(("" if char_level else " ").join(prompt + tokens))
    return 0


def poems_command(args, argv):
    """`poems train`: train or resume a poem model; `poems estimate`: how long that takes here; `poems generate`:
    one poem of a form."""
    if args.poems_command == "generate":
        model, vocab = load_poems_model(Path(args.out), args.device)
        try:
            poem = generate_poem(model, vocab, args.form, args.first, args.acrostic, args.temperature, args.top_k,
                                 args.seed, args.prompt)
            print(f"{poem}  (seed {poem.seed}: --seed {poem.seed} writes it again)")
        except ValueError as error:
            raise UsageError(str(error)) from None
        return 0
    config = poems_config(args)
    if args.poems_command == "estimate":
        return estimate_command(args, argv, config)
    out = Path(args.out)
    results = train_in_folder(out, args.resume, lambda has_run: train_run(
        PoemsTask, {"poems": config}, out, has_run, args.device, argv, args.results, args.epochs,
        data_dir=args.data_dir))
    for sample in results.get("samples", []):  # none when the run diverged
        settings = ", ".join(f"{k} {v}" for k, v in sample.items() if k != "poem")
        print(f"{sample['poem']}  ({settings})")
    return 0


def poems_config(args):
    """The `PoemsConfig` of `poems train` or `poems estimate`: the config's defaults, overridden by the options given."""
    overrides = {"optimizer": args.optimizer, "lr": args.lr, "epochs": args.epochs, "hidden_size": args.hidden_size,
                 "embed_size": args.embed_size, "num_layers": args.num_layers, "batch_size": args.batch_size,
                 "max_poems": args.max_poems, "seed": args.seed, "dropout": args.dropout, "patience": args.patience,
                 "forms": args.forms, "min_count": args.min_count, "init": args.init}
    try:
        return PoemsConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValueError as error:
        raise UsageError(str(error)) from None


def estimate_command(args, argv, config):
    """`poems estimate`: train and time a few batches of `config`, print the estimate, record it with --json."""
    estimate = measure_cost(config, args.device, args.batches, args.data_dir)
    print(f"{estimate['parameters']:,} parameters; an epoch: {estimate['epoch_batches']:,} batches, "
          f"{estimate['epoch_characters']:,} characters; timed over {estimate['batches_measured']} batches")
    print(cost_line(estimate, args.device, config.epochs))
    if args.json:
        atomic_write_json({"config": asdict(config), **estimate, **provenance(argv, args.device)}, Path(args.json))
    return 0


def dates_command(args, argv):
    """`dates train`: train or resume a date translator; `dates translate`: one ISO date per input line."""
    out = Path(args.out)
    if args.dates_command == "translate":
        return translate_command(args, out)
    overrides = {"score": args.score, "input_feeding": not args.no_input_feeding, "epochs": args.epochs,
                 "train_size": args.train_size, "seed": args.seed}
    config = DatesConfig(**{k: v for k, v in overrides.items() if v is not None})
    train_in_folder(out, args.resume, lambda has_run: train_run(
        DatesTask, {"dates": config}, out, has_run, args.device, argv, args.results, args.epochs))
    return 0


def translate_command(args, out):
    """`dates translate`: one line per input, "answer<TAB>confidence<TAB>input", in the order given.  The answer is
    the ISO date, "not sure" when the model's confidence is below the threshold (the run's calibrated one, or
    --threshold), or "1999-02-30 (not a real date)".  An input the model cannot read (characters it does not know,
    a year outside those it was trained on) gets "(not read)<TAB>-<TAB>input" and its reason on stderr; the others
    are answered all the same, and the exit status is then 1."""
    model, src_vocab, tgt_vocab = load_dates_model(out, args.device)
    where = "argument" if args.texts else "line"
    texts = args.texts or [line.strip() for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no dates given: expected dates as arguments, or one per line on stdin")
    try:
        check_beam(args.beam, len(tgt_vocab))
    except ValueError as error:
        raise UsageError(f"--beam: {error}") from None
    threshold = args.threshold if args.threshold is not None else load_threshold(out)
    if threshold is None:
        print(f"note: {out} has no calibrated threshold (its run has not finished), so every date is printed; "
              f"--threshold sets one", file=sys.stderr, flush=True)
        threshold = 0.0
    readings = read_dates(model, texts, src_vocab, tgt_vocab, threshold, args.device, args.beam)
    for k, reading in enumerate(readings):
        shown = reading["input"].replace("\t", " ")  # the last column: a tab in it would make another
        if reading["output"] is None:
            print(f"(not read)\t-\t{shown[:60]}", flush=True)
            print(f"error: {where} {k + 1}: {reading['why']}", file=sys.stderr, flush=True)
            continue
        answer = {None: reading["date"], "not sure": "not sure",
                  "not a real date": f"{reading['output']} (not a real date)"}[reading["why"]]
        print(f"{answer}\t{reading['confidence']:.3f}\t{shown}", flush=True)
    return 1 if any(r["output"] is None for r in readings) else 0


def bench_command(args, argv):
    """`bench`: time every rung of the speed ladder (or, with --shapes, the two modules on each shape), print one line
    per size set and rung (or shape), write --json if given."""
    if args.shapes is not None:
        record = bench.record_shapes(args.shapes, args.device, args.repeats, args.warmup, tf32=args.tf32, argv=argv)
        lines = bench.shape_lines(record["results"])
    else:
        record = bench.record_bench(args.sizes, args.device, args.repeats, args.warmup, compiled=not args.no_compile,
                                    tf32=args.tf32, graphs=not args.no_graphs, argv=argv)
        lines = bench.table_lines(record["results"])
    for line in lines:
        print(line, flush=True)
    if args.json:
        atomic_write_json(record, args.json)  # a failed write (a full disk) leaves the file as it was
    return 0


def throughput_command(args, argv):
    """`throughput`: words per second of every training-step variant, printed, and written to --json if given."""
    record = throughput.record_throughput(args.sizes, args.device, repeats=args.repeats,
                                          argv=argv)
    for line in throughput.table_lines(record["results"]):
        print(line, flush=True)
    if args.json:
        atomic_write_json(record, args.json)  # a failed write (a full disk) leaves the file as it was
    return 0

