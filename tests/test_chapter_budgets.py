"""Every page of the book fits its time budget (lstm_lab.book.chapter.BUDGETS): the recorded top-to-bottom run on a
CPU (lstm_lab/recorded/chapters-cpu.json, written by tools/run_chapters.py) covers every notebook of _toc.yml, ran
them with one thread, and each ended within budget.  The build's own times are checked after `make book` by
tests/test_built_notebooks.py.  No timing happens here: the record is read."""
import re
import sys
from pathlib import Path

import pytest

from lstm_lab.book.chapter import BUDGETS, RECORDS, over_budget
from lstm_lab.experiments.records import load_recorded

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import run_chapters  # noqa: E402


def toc_notebooks():
    return [str(path.relative_to(ROOT)) for path in run_chapters.toc_notebooks(ROOT)]


def test_the_cpu_record_covers_every_page_with_one_thread_and_within_budget():
    record = load_recorded(RECORDS["CPU"])
    assert record is not None, "no CPU record: python tools/run_chapters.py --json lstm_lab/recorded/chapters-cpu.json"
    recorded = [row["notebook"] for row in record["notebooks"]]
    assert sorted(recorded) == sorted(toc_notebooks()), "re-record: python tools/run_chapters.py --json ..."
    assert not record["uncommitted_changes"]
    chapters = [row for row in record["notebooks"] if row["setup_line"]]  # the pages that start like a chapter
    assert chapters and all(re.search(r"\(1 CPU threads?\)", row["setup_line"]) for row in chapters), "one thread"
    assert over_budget("CPU") == [], f"pages over the {BUDGETS['CPU']} s CPU budget (or failed)"


def test_over_budget_names_a_slow_page_and_a_failed_one():
    rows = [{"notebook": "a.ipynb", "status": "ok", "seconds": BUDGETS["GPU"] - 1},
            {"notebook": "b.ipynb", "status": "ok", "seconds": BUDGETS["GPU"] + 1},
            {"notebook": "c.ipynb", "status": "error", "seconds": 2.0}]
    assert over_budget("GPU", {"notebooks": rows}) == [("b.ipynb", BUDGETS["GPU"] + 1), ("c.ipynb", None)]
    assert over_budget("CPU", {"notebooks": rows[:2]}) == []


@pytest.mark.parametrize("kind", list(RECORDS))
def test_the_budgets_are_a_few_minutes_on_a_cpu_and_about_a_minute_on_a_gpu(kind):
    assert {"CPU": 120 <= BUDGETS["CPU"] <= 300, "GPU": 30 <= BUDGETS["GPU"] <= 90}[kind]


def test_the_build_times_are_read_from_myst_nbs_record():
    from types import SimpleNamespace
    from lstm_lab.book.build_times import execution_times
    env = SimpleNamespace(nb_metadata={"chapters/03": {"exec_data": {"runtime": 12.5, "succeeded": True}},
                                       "intro": {}, "appendix/api": {"exec_data": {"runtime": None}}})
    assert execution_times(env) == {"chapters/03": 12.5}
    assert execution_times(SimpleNamespace()) == {}
