"""Chapter 8's studies: the learning-rate search rule, the runs it asks for, and the commands of the tool."""
import importlib.util
import math
from pathlib import Path

import pytest

from lstm_lab.cli import build_parser
from lstm_lab.experiments.poems_study import (MAX_STEPS, POEMS_RECORDED, STUDY_CONFIG, STUDY_OPTIONS, init_name,
                                              learning_rate, load_study, optimizer_table, run_name, search_steps,
                                              study_configs, study_jobs, study_results)
from lstm_lab.experiments.records import load_recorded_folder

ROOT = Path(__file__).resolve().parent.parent


def finished(ppl, test=None):
    return {"complete": True, "best_valid_ppl": ppl, "test_ppl": test or ppl, "best_epoch": 3}


def test_learning_rates_step_by_half_decades_from_seed_002s():
    assert [learning_rate("adam", s) for s in (-1, 0, 1, 2)] == [0.000316, 0.001, 0.00316, 0.01]
    assert learning_rate("sgd", 0) == 0.1 and run_name("sgd", 1, 0) == "sgd-lr0.316-seed0"
    assert init_name("default", 1) == "adam-lr0.001-seed1" and init_name("zeros", 0) == "init-zeros-seed0"


def test_the_search_extends_toward_an_edge_until_the_best_is_inside():
    results = {}
    assert search_steps("sgd", results) == ([-1, 0, 1], [-1, 0, 1], None)
    curve = {-1: 300.0, 0: 250.0, 1: 200.0, 2: 190.0, 3: 195.0}  # best at step 2
    for step in (-1, 0, 1):
        results[run_name("sgd", step, 0)] = finished(curve[step])
    assert search_steps("sgd", results) == ([-1, 0, 1, 2], [2], None)  # best at the top edge: one step more
    results[run_name("sgd", 2, 0)] = finished(curve[2])
    assert search_steps("sgd", results)[1] == [3]
    results[run_name("sgd", 3, 0)] = finished(curve[3])
    assert search_steps("sgd", results) == ([-1, 0, 1, 2, 3], [], 2)
    jobs = dict(study_jobs(results))
    assert jobs[run_name("sgd", 2, 1)] == ("--optimizer", "sgd", "--lr", "1.0", "--seed", "1")
    assert not any(name.startswith("sgd") and name != run_name("sgd", 2, 1) for name in jobs)


def test_the_search_stops_at_its_limit_and_diverged_runs_lose():
    results = {run_name("adam", s, 0): finished(100.0 - s) for s in range(-1, MAX_STEPS + 1)}
    results[run_name("adam", -1, 0)] = finished(math.nan)
    assert search_steps("adam", results) == (list(range(-1, MAX_STEPS + 1)), [], MAX_STEPS)
    table = {row["optimizer"]: row for row in optimizer_table(results)}
    assert table["adam"]["chosen lr"] == "0.1 (edge)" and table["adam"]["valid ppl"] == f"{100.0 - MAX_STEPS:.1f}"
    assert table["sgd"]["chosen lr"] == "searching"


def test_every_run_appears_once_and_every_command_parses():
    jobs = study_jobs({})
    names = [name for name, _ in jobs]
    assert len(names) == len(set(names)) and run_name("adam", 0, 0) in names
    assert "init-default-seed0" not in names and "init-forget-bias-1-seed1" in names
    for name, options in jobs:
        args = build_parser().parse_args(["poems", "train", "--out", "x", *STUDY_OPTIONS, *options])
        assert args.forms == "5x4" and args.hidden_size == 256 and args.epochs == 10


def test_the_tool_builds_a_resuming_command_for_a_started_run(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("poems_study_tool", ROOT / "tools" / "poems_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    (tmp_path / "runs" / "sgd-lr0.1-seed0").mkdir(parents=True)
    (tmp_path / "runs" / "sgd-lr0.1-seed0" / "checkpoint.pt").write_bytes(b"")
    assert tool.main(["--dry-run", "--runs", str(tmp_path / "runs"), "--record", str(tmp_path / "rec")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.endswith("--resume") for line in lines[:3]] == [False, True, False]
    assert f"--results {tmp_path / 'rec' / 'sgd-lr0.1-seed0.json'}" in lines[1]


def test_the_study_keeps_its_own_files_and_refuses_a_misnamed_one():
    """A poem run of another kind in lstm_lab/recorded/poems (the whole corpus at 2 x 256) is no study run."""
    name = run_name("adam", 1, 0)
    ours = {**finished(150.0), "config": study_configs()[name]}
    other = {**finished(40.0), "config": {**STUDY_CONFIG, "forms": "", "hidden_size": 256, "num_layers": 2,
                                          "optimizer": "adam", "lr": 0.003, "seed": 0, "init": "default"}}
    assert study_results({name: ours, "tang-all-2x256": other}) == {name: ours}
    with pytest.raises(ValueError, match=r"adam-lr0.00316-seed0.json is named as a run of the poem studies"):
        study_results({name: {**ours, "config": {**ours["config"], "forms": ""}}})


def test_every_recorded_study_file_has_the_options_of_its_name():
    recorded = load_recorded_folder(POEMS_RECORDED)
    study = load_study()
    assert study and set(study) <= set(recorded)
    assert all(name in study_configs() for name in study)
