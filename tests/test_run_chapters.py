"""tools/run_chapters.py: a chapter fails on any error it shows that no `raises-exception` tag declares, a
display formatter's exception included (the cell's status stays "ok", so only the outputs tell)."""
import sys
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
import run_chapters  # noqa: E402

SHOWN_ERROR = '''try:
    raise AttributeError("no attribute '_repr_mimebundle_'")  # as ipywidgets 8 code meets ipywidgets 7
except AttributeError:
    get_ipython().showtraceback()  # how IPython shows a display formatter's exception: the cell goes on
print("after")'''


def notebook(tmp_path, *cells):
    """A notebook of code cells (source, tags) under the repository's folder, as run_chapters expects."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source, metadata={"tags": tags}) for source, tags in cells]
    path = Path(tmp_path) / "chapter.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.fixture
def in_repo(monkeypatch, tmp_path):
    monkeypatch.setattr(run_chapters, "REPO", Path(tmp_path))
    return tmp_path


def test_an_error_a_cell_only_shows_fails_the_chapter(in_repo):
    path = notebook(in_repo, ("print('torch x on cpu')", []), ("1 / 0", ["raises-exception"]), (SHOWN_ERROR, []))
    _, record = run_chapters.execute(path, timeout=60)
    assert record["status"] == "error output" and record["error_cell"] == 2, record
    assert record["error"] == "AttributeError: no attribute '_repr_mimebundle_'"


def test_a_declared_error_does_not(in_repo):
    path = notebook(in_repo, ("print('torch x on cpu')", []), ("1 / 0", ["raises-exception"]))
    _, record = run_chapters.execute(path, timeout=60)
    assert record["status"] == "ok" and record["error"] is None and record["setup_line"] == "torch x on cpu"
