"""Matplotlib figures the chapters draw: cell-state memory traces, gradient norms, gradient checks.

Every function returns the figure (and axes) it drew on and never calls `plt.show()`: the chapter
decides when to show, save or close it.
"""
import matplotlib.pyplot as plt
import numpy as np
import torch

from lstm_lab.data.corpus import batchify

__all__ = ["plot_memory_trace", "plot_gradient_norms", "plot_relative_errors", "plot_recorded_runs",
           "plot_batchify_layout", "plot_packed_layout", "plot_stacked_lstm", "plot_seed_curves",
           "plot_learning_rate_search", "plot_layer_gradients", "plot_attention"]


def plot_memory_trace(ax, g, c, h=None, title=None):
    """Draw one cell-state trace: the candidate written g_t (shaded), the memory c_t, and h_t if given.

    g, c, h: (T,) arrays, e.g. from `lstm_lab.book.widgets.memory_trace`.  Returns `ax`.
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
    `lstm_lab.experiments.gradflow.gradient_norms_over_seeds`).  Each line is the geometric mean over seeds; the
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
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the bars, never over them
    ax.figure.tight_layout()
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
    (steps, batch_size) matrix `lstm_lab.data.corpus.batchify` makes of it, cut into windows of seq_len rows.

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


def plot_packed_layout(lengths=(3, 1, 2)):
    """The PackedSequence picture: sequences of `lengths` as rows (left), and the packed `data` they become
    (right): time-major, sorted longest first, step 0 of every sequence, then step 1 of those still running...
    `batch_sizes` counts each step's block.  Returns the figure.  Chapter 7."""
    names = [chr(ord("a") + b) for b in range(len(lengths))]
    order = sorted(range(len(lengths)), key=lambda b: -lengths[b])  # stable: ties keep their order
    colours = plt.cm.Set2(range(max(lengths)))
    batch_sizes = [sum(n > t for n in lengths) for t in range(max(lengths))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 2.8), gridspec_kw={"width_ratios": [max(lengths) + 1,
                                                                                            sum(lengths) + 1]})
    for row, b in enumerate(names):
        for t in range(lengths[row]):
            left.add_patch(plt.Rectangle((t, len(lengths) - 1 - row), 0.95, 0.9, color=colours[t]))
            left.text(t + 0.47, len(lengths) - 0.55 - row, f"{b}{t}", ha="center", va="center", fontsize=11)
    left.set(xlim=(0, max(lengths)), ylim=(0, len(lengths)), title="the batch: one row per sequence, colour = time step")
    left.set_yticks([len(lengths) - 0.55 - r for r in range(len(lengths))], [f"{b} (length {n})"
                                                                            for b, n in zip(names, lengths)])
    left.set_xticks([t + 0.47 for t in range(max(lengths))], [f"t={t}" for t in range(max(lengths))])
    x = 0
    for t, size in enumerate(batch_sizes):
        for b in order[:size]:
            right.add_patch(plt.Rectangle((x, 0), 0.95, 0.9, color=colours[t]))
            right.text(x + 0.47, 0.45, f"{names[b]}{t}", ha="center", va="center", fontsize=11)
            x += 1
        right.text(x - size / 2, -0.45, f"step {t}:\nbatch_sizes[{t}]={size}", ha="center", fontsize=8)
        right.axvline(x - 0.025, color="k", lw=1.5)
    right.set(xlim=(-0.3, x + 0.3), ylim=(-0.7, 1), title="packed.data: time-major, sorted longest first")
    right.axis("off")
    fig.tight_layout()
    return fig


def plot_stacked_lstm(num_layers=3, seq_len=4, input_size="I", hidden_size="H"):
    """The picture of a stacked LSTM: one box per layer k and step t, its state passed right (to the same
    layer's next step) and its output passed up (to the layer above at the same step).

    Each row is labelled with the weights that layer owns; the upward arrows between layers are where
    Zaremba's dropout goes.  Returns the figure.  Chapter 5."""
    fig, ax = plt.subplots(figsize=(7.5, 1.1 * num_layers + 1.6))
    for k in range(num_layers):
        reads = input_size if k == 0 else hidden_size
        ax.text(-0.9, k, f"layer {k + 1}\n$W_{{ih}}$ (4{hidden_size}, {reads})\n$W_{{hh}}$ (4{hidden_size}, "
                         f"{hidden_size})", ha="right", va="center", fontsize=9)
        for t in range(seq_len):
            ax.add_patch(plt.Rectangle((t - 0.3, k - 0.25), 0.6, 0.5, facecolor=plt.cm.Blues(0.25 + 0.2 * k),
                                       edgecolor="k"))
            ax.text(t, k, f"$h^{{{k + 1}}}_{{{t + 1}}}, c^{{{k + 1}}}_{{{t + 1}}}$", ha="center", va="center",
                    fontsize=9)
            if t + 1 < seq_len:  # the recurrent path: h and c to the next step of the same layer
                ax.annotate("", (t + 0.7, k), (t + 0.3, k), arrowprops={"arrowstyle": "->", "lw": 1.5})
            below = k - 0.75 if k > 0 else -0.95
            style = {"arrowstyle": "->", "lw": 1.2, "ls": "--" if k > 0 else "-", "color": "C3" if k > 0 else "k"}
            ax.annotate("", (t, k - 0.25), (t, below), arrowprops=style)
    for t in range(seq_len):
        ax.text(t, -1.1, f"$x_{{{t + 1}}}$", ha="center", va="center", fontsize=11)
        ax.annotate("", (t, num_layers + 0.05), (t, num_layers - 0.75), arrowprops={"arrowstyle": "->"})
        ax.text(t, num_layers + 0.2, f"output$_{{{t + 1}}}$", ha="center", va="bottom", fontsize=9)
    ax.set_title("black: each layer's state passes to its own next step;  red dashed: a layer's output is the "
                 "next layer's input\n(nn.LSTM's dropout acts on the red arrows only)", fontsize=9)
    ax.set(xlim=(-2.1, seq_len - 0.5), ylim=(-1.4, num_layers + 0.6))
    ax.axis("off")
    return fig


def plot_seed_curves(curves, ax=None, title=None, key="valid_ppl", ylabel="perplexity"):
    """Mean validation perplexity per epoch of each configuration's seeds, with a band from the lowest to the
    highest seed, and each seed's test perplexity as a dot after the last epoch.

    curves: {label: [results JSON of each seed]} (as `lstm_lab.runs.load_seeds` returns).  Returns (fig, ax).
    Chapter 5."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 4.2))
    for label, runs in curves.items():
        epochs = min(len(run[key]) for run in runs)
        values = np.array([run[key][:epochs] for run in runs])  # (seeds, epochs)
        x = np.arange(1, epochs + 1)
        seeds = f"{len(runs)} seed{'s' * (len(runs) > 1)}"
        line, = ax.plot(x, values.mean(axis=0), "o-", ms=3, label=f"{label} ({seeds})")
        if len(runs) > 1:
            ax.fill_between(x, values.min(axis=0), values.max(axis=0), color=line.get_color(), alpha=0.15)
        tests = [run["test_ppl"] for run in runs if run.get("test_ppl")] if key == "valid_ppl" else []
        ax.plot([epochs + 0.25] * len(tests), tests, ".", color=line.get_color(), ms=7)
    ax.set(xlabel="epoch" + " (dots after the last: test perplexity of each seed)" * (key == "valid_ppl"),
           ylabel=ylabel)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.set_title(title or "validation perplexity: mean over seeds, band from lowest to highest", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def plot_learning_rate_search(points, marked=None, ax=None):
    """Best validation perplexity against learning rate (log scale), one line per optimizer.

    points: {optimizer: [(lr, perplexity)]} (as `lstm_lab.experiments.poems_study.search_points` returns); marked:
    {optimizer: lr} drawn as open circles (e.g. the rate a report used).  Returns (fig, ax).  Chapter 8."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(7.5, 4.2))
    for optimizer, pairs in points.items():
        if not pairs:
            continue
        lrs, ppls = zip(*pairs)
        line, = ax.plot(lrs, ppls, "o-", ms=4, label=optimizer)
        if marked and optimizer in marked and marked[optimizer] in lrs:
            ax.plot(marked[optimizer], ppls[lrs.index(marked[optimizer])], "o", ms=11, mfc="none",
                    color=line.get_color())
    ax.set(xscale="log", yscale="log", xlabel="learning rate", ylabel="best validation perplexity")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return fig, ax


def plot_layer_gradients(panels, sharey=True):
    """Gradient norms through depth and time: one panel per case, one line per layer, log scale.

    panels: {title: array (L, T)} of ||dL/dh^k_t|| (as `lstm_lab.experiments.gradflow.gradient_norms_by_layer` returns).
    Returns the figure.  Chapter 5."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.6), sharey=sharey, squeeze=False)
    for ax, (title, norms) in zip(axes[0], panels.items()):
        steps = np.arange(1, norms.shape[1] + 1)
        for k, row in enumerate(norms):
            ax.plot(steps, row, lw=2, label=f"layer {k + 1}", color=plt.cm.viridis(k / max(1, len(norms) - 1)))
        ax.set_yscale("log")
        ax.set(xlabel="time step $t$ (the loss reads the last one)", title=title)
        ax.grid(True, which="major", alpha=0.3)
    axes[0][0].set_ylabel(r"$\|\partial L / \partial h^k_t\|$")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_attention(examples, columns=3):
    """Attention maps: for each example, which source character (x) each output character (y) looked at.

    examples: [(source string, output string, weights (len(output), len(source)) array)].  Returns the figure.
    Chapter 9."""
    rows = (len(examples) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 2.9 * rows), squeeze=False)
    for ax, (source, output, weights) in zip(axes.flat, examples):
        ax.imshow(weights, cmap="Greys", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(source)), list(source), fontsize=8, fontfamily="monospace")
        ax.set_yticks(range(len(output)), list(output), fontsize=8, fontfamily="monospace")
        ax.set_title(repr(source), fontsize=9)
    for ax in axes.flat[len(examples):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
