"""The lowest versions lstm_lab declares are the ones `make floor` installs and tests, and the README states them:
a lower bound changed in one place and not the others fails here.  (`make floor` itself runs the unit tests and
chapter 1 on them: Makefile, part of `make test`.)  Every page was also run once on Colab's stack and once at the
chapters' floors, and the records say so."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from lstm_lab.book.chapter import REPOSITORY, STACKS
from lstm_lab.experiments.records import load_recorded

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import run_chapters  # noqa: E402

PYPROJECT = (ROOT / "pyproject.toml").read_text()


def lower_bound(requirement):
    """The version of `requirement`'s ">=" clause: "torch>=2.4" -> Version("2.4")."""
    bounds = [spec.version for spec in Requirement(requirement).specifier if spec.operator == ">="]
    assert len(bounds) == 1, f"{requirement}: expected one lower bound (>=)"
    return Version(bounds[0])


def declared(block):
    """{name: lowest version} of a list of requirements in pyproject.toml ("dependencies", "widgets")."""
    body = re.search(rf"^{block} = \[(.*?)\]", PYPROJECT, re.M | re.S)[1]
    return {Requirement(text).name: lower_bound(text) for text in re.findall(r'"([^"]+)"', body)}


def pinned(name):
    """{name: version} of the exact pins in a requirements file."""
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", (ROOT / name).read_text(), re.M)
    return {package.lower().replace("_", "-"): Version(version) for package, version in pins}


def python_floor():
    return Version(re.search(r'^requires-python = ">=([0-9.]+)"', PYPROJECT, re.M)[1])


# What the chapters need beyond the package (requirements-floor-chapters.txt): matplotlib 3.7 for today's Jupyter
# inline backend, and ipywidgets for chapter 1's explorer (the widgets extra).
CHAPTERS = {"matplotlib": Version("3.7"), **declared("widgets")}


def test_make_floor_installs_exactly_the_declared_floors():
    floors = pinned("requirements-floor.txt")
    for name, version in declared("dependencies").items():
        assert floors.get(name) == version, f"requirements-floor.txt pins {name} {floors.get(name)}, not {version}"


def test_make_floor_runs_chapter_1_on_the_chapters_floors():
    floors = pinned("requirements-floor-chapters.txt")
    for name, version in CHAPTERS.items():
        assert floors.get(name) == version, f"requirements-floor-chapters.txt pins {name} {floors.get(name)}"
    assert "tools/run_chapters.py chapters/01_lstm_cell.ipynb" in (ROOT / "Makefile").read_text()


def test_make_floor_uses_the_lowest_python():
    assert f"FLOOR_PYTHON ?= python{python_floor()}\n" in (ROOT / "Makefile").read_text()


def test_the_readme_states_the_floors_it_tests():
    readme = (ROOT / "README.md").read_text()
    rows = {name: (package, chapters) for name, package, chapters
            in re.findall(r"^\| (\S+) \| ([^|]+?) \| ([^|]+?) \|$", readme, re.M)}
    package = {"Python": python_floor(), **declared("dependencies")}
    for name, version in package.items():
        assert rows.get(name, ("",))[0] == f"{version}", f"README's table gives {name} {rows.get(name)!r}"
    for name, version in {**package, **CHAPTERS}.items():
        assert rows[name][1].startswith(f"{CHAPTERS.get(name, version)}"), f"README: the chapters' {name}"


# ---------------------------------------------------------------------------------------------------------------
# Every page, run once on Colab's stack and once at the chapters' floors (tools/run_chapters.py, recorded in
# lstm_lab/recorded/ and shown on the appendix page "How long each page runs")

def stack_record(name):
    record = load_recorded(STACKS[name])
    assert record, f"lstm_lab/recorded/{STACKS[name]} is missing"
    return record


@pytest.mark.parametrize("name", STACKS)
def test_every_page_ran_to_the_end_from_a_clean_commit(name):
    record = stack_record(name)
    pages = [str(path.relative_to(ROOT)) for path in run_chapters.toc_notebooks(ROOT)]
    assert [row["notebook"] for row in record["notebooks"]] == pages, "run every page of _toc.yml"
    for row in record["notebooks"]:
        assert row["status"] == "ok" and not row["uncommitted_changes"], (row["notebook"], row["error"])


def test_the_colab_record_is_colabs_stack_and_each_page_installed_its_own_lstm_lab():
    record = stack_record("Colab's stack")
    assert record["as_colab"] and record["python_version"].startswith("3.13.")
    assert record["torch_version"].startswith("2.11.") and record["packages"]["ipywidgets"] == "7.7.1"
    assert record["packages"]["ipykernel"].startswith("6.")
    installed = record["lstm_lab_installed"]  # pip's record of the git install the pages made
    assert installed and installed.startswith(f"lstm_lab @ git+{REPOSITORY}@"), installed
    if (ROOT / ".git").exists():  # the commit the pages named when the record was made
        first = subprocess.run(["git", "show", f"{record['commit']}:chapters/01_lstm_cell.ipynb"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout
        assert installed.rpartition("@")[2] in first


def test_the_floor_record_ran_on_the_chapters_floors():
    record = stack_record("the floors")
    assert Version(record["python_version"]).release[:2] == python_floor().release
    installed = {name: Version(version) for name, version in record["packages"].items() if version}
    for name, version in {**declared("dependencies"), **CHAPTERS}.items():
        assert installed[name] == version, name
