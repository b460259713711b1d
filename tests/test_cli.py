"""`python -m lstm_lab`: choices are checked, and train -> evaluate -> generate works end to end."""
import json
import os
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


def test_bench_forwards_its_arguments(monkeypatch):
    seen = []
    monkeypatch.setattr("lstm_lab.experiments.bench.main", lambda argv=None: seen.append(argv) or 0)
    assert main(["bench", "--quick", "--out", "x.json"]) == 0
    assert seen == [["--quick", "--out", "x.json"]]


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


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
    (["train", "--preset", "smoke", "--out", "x", "--lr", "0"], "argument --lr: must be positive and finite, got 0"),
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
