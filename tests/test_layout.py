"""The package's shape: no import cycles, nothing imports the command line, imports at the top of modules."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_lab"
OPTIONAL = {"ipywidgets", "IPython"}  # notebook-only dependencies may be imported where they are used


def modules():
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def package_imports(tree):
    """The lstm_lab modules a module imports (from lstm_lab.x import ..., import lstm_lab.x, from lstm_lab import x)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module.startswith("lstm_lab."):
                found.add(node.module.split(".")[1])
            elif node.module == "lstm_lab":
                found.update(alias.name for alias in node.names if (PACKAGE / f"{alias.name}.py").is_file())
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("lstm_lab."))
    return found


def find_cycle(graph):
    """A list of modules forming an import cycle, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt, path + [nxt])):
                return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [start])):
            return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = {name: package_imports(tree) - {name} for name, tree in modules().items() if name != "__init__"}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_only_the_entry_point_imports_the_command_line():
    importers = [name for name, tree in modules().items() if "cli" in package_imports(tree) and name != "cli"]
    assert importers == ["__main__"]


def test_imports_sit_at_the_top_of_modules():
    inside = []
    for name, tree in modules().items():
        for function in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(function):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    root = (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name) or ""
                    if root.split(".")[0] not in OPTIONAL:
                        inside.append(f"{name}.{function.name}: {ast.unparse(node)}")
    assert inside == []
