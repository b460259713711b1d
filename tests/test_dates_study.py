"""tools/dates_study.py, chapter 9's study on the shared study runner: which runs it starts, and with what."""
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def load_tool():
    spec = importlib.util.spec_from_file_location("dates_study_tool", ROOT / "tools" / "dates_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_every_score_for_every_seed_skipping_the_complete_and_resuming_the_started(tmp_path, capsys):
    runs, record = tmp_path / "runs", tmp_path / "rec"
    (runs / "dot-seed0").mkdir(parents=True)
    (runs / "dot-seed0" / "checkpoint.pt").write_bytes(b"")
    record.mkdir()
    (record / "general-seed0.json").write_text('{"complete": true}')
    (record / "none-seed1.json").write_text('{"complete": false}')
    assert load_tool().main(["--dry-run", "--runs", str(runs), "--record", str(record)]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = [line.split(":")[0] for line in lines]
    assert names == ["none-seed0", "dot-seed0", "concat-seed0", "none-seed1", "dot-seed1", "general-seed1",
                     "concat-seed1"]
    assert lines[0] == (f"none-seed0: {sys.executable} -m lstm_lab dates train --score none --seed 0 "
                        f"--out {runs / 'none-seed0'} --results {record / 'none-seed0.json'} --device cpu --threads 1")
    assert [line.endswith("--resume") for line in lines] == [False, True] + [False] * 5


def test_seeds_and_relative_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert load_tool().main(["--dry-run", "--seeds", "3", "--runs", "r", "--record", "rec"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["none-seed3", "dot-seed3", "general-seed3", "concat-seed3"]
    assert f"--out {tmp_path / 'r' / 'none-seed3'} " in lines[0]  # absolute: the runs start in the repository
    assert (tmp_path / "r").is_dir() and (tmp_path / "rec").is_dir()


def test_every_command_is_a_dates_train_command_line(tmp_path):
    from lstm_lab.cli import build_parser
    tool = load_tool()
    for score in tool.DATES_SCORES:
        command = tool.train_command(score, 1, tmp_path, tmp_path, "cpu")
        args = build_parser().parse_args(command[3:])
        assert (args.score, args.seed, Path(args.out), args.threads) == (score, 1, tmp_path / f"{score}-seed1", 1)
