"""lstm_lab.check.check_cell and check_lstm on a catalogue of broken cells and stacked LSTMs, each written the way
student reports write them, and on the package's own cells and LSTMs and nn.LSTM: every bug named by its cause, no
false alarm on correct code in float32 or float64."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstm_lab.cells import ConcatLSTMCell, GateLSTMCell, LSTMCell, cell_update, unroll
from lstm_lab.check import CheckFailed, check_cell, check_lstm
from lstm_lab.config import InputError
from lstm_lab.experiments.clinic import SteppedTwoLayerLSTM
from lstm_lab.lstm import LSTM
from lstm_lab.model import TiedLayersLSTM


# ---------------------------------------------------------------------------------------------------------------
# Broken cells: each overrides one step of a correct cell, so the slip is the only thing written out


class FusedCell(LSTMCell):
    """PyTorch's layout, the step written out as students write it."""

    def gates(self, x, h):
        return x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T + self.bias_hh

    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.tanh(c), c


class GateOrderIFOG(FusedCell):
    def step(self, x, h, c):
        i, f, o, g = self.gates(x, h).chunk(4, dim=1)  # the slip: o and g swapped
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.tanh(c), c


class TextbookOrderConcat(ConcatLSTMCell):
    def step(self, x, h, c):
        f, i, g, o = F.linear(torch.cat([h, x], 1), self.W, self.b).chunk(4, 1)  # the textbook lists f first
        return cell_update(torch.cat([i, f, g, o], 1), c)


class NoBias(FusedCell):
    def gates(self, x, h):
        return x @ self.weight_ih.T + h @ self.weight_hh.T


class OnlyBiasIH(FusedCell):
    def gates(self, x, h):
        return x @ self.weight_ih.T + self.bias_ih + h @ self.weight_hh.T


class ConcatBiasTwice(ConcatLSTMCell):
    def step(self, x, h, c):
        W_h, W_x = self.W[:, :self.hidden_size], self.W[:, self.hidden_size:]
        return cell_update(F.linear(h, W_h, self.b) + F.linear(x, W_x, self.b), c)  # b in both products


class PerGateTransposedHH(GateLSTMCell):
    def gate(self, name, x, h):
        W_h, W_i = getattr(self, f"W_h{name}"), getattr(self, f"W_i{name}")
        return x @ W_i.T + getattr(self, f"b_i{name}") + h @ W_h + getattr(self, f"b_h{name}")  # W_h, not W_h.T


class SigmoidCandidate(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = torch.sigmoid(self.gates(x, h)).chunk(4, dim=1)  # sigmoid for g too
        c = f * c + i * g
        return o * torch.tanh(c), c


class SigmoidOfC(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.sigmoid(c), c


class NoTanhOfC(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * c, c


class HForC(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * h + i * g
        return o * torch.tanh(c), c


class OldCInH(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c_new = f * c + i * g
        return o * torch.tanh(c), c_new


class ReturnsCH(FusedCell):
    def step(self, x, h, c):
        h, c = super().step(x, h, c)
        return c, h


class DetachedC(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c.detach() + i * g  # "to save memory"
        return o * torch.tanh(c), c


class Tanh(torch.autograd.Function):
    """tanh with a hand-written backward that forgets the square: 1 - y instead of 1 - y^2."""

    @staticmethod
    def forward(ctx, a):
        y = torch.tanh(a)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        y, = ctx.saved_tensors
        return grad * (1 - y)


class WrongCustomBackward(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), Tanh.apply(g), torch.sigmoid(o)
        c = f * c + i * g
        return o * torch.tanh(c), c


class InplaceCandidate(FusedCell):
    def step(self, x, h, c):
        i, f, g, o = self.gates(x, h).chunk(4, dim=1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        g.mul_(i)  # i * g written into g, which tanh saved for its backward
        c = f * c + g
        return o * torch.tanh(c), c


class UnregisteredCell(nn.Module):
    """Report 000's weights: (torch.randn(...) * 0.01).to(device), never wrapped in nn.Parameter."""

    def __init__(self, input_size, hidden_size):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.W = torch.randn(4 * hidden_size, hidden_size + input_size) * 0.01
        self.b = torch.zeros(4 * hidden_size)

    def forward(self, x, state):
        h, c = state
        return cell_update(torch.cat([h, x], 1) @ self.W.T + self.b, c)


BROKEN_CELLS = [  # (bug, the broken cell, the cause the check must name first)
    ("gate order i, f, o, g", lambda: GateOrderIFOG(3, 5), "gate_order"),
    ("textbook gate order f, i, g, o", lambda: TextbookOrderConcat(3, 5), "gate_order"),
    ("no bias added", lambda: NoBias(3, 5), "missing_bias"),
    ("bias_hh forgotten", lambda: OnlyBiasIH(3, 5), "one_bias_missing"),
    ("the one bias added to both products", lambda: ConcatBiasTwice(3, 5), "doubled_bias"),
    ("h @ W_h with (H, H) per-gate matrices", lambda: PerGateTransposedHH(3, 5), "transposed_weights"),
    ("sigmoid for the candidate", lambda: SigmoidCandidate(3, 5), "activation_swapped"),
    ("h = o * sigmoid(c)", lambda: SigmoidOfC(3, 5), "activation_swapped"),
    ("h = o * c", lambda: NoTanhOfC(3, 5), "missing_tanh"),
    ("c' = f * h + i * g", lambda: HForC(5, 5), "h_for_c"),
    ("h from the old c", lambda: OldCInH(3, 5), "stale_c"),
    ("returns (c, h)", lambda: ReturnsCH(3, 5), "state_swapped"),
    ("c detached inside the cell", lambda: DetachedC(3, 5), "gradient_blocked"),
    ("custom tanh backward 1 - y", lambda: WrongCustomBackward(3, 5), "wrong_custom_backward"),
    ("candidate multiplied in place", lambda: InplaceCandidate(3, 5), "inplace_write"),
    ("weights never made parameters (report 000)", lambda: UnregisteredCell(3, 5), "unregistered_parameters"),
]


@pytest.mark.parametrize("bug, make, expected", BROKEN_CELLS, ids=[b[0] for b in BROKEN_CELLS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_broken_cell_is_caught_and_its_cause_named(bug, make, expected, dtype):
    report = check_cell(make().to(dtype))  # (.to leaves unregistered tensors as they are: float32)
    assert not report, report
    assert report.cause_ids[0] == expected, report
    with pytest.raises(CheckFailed, match=expected):
        report.raise_if_failed()


CORRECT_CELLS = [
    ("nn.LSTMCell", lambda: nn.LSTMCell(3, 5)),
    ("lstm_lab LSTMCell", lambda: LSTMCell(3, 5)),
    ("GateLSTMCell (per gate)", lambda: GateLSTMCell(3, 5)),
    ("ConcatLSTMCell (textbook)", lambda: ConcatLSTMCell(3, 5)),
    ("the hand-written fused cell", lambda: FusedCell(3, 5)),
    ("input_size == hidden_size, per gate", lambda: GateLSTMCell(4, 4)),
    ("input_size == hidden_size, concat", lambda: ConcatLSTMCell(4, 4)),
    ("no biases at all", lambda: nn.LSTMCell(3, 5, bias=False)),
]


@pytest.mark.parametrize("name, make", CORRECT_CELLS, ids=[c[0] for c in CORRECT_CELLS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_correct_cell_passes_with_no_cause(name, make, dtype):
    report = check_cell(make().to(dtype))
    assert report, report
    assert report.causes == []
    assert report.raise_if_failed() is report


def test_a_cell_given_as_a_function_is_checked_through_load_weights():
    weights = {}

    def cell(x, state):
        h, c = state
        return cell_update(F.linear(x, weights["W"][0]) + F.linear(h, weights["W"][1]) + weights["b"], c)

    def load(fn, W_ih, W_hh, b_ih, b_hh):
        weights.update(W=(W_ih, W_hh), b=b_ih + b_hh)

    assert check_cell(cell, 3, 5, load_weights=load)
    weights_swapped = lambda fn, W_ih, W_hh, b_ih, b_hh: weights.update(W=(W_ih, W_hh), b=b_ih)
    report = check_cell(cell, 3, 5, load_weights=weights_swapped)
    assert report.cause_ids == ["one_bias_missing"]


def test_the_check_leaves_the_students_weights_alone():
    cell = LSTMCell(3, 5)
    before = {n: p.clone() for n, p in cell.named_parameters()}
    check_cell(cell)
    assert all(torch.equal(before[n], p) for n, p in cell.named_parameters())


def test_the_printed_report_is_short_and_names_the_section():
    text = str(check_cell(GateOrderIFOG(3, 5)))
    assert len(text.splitlines()) <= 10
    assert "i, f, o, g" in text and "chapter 1" in text


@pytest.mark.parametrize("call, message", [
    (lambda: check_cell("cell"), "cell must be an nn.Module"),
    (lambda: check_cell(lambda x, s: s, 3, 5), "plain function has no weights"),
    (lambda: check_cell(nn.Linear(3, 5), 3, 5), "cannot tell how your cell holds"),
    (lambda: check_cell(nn.LSTMCell(3, 5), hidden_size=0), "hidden_size must be a positive int"),
    (lambda: check_cell(nn.LSTMCell(3, 5), device="gpu7"), "device must be"),
    (lambda: check_cell(nn.LSTMCell(3, 5).half()), "float32 or float64"),
    (lambda: check_lstm(lambda x: x), "model must be an nn.Module"),
])
def test_bad_input_is_refused_in_one_line_before_any_work(call, message):
    with pytest.raises(InputError, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)


# ---------------------------------------------------------------------------------------------------------------
# Broken multi-layer LSTMs: one cell per layer, stepped layer after layer (`CellStack`), each overriding one piece


class CellStack(nn.Module):
    """nn.LSTM's call with a cell per layer: forward(x (T, B, I), (h_0, c_0) (L, B, H)) -> output, (h_n, c_n)."""

    def __init__(self, input_size, hidden_size, num_layers, dropout=0.0, batch_first=False):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.batch_first = dropout, batch_first
        self.cells = self.make_cells()

    def make_cells(self):
        sizes = [self.input_size] + [self.hidden_size] * (self.num_layers - 1)
        return nn.ModuleList(nn.LSTMCell(n, self.hidden_size) for n in sizes)

    def layer_input(self, k, x, below):
        return below if k == 0 else F.dropout(below, self.dropout, self.training)

    def forward(self, x, hx):
        x = x.transpose(0, 1) if self.batch_first else x
        h_n, c_n, below = [], [], x
        for k, cell in enumerate(self.cells):
            hs, cs = unroll(cell, self.layer_input(k, x, below), (hx[0][k], hx[1][k]))
            below = hs
            h_n.append(hs[-1])
            c_n.append(cs[-1])
        return self.finish(below, torch.stack(h_n), torch.stack(c_n))

    def finish(self, output, h_n, c_n):
        return (output.transpose(0, 1) if self.batch_first else output), (h_n, c_n)


class PlainListStack(CellStack):
    def make_cells(self):
        return list(super().make_cells())  # a Python list: the cells' weights are not registered


class OneCellForAllLayers(CellStack):
    def make_cells(self):
        return nn.ModuleList([nn.LSTMCell(self.hidden_size, self.hidden_size)] * self.num_layers)


class EveryLayerReadsX(CellStack):
    def layer_input(self, k, x, below):
        return x


class HnBatchFirst(CellStack):
    def finish(self, output, h_n, c_n):
        return output.transpose(0, 1), (h_n.transpose(0, 1), c_n.transpose(0, 1))  # "everything batch-first"


class TopLayerFirstInHn(CellStack):
    def finish(self, output, h_n, c_n):
        return output, (h_n.flip(0), c_n.flip(0))


class DropoutOnOutput(CellStack):
    def finish(self, output, h_n, c_n):
        return F.dropout(output, self.dropout, self.training), (h_n, c_n)


class DropoutNeverApplied(CellStack):
    def layer_input(self, k, x, below):
        return F.dropout(below, self.dropout, training=False)


class RecurrentDropout(CellStack):
    def forward(self, x, hx):
        h_n, c_n, below = [], [], x
        for k, cell in enumerate(self.cells):
            h, c, hs = hx[0][k], hx[1][k], []
            for x_t in below:
                h, c = cell(x_t, (F.dropout(h, self.dropout, self.training), c))  # dropout on h -> h
                hs.append(h)
            below = torch.stack(hs)
            h_n.append(h)
            c_n.append(c)
        return below, (torch.stack(h_n), torch.stack(c_n))


class UpperLayerReadsBelowC(CellStack):
    def forward(self, x, hx):
        (h, c), outputs = ([list(s) for s in hx]), []
        for x_t in x:
            below = x_t
            for k, cell in enumerate(self.cells):
                h[k], c[k] = cell(below, (h[k], c[k - 1] if k > 0 else c[k]))  # c[k - 1]: the layer below's
                below = h[k]
            outputs.append(below)
        return torch.stack(outputs), (torch.stack(h), torch.stack(c))


class GateOrderStack(CellStack):
    def make_cells(self):
        sizes = [self.input_size] + [self.hidden_size] * (self.num_layers - 1)
        return nn.ModuleList(GateOrderIFOG(n, self.hidden_size) for n in sizes)


class RawTensorLSTM(nn.Module):
    """Report 000's stacked LSTM: each layer's fused weights as (torch.randn(...) * 0.01).to(device), numbered."""

    def __init__(self, input_size, hidden_size, num_layers, device=None):
        super().__init__()
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        for k in range(num_layers):
            n = input_size if k == 0 else hidden_size
            setattr(self, f"W_x_{k}", (torch.randn(n, 4 * hidden_size) * 0.01).to(device))
            setattr(self, f"W_h_{k}", (torch.randn(hidden_size, 4 * hidden_size) * 0.01).to(device))
            setattr(self, f"b_{k}", torch.zeros(4 * hidden_size, device=device))

    def forward(self, x, hx):
        h_n, c_n = [], []
        for k in range(self.num_layers):
            h, c, outputs = hx[0][k], hx[1][k], []
            for x_t in x:
                gates = x_t @ getattr(self, f"W_x_{k}") + h @ getattr(self, f"W_h_{k}") + getattr(self, f"b_{k}")
                h, c = cell_update(gates, c)
                outputs.append(h)
            x = torch.stack(outputs)
            h_n.append(h)
            c_n.append(c)
        return x, (torch.stack(h_n), torch.stack(c_n))


BROKEN_STACKS = [  # (bug, the broken LSTM, the cause the check must name first)
    ("layer 2 uses layer 1's input gate (report 003)", lambda: SteppedTwoLayerLSTM(3, 5, bug=True),
     "reads_other_layer_gate"),
    ("upper layer updates the layer below's c", lambda: UpperLayerReadsBelowC(3, 5, 2), "reads_other_layer_state"),
    ("cells in a Python list (report 000)", lambda: PlainListStack(3, 5, 2), "unregistered_parameters"),
    ("raw randn tensors per layer (report 000)", lambda: RawTensorLSTM(3, 5, 2), "unregistered_parameters"),
    ("one cell object for every layer", lambda: OneCellForAllLayers(5, 5, 3), "shared_weights"),
    ("layers 2.. share weights (lstm_lab's TiedLayersLSTM)", lambda: TiedLayersLSTM(3, 5, 3), "shared_weights"),
    ("every layer reads x", lambda: EveryLayerReadsX(5, 5, 2), "layer_reads_input"),
    ("h_n made batch-first", lambda: HnBatchFirst(3, 5, 2, batch_first=True), "h_n_batch_first"),
    ("h_n lists the top layer first", lambda: TopLayerFirstInHn(3, 5, 2), "h_n_layer_order"),
    ("dropout inside the recurrence", lambda: RecurrentDropout(3, 5, 2, dropout=0.5), "dropout_in_recurrence"),
    ("dropout after the only layer", lambda: DropoutOnOutput(3, 5, 1, dropout=0.5), "dropout_on_output"),
    ("dropout asked for, never applied", lambda: DropoutNeverApplied(3, 5, 2, dropout=0.5), "dropout_missing"),
    ("gate order i, f, o, g in every layer", lambda: GateOrderStack(3, 5, 2), "gate_order"),
]


@pytest.mark.parametrize("bug, make, expected", BROKEN_STACKS, ids=[b[0] for b in BROKEN_STACKS])
def test_a_broken_lstm_is_caught_and_its_cause_named(bug, make, expected):
    report = check_lstm(make(), input_size=3 if isinstance(make(), SteppedTwoLayerLSTM) else None)
    assert not report, report
    assert report.cause_ids[0] == expected, report
    assert "wrong_custom_backward" not in report.cause_ids, report  # no second, spurious cause


CORRECT_STACKS = [
    ("nn.LSTM, 2 layers", lambda: nn.LSTM(3, 5, 2)),
    ("nn.LSTM, batch_first, dropout", lambda: nn.LSTM(3, 5, 3, batch_first=True, dropout=0.5)),
    ("lstm_lab LSTM, 1 layer", lambda: LSTM(3, 5)),
    ("lstm_lab LSTM, 3 layers, dropout", lambda: LSTM(3, 5, 3, dropout=0.3)),
    ("report 003's loop without its bug", lambda: SteppedTwoLayerLSTM(3, 5)),
    ("a ModuleList of cells", lambda: CellStack(3, 5, 3)),
    ("a ModuleList of cells, dropout between layers", lambda: CellStack(3, 5, 2, dropout=0.5)),
    ("a ModuleList of cells, batch_first", lambda: CellStack(4, 4, 2, batch_first=True)),
]


@pytest.mark.parametrize("name, make", CORRECT_STACKS, ids=[c[0] for c in CORRECT_STACKS])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_correct_lstm_passes_with_no_cause(name, make, dtype):
    model = make().to(dtype)
    report = check_lstm(model, input_size=getattr(model, "input_size", 3))
    assert report, report
    assert report.causes == []


def test_the_lstm_check_runs_on_the_gpu_too():
    if not torch.cuda.is_available():
        pytest.skip("no GPU")
    assert check_lstm(nn.LSTM(3, 5, 2).cuda(), device="cuda")
    assert check_lstm(SteppedTwoLayerLSTM(3, 5, bug=True).cuda(), input_size=3).cause_ids[0] == \
        "reads_other_layer_gate"
    assert check_cell(GateOrderIFOG(3, 5).cuda()).cause_ids == ["gate_order"]
