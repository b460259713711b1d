"""Bad input on every command and on the Python API students call: one clear line, before any work, files left
as they were, and never a silent wrong result.

The command-line cases run as real processes (`python -m lstm_lab ...`), all of them side by side in one
fixture, against three small run folders trained first (a character model of a page of Tiny Shakespeare, a
poem model of 200 Tang poems, a date translator of 300 examples).  Each case checks the exit status (2: a
bad value, said before any work; 1: a run folder or a file that cannot be used; 0: done), that no traceback
is printed, the one line that says what was expected, and what the command left on disk.
"""
import json
import os
import resource
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from lstm_lab.cells import LSTMCell
from lstm_lab.cli import main
from lstm_lab.config import ModelConfig
from lstm_lab.data.download import fetch
from lstm_lab.data.poems import batches
from lstm_lab.generate import generate, sample_next
from lstm_lab.lm_train import load_lm_run
from lstm_lab.lstm import LSTM
from lstm_lab.model import LanguageModel
from lstm_lab.poem_model import PoemLM, generate_poem, masked_nll
from lstm_lab.poems_train import load_poems_model
from lstm_lab.runs import RunError, open_run
from lstm_lab.seq2seq import Seq2Seq, beam_search
from lstm_lab.seq2seq_train import load_dates_model, translate_dates

SHARED = os.environ.get("LSTM_LAB_DATA")
pytestmark = pytest.mark.skipif(
    not (SHARED and (Path(SHARED) / "tang" / "poems.txt").is_file()
         and (Path(SHARED) / "tinyshakespeare" / "input.txt").is_file()),
    reason="set $LSTM_LAB_DATA to the folder holding the corpora")

SMALL = {"lm": ["--preset", "smoke", "--level", "char", "--no-progress", "--device", "cpu"],
         "poems": ["--max-poems", "200", "--hidden-size", "16", "--embed-size", "8", "--num-layers", "1",
                   "--device", "cpu"],
         "dates": ["--train-size", "300", "--device", "cpu"]}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """{"text": a page of Tiny Shakespeare, "lm", "poems", "dates": finished one-epoch run folders}."""
    root = tmp_path_factory.mktemp("runs")
    text = root / "page.txt"
    text.write_text(fetch("tinyshakespeare", progress=False)["text"].read_text(encoding="utf-8")[:20_000],
                    encoding="utf-8")
    threads = torch.get_num_threads()
    assert main(["train", "--text-file", str(text), "--out", str(root / "lm"), "--epochs", "1", *SMALL["lm"]]) == 0
    assert main(["poems", "train", "--out", str(root / "poems"), "--epochs", "1", *SMALL["poems"]]) == 0
    assert main(["dates", "train", "--out", str(root / "dates"), "--epochs", "1", *SMALL["dates"]]) == 0
    torch.set_num_threads(threads)
    return {"root": root, "text": text, "lm": root / "lm", "poems": root / "poems", "dates": root / "dates"}


@dataclass
class Case:
    """One command and what it must end in.  {text}, {lm}, {poems}, {dates} in argv name the fixture's files;
    {new} a folder that does not exist yet.  expected: in the last line of stderr, or in stdout if status is 0."""
    argv: list
    status: int
    expected: str
    stdin: str = ""
    limit: int = 0  # a file-size limit in bytes for the process (a disk that fills up), 0: none


TRAIN_TEXT = ["train", "--text-file", "{text}", *SMALL["lm"]]
POEMS_TRAIN = ["poems", "train", *SMALL["poems"]]
CASES = {
    # values no run can use: refused by argparse, before anything is loaded
    "lr beyond a million": Case([*TRAIN_TEXT, "--out", "{new}", "--lr", "1e30"], 2, "at most 1e+06, got 1e30"),
    "lr a float32 optimizer overflows on": Case([*POEMS_TRAIN, "--out", "{new}", "--lr", "1e300"], 2, "at most 1e+06"),
    "epochs a typo": Case([*TRAIN_TEXT, "--out", "{new}", "--epochs", str(10**30)], 2, "from 1 to 10000"),
    "steps a typo": Case(["generate", "--out", "{lm}", "--steps", str(10**21)], 2, "from 1 to 100000"),
    "train size a typo": Case(["dates", "train", "--out", "{new}", "--train-size", str(10**9)], 2, "1 to 1000000"),
    "bench repeats a typo": Case(["bench", "--repeats", str(10**9)], 2, "from 1 to 1000"),
    "throughput repeats a typo": Case(["throughput", "--repeats", "0"], 2, "from 1 to 1000"),
    # input that cannot train: refused after reading the data, before any training, the folder left unmade
    "batch size beyond the text": Case([*TRAIN_TEXT, "--out", "{new}", "--batch-size", "15000"], 2,
                                       "batch_size (--batch-size) 15000 does not fit the train text"),
    "a vocabulary of marks only": Case(["train", "--text-file", "{text}", "--preset", "smoke", "--level", "word",
                                        "--device", "cpu", "--out", "{new}", "--max-vocab", "2"], 2,
                                       "keeps only <eos>, <unk>"),
    "min-count keeping no character": Case([*POEMS_TRAIN, "--out", "{new}", "--min-count", "100000"], 2,
                                           "min_count 100000 keeps no character"),
    "forms naming no form": Case([*POEMS_TRAIN, "--out", "{new}", "--forms", ","], 2, "names no form"),
    # a run that diverges is a finished run with its reason, not a crash
    "a diverging language model": Case([*TRAIN_TEXT, "--out", "{new}", "--lr", "1e5", "--epochs", "3"], 0,
                                       "the run diverged at epoch 1"),
    "a diverging poem model": Case([*POEMS_TRAIN, "--out", "{new}", "--optimizer", "sgd", "--lr", "1e5",
                                    "--epochs", "2"], 0, "the run diverged at epoch 1"),
    # sampling
    "a temperature of 1e-300 is greedy": Case(["generate", "--out", "{lm}", "--prompt", "The", "--temperature",
                                               "1e-300"], 0, "The"),
    "a temperature of 1e300 is uniform": Case(["generate", "--out", "{lm}", "--prompt", "The", "--temperature",
                                               "1e300"], 0, "The"),
    "a poem at 1e-300": Case(["poems", "generate", "--out", "{poems}", "--temperature", "1e-300"], 0, "。"),
    "a poem at 1e300": Case(["poems", "generate", "--out", "{poems}", "--temperature", "1e300"], 0, "。"),
    "poem top-k beyond the vocabulary": Case(["poems", "generate", "--out", "{poems}", "--top-k", "100000"], 2,
                                             "top_k must be between 1 and the vocabulary size"),
    "an acrostic of punctuation": Case(["poems", "generate", "--out", "{poems}", "--acrostic", "，。，。"], 2,
                                       "expected one Chinese character per line"),
    "an acrostic of the lost-character mark": Case(["poems", "generate", "--out", "{poems}", "--acrostic", "□□□□"],
                                                   2, "holds '□': expected Chinese characters"),
    "a first character that is punctuation": Case(["poems", "generate", "--out", "{poems}", "--first", "。"], 2,
                                                  "first character '。' does not fit form 5x4"),
    # the date translator's input
    "no dates on stdin": Case(["dates", "translate", "--out", "{dates}"], 2, "no dates given"),
    "one unreadable line among good ones": Case(["dates", "translate", "--out", "{dates}"], 1,
                                                "error: line 2: characters '☃'",
                                                stdin="3 March 1999\n☃☃☃\nMar 4, 99\n"),
    "a beam wider than the outputs": Case(["dates", "translate", "--out", "{dates}", "--beam", "100000",
                                           "1 May 1990"], 2,
                                          "--beam: beam must be a whole number from 1 (greedy) to the 14"),
    "a 100,000-character input": Case(["dates", "translate", "--out", "{dates}", "x" * 100_000], 1,
                                      "(100,000 characters) is longer than the model's limit of 48"),
    "a poem first character that is a number": Case(["poems", "generate", "--out", "{poems}", "--first", "5"], 2,
                                                    "holds '5': expected Chinese characters"),
    # files and folders
    "resume in a folder that does not exist": Case([*TRAIN_TEXT, "--out", "{new}", "--resume"], 1,
                                                   "holds no checkpoint.pt"),
    "a run folder the system cannot make": Case([*TRAIN_TEXT, "--out", "/proc/lstm-lab-run"], 2,
                                                "cannot write /proc/lstm-lab-run: /proc is not writable"),
    "results the system cannot write": Case([*TRAIN_TEXT, "--out", "{new}", "--results", "/proc/x.json"], 2,
                                            "argument --results: cannot write /proc/x.json"),
    "a bench record the system cannot write": Case(["bench", "--json", "/proc/x.json"], 2,
                                                   "argument --json: cannot write /proc/x.json"),
    "a text the system cannot read": Case([*TRAIN_TEXT[:2], "/proc/self/mem", *TRAIN_TEXT[3:], "--out", "{new}"], 2,
                                          "Input/output error"),
    "evaluate with an empty --out": Case(["evaluate", "--out", ""], 2, "expected the path of a run folder"),
    "a name the file system cannot encode": Case([*TRAIN_TEXT, "--out", "bad\udcff" * 100], 2,
                                                 "a name in it is longer than 255 bytes"),
    "a disk that fills up": Case(["dates", "train", "--out", "{new}", "--epochs", "2", *SMALL["dates"]], 1,
                                 "error: could not write {new}/checkpoint.pt: File too large", limit=30_000),
}

if not Path("/proc/self/mem").exists():  # the cases that need Linux's /proc
    CASES = {name: case for name, case in CASES.items() if not any("/proc" in arg for arg in case.argv)}


def run_case(case, folders, new):
    """(CompletedProcess, the argv run) of a Case, in a process of its own."""
    names = {"text": folders["text"], "lm": folders["lm"], "poems": folders["poems"], "dates": folders["dates"],
             "new": new}
    argv = [arg.format(**names) for arg in case.argv]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # a file-size limit must not truncate a .pyc

    def limit_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, as on a full disk
        resource.setrlimit(resource.RLIMIT_FSIZE, (case.limit, case.limit))
    result = subprocess.run([sys.executable, "-m", "lstm_lab", *argv], input=case.stdin, capture_output=True,
                            text=True, env=env, timeout=300, preexec_fn=limit_file_size if case.limit else None)
    return result, argv


@pytest.fixture(scope="module")
def results(folders):
    """{case name: (CompletedProcess, argv, the case's {new} folder)}: every case, run side by side."""
    news = {name: folders["root"] / "new" / name.replace(" ", "-") for name in CASES}
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {name: pool.submit(run_case, case, folders, news[name]) for name, case in CASES.items()}
        return {name: (*future.result(), news[name]) for name, future in futures.items()}


@pytest.mark.parametrize("name", CASES)
def test_every_command_ends_in_one_clear_line(name, results):
    case, (result, argv, new) = CASES[name], results[name]
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == case.status, (argv, result.stdout, result.stderr)
    if case.status == 0:
        assert case.expected in result.stdout, result.stdout[-300:]
        return
    lines = result.stderr.strip().splitlines()
    assert lines and case.expected.format(new=new) in lines[-1], lines[-3:]
    if case.status == 2:  # argparse's form: the usage, then "python -m lstm_lab ...: error: ..."
        assert " error: " in lines[-1] and len(lines[-1]) < 400
    if case.status == 1 and not case.stdin:  # (an unreadable line among others: a line on stderr for each)
        assert lines == [lines[-1]] and lines[-1].startswith("error: ") and len(lines[-1]) < 400
    if "{new}" in " ".join(case.argv):
        assert not new.exists(), sorted(p.name for p in new.iterdir())  # nothing trained, nothing left behind


def test_a_diverged_run_is_recorded_complete_with_its_reason_and_refuses_to_be_used(results, folders):
    new = results["a diverging language model"][2]
    record = json.loads((new / "results.json").read_text())
    assert record["complete"] and record["diverged"] and record["stopped"] == "diverged at epoch 1: valid_ppl inf"
    assert record["epochs"] == 1 and record["test_ppl"] is None  # stopped there: later epochs cannot recover
    for weights in ("last", "best"):
        with pytest.raises(RunError, match="diverged at epoch 1: valid_ppl inf, so its last weights are not a model"):
            open_run(new, "cpu", "lm", weights)
    with pytest.raises(SystemExit, match="it cannot be continued"):
        main(["train", "--text-file", str(folders["text"]), *SMALL["lm"], "--out", str(new), "--lr", "1e5",
              "--epochs", "5", "--resume"])
    poems = json.loads((results["a diverging poem model"][2] / "results.json").read_text())
    assert poems["complete"] and poems["diverged"] and "test_ppl" not in poems and "samples" not in poems


def test_ctrl_c_ends_a_training_in_one_line_and_keeps_its_checkpoints(folders, tmp_path):
    out = tmp_path / "run"
    train = subprocess.Popen([sys.executable, "-m", "lstm_lab", "train", "--text-file", str(folders["text"]),
                              *SMALL["lm"], "--max-batches", "0", "--epochs", "1000", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # a background
    # job's children start with Ctrl-C ignored, and Python then keeps it so
    assert train.stdout.readline().startswith("epoch   1 ")
    train.send_signal(signal.SIGINT)
    stdout, stderr = train.communicate(timeout=60)
    assert train.returncode == 1 and stderr.startswith("interrupted") and len(stderr.splitlines()) == 1, stderr
    done = len(json.loads((out / "results.json").read_text())["history"])  # the epochs checkpointed before
    assert main(["train", "--text-file", str(folders["text"]), *SMALL["lm"], "--max-batches", "0", "--epochs",
                 str(done + 1), "--out", str(out), "--resume"]) == 0


def test_translate_prints_every_readable_line_in_order(results):
    result = results["one unreadable line among good ones"][0]
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and lines[1] == "(not read)\t-\t☃☃☃"
    assert lines[0].endswith("\t3 March 1999") and lines[2].endswith("\tMar 4, 99")


def test_a_very_low_temperature_samples_greedily_and_a_very_high_one_uniformly():
    logits = torch.tensor([1.0, 3.0, 2.0, 3.0 - 1e-3])
    draws = [sample_next(logits, 1e-300, generator=torch.Generator().manual_seed(k)) for k in range(20)]
    assert set(draws) == {1}
    draws = [sample_next(logits, 1e300, generator=torch.Generator().manual_seed(k)) for k in range(200)]
    assert set(draws) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="not finite"):
        sample_next(torch.tensor([0.0, float("nan")]))


def test_a_damaged_results_json_does_not_block_a_resume(folders, tmp_path):
    import shutil
    out = Path(shutil.copytree(folders["dates"], tmp_path / "dates"))
    (out / "results.json").write_text("{not json")
    assert main(["dates", "train", "--out", str(out), "--epochs", "2", "--resume", *SMALL["dates"]]) == 0
    assert [r["epoch"] for r in json.loads((out / "results.json").read_text())["history"]] == [1, 2]


# ---------------------------------------------------------------------------------------------------------------
# The Python API: an error naming the argument, what was given and what is expected


@pytest.fixture(scope="module")
def models(folders):
    return {"lm": load_lm_run(folders["lm"], "cpu"), "poems": load_poems_model(folders["poems"], "cpu"),
            "dates": load_dates_model(folders["dates"], "cpu")}


def api_cases(models):
    x, h = torch.randn(3, 2, 5), torch.zeros(1, 2, 5)
    lm = LanguageModel(ModelConfig(vocab_size=10, embed_size=4, hidden_size=4))
    s2s = Seq2Seq(10, 8, 4, 4)
    (lm_model, lm_vocab, _), (poem_model, poem_vocab), (dates_model, src, tgt) = \
        models["lm"], models["poems"], models["dates"]
    return [
        (lambda: LSTM(5, 5)(x, (h, None)), TypeError, r"pair \(h_0, c_0\) of tensors, got \(Tensor, NoneType\)"),
        (lambda: LSTM(5, 5)(x, (h.numpy(), h.numpy())), TypeError, r"got \(ndarray, ndarray\)"),
        # torch's own checks, which the drop-ins keep (older torch has fewer: tests/test_lstm_clients.py holds the
        # drop-ins to nn.LSTM's checks on every torch)
        *([] if torch.__version__ < (2, 11) else [
            (lambda: LSTM("5", 5), TypeError, "input_size should be of type int, got: str"),
            (lambda: LSTM(np.int64(5), 5), TypeError, "input_size should be of type int, got: int64"),
            (lambda: LSTMCell(5, 5.0), TypeError, "hidden_size should be of type int, got: float")]),
        (lambda: lm(torch.tensor([[12]])), IndexError, "token ids must be from 0 to 9 .* got ids from 12 to 12"),
        (lambda: lm(torch.tensor([[-1]])), IndexError, "got ids from -1 to -1"),
        (lambda: PoemLM(10, 4, 4, 1)(torch.tensor([[10]])), IndexError, "character ids must be from 0 to 9"),
        (lambda: s2s(torch.tensor([[12]]), torch.tensor([1]), torch.tensor([[1]])), IndexError, "source ids"),
        (lambda: s2s(torch.tensor([[1], [2]]), torch.tensor([5]), torch.tensor([[1]])), ValueError,
         r"lengths must be from 1 to the 2 positions of \(2, 1\), got lengths from 5 to 5"),
        (lambda: s2s(torch.tensor([[1], [2]]), torch.tensor([2]), torch.tensor([[9]])), IndexError, "target ids"),
        (lambda: translate_dates(dates_model, "3 March 1999", src, tgt), TypeError, "write \\['3 March 1999'\\]"),
        (lambda: translate_dates(dates_model, ["3 March 1999"], src, tgt, beam=0), ValueError, "got 0"),
        (lambda: beam_search(dates_model, torch.tensor([[1]]), torch.tensor([1]), 1, 2, 5, beam=0), ValueError,
         "beam must be a whole number"),
        (lambda: generate(lm_model, lm_vocab, ["a"], -5), ValueError, "steps must be .* 0 or more, got -5"),
        (lambda: generate(lm_model, lm_vocab, "ab", 5), ValueError, "must be a list"),
        (lambda: batches(["一"], -1), ValueError, "batch_size must be a whole number of poems, 1 or more, got -1"),
        (lambda: masked_nll(torch.randn(2, 1, 5), torch.zeros(2, 1, dtype=torch.long), 0), ValueError,
         "every target is padding"),
        (lambda: generate_poem(poem_model, poem_vocab, "5x4", acrostic="□□□□"), ValueError, "expected Chinese"),
    ]


def test_the_python_api_names_what_it_expected(models):
    cases = api_cases(models)
    for call, error, message in cases:
        with pytest.raises(error, match=message):
            call()
    assert len(cases) == (16 if torch.__version__ < (2, 11) else 19)  # every case ran


def test_a_generated_poem_writes_only_chinese_characters(models):
    model, vocab = models["poems"]
    marks = [t for t in vocab.itos if len(t) == 1 and not "\u4e00" <= t <= "\u9fff"]
    assert "□" in marks or "《" in marks  # the 200 poems hold marks a poem line must never get
    poems = [generate_poem(model, vocab, "5x4", temperature=2.0, seed=seed) for seed in range(30)]
    assert all(not set(poem) & set(marks) - {"，", "。"} for poem in poems), poems
