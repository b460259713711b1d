"""The package's shape: imports flow one way through the layers declared here, no import cycles, nothing imports
the command line, imports at the top of modules."""
import ast
import json
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lstm_lab"
OPTIONAL = {"ipywidgets", "IPython"}  # notebook-only dependencies may be imported where they are used

# Bottom to top: a module may import modules of its own layer or of a layer below it, never above.  The folder
# says the layer (lstm_lab/data, lstm_lab/experiments, lstm_lab/check, lstm_lab/book); the core's top-level modules are split in
# three layers of their own.
FOUNDATION = {"runtime", "files", "config", "provenance"}
MODELS = {"init", "cells", "lstm", "numpy_lstm", "reference", "model", "poem_model", "seq2seq", "generate",
          "distributed"}
TRAINING = {"train", "checkpoint", "runs", "lm_train", "poems_train", "seq2seq_train"}
LAYERS = ["foundation", "data", "models", "training", "experiments", "check", "book", "cli"]


def layer(module):
    """The layer of a module named as `modules()` names it ("lm_train", "data.corpus", "experiments.ladder")."""
    if "." in module:
        return module.split(".")[0]
    if module in ("cli", "__main__"):
        return "cli"
    for name, members in (("foundation", FOUNDATION), ("models", MODELS), ("training", TRAINING)):
        if module in members:
            return name
    raise AssertionError(f"lstm_lab.{module} is in no layer: add it to one in tests/test_layout.py")


def modules():
    """{"name" or "folder.name": parsed module} for every module of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            continue
        found[".".join(parts)] = ast.parse(path.read_text(), str(path))
    return found


def package_imports(tree, names):
    """The package's modules (among `names`) that a module imports: from lstm_lab.x.y import ..., import
    lstm_lab.x, from lstm_lab.x import y (a submodule)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lstm_lab":
            module = node.module[len("lstm_lab."):]
            for alias in node.names:
                found.add(f"{module}.{alias.name}".lstrip(".") if f"{module}.{alias.name}".lstrip(".") in names
                          else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name[len("lstm_lab."):] for alias in node.names if alias.name.startswith("lstm_lab."))
    return {name for name in found if name in names}


def graph():
    trees = modules()
    return {name: package_imports(tree, trees) - {name} for name, tree in trees.items()}


def wrong_way(graph):
    """["a -> b (layer A imports layer B above it)"] for every import that goes up the layers."""
    rank = {name: index for index, name in enumerate(LAYERS)}
    return [f"{a} -> {b} ({layer(a)} imports {layer(b)}, a layer above it)"
            for a, targets in sorted(graph.items()) for b in sorted(targets) if rank[layer(b)] > rank[layer(a)]]


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


def test_a_wrong_way_import_is_found():
    assert wrong_way({"model": {"experiments.depth"}, "experiments.depth": {"model"}}) == [
        "model -> experiments.depth (models imports experiments, a layer above it)"]
    assert wrong_way({"data.corpus": {"files", "data.download"}, "lm_train": {"data.corpus", "train"}}) == []


def test_every_module_has_a_layer_and_imports_flow_down():
    assert wrong_way(graph()) == []


def test_the_package_has_no_import_cycle():
    assert find_cycle(graph()) is None, f"import cycle: {' -> '.join(find_cycle(graph()))}"


def test_only_the_entry_point_imports_the_command_line():
    importers = [name for name, targets in graph().items() if "cli" in targets]
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


# ---------------------------------------------------------------------------------------------------------------
# The public surface: what the API appendix lists, what chapters and students use


def public_names(tree):
    """The names in a module's __all__, or None if it has none."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets):
            return [element.value for element in node.value.elts]
    return None


def test_every_module_declares_its_public_surface():
    missing = [name for name, tree in modules().items() if name != "__main__" and public_names(tree) is None]
    assert missing == []
    for name, tree in modules().items():
        defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
                    if isinstance(t, ast.Name)}
        assert set(public_names(tree) or []) <= defined, f"lstm_lab.{name}.__all__ names what it does not define"


def test_every_public_function_and_class_names_its_chapter():
    unnamed = []
    for name, tree in modules().items():
        public = set(public_names(tree) or [])
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in public:
                doc = ast.get_docstring(node) or ""
                if not re.search(r"[Cc]hapters? \d", doc):
                    unnamed.append(f"lstm_lab.{name}.{node.name}")
    assert unnamed == []


def test_chapters_use_only_the_public_surface():
    trees = modules()
    outside = []
    for path in sorted((PACKAGE.parent / "chapters").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        source = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        source = re.sub(r"^\s*[%!].*$", "", source, flags=re.M)  # IPython magics and shell lines
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("lstm_lab."):
                module = node.module[len("lstm_lab."):]
                if module not in trees:
                    continue  # a folder: `from lstm_lab.experiments import bench` imports a module
                public = public_names(trees[module])
                outside += [f"{path.name}: lstm_lab.{module}.{a.name}" for a in node.names if a.name not in public]
    assert outside == []
