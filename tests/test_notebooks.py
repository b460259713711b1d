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
    assert f'start_chapter("{path.stem}", seed=0, source=LSTM_LAB)' in source  # its text: tests/test_colab_setup.py


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


# The book's helpers whose result is something to display (a Markdown table or source, a widget): a cell shows
# only the value of its last line, so anywhere else such a call must be wrapped in display(...).  Figures need no
# such care: the notebook shows every figure pyplot drew, wherever it was drawn.
DISPLAYED = {"show_table", "show_source", "module_reference", "gate_explorer"}
TOC_NOTEBOOKS = [ROOT / f"{name}.ipynb" for name in re.findall(r"^\s*-?\s*(?:file|root):\s*(\S+)",
                                                                (ROOT / "_toc.yml").read_text(), re.M)
                 if (ROOT / f"{name}.ipynb").is_file()]


def dropped_displays(source, helpers=DISPLAYED):
    """The lines of `source` (one code cell) that call one of `helpers` whose result the cell never shows: neither
    the whole of the cell's last expression (and not silenced by a trailing ";") nor an argument of display()."""
    source = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M)  # magics and shell lines: not Python
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    last = tree.body[-1] if tree.body else None
    shown = last.value if isinstance(last, ast.Expr) and not source.rstrip().endswith(";") else None
    name = lambda call: getattr(call.func, "id", None) or getattr(call.func, "attr", None)
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and name(node) in helpers) or node is shown:
            continue
        parent = parents.get(node)
        if not (isinstance(parent, ast.Call) and name(parent) == "display" and node in parent.args):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_dropped_display_check_finds_every_way_to_drop_one():
    assert dropped_displays("show_table(rows)") == []
    assert dropped_displays("x = 1\ndisplay(show_table(rows))\nprint(x)") == []
    assert dropped_displays("%matplotlib inline\nlstm_lab.book.show.show_source(f)") == []
    assert dropped_displays("show_table(rows)\nprint(1)") == [1]  # not the last line
    assert dropped_displays("show_table(rows);") == [1]  # silenced
    assert dropped_displays("if ok:\n    show_table(rows)") == [2]  # the last line is an if, not an expression
    assert dropped_displays("for r in runs:\n    show.show_source(r)") == [2]
    assert dropped_displays("table = show_table(rows)") == [1]
    assert dropped_displays("print(show_table(rows))") == [1]  # printed as an object, not shown
    assert dropped_displays("gate_explorer(f=0.9), 1") == [1]  # a tuple is shown, not the explorer


def test_the_check_knows_every_helper_that_returns_something_to_display():
    """Every function of lstm_lab/book that returns a Markdown, an HTML or a LiveOrPicture object is in DISPLAYED."""
    displayable = {"Markdown", "HTML", "LiveOrPicture"}
    found = set()
    for path in sorted((ROOT / "lstm_lab" / "book").glob("*.py")):
        for function in ast.parse(path.read_text()).body:
            if isinstance(function, ast.FunctionDef) and not function.name.startswith("_") and any(
                    isinstance(node, ast.Return) and isinstance(node.value, ast.Call)
                    and getattr(node.value.func, "id", None) in displayable for node in ast.walk(function)):
                found.add(function.name)
    assert found == DISPLAYED


def test_every_page_of_the_book_is_checked():
    assert (ROOT / "appendix" / "api.ipynb") in TOC_NOTEBOOKS and set(CHAPTERS) <= set(TOC_NOTEBOOKS)


@pytest.mark.parametrize("path", TOC_NOTEBOOKS, ids=lambda p: p.name)
def test_no_table_source_or_widget_is_silently_dropped(path):
    dropped = [f"{path.name}, cell {k} line {line}: {''.join(cell['source']).splitlines()[line - 1].strip()[:60]}"
               for k, cell in enumerate(json.loads(path.read_text())["cells"]) if cell["cell_type"] == "code"
               for line in dropped_displays("".join(cell["source"]))]
    assert dropped == []


# The book's training entry points: a chapter that calls one passes the device its setup cell chose, so that on a
# GPU runtime the chapter trains on the GPU.
TRAINING_CALLS = {"train", "train_poems", "train_run", "load_poems_model", "load_lm_run", "load_dates_model",
                  "measure_cost"}


def device_misses(source, imported):
    """The lines of `source` that call a training entry point imported from lstm_lab without passing `device`,
    and the lines of a cell that takes optimizer steps (`.step()`) without naming `device` or saying, in a
    comment, why it stays on the CPU ("# on the CPU: ...")."""
    source = re.sub(r"^(\s*)[%!].*$", r"\1pass", source, flags=re.M)
    misses = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) in TRAINING_CALLS & imported:
            arguments = list(node.args) + [keyword.value for keyword in node.keywords]
            if not any(isinstance(a, ast.Name) and a.id == "device" for a in arguments):
                misses.append(node.lineno)
    if re.search(r"\.step\(\)", source) and not re.search(r"\bdevice\b|# on the CPU:", source):
        misses.append(next(k for k, line in enumerate(source.splitlines(), 1) if ".step()" in line))
    return misses


def lstm_lab_imports(path):
    """The names a notebook imports from lstm_lab."""
    names = set()
    for cell in code_cells(path):
        source = re.sub(r"^(\s*)[%!].*$", r"\1pass", "".join(cell["source"]), flags=re.M)
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lstm_lab"):
                names |= {alias.asname or alias.name for alias in node.names}
    return names


def test_the_device_check_finds_a_training_call_without_the_device():
    assert device_misses("live = train_poems(config, out)", {"train_poems"}) == [1]
    assert device_misses("live = train_poems(config, out, device)", {"train_poems"}) == []
    assert device_misses("m, v = load_poems_model(out, device=device)", {"load_poems_model"}) == []
    assert device_misses("train(cell, groups)", set()) == []  # a chapter's own function of that name
    assert device_misses("model = PoemLM(9)\nfor b in data:\n    opt.step()", set()) == [3]
    assert device_misses("model = PoemLM(9).to(device)\nopt.step()", set()) == []


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.name)
def test_every_training_cell_runs_on_the_chapters_device(path):
    imported = lstm_lab_imports(path)
    misses = [f"{path.name}, cell {k} line {line}" for k, cell in enumerate(json.loads(path.read_text())["cells"])
              if cell["cell_type"] == "code" for line in device_misses("".join(cell["source"]), imported)]
    assert misses == []
