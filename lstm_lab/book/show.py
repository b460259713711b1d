"""Showing the package's own code and tables in a chapter, so the book and the code cannot drift."""
import inspect
import textwrap
from pathlib import Path

from IPython.display import Markdown

__all__ = ["show_source", "show_table", "public_members", "declaration", "module_reference"]


def show_source(obj):
    """Display the source of a function, class or method from `lstm_lab` as highlighted Python, or a whole
    source file given as a `pathlib.Path` (such as `ladder.CPP_SOURCE`), highlighted by its suffix.

    Chapters call this instead of retyping code.  Introduced in chapter 1."""
    if isinstance(obj, Path):
        language = {".py": "python", ".cpp": "cpp"}.get(obj.suffix, "text")
        return Markdown(f"```{language}\n{obj.read_text().rstrip()}\n```")
    return Markdown(f"```python\n{textwrap.dedent(inspect.getsource(obj)).rstrip()}\n```")


def table_text(value):
    """`value` as the text of a Markdown table cell that shows as written: "|" would end the cell and "<" could
    start an HTML tag (`<unk>` would vanish), so both are escaped; text between backticks stays code."""
    parts = str(value).split("`")
    for k in range(0, len(parts), 2):  # outside code spans
        parts[k] = parts[k].replace("<", "\\<")
    return "`".join(parts).replace("|", "\\|")


def show_table(rows, columns=None, floatfmt=".3g"):
    """Display a list of dicts (or of sequences with `columns`) as a Markdown table (`table_text` escapes).
    Chapters 1, 2, 3, 4, 5, 6, 7, 8 and 9."""
    if columns is None:
        columns = list(rows[0])
        rows = [[row[c] for c in columns] for row in rows]
    cell = lambda v: "–" if v is None else format(v, floatfmt) if isinstance(v, float) else table_text(v)
    columns = [table_text(c) for c in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


def public_members(module):
    """The functions and classes of a module's public surface: those in its `__all__` (every module of the
    package has one), else those it defines itself, minus private names.  Chapter 1."""
    members = []
    public = getattr(module, "__all__", None)
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if public is not None and name not in public:
            continue
        if inspect.isfunction(obj) or inspect.isclass(obj):
            members.append((name, obj))
    return members


def declaration(name, obj):
    """`def name(signature)`, or `class Name(signature)`, or `class Name(Base)` for exceptions.  Chapter 1."""
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        return f"class {name}({obj.__bases__[0].__name__})"
    return f"{'class' if inspect.isclass(obj) else 'def'} {name}{inspect.signature(obj)}"


def module_reference(module):
    """Markdown for one module of the API reference: its docstring, then each public function and class with
    its signature and docstring.  The appendix gives every module a heading of its own and calls this under
    it, so the reference is rebuilt from the code at every build.  Chapter 1."""
    parts = [f"```text\n{inspect.getdoc(module) or ''}\n```"]
    for name, obj in public_members(module):
        parts.append(f"### `{name}`\n\n```python\n{declaration(name, obj)}\n```\n\n"
                     f"```text\n{inspect.getdoc(obj) or '(no docstring)'}\n```")
    return Markdown("\n\n".join(parts))
