"""The autograder a teacher hands out (lstm_lab/check/autograder_example.py) passes the package's solutions and
fails a submission with a planted bug, naming its cause."""
import os
import subprocess
import sys
from pathlib import Path

import lstm_lab.check.autograder_example as autograder

ROOT = Path(__file__).resolve().parents[1]

SOLUTIONS = """
from lstm_lab.cells import LSTMCell as MyLSTMCell
from lstm_lab.lstm import LSTM as MyLSTM
from lstm_lab.check.solutions import evaluate, train_windows
"""

PERPLEXITY_OF_MEANS = SOLUTIONS + """
import math
import torch
import torch.nn.functional as F


@torch.no_grad()
def evaluate(model, windows):
    model.eval()
    state, nlls = None, []
    for inputs, targets in windows:
        logits, state = model(inputs, state)
        nlls.append(F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item())
    return math.exp(sum(nlls) / len(nlls))  # the mean of the windows' means: the short last window weighs too much
"""


def grade(tmp_path, text):
    path = tmp_path / "submission.py"
    path.write_text(text)
    env = {**os.environ, "SUBMISSION": str(path),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", autograder.__file__],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def test_the_solutions_pass(tmp_path):
    result = grade(tmp_path, SOLUTIONS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_a_planted_bug_fails_its_test_and_names_the_cause(tmp_path):
    result = grade(tmp_path, PERPLEXITY_OF_MEANS)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 3 passed" in result.stdout
    assert "FAILED" in result.stdout and "test_perplexity" in result.stdout
    assert "perplexity_wrong_mean" in result.stdout


def test_no_submission_is_one_clear_failure(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "SUBMISSION"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", autograder.__file__,
                             "-k", "cell"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1 and "set $SUBMISSION" in result.stdout
