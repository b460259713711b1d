"""The coursework notebook (appendix/assignment.ipynb): its blanks hold no solution, each is filled only on request,
and each check cell names the bug planted in its blank.

The notebook is executed (nbclient, as tools/run_chapters.py does) in student mode (LSTM_LAB_SOLUTIONS=0) with
the hidden `fill_blank` cells replaced by broken code from the checks' catalogue, one bug per blank, all four
at once (each check judges its blank alone), up to the last check; the book's build runs the whole notebook with
the package's solutions."""
import ast
import json
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from lstm_lab.check import assignment, solutions

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "appendix" / "assignment.ipynb"

PLANTED = {  # blank -> (the broken definition put in place of its fill_blank cell, the cause its check must name)
    "MyLSTMCell": ('''
import torch.nn.functional as F
from lstm_lab.check.solutions import LSTMCell

class MyLSTMCell(LSTMCell):
    def step(self, x, h, c):
        gates = F.linear(x, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        i, f, o, g = gates.chunk(4, dim=1)  # planted: the gate blocks read as i, f, o, g
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.tanh(c), c
''', "gate_order"),
    "MyLSTM": ('''
from lstm_lab.experiments.clinic import SteppedTwoLayerLSTM

class MyLSTM(SteppedTwoLayerLSTM):  # planted: report 003's layer 2 reads layer 1's input gate
    def __init__(self, input_size, hidden_size, num_layers=2):
        super().__init__(input_size, hidden_size, bug=True)
        self.input_size = input_size
''', "reads_other_layer_gate"),
    "train_windows": ('''
def train_windows(model, windows, lr=CONFIG.lr, clip_norm=CONFIG.clip_norm):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    state, losses = None, []
    for inputs, targets in windows:
        logits, state = model(inputs, state)  # planted: the state carried without detaching it
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
''', "state_not_detached"),
    "evaluate": ('''
import math

@torch.no_grad()
def evaluate(model, windows):
    model.eval()
    state, perplexities = None, []
    for inputs, targets in windows:
        logits, state = model(inputs, state)
        perplexities.append(math.exp(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()))
    return sum(perplexities) / len(perplexities)  # planted: the mean of the windows' perplexities
''', "perplexity_wrong_mean"),
}


def cells():
    return json.loads(NOTEBOOK.read_text())["cells"]


def source(cell):
    return "".join(cell["source"])


def blank_cells():
    """{blank name: (index of the cell that defines it, index of its fill_blank cell)}."""
    found = {}
    for k, cell in enumerate(cells()):
        if cell["cell_type"] != "code":
            continue
        for node in ast.parse(source(cell)).body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in solutions.SOLUTIONS:
                found[node.name] = k
    return {name: (k, k + 1) for name, k in found.items()}


def test_every_blank_raises_until_written_and_is_filled_only_by_a_hidden_cell():
    all_cells = cells()
    blanks = blank_cells()
    assert list(blanks) == list(solutions.SOLUTIONS)
    for name, (k, fill) in blanks.items():
        assert "raise NotImplementedError" in source(all_cells[k]), f"blank {name} holds code: keep it a blank"
        assert source(all_cells[fill]).startswith(f'{name} = fill_blank("{name}", {name})')
        assert all_cells[fill]["metadata"].get("tags") == ["remove-cell"]


def test_fill_blank_gives_the_solution_only_when_asked():
    yours = object()
    assert assignment.fill_blank("evaluate", yours, environ={}) is yours
    assert assignment.fill_blank("evaluate", yours, environ={"LSTM_LAB_SOLUTIONS": "0"}) is yours
    assert assignment.fill_blank("evaluate", yours, environ={"LSTM_LAB_SOLUTIONS": "1"}) is solutions.evaluate
    with pytest.raises(KeyError, match="the blanks are"):
        assignment.fill_blank("evaluat", yours)


def report_text(cell):
    return "".join(o.get("data", {}).get("text/plain", "") + o.get("text", "") for o in cell.get("outputs", []))


def test_each_check_cell_names_the_bug_planted_in_its_blank(monkeypatch):
    monkeypatch.setenv("LSTM_LAB_SOLUTIONS", "0")  # student mode: the hidden asserts of the solutions are skipped
    nb = nbformat.read(NOTEBOOK, as_version=4)
    for name, (_, fill) in blank_cells().items():
        nb.cells[fill].source = PLANTED[name][0]
    reports = {"cell_report": "MyLSTMCell", "stack_report": "MyLSTM", "training_report": "train_windows",
               "evaluate_report": "evaluate"}
    shown = {k: name for k, c in enumerate(nb.cells) for var, name in reports.items()
             if c.cell_type == "code" and c.source.rstrip().endswith(f"\n{var}")}
    assert sorted(shown.values()) == sorted(reports.values())
    nb.cells = nb.cells[:max(shown) + 1]  # up to the last check: the training runs are the build's to run
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()
    for k, name in shown.items():
        text = report_text(nb.cells[k])
        cause = PLANTED[name][1]
        assert "FAILED" in text and "likely cause: " in text, text
        first = text.split("likely cause: ", 1)[1].splitlines()[0]
        assert f"[{cause}]" in first, f"{name}: expected {cause}, got\n{text}"
