"""The executed notebooks of the last book build: every cell that may raise raised what it says it raises.

A cell tagged raises-exception lets the build go on when it raises, so without this check such a cell could
stop raising, or raise something else, and the text around it would describe an error nobody sees.  Each of
them declares {"type", "match"} in its metadata "raises" (tests/test_notebooks.py checks that), and this test
reads the build's executed copies in _build/jupyter_execute.  Run after `make book` (make test does).
"""
import json
import pickle
import re
from pathlib import Path

import pytest
import torch

from lstm_lab.book.build_times import execution_times
from lstm_lab.book.chapter import BUDGETS

ROOT = Path(__file__).resolve().parents[1]
EXECUTED = ROOT / "_build" / "jupyter_execute"
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def errors_by_cell(path):
    """{cell id: [(exception type, message)]} of an executed notebook."""
    cells = json.loads(path.read_text())["cells"]
    return {c.get("id"): [(o["ename"], o["evalue"]) for o in c.get("outputs", []) if o["output_type"] == "error"]
            for c in cells if c["cell_type"] == "code"}


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_cells_raise_what_they_declare_and_no_other_cell_raises(path):
    executed = EXECUTED / "chapters" / path.name
    if not executed.is_file() or executed.stat().st_mtime < path.stat().st_mtime:
        pytest.skip(f"no executed copy of {path.name} newer than the notebook: run `make book` first")
    errors = errors_by_cell(executed)
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        raised = errors.get(cell.get("id"), [])
        declared = cell["metadata"].get("raises")
        if declared is None:
            assert raised == [], f"{path.name}, cell {cell.get('id')} raised {raised}"
            continue
        assert raised, f"{path.name}, cell {cell.get('id')} should raise {declared['type']} but raised nothing"
        (name, message), = raised
        assert name == declared["type"] and re.search(declared["match"], message), (
            f"{path.name}, cell {cell.get('id')} raised {name}: {message[:200]}; declared {declared}")


def test_every_page_the_build_executed_ran_within_the_cpu_budget():
    """The build's own wall time per page (myst-nb's record, printed at the end of the build log)."""
    pickled = ROOT / "_build" / ".doctrees" / "environment.pickle"
    if not pickled.is_file():
        pytest.skip("no book build here: run `make book` first")
    if torch.cuda.is_available():
        pytest.skip("built with a GPU: the budget checked here is the CPU's")
    times = execution_times(pickle.loads(pickled.read_bytes()))
    assert {f"chapters/{path.stem}" for path in CHAPTERS} <= set(times), "the build executed every chapter"
    over = {page: seconds for page, seconds in times.items() if seconds > BUDGETS["CPU"]}
    assert over == {}, f"pages over the {BUDGETS['CPU']} s budget in this build"
