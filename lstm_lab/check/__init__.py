"""Coursework checks: point them at your own LSTM code; each finds the bug and names the chapter that explains it.

    check_cell(cell)                            your cell against nn.LSTMCell with the same weights     (1, 4)
    check_lstm(model)                           your multi-layer LSTM against nn.LSTM                    (4, 5)
    check_backward(gradients, forward)          your hand-written backward against autograd and finite
                                                differences, per gate and per time step                  (2)
    check_training(train_windows, make_model)   your training loop, a few windows of a real corpus       (6)

Each returns a `Report`: print it (about ten lines), `assert report` in your own tests, or
`report.raise_if_failed()`.  For a failure the report names the most likely cause, found by testing hypotheses
(the student's outputs compared with the reference's under each known bug), and the chapter and section to read.
Every check runs in seconds on a CPU and takes a `device`.

    report      Report, Cause, CAUSES: the causes and the sections that explain them
    layout      where a cell keeps its weights (fused, concat, per gate, per layer), to copy nn.LSTM's in
    variants    the known bugs as knobs on a reference LSTM: the hypotheses
    compare     relative errors and dtype tolerances
    cell, stack, backward, training: the four checks

The checks sit above the experiments (they reuse chapter 4's clinic) and below the book's helpers.
"""
from lstm_lab.check.backward import check_backward
from lstm_lab.check.cell import check_cell
from lstm_lab.check.report import CAUSES, Cause, CheckFailed, Report
from lstm_lab.check.stack import check_lstm
from lstm_lab.check.training import check_training

__all__ = ["check_cell", "check_lstm", "check_backward", "check_training", "Report", "Cause", "CAUSES",
           "CheckFailed"]
