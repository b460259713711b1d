"""The lowest versions lstm_lab declares are the ones `make floor` installs and tests, and the README states them:
a lower bound changed in one place and not the others fails here.  (`make floor` itself runs the unit tests and
chapter 1 on them: Makefile, part of `make test`.)"""
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
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
