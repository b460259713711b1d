"""Matplotlib figures the chapters draw: cell-state memory traces, gradient norms, gradient checks.

Every function returns the figure (and axes) it drew on and never calls `plt.show()`: the chapter
decides when to show, save or close it.
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from lstm_lab.corpus import batchify


def plot_memory_trace(ax, g, c, h=None, title=None):
    """Draw one cell-state trace: the candidate written g_t (shaded), the memory c_t, and h_t if given.

    g, c, h: (T,) arrays, e.g. from `lstm_lab.widgets.memory_trace`.  Returns `ax`.
    Introduced in chapter 1."""
    steps = np.arange(len(c))
    ax.fill_between(steps, 0, g, step="mid", color="0.85", label="candidate $g_t$")
    ax.plot(steps, c, color="C0", lw=2, label="cell state $c_t$")
    if h is not None:
        ax.plot(steps, h, color="C1", lw=1.5, ls="--", label="output $h_t$")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlim(0, len(c) - 1)
    ax.set_xlabel("time step $t$")
    if title:
        ax.set_title(title, fontsize=10)
    return ax


def plot_gradient_norms(curves, ax=None, title=None, ylabel=r"$\|\partial L / \partial x_t\|$"):
    """Gradient norm against distance back in time, one line per model, on a log scale.

    curves: dict label -> array (n_seeds, T) or (T,), indexed by distance k = T - 1 - t (as returned by
    `lstm_lab.gradflow.gradient_norms_over_seeds`).  Each line is the geometric mean over seeds; the
    shaded band spans the smallest to the largest seed.  Returns (fig, ax).  Introduced in chapter 1."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    for label, norms in curves.items():
        norms = np.atleast_2d(norms)  # (n_seeds, T)
        distance = np.arange(norms.shape[1])
        line, = ax.plot(distance, np.exp(np.log(norms).mean(axis=0)), lw=2, label=label)
        if norms.shape[0] > 1:
            band = (norms.min(axis=0), norms.max(axis=0))  # smallest and largest seed
            ax.fill_between(distance, *band, color=line.get_color(), alpha=0.15)
    ax.set_yscale("log")
    ax.set_xlabel("distance back in time $T - 1 - t$ (steps)")
    ax.set_ylabel(ylabel)
    ax.set_title(title or "How far back does the gradient reach?")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend()
    return ax.figure, ax


def plot_relative_errors(checks, threshold=None, ax=None, title=None):
    """Grouped bars of gradient-check relative errors, one group per parameter, on a log scale.

    checks: dict label -> {parameter name: relative error} (as returned by
    `lstm_lab.numpy_lstm.gradient_check`); threshold: draw a horizontal line there (e.g. 1e-7).
    Returns (fig, ax).  Introduced in chapter 2."""
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 3.5))
    names = list(next(iter(checks.values())))
    width = 0.8 / len(checks)
    for k, (label, errors) in enumerate(checks.items()):
        positions = np.arange(len(names)) + (k - (len(checks) - 1) / 2) * width
        ax.bar(positions, [max(errors[name], 1e-20) for name in names], width, label=label)
    if threshold is not None:
        ax.axhline(threshold, color="k", ls=":", lw=1, label=f"threshold {threshold:g}")
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("relative error")
    ax.set_title(title or "Gradient check: hand-written backward vs reference")
    ax.legend(fontsize=8)
    return ax.figure, ax


def plot_recorded_runs(recorded, published=(), ax=None, title=None):
    """Validation perplexity per epoch of recorded runs, their test perplexity as a star, and published
    numbers as horizontal lines.

    recorded: {label: results JSON of `python -m lstm_lab train`}; published: [{"model", "valid", "test"}].
    Returns (fig, ax).  Chapter 6."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 4))
    for label, run in recorded.items():
        line, = ax.plot(range(1, run["epochs"] + 1), run["valid_ppl"], "o-", ms=3, label=f"{label}: valid")
        if run.get("test_ppl"):
            ax.plot(run["epochs"], run["test_ppl"], "*", ms=14, color=line.get_color(), label=f"{label}: test")
    for k, p in enumerate(published):
        color = f"{0.1 + 0.3 * k:.1f}"
        ax.axhline(p["valid"], color=color, ls="--", lw=1, label=f"{p['model']}: valid {p['valid']}")
        ax.axhline(p["test"], color=color, ls=":", lw=1, label=f"{p['model']}: test {p['test']}")
    ax.set(xlabel="epoch", ylabel="perplexity")
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    return fig, ax


def plot_batchify_layout(n=26, batch_size=4, seq_len=2):
    """The batchify picture: a text of n tokens (letters) coloured by the stream it lands in, then the
    (steps, batch_size) matrix `lstm_lab.corpus.batchify` makes of it, cut into windows of seq_len rows.

    Returns the figure.  Chapter 6."""
    letters = [chr(ord("a") + i % 26) for i in range(n)]
    source = batchify(torch.arange(n), batch_size)  # (steps, B): column b is stream b
    steps = source.shape[0]
    colours = plt.cm.Set2(range(batch_size))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.2), gridspec_kw={"height_ratios": [1, 3.2]})
    for i, letter in enumerate(letters):
        stream = i // steps if i < steps * batch_size else None  # the tail that does not fill a row is dropped
        top.add_patch(plt.Rectangle((i, 0), 1, 1, color=colours[stream] if stream is not None else "0.85"))
        top.text(i + 0.5, 0.5, letter, ha="center", va="center", fontsize=11)
    top.set(xlim=(0, n), ylim=(0, 1), title=f"the text ({n} tokens): coloured by stream, grey = dropped")
    top.axis("off")
    for t in range(steps):
        for b in range(batch_size):
            bottom.add_patch(plt.Rectangle((b, steps - 1 - t), 0.95, 0.95, color=colours[b]))
            bottom.text(b + 0.47, steps - 0.53 - t, letters[int(source[t, b])], ha="center", va="center",
                        fontsize=12)
    for k, start in enumerate(range(0, steps - 1, seq_len)):  # the last row is only ever a target
        bottom.axhline(steps - start, color="k", lw=1.5)
        last = min(start + seq_len, steps - 1) - 1
        bottom.text(batch_size + 0.15, steps - start - seq_len / 2, f"window {k + 1}: inputs rows {start}..{last}",
                    va="center", fontsize=11)
    bottom.set(xlim=(0, batch_size + 2.6), ylim=(0, steps),
               title=f"batchify(text, {batch_size}): one column per stream, read top to bottom; "
                     f"windows of seq_len={seq_len}")
    bottom.set_xticks([b + 0.47 for b in range(batch_size)], [f"stream {b}" for b in range(batch_size)])
    bottom.set_yticks([])
    fig.tight_layout()
    return fig
