"""The chapters as committed: output-free, listed in the table of contents, built from one template."""
import ast
import json
import pkgutil
import re
from pathlib import Path

import pytest

import lstm_lab

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("*.ipynb"))


def code_cells(path):
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def test_there_are_chapters():
    assert len(CHAPTERS) >= 2


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_committed_without_outputs(path):
    for cell in code_cells(path):
        assert cell.get("outputs") == [], f"{path.name}: a code cell has outputs: clear them before committing"
        assert cell.get("execution_count") is None, f"{path.name}: a code cell has an execution count"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_is_in_the_table_of_contents(path):
    toc = (ROOT / "_toc.yml").read_text()
    assert f"file: chapters/{path.stem}\n" in toc


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_the_hidden_setup_cell(path):
    first = code_cells(path)[0]
    source = "".join(first["source"])
    assert "hide-cell" in first["metadata"].get("tags", [])
    assert '"google.colab" in sys.modules' in source and f'start_chapter("{path.stem}", seed=0)' in source


def raising_cells(path):
    """(cell id, its declared {"type", "match"} or None) of every cell tagged raises-exception."""
    cells = json.loads(path.read_text())["cells"]
    return [(c.get("id"), c["metadata"].get("raises")) for c in cells
            if "raises-exception" in c["metadata"].get("tags", [])]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_cell_that_may_raise_says_what_it_raises(path):
    for cell_id, raises in raising_cells(path):
        assert cell_id and raises and set(raises) == {"type", "match"}, (
            f"{path.name}, cell {cell_id}: a raises-exception cell needs metadata "
            '"raises": {"type": "RuntimeError", "match": "a regular expression found in the message"}')
        re.compile(raises["match"])


def test_the_api_page_has_a_section_for_every_module():
    cells = json.loads((ROOT / "appendix" / "api.ipynb").read_text())["cells"]
    sources = [("".join(c["source"]), c["cell_type"]) for c in cells]
    headings = [source for source, kind in sources if kind == "markdown" and source.startswith("## ")]
    folders = ["", "data", "experiments", "check", "book"]  # the core first, then the folders by layer
    modules = sorted((m.name[len("lstm_lab."):] for m in pkgutil.walk_packages(lstm_lab.__path__, "lstm_lab.")
                      if not m.ispkg and not m.name.rsplit(".", 1)[-1].startswith("_")),
                     key=lambda name: (folders.index(name.rpartition(".")[0]), name))
    assert headings == [f"## `lstm_lab.{name}`" for name in modules]
    calls = [source for source, kind in sources if kind == "code" and "module_reference(" in source]
    assert calls == [f'module_reference(importlib.import_module("lstm_lab.{name}"))' for name in modules]


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_no_table_or_source_is_silently_dropped(path):
    """A cell shows only its last expression: a show_table or show_source call above it must be display()ed."""
    dropped = []
    for cell in json.loads(path.read_text())["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or re.search(r"^\s*[%!]", source, re.M):
            continue
        for node in ast.parse(source).body[:-1]:
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) \
                    and getattr(node.value.func, "id", "") in ("show_table", "show_source"):
                dropped.append(f"{cell.get('id')}: {ast.unparse(node)[:60]}")
    assert dropped == []
