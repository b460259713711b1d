"""Recorded results ship with the package and load wherever it is installed."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lstm_lab.runs import load_recorded, recorded_names

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
