"""The reference solutions of the coursework assignment's four blanks, in the interface each blank asks for.

    LSTMCell(input_size, hidden_size)                       blank 1: the package's drop-in cell (chapter 1)
    LSTM(input_size, hidden_size, num_layers)               blank 2: the package's multi-layer LSTM (chapters 1, 5)
    train_windows(model, windows, lr, clip_norm) -> losses  blank 3: truncated BPTT with Adam (chapter 6)
    evaluate(model, windows) -> perplexity                  blank 4: exp of the mean NLL per token (chapter 6)

The book's build runs the assignment notebook with its blanks filled by these (`lstm_lab.check.assignment.
fill_blank`, only when $LSTM_LAB_SOLUTIONS is "1"), so the page cannot rot; a teacher's autograder
(`lstm_lab.check.autograder_example`) passes on them.  Appendix, "The coursework assignment".
"""
import torch
import torch.nn.functional as F

from lstm_lab import cells, lstm
from lstm_lab.model import detach_state
from lstm_lab.train import backward_and_step, perplexity

__all__ = ["LSTMCell", "LSTM", "train_windows", "evaluate", "SOLUTIONS"]

LSTMCell = cells.LSTMCell  # blank 1: the package's drop-in cell is the solution
LSTM = lstm.LSTM  # blank 2: and its multi-layer LSTM


def train_windows(model, windows, lr=3e-3, clip_norm=1.0):
    """Train a language model in place on consecutive windows; returns each window's mean NLL per token (nats).

    model(tokens (T, B), state) -> logits (T, B, V), state; windows: [(inputs, targets)], each (T, B), in text
    order.  Adam at `lr`, the global gradient norm clipped to `clip_norm`.  Chapter 6."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)  # every registered parameter
    model.train()
    state, losses = None, []
    for inputs, targets in windows:
        if state is not None:
            state = detach_state(state)  # keep the values, cut the last window's graph (truncated BPTT)
        logits, state = model(inputs, state)  # (T, B, V)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean NLL per token, in nats
        optimizer.zero_grad(set_to_none=True)
        backward_and_step(model, loss, optimizer, clip_norm)
        losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate(model, windows):
    """Perplexity of consecutive windows: exp(total NLL / tokens), the state carried, dropout off.  Chapter 6."""
    training = model.training
    model.eval()
    state, total_nll, tokens = None, 0.0, 0
    for inputs, targets in windows:
        logits, state = model(inputs, state)  # (T, B, V)
        total_nll += F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum").item()
        tokens += targets.numel()
    model.train(training)
    return perplexity(total_nll, tokens)


# the name of each blank in the assignment notebook -> its solution
SOLUTIONS = {"MyLSTMCell": LSTMCell, "MyLSTM": LSTM, "train_windows": train_windows, "evaluate": evaluate}
