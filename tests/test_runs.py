"""Recorded results ship with the package and load wherever it is installed."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lstm_lab.experiments.records import (comparison_rows, describe_sessions, load_recorded, load_runs, load_seeds,
                                          mean_and_spread, recorded_names, seeds_row)
from lstm_lab.provenance import git_commit

ROOT = Path(__file__).resolve().parents[1]


def test_every_recorded_file_loads_with_its_provenance():
    names = recorded_names()
    assert "bench-cpu.json" in names and "ptb-zaremba-small-lab.json" in names
    for name in names:
        record = load_recorded(name)
        provenance = record.get("provenance", record)  # benchmarks nest it, runs keep it at the top
        assert provenance["commit"] and provenance["date"] and provenance["torch_version"], name


def test_a_missing_record_is_none():
    assert load_recorded("never-recorded.json") is None


def test_recorded_results_are_in_the_built_wheel(tmp_path):
    pytest.importorskip("setuptools", reason="building the wheel offline needs setuptools in this environment")
    # what pip installs on Colab from git: a wheel built from the repository, not the checkout itself
    source = tmp_path / "source"  # a copy, so the build leaves nothing behind in the checkout
    shutil.copytree(ROOT / "lstm_lab", source / "lstm_lab", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path), str(source)], check=True)
    wheel = next(tmp_path.glob("lstm_lab-*.whl"))
    inside = zipfile.ZipFile(wheel).namelist()
    for name in recorded_names():
        assert f"lstm_lab/recorded/{name}" in inside
    with zipfile.ZipFile(wheel) as z:
        assert json.loads(z.read("lstm_lab/recorded/bench-cpu.json")) == load_recorded("bench-cpu.json")


def test_load_runs_keeps_the_recorded_and_names_the_missing(capsys):
    runs = load_runs({"small": "ptb-zaremba-small-torch.json", "ghost": "never-recorded.json"})
    assert list(runs) == ["small"] and runs["small"]["preset"] == "zaremba-small"
    assert "never-recorded.json was not recorded" in capsys.readouterr().out


def test_comparison_rows_put_published_numbers_first_and_mark_unfinished_runs():
    finished, unfinished = load_recorded("ptb-zaremba-small-torch.json"), load_recorded("ptb-zaremba-medium-lab.json")
    rows = comparison_rows({"done": finished, "partial": unfinished},
                           [{"model": "paper", "valid": 120.7, "test": 114.5, "note": "Table 1"}])
    assert [row["model"] for row in rows] == ["paper", "done", "partial"]
    assert rows[1]["test ppl"] == f"{finished['test_ppl']:.1f}"
    assert rows[2]["test ppl"] == "not yet" and f"epoch {unfinished['epochs']} of" in rows[2]["note"]


def test_describe_sessions_says_a_stopped_run_is_not_finished():
    lines = describe_sessions("lab", load_recorded("ptb-zaremba-medium-lab.json"))
    assert lines[0].startswith("lab: not finished") and "trained with: python -m lstm_lab train" in lines[0]


def fake_run(valid, test=None):
    """A results JSON with only what seeds_row reads."""
    return {"valid_ppl": valid, "test_ppl": test, "complete": test is not None}


def test_seeds_row_gives_mean_and_sample_deviation_over_the_epochs_all_seeds_reached():
    row = seeds_row("L2", [fake_run([200, 150], 140.0), fake_run([210, 160], 146.0), fake_run([190])])
    assert row["seeds"] == "3 (1 unfinished)"
    assert row["valid, epoch 1"] == "200.0 ± 10.0"  # mean and sample standard deviation (ddof=1)
    assert "valid, epoch 2" not in row  # the third seed has not reached it
    assert row["test"] == "143.0 ± 4.2 (2)"  # two of three seeds tested
    assert seeds_row("L1", [fake_run([180])])["test"] == "not yet"
    assert mean_and_spread([3.0]) == (3.0, None)


def test_load_seeds_leaves_out_the_seeds_never_recorded():
    studies = [name for name in recorded_names() if "/" in name]
    if not studies:
        pytest.skip("no study recorded in this copy")
    folder, name = studies[0].split("/")
    runs = load_seeds(folder, [name, "never-recorded.json"])
    assert runs == [load_recorded(studies[0])]


def test_git_commit_counts_code_changes_but_not_recorded_results(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)
    (tmp_path / "lstm_lab" / "recorded").mkdir(parents=True)
    (tmp_path / "lstm_lab" / "model.py").write_text("x = 1\n")
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "code"], check=True)
    (tmp_path / "lstm_lab" / "recorded" / "run.json").write_text("{}")  # a study writing its results
    commit, dirty = git_commit(tmp_path)
    assert len(commit) == 40 and dirty is False
    (tmp_path / "lstm_lab" / "model.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == (commit, True)
