"""`python -m lstm_lab`: choices are checked, and train -> evaluate -> generate works end to end."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstm_lab.cli import build_parser, main, requested_configs
from lstm_lab.lm_train import load_lm_run

SHARED = os.environ.get("LSTM_LAB_DATA")
needs_data = pytest.mark.skipif(not (SHARED and (Path(SHARED) / "ptb" / "train.txt").is_file()),
                                reason="set $LSTM_LAB_DATA to the folder holding the corpora")


@pytest.fixture(autouse=True)
def restore_threads():
    """The CLI sets torch's thread count; put it back for the other tests."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("argv, choices", [
    (["train", "--preset", "zaremba-huge", "--out", "x"], "'zaremba-small', 'zaremba-medium', 'zaremba-large', 'depth-200',"
                                                          " 'smoke'"),
    (["train", "--preset", "smoke", "--rnn", "cudnn", "--out", "x"], "'lab', 'torch'"),
    (["evaluate", "--out", "x", "--split", "dev"], "'train', 'valid', 'test'"),
    (["evaluate", "--out", "x", "--weights", "first"], "'last', 'best'"),
    (["generate", "--out", "x", "--temperature", "0"], "must be positive"),
    (["train", "--preset", "smoke", "--out", "x", "--max-batches", "-3"], "must be 0 or more"),
    (["fly"], "train,evaluate,generate,poems,dates,bench"),
])
def test_bad_names_and_values_are_rejected_with_the_choices(argv, choices, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert choices in capsys.readouterr().err


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


def fake_record(calls, name):
    """A stand-in for a benchmark's work function: notes its arguments, returns a record with no rows."""
    def record(*args, **kwargs):
        calls.append((name, args, kwargs))
        return {"provenance": {"command": "python -m lstm_lab " + " ".join(kwargs["argv"])}, "results": {}}
    return record


def test_bench_and_throughput_pass_their_checked_options_to_the_work(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr("lstm_lab.experiments.bench.record_bench", fake_record(calls, "bench"))
    monkeypatch.setattr("lstm_lab.experiments.throughput.record_throughput", fake_record(calls, "throughput"))
    bench_argv = ["bench", "--sizes", "tiny", "ptb-small", "--repeats", "3", "--warmup", "1", "--device", "cpu",
                  "--no-compile", "--tf32", "--json", str(tmp_path / "new" / "bench.json")]
    assert main(bench_argv) == 0
    throughput_argv = ["throughput", "--sizes", "zaremba-small", "--repeats", "2", "--device", "cpu",
                       "--json", str(tmp_path / "throughput.json")]
    assert main(throughput_argv) == 0
    assert calls == [("bench", (["tiny", "ptb-small"], torch.device("cpu"), 3, 1),
                      {"compiled": False, "tf32": True, "graphs": True, "argv": bench_argv}),
                     ("throughput", (["zaremba-small"], torch.device("cpu")),
                      {"repeats": 2, "argv": throughput_argv})]
    record = json.loads((tmp_path / "new" / "bench.json").read_text())
    assert record["provenance"]["command"] == "python -m lstm_lab " + " ".join(bench_argv)
    assert json.loads((tmp_path / "throughput.json").read_text())["results"] == {}
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["bench.json", "new", "throughput.json"]  # no .part files


def test_a_record_that_cannot_be_written_leaves_the_old_one_whole(monkeypatch, tmp_path):
    path = tmp_path / "bench.json"
    path.write_text('{"old": true}\n')
    monkeypatch.setattr("lstm_lab.experiments.bench.record_bench", fake_record([], "bench"))

    def disk_full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("lstm_lab.files.os.replace", disk_full)
    with pytest.raises(SystemExit, match=re.escape(f"error: could not write {path}: No space left on device")):
        main(["bench", "--json", str(path)])
    assert json.loads(path.read_text()) == {"old": True} and [p.name for p in tmp_path.iterdir()] == ["bench.json"]


def error_line(argv, capsys):
    """The one error line of a command line that must end with a usage error (exit status 2) and no traceback."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert "Traceback" not in err and len(errors) == 1, err
    assert errors[0].startswith("python -m lstm_lab") and ": error: " in errors[0]
    return errors[0]


@pytest.fixture
def no_benchmark(monkeypatch):
    """Any benchmark work fails the test: a bad command line must end before it starts."""
    def must_not_run(*args, **kwargs):
        raise AssertionError("the benchmark ran before the command line was checked")
    for name in ("lstm_lab.experiments.bench.record_bench", "lstm_lab.experiments.bench.run_bench",
                 "lstm_lab.experiments.throughput.record_throughput", "lstm_lab.experiments.throughput.measure"):
        monkeypatch.setattr(name, must_not_run)


@pytest.mark.parametrize("argv, expected", [
    (["bench", "--threads", "32768"],
     f"argument --threads: expected 1 to {os.cpu_count()} (the CPU cores of this machine), got 32768"),
    (["bench", "--threads", "0"], "argument --threads: expected 1 to"),
    (["bench", "--device", "foo"], "argument --device: unknown device 'foo': expected cpu, cuda, cuda:N or mps"),
    (["bench", "--device", "meta"], "argument --device: unsupported device 'meta': expected cpu, cuda, cuda:N or mps"),
    (["throughput", "--device", "foo"], "argument --device: unknown device 'foo': expected cpu, cuda"),
    (["throughput", "--device", "meta"], "argument --device: unsupported device 'meta'"),
    pytest.param(["bench", "--device", "cuda"], "argument --device: cuda: CUDA is not available", marks=NO_CUDA),
    pytest.param(["throughput", "--device", "cuda"], "argument --device: cuda: CUDA is not available",
                 marks=NO_CUDA),
    (["bench", "--repeats", "0"], "argument --repeats: expected an integer from 1 to 1000, got 0"),
    (["bench", "--repeats", "ten"], "argument --repeats: invalid integer value: 'ten'"),
    (["throughput", "--repeats", "0"], "argument --repeats: expected an integer from 1 to 1000, got 0"),
    (["bench", "--warmup", "-1"], "argument --warmup: expected an integer from 1 to 1000, got -1"),
    (["bench", "--warmup", "0"], "argument --warmup: expected an integer from 1 to 1000, got 0"),
    (["bench", "--sizes", "huge"], "argument --sizes: invalid choice: 'huge'"),
    (["throughput", "--sizes", "zaremba-huge"], "argument --sizes: invalid choice: 'zaremba-huge'"),
    (["bench", "--json", ""], "argument --json: expected the path of a file, got ''"),
])
def test_bad_benchmark_options_end_in_one_line_before_any_work(argv, expected, capsys, no_benchmark):
    assert expected in error_line(argv, capsys)


@pytest.mark.parametrize("command", ["bench", "throughput"])
@pytest.mark.parametrize("json_path, expected", [
    ("{folder}", "argument --json: {folder} is a folder: expected the path of a file"),
    ("{file}/x.json", "argument --json: cannot write {file}/x.json: {file} is a file, not a folder"),
    ("{file}/sub/x.json", "argument --json: cannot write {file}/sub/x.json: {file} is a file, not a folder"),
    ("{locked}/x.json", "argument --json: cannot write {locked}/x.json: {locked} is not writable"),
    ("{locked}/sub/x.json", "argument --json: cannot write {locked}/sub/x.json: {locked} is not writable"),
])
def test_a_json_path_that_cannot_be_written_is_refused_before_any_work(command, json_path, expected, tmp_path,
                                                                      capsys, monkeypatch, no_benchmark):
    paths = {"folder": tmp_path / "folder", "file": tmp_path / "file", "locked": tmp_path / "locked"}
    paths["folder"].mkdir()
    paths["file"].write_text("not a folder")
    paths["locked"].mkdir(mode=0o555)
    if os.access(paths["locked"], os.W_OK):  # root may write anywhere: show the check what another user would see
        writable = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != paths["locked"] and writable(path, mode))
    assert expected.format(**paths) in error_line([command, "--json", json_path.format(**paths)], capsys)
    assert list(paths["locked"].iterdir()) == [] and list(paths["folder"].iterdir()) == []


def test_a_bad_device_in_the_environment_ends_the_benchmark_before_it_starts(monkeypatch, capsys, no_benchmark):
    monkeypatch.setenv("LSTM_LAB_DEVICE", "gpu")
    assert "$LSTM_LAB_DEVICE: unknown device 'gpu'" in error_line(["bench"], capsys)


@pytest.mark.parametrize("argv, expected", [
    (["generate", "--out", "x", "--device", "foo"], "argument --device: unknown device 'foo': expected cpu, cuda"),
    pytest.param(["evaluate", "--out", "x", "--device", "cuda"], "argument --device: cuda: CUDA is not available",
                 marks=NO_CUDA),
    (["train", "--preset", "smoke", "--out", "x", "--seed", "-1"], "argument --seed: expected an integer from 0 to "
                                                                   "4294967295, got -1"),
    (["generate", "--out", "x", "--seed", "-1"], "argument --seed: expected an integer from 0"),
    (["generate", "--out", "x", "--prompt", ""], "argument --prompt: expected at least one space-separated token"),
    (["generate", "--out", "x", "--prompt", "  "], "argument --prompt: expected at least one space-separated token"),
    (["generate", "--out", "x", "--temperature", "nan"], "argument --temperature: must be positive and finite, "
                                                         "got nan"),
    (["generate", "--out", "x", "--temperature", "inf"], "must be positive and finite, got inf"),
    (["train", "--preset", "smoke", "--out", "x", "--threads", "32768"],
     f"argument --threads: expected 1 to {os.cpu_count()} (the CPU cores of this machine), got 32768"),
    (["evaluate", "--out", "x", "--data-dir", "/no/such/folder"],
     "argument --data-dir: /no/such/folder is not a folder"),
    (["train", "--preset", "smoke", "--out", "x", "--num-layers", "0"],
     "argument --num-layers: expected an integer from 1 to 8, got 0"),
    (["train", "--preset", "smoke", "--out", "x", "--num-layers", "two"],
     "argument --num-layers: invalid integer value: 'two'"),
    (["train", "--preset", "smoke", "--out", "x", "--hidden-size", "0"],
     "argument --hidden-size: expected an integer from 1 to 8192, got 0"),
    (["train", "--preset", "smoke", "--out", "x", "--dropout", "1"],
     "argument --dropout: expected a probability from 0 up to (not including) 1, got 1"),
    (["train", "--preset", "smoke", "--out", "x", "--dropout", "-0.1"], "argument --dropout: expected a probability"),
    (["train", "--preset", "smoke", "--out", "x", "--lr", "0"],
     "argument --lr: expected a learning rate above 0 and at most 1e+06, got 0"),
    (["train", "--preset", "smoke", "--out", "x", "--tie-weights", "--hidden-size", "20"],
     "tie_weights=True needs embed_size == hidden_size, got 16 and 20"),
])
def test_bad_values_end_in_one_line_before_anything_is_loaded(argv, expected, capsys, monkeypatch):
    def must_not_run(*args, **kwargs):
        raise AssertionError("data or a run was loaded before the command line was checked")
    for name in ("lstm_lab.cli.load_corpus", "lstm_lab.cli.load_lm_run", "lstm_lab.lm_train.load_corpus",
                 "lstm_lab.runs.read_checkpoint"):
        monkeypatch.setattr(name, must_not_run)
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


@needs_data
def test_overrides_shape_the_model_and_a_resume_must_repeat_them(tmp_path):
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--epochs", "1", "--max-batches", "2", "--out", str(out), "--no-progress",
            "--num-layers", "3", "--hidden-size", "12", "--embed-size", "10", "--dropout", "0.25", "--lr", "0.5"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert {k: results["model_config"][k] for k in ("num_layers", "hidden_size", "embed_size", "dropout")} == \
        {"num_layers": 3, "hidden_size": 12, "embed_size": 10, "dropout": 0.25}
    assert results["lr"] == [0.5]
    assert results["parameters"] == sum(p.numel() for p in load_lm_run(out, "cpu")[0].parameters())
    with pytest.raises(SystemExit, match="num_layers: saved 3, requested 2"):
        main(args[:-10] + ["--num-layers", "2", "--hidden-size", "12", "--embed-size", "10", "--dropout", "0.25",
                           "--lr", "0.5", "--resume", "--epochs", "2"])


def test_a_bad_device_in_the_environment_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setenv("LSTM_LAB_DEVICE", "gpu")
    with pytest.raises(SystemExit) as info:
        main(["generate", "--out", "x"])
    assert info.value.code == 2
    assert "$LSTM_LAB_DEVICE: unknown device 'gpu': expected cpu, cuda" in capsys.readouterr().err


def test_missing_run_folder_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="holds no checkpoint.pt"):
        main(["generate", "--out", str(tmp_path / "nothing")])


@needs_data
def test_train_evaluate_generate_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--epochs", "1", "--out", str(out), "--no-progress",
            "--results", str(tmp_path / "results" / "smoke.json")]
    assert main(args) == 0
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "best.pt", "config.json", "vocab.json", "results.json"}
    results = json.loads((tmp_path / "results" / "smoke.json").read_text())
    assert results["complete"] and results["epochs"] == 1 and len(results["valid_ppl"]) == 1
    for key in ("preset", "rnn", "test_ppl", "wall_seconds", "tokens_per_second", "device", "torch_version",
                "commit", "command", "date", "threads", "cpu"):
        assert key in results, key
    assert results["test_ppl"] < 10_000  # learned something: uniform guessing over 10,000 words gives 10,000

    with pytest.raises(SystemExit, match="already holds a run"):
        main(args)
    check_resume_state(out)

    capsys.readouterr()
    assert main(["evaluate", "--out", str(out), "--split", "test", "--batch-size", "64"]) == 0
    assert f"test perplexity {results['test_ppl']:.2f}" in capsys.readouterr().out  # same model, same streams
    assert main(["generate", "--out", str(out), "--prompt", "the company", "--steps", "5", "--top-k", "10",
                 "--weights", "best"]) == 0
    words = capsys.readouterr().out.split()
    assert words[:2] == ["the", "company"] and len(words) == 7
    with pytest.raises(SystemExit) as info:
        main(["generate", "--out", str(out), "--prompt", "qwertyuiop"])
    assert info.value.code == 2 and "not in the vocabulary" in capsys.readouterr().err


def check_resume_state(out):
    """What `train --resume` loads: the saved weights and run state, and only for the same configuration."""
    from dataclasses import replace
    from lstm_lab.checkpoint import checkpoint_configs, load_checkpoint
    from lstm_lab.config import ModelConfig, TrainConfig
    from lstm_lab.runs import RunError, resume_from, resumed_configs
    from lstm_lab.model import LanguageModel
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    configs = checkpoint_configs(checkpoint, {"model": ModelConfig, "train": TrainConfig})
    model_config, train_config = configs["model"], configs["train"]
    torch.manual_seed(1)
    model = LanguageModel(model_config)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    run_state = resume_from(out, model, optimizer, checkpoint)
    saved = load_checkpoint(out / "checkpoint.pt")["state_dict"]
    assert run_state["epoch"] == 1 and all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    assert resumed_configs(out, checkpoint, configs) == configs
    with pytest.raises(RunError, match=r"trained with other settings \(lr: saved 1.0, requested 0.5\)"):
        resumed_configs(out, checkpoint, {"model": model_config, "train": replace(train_config, lr=0.5)})


def test_resume_without_a_run_is_an_error(tmp_path):
    with pytest.raises(SystemExit, match="holds no checkpoint.pt"):
        main(["train", "--preset", "smoke", "--out", str(tmp_path), "--resume"])


def test_module_entry_point_prints_help():
    result = subprocess.run([sys.executable, "-m", "lstm_lab", "--help"], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parent.parent)
    assert result.returncode == 0 and "train" in result.stdout and "generate" in result.stdout


def test_cuda_graphs_on_a_cpu_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--preset", "smoke", "--out", str(tmp_path / "run"), "--device", "cpu", "--cuda-graphs"])
    assert info.value.code == 2
    assert "--cuda-graphs needs a CUDA device, got cpu" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before the run folder was made


def test_train_on_your_own_text_file_at_character_level(tmp_path, capsys):
    text = tmp_path / "mine.txt"
    text.write_text("".join(f"line {k} of my own text, {'ab' * (k % 5)}\n" for k in range(200)))
    out = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--epochs", "1", "--max-batches", "5", "--no-progress", "--device", "cpu",
            "--text-file", str(text), "--level", "char", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["corpus"] == str(text.resolve()) and results["train_config"]["level"] == "char"
    assert "lines 1-180 train (90%), lines 181-190 valid (5%), lines 191-200 test (5%)" in results["data"]
    assert set(json.loads((out / "vocab.json").read_text())) <= set(text.read_text())  # characters, no <eos>
    capsys.readouterr()
    assert main(["generate", "--out", str(out), "--prompt", "line ", "--steps", "8", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("line ")  # characters, not space-separated words
    text.write_text(text.read_text() + "one more line\n")  # the text changed: the run cannot go on with it
    with pytest.raises(SystemExit, match="has changed since"):
        main(args + ["--resume", "--epochs", "2"])


def test_corpus_and_text_file_do_not_go_together(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--preset", "smoke", "--corpus", "ptb", "--text-file", str(tmp_path), "--out", "x"])
    assert info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


@needs_data
def test_train_on_another_registered_corpus(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--corpus", "tinyshakespeare", "--level", "char", "--epochs", "1",
                 "--max-batches", "3", "--no-progress", "--device", "cpu", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["corpus"] == "tinyshakespeare" and results["model_config"]["vocab_size"] == 65
    assert results["data"].startswith("tinyshakespeare/input.txt split by lines: lines 1-36,000 train (90%)")
    capsys.readouterr()
    assert main(["evaluate", "--out", str(out), "--split", "valid", "--batch-size", "64", "--device", "cpu"]) == 0
    assert "valid perplexity" in capsys.readouterr().out
    args = build_parser().parse_args(["train", "--preset", "zaremba-small", "--corpus", "wikitext-2", "--out", "x"])
    args.device = torch.device("cpu")
    assert requested_configs(args)[1].corpus == "wikitext-2"  # WikiText-2 itself loads in tests/test_texts.py


TRAINS = {"train": ["train", "--preset", "smoke"], "poems train": ["poems", "train"], "dates train": ["dates", "train"]}


@pytest.mark.parametrize("command", TRAINS)
@pytest.mark.parametrize("option, value, expected", [
    ("--out", "", "argument --out: expected the path of a run folder, got ''"),
    ("--out", "FILE", "argument --out: FILE is a file: expected a run folder (a folder, made if missing)"),
    ("--out", "FILE/run", "argument --out: cannot write FILE/run: FILE is a file, not a folder"),
    ("--out", "x" * 300, "a name in it is longer than 255 bytes"),
    ("--results", "", "argument --results: expected the path of a file, got ''"),
    ("--results", "DIR", "argument --results: DIR is a folder: expected the path of a file"),
    ("--results", "FILE/r.json", "argument --results: cannot write FILE/r.json: FILE is a file, not a folder"),
])
def test_a_run_folder_or_results_path_that_cannot_be_written_ends_in_one_line_before_training(
        command, option, value, expected, tmp_path, capsys, monkeypatch):
    (tmp_path / "FILE").write_text("not a folder")
    (tmp_path / "DIR").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("lstm_lab.cli.train_in_folder", lambda *a, **k: pytest.fail("training started"))
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = TRAINS[command] + ["--out", "run", "--results", "r.json", "--device", "cpu"] + [option, value]
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and expected in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing was made


def test_a_run_folder_in_a_folder_that_cannot_be_written_is_refused(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr("lstm_lab.cli.os.access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(SystemExit) as info:
        main(["dates", "train", "--out", str(locked / "run"), "--device", "cpu"])
    assert info.value.code == 2 and f"cannot write {locked / 'run'}: {locked} is not writable" in capsys.readouterr().err
