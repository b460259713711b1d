"""Recorded results ship with the package and load wherever it is installed."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lstm_lab.experiments.records import (MEASURED_CODE, comparison_rows, describe_record, describe_sessions,
                                          later_commits, load_recorded, load_runs, load_seeds, mean_and_spread,
                                          recorded_names, seeds_row)
from lstm_lab.provenance import commits_since, git_commit

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


def test_commits_since_counts_the_later_commits_that_changed_the_paths(tmp_path):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git[:3] + ["init", "-q"], check=True)

    def commit(path, text):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        subprocess.run(git + ["add", "-A"], check=True)
        subprocess.run(git + ["commit", "-qm", path], check=True)
        return subprocess.run(git[:3] + ["rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()

    first = commit("lstm_lab/lstm.py", "x = 1\n")
    assert commits_since(first, ["lstm_lab/lstm.py"], tmp_path) == 0
    commit("lstm_lab/model.py", "y = 1\n")
    commit("lstm_lab/lstm.py", "x = 2\n")
    assert commits_since(first, ["lstm_lab/lstm.py"], tmp_path) == 1  # the model.py commit is not counted
    assert commits_since(first, ["lstm_lab"], tmp_path) == 2
    assert commits_since("0" * 40, ["lstm_lab"], tmp_path) is None  # a commit this history does not have
    assert commits_since(first, ["lstm_lab"], tmp_path / "lstm_lab") is None  # not the root of a checkout
    assert commits_since(first, ["lstm_lab"], tmp_path / "elsewhere") is None  # no repository at all


def test_describe_record_says_whether_the_code_it_measured_has_changed(monkeypatch):
    provenance = {"device": "cuda (a GPU)", "torch_version": "2.0", "commit": "abcdef0123", "date": "2026-01-02T03:04"}
    monkeypatch.setattr("lstm_lab.experiments.records.commits_since", lambda commit, paths: 3)
    assert later_commits(provenance, "bench") == 3
    assert describe_record(provenance, "bench") == ("recorded on cuda (a GPU) with torch 2.0, from commit abcdef0 on "
                                                    "2026-01-02; 3 later commits changed its files: it measured older "
                                                    "code than this copy's")
    monkeypatch.setattr("lstm_lab.experiments.records.commits_since", lambda commit, paths: 0)
    assert describe_record(provenance, "bench").endswith("; no later commit changed the code it measured")
    monkeypatch.setattr("lstm_lab.experiments.records.commits_since", lambda commit, paths: None)
    assert describe_record(provenance, "training").endswith("no git history to say whether that code has changed since")
    assert later_commits({**provenance, "commit": None}, "bench") is None


def test_every_measured_file_exists():
    for kind, paths in MEASURED_CODE.items():
        assert all((ROOT / path).exists() for path in paths), kind
