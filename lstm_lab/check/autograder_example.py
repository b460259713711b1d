"""An autograder a teacher can hand out with the coursework assignment: pytest runs lstm_lab's four checks on a
student's submission, one test per blank, and a failing test prints the check's report (the likely bug and the
section to read).

    SUBMISSION=alice.py python -m pytest -q autograder_example.py      # a copy of this file
    python -c "import lstm_lab.check.autograder_example as m; print(m.__file__)"   # where to copy it from

The submission is one Python file that defines the assignment's four blanks, with the imports they need:
`MyLSTMCell(input_size, hidden_size)`, `MyLSTM(input_size, hidden_size, num_layers)`,
`train_windows(model, windows, lr=..., clip_norm=...)` and `evaluate(model, windows)` (appendix, "The
coursework assignment"); it must not run anything when imported.  Copy this file and change it: the sizes
checked, more tests of your own.  The checks judge correctness against nn.LSTM and autograd, not style or
speed (appendix, "Teaching with this book").
"""
import importlib.util
import os

import pytest

from lstm_lab.check import check_cell, check_lstm, check_training, solutions
from lstm_lab.check.assignment import PRESETS, language_model

__all__ = ["SUBMISSION", "load_submission"]

SUBMISSION = "SUBMISSION"  # the environment variable that names the student's file


def load_submission(path):
    """The student's file imported as a module named "submission".  The coursework assignment (appendix), on
    chapters 1 to 6."""
    spec = importlib.util.spec_from_file_location("submission", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def submission():
    path = os.environ.get(SUBMISSION)
    if not path or not os.path.isfile(path):
        pytest.fail(f"set ${SUBMISSION} to the student's .py file (got {path!r})")
    return load_submission(path)


def checked_model(vocab_size):
    """The language model the training checks train: the assignment's CPU sizes, nn.LSTM inside."""
    return language_model(vocab_size, PRESETS["cpu"])


def test_cell(submission):
    check_cell(submission.MyLSTMCell(10, 20)).raise_if_failed()


def test_multi_layer_lstm(submission):
    check_lstm(submission.MyLSTM(10, 20, num_layers=2)).raise_if_failed()


def test_training_loop(submission):
    check_training(submission.train_windows, checked_model).raise_if_failed()


def test_perplexity(submission):
    # the book's loop trains, so only the student's evaluate is judged
    check_training(solutions.train_windows, checked_model, evaluate=submission.evaluate).raise_if_failed()
