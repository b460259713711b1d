"""The coursework checks' report: every cause points to a section that exists in the chapter it names, a report
prints in about ten lines, and `assert report` / raise_if_failed behave."""
import json
from pathlib import Path

import pytest

from lstm_lab.check import CAUSES, CheckFailed, Report
from lstm_lab.check.report import CHAPTER_FILES, cause

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"


def headings(chapter):
    cells = json.loads((CHAPTERS / f"{CHAPTER_FILES[chapter]}.ipynb").read_text())["cells"]
    lines = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown").splitlines()
    return {line.lstrip("#").strip() for line in lines if line.startswith("#")}


@pytest.mark.parametrize("cause_id", sorted(CAUSES))
def test_every_cause_names_a_section_its_chapter_has(cause_id):
    _, chapter, section = CAUSES[cause_id]
    assert section in headings(chapter), f"chapter {chapter} has no section {section!r}"


def test_a_report_passes_only_when_every_property_holds():
    report = Report("demo")
    report.add("a", True)
    assert report and report.raise_if_failed() is report
    report.add("b", False, "1.0 vs 2.0")
    report.diagnose(cause("gate_order", "it reads the rows as i, f, o, g"), None)
    report.diagnose(cause("gate_order", "seen twice"))
    assert not report and report.cause_ids == ["gate_order"]
    with pytest.raises(CheckFailed, match="i, f, o, g"):
        report.raise_if_failed()
    assert len(str(report).splitlines()) <= 10


def test_an_unknown_cause_is_refused():
    with pytest.raises(KeyError):
        cause("gate_ordr", "typo")
