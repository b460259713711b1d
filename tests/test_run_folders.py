"""Run folders that never get stuck and never lie: `train` killed at every write, one `train` per folder,
damaged or swapped files, resumes with other options, and values that do not fit the run.

The runs here train the smoke preset on a tiny made-up corpus (about a second each), so that every write of a
run can be killed in turn.  Only the corpus is replaced: the command line, checkpoints and files are the real ones.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstm_lab import cli, lm_train
from lstm_lab.checkpoint import load_checkpoint
from lstm_lab.cli import main
from lstm_lab.data.corpus import Corpus, Vocab

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
posix_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and file locks (Linux, macOS)")


def tiny_corpus():
    """50 words: a repeating pattern with noise.  Three smoke epochs on it take about a second; the validation
    loss improves in epochs 1 and 3 but not in 2, so best.pt is a checkpoint behind for a while."""
    vocab = Vocab(["<eos>", "the"] + [f"w{i}" for i in range(48)])
    g = torch.Generator().manual_seed(0)

    def text(n, noise):
        pattern = torch.arange(n) % 9
        return torch.where(torch.rand(n, generator=g) < noise, torch.randint(0, len(vocab), (n,), generator=g),
                           pattern)
    return Corpus(vocab, {"train": text(2000, 0.1), "valid": text(400, 0.15), "test": text(400, 0.15)})


def train_argv(out, epochs=3, *extra):
    """The `train` command line of a tiny run (on the CPU, where every run of it gives the same numbers)."""
    return ["train", "--preset", "smoke", "--epochs", str(epochs), "--no-progress", "--device", "cpu",
            "--out", str(out), *extra]


@pytest.fixture
def tiny(monkeypatch):
    """`python -m lstm_lab` reads the tiny corpus; torch's thread count is put back afterwards."""
    monkeypatch.setattr(cli, "load_corpus", lambda *args, **kwargs: tiny_corpus())
    monkeypatch.setattr(lm_train, "load_corpus", lambda *args, **kwargs: tiny_corpus())
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted tiny run (3 epochs, with --results): what every killed and resumed run must end as."""
    folder = tmp_path_factory.mktemp("reference")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "load_corpus", lambda *args, **kwargs: tiny_corpus())
        patch.setattr(lm_train, "load_corpus", lambda *args, **kwargs: tiny_corpus())
        assert main(train_argv(folder / "run", 3, "--results", str(folder / "results" / "run.json"))) == 0
    torch.set_num_threads(threads)
    return folder


@pytest.fixture
def run(reference, tmp_path):
    """A copy of the reference run's folder, to damage."""
    return Path(shutil.copytree(reference / "run", tmp_path / "run"))


def outcome(run, results=None):
    """What a finished run states: its results (without timings and provenance) and which weights it kept."""
    record = json.loads((results or run / "results.json").read_text())
    keys = ("complete", "epochs", "planned_epochs", "train_ppl", "valid_ppl", "lr", "test_ppl", "best_epoch",
            "best_epoch_test_ppl", "best_epoch_valid_ppl", "final_valid_ppl", "samples")
    best, last = load_checkpoint(run / "best.pt"), load_checkpoint(run / "checkpoint.pt")
    return ({k: record[k] for k in keys}, best["epoch"], last["epoch"], last.get("best_epoch"),
            {k: v.tolist() for k, v in best["state_dict"].items()},
            {k: v.tolist() for k, v in last["state_dict"].items()})


def part_files(folder):
    """The temporary files of unfinished writes under `folder`."""
    return sorted(p.name for p in Path(folder).rglob("*.part"))


# Runs in a subprocess: kills a tiny run (SIGKILL, no cleanup at all) instead of its 1st rename of a finished file
# into place, then instead of its 2nd, ... until a run gets through; prints how many renames a whole run makes.
# A run killed instead of rename n leaves the files of any instant between renames n - 1 and n (a write in
# progress adds only a .part file), so together these runs stand for a kill at every instant of a run.
# Each run is a fork of a process that has imported everything, so it starts at once.  SETUP and ARGV are filled
# in by `kill_at_each_rename`; the folder of the runs is the script's last argument.
KILL_AT_EACH_RENAME = """
import os, signal, sys
sys.path.insert(0, sys.argv[1])
import torch._dynamo  # the optimizer imports it: import it once, before forking
import lstm_lab.cli as cli
SETUP
folder, real_replace = sys.argv[-1], os.replace


def replace_or_die(n):
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == n:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst)
    return replace


for n in range(1, 100):
    pid = os.fork()
    if pid == 0:
        os.replace = replace_or_die(n)
        try:
            cli.main(ARGV)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    if not os.WIFSIGNALED(status):
        print("renames", n - 1)
        break
"""


def kill_at_each_rename(setup, argv):
    """KILL_AT_EACH_RENAME with `setup` (the lines that give the child its tiny data) and `argv` (an expression of
    n and folder: the command line of run n) put in."""
    return KILL_AT_EACH_RENAME.replace("SETUP", setup).replace("ARGV", argv)


@posix_only
def test_a_run_killed_at_any_write_resumes_to_the_same_result(reference, tmp_path, tiny):
    script = kill_at_each_rename(
        "import lstm_lab.lm_train as lm_train\n"
        "from test_run_folders import tiny_corpus, train_argv\n"
        "cli.load_corpus = lm_train.load_corpus = lambda *args, **kwargs: tiny_corpus()",
        'train_argv(f"{folder}/run-{n}", 3, "--results", f"{folder}/results-{n}/run.json")')
    killer = subprocess.run([sys.executable, "-c", script, str(TESTS), str(tmp_path)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert killer.returncode == 0, killer.stderr[-3000:]
    renames = int(killer.stdout.split()[-1])
    assert renames >= 13  # vocab.json; per epoch checkpoint.pt, config.json, (best.pt), 2 results; results at the end
    expected = outcome(reference / "run", reference / "results" / "run.json")
    for n in range(1, renames + 2):  # renames + 1: the run that was not killed, resumed once it is complete
        run, results = tmp_path / f"run-{n}", tmp_path / f"results-{n}" / "run.json"
        if n <= renames:
            assert part_files(tmp_path / f"run-{n}") + part_files(results.parent), f"killed at rename {n}"
        assert main(train_argv(run, 3, "--results", str(results), "--resume")) == 0, f"killed at rename {n}"
        assert outcome(run, results) == expected, f"killed at rename {n}"
        assert outcome(run) == expected, f"killed at rename {n}"
        assert part_files(run) == part_files(results.parent) == [], f"killed at rename {n}"


def test_checkpoint_names_the_epoch_best_pt_holds(reference):
    results = json.loads((reference / "run" / "results.json").read_text())
    last, best = load_checkpoint(reference / "run" / "checkpoint.pt"), load_checkpoint(reference / "run" / "best.pt")
    improved = [r["epoch"] for r in results["history"] if r["improved"]]
    assert last["best_epoch"] == best["epoch"] == results["best_epoch"] == improved[-1]


def test_best_weights_come_from_the_checkpoint_when_best_pt_is_behind(run, tiny, capsys):
    """Killed after checkpoint.pt was renamed into place but before best.pt: the best weights are the last ones."""
    history = json.loads((run / "results.json").read_text())["history"]
    assert history[-1]["improved"]  # the reference run's last epoch is its best (see tiny_corpus)
    (run / "best.pt").unlink()
    capsys.readouterr()
    assert main(["generate", "--out", str(run), "--weights", "best", "--steps", "5"]) == 0
    best_words = capsys.readouterr().out
    assert main(["generate", "--out", str(run), "--weights", "last", "--steps", "5"]) == 0
    assert capsys.readouterr().out == best_words
    assert main(train_argv(run, 3, "--resume")) == 0  # puts best.pt back
    assert load_checkpoint(run / "best.pt")["epoch"] == history[-1]["epoch"]


def test_a_best_pt_of_another_epoch_is_refused(run, tiny):
    last = load_checkpoint(run / "checkpoint.pt")
    torch.save({**last, "best_epoch": 1}, run / "checkpoint.pt")  # best.pt (epoch 3) no longer fits the record
    with pytest.raises(SystemExit, match="best.pt holds epoch 3, but the run's best epoch is 1"):
        main(["generate", "--out", str(run), "--weights", "best"])
    with pytest.raises(SystemExit, match="best.pt does not hold epoch 1"):
        main(train_argv(run, 3, "--resume"))


# Runs in a subprocess: a `train` that stays in its corpus loading (as a real one does for a few seconds).
SLOW_TRAIN = """
import sys, time
sys.path.insert(0, sys.argv[1])
import lstm_lab.cli as cli
from test_run_folders import train_argv


def slow_corpus(*args, **kwargs):
    print("loading", flush=True)
    time.sleep(600)


import lstm_lab.lm_train as lm_train
lm_train.load_corpus = slow_corpus
cli.main(train_argv(sys.argv[2], 1))
"""


@posix_only
def test_a_second_train_on_the_same_folder_is_refused_until_the_first_dies(tmp_path, tiny):
    out = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-c", SLOW_TRAIN, str(TESTS), str(out)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "loading"
        for argv in (train_argv(out, 1), train_argv(out, 1, "--resume")):
            with pytest.raises(SystemExit, match=rf"{out} is in use by another `train` \(process {first.pid}, "):
                main(argv)
        assert sorted(p.name for p in out.iterdir()) == ["train.lock"]  # the second run wrote nothing
    finally:
        first.kill()  # kill -9: the operating system releases the lock
        first.wait()
    assert main(train_argv(out, 1)) == 0


@pytest.mark.parametrize("damage", ["empty", "truncated", "text", "pickle"])
def test_a_damaged_checkpoint_is_one_line_naming_the_file_and_the_fix(reference, run, tiny, damage):
    path = run / "checkpoint.pt"
    whole = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": whole[: len(whole) // 2], "text": b"not a checkpoint\n" * 9,
                      "pickle": b"\x80\x04\x95garbage"}[damage])
    for argv in (["generate", "--out", str(run)], ["evaluate", "--out", str(run)], train_argv(run, 3, "--resume")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        message = str(info.value.code)
        assert message.startswith(f"error: {path} is damaged") and "delete it and run train again" in message
        assert "weights_only" not in message and "\n" not in message
    path.unlink()  # as the message says: the run starts again
    assert main(train_argv(run, 3, "--resume")) == 0
    assert outcome(run) == outcome(reference / "run")


def test_resume_with_other_options_names_only_the_fields_that_differ(run, tiny):
    with pytest.raises(SystemExit) as info:
        main(train_argv(run, 3, "--resume", "--seed", "7", "--max-batches", "5"))
    message = str(info.value.code)
    assert "(max_batches: saved 30, requested 5; seed: saved 0, requested 7)" in message
    assert "only --epochs may change" in message and "hidden_size" not in message and len(message) < 400


def test_epochs_extends_a_finished_run_as_if_it_had_been_planned(reference, run, tmp_path, tiny):
    assert main(train_argv(tmp_path / "five", 5)) == 0
    assert main(train_argv(run, 5, "--resume")) == 0
    assert outcome(run) == outcome(tmp_path / "five")  # the schedule went on, and the test ppl is the new end's
    results = json.loads((run / "results.json").read_text())
    assert results["complete"] and results["epochs"] == results["planned_epochs"] == 5
    assert results["test_ppl"] != json.loads((reference / "run" / "results.json").read_text())["test_ppl"]
    with pytest.raises(SystemExit, match="has trained 5 epochs already: --epochs must be 5 or more"):
        main(train_argv(run, 4, "--resume"))


def test_a_swapped_vocab_json_is_refused(run, tiny, capsys):
    tokens = json.loads((run / "vocab.json").read_text())
    tokens[2], tokens[3] = tokens[3], tokens[2]  # same words, other ids: generate would print the wrong ones
    (run / "vocab.json").write_text(json.dumps(tokens))
    with pytest.raises(SystemExit, match=f"{run / 'vocab.json'} is not the vocabulary .* was trained with"):
        main(["generate", "--out", str(run)])
    assert main(train_argv(run, 3, "--resume")) == 0  # writes the run's vocab.json again
    assert main(["generate", "--out", str(run), "--steps", "3"]) == 0


def test_resume_on_a_corpus_with_another_vocabulary_is_refused(run, tiny, monkeypatch):
    other = tiny_corpus()
    other.vocab = Vocab(list(reversed(other.vocab.itos)))
    monkeypatch.setattr(lm_train, "load_corpus", lambda *args, **kwargs: other)
    with pytest.raises(SystemExit, match="is not the vocabulary .*checkpoint.pt was trained with"):
        main(train_argv(run, 3, "--resume"))


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--top-k", "51"], "--top-k 51 is larger than the vocabulary of RUN: expected 1 to 50"),
    (["evaluate", "--batch-size", "201"], "--batch-size 201 does not fit the test text (400 tokens): every one of "
                                          "the streams needs 2 tokens or more; expected 1 to 200"),
    (["generate", "--prompt", "zebra"], "prompt token(s) ['zebra'] not in the vocabulary of 50 tokens"),
])
def test_values_that_do_not_fit_the_run_are_one_line_usage_errors(run, tiny, capsys, argv, expected):
    with pytest.raises(SystemExit) as info:
        main(argv + ["--out", str(run)])
    assert info.value.code == 2
    assert expected.replace("RUN", str(run)) in capsys.readouterr().err


def test_a_run_killed_before_its_first_epoch_ended_can_be_resumed(tmp_path, tiny):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.lock").write_text("process 1, started long ago\n")  # all such a run leaves (and .part files)
    (out / ".vocab.json.x1y2.part").write_text("[")
    assert main(train_argv(out, 1, "--resume")) == 0
    assert json.loads((out / "results.json").read_text())["complete"]
    assert part_files(out) == []
