"""Showing the package's own code and tables in a chapter, so the book and the code cannot drift."""
import inspect

from IPython.display import Markdown


def show_source(obj):
    """Display the source of a function, class or method from `lstm_lab` as highlighted Python.

    Chapters call this instead of retyping code.  Introduced in chapter 1."""
    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def show_table(rows, columns=None, floatfmt=".3g"):
    """Display a list of dicts (or of sequences with `columns`) as a Markdown table."""
    if columns is None:
        columns = list(rows[0])
        rows = [[row[c] for c in columns] for row in rows]
    cell = lambda v: format(v, floatfmt) if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))
