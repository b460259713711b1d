"""The gate explorer: how the forget, input and output gates decide what the cell state remembers.

With the gates held at constant values the cell-state update c_t = f c_{t-1} + i g_t is a leaky
accumulator: whatever is written decays by a factor f every step.  `memory_trace` computes that
(pure numpy, testable); `gate_explorer` wraps it in sliders (ipywidgets, imported only when called, so
`import lstm_lab` never needs it); `memory_grid` draws the same plot for a few gate settings as a
static figure, for readers of the rendered book, where no kernel runs the sliders' callback.

A page with no kernel cannot run a widget, so `gate_explorer` returns a `LiveOrPicture`: Jupyter and
Colab show the live sliders, and a page that does not render widgets (the book sets this in
`_config.yml`, `nb_mime_priority_overrides`) shows a picture of the starting setting and says how to
run it live.  It works with ipywidgets 7 (Colab's, whose front end does not render 8) and 8 (JupyterLab's),
and without ipywidgets it shows the picture with a one-line hint.  Introduced in chapter 1.
"""
import base64
import html
import io
import math

import matplotlib.pyplot as plt
import numpy as np

from lstm_lab.book.plots import plot_memory_trace

__all__ = ["write_pulse", "memory_trace", "half_life", "memory_grid", "picture_html", "widget_bundle", "gate_explorer"]


def write_pulse(seq_len, start=5, length=5, value=1.0):
    """A candidate sequence g of shape (seq_len,): `value` for steps start..start+length-1, else 0.

    Introduced in chapter 1."""
    if not 0 <= start < seq_len:
        raise ValueError(f"start must be in [0, seq_len={seq_len}), got {start}")
    g = np.zeros(seq_len)
    g[start:start + length] = value
    return g


def memory_trace(f, i, g, o=1.0, c0=0.0):
    """Run the cell-state recurrence with given gate values: c_t = f_t c_{t-1} + i_t g_t, h_t = o_t tanh(c_t).

    g: (T,) candidate values;  f, i, o: scalars (held constant) or (T,) arrays;  c0: the state before
    step 0.  Returns (c, h), each (T,).  Introduced in chapter 1."""
    g = np.asarray(g, dtype=float)
    if g.ndim != 1:
        raise ValueError(f"g must be a 1-D sequence of candidate values (T,), got shape {g.shape}")
    f, i, o = (np.broadcast_to(np.asarray(v, dtype=float), g.shape) for v in (f, i, o))  # (T,) each
    c = np.empty_like(g)
    c_prev = c0
    for t in range(len(g)):
        c[t] = f[t] * c_prev + i[t] * g[t]  # keep a fraction f of the memory, write i * g
        c_prev = c[t]
    return c, o * np.tanh(c)


def half_life(f):
    """Steps until a memory kept with constant forget gate f has halved: log(1/2) / log(f).

    0 for f = 0 (forgotten at once), infinity for f = 1 (never forgotten).  Introduced in chapter 1."""
    if not 0.0 <= f <= 1.0:
        raise ValueError(f"a forget gate value lies in [0, 1], got {f}")
    if f == 0.0:
        return 0.0
    return math.inf if f == 1.0 else math.log(0.5) / math.log(f)


def _title(f, i, o):
    return f"f = {f:.2f}, i = {i:.2f}, o = {o:.2f}: half-life {half_life(f):.3g} steps"


def memory_grid(forget_values, input_values, g, o=1.0):
    """Small multiples of `memory_trace`: one panel per (forget, input) pair, rows = forget values.

    The static companion of `gate_explorer`.  g: (T,) candidate sequence.  Returns the figure.
    Introduced in chapter 1."""
    rows, cols = len(forget_values), len(input_values)
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.4 * rows), sharex=True, sharey=True,
                             squeeze=False, layout="constrained")
    for r, f in enumerate(forget_values):
        for k, i in enumerate(input_values):
            c, h = memory_trace(f, i, g, o)
            title = f"f = {f:g}, i = {i:g} (half-life {half_life(f):.2g})"
            plot_memory_trace(axes[r, k], g, c, h, title=title)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("What the cell state remembers of a write, for constant gate values")
    return fig


def explorer_figure(g, f, i, o, y_range):
    """The explorer's plot for one gate setting: c_t and h_t for candidates g (T,), y-axis fixed to y_range.

    Returns the figure.  Introduced in chapter 1."""
    c, h = memory_trace(f, i, g, o)
    fig, ax = plt.subplots(figsize=(7, 3))
    plot_memory_trace(ax, g, c, h, title=_title(f, i, o))
    ax.set_ylim(y_range)  # fixed, so that curves can be compared as the sliders move
    ax.legend(fontsize=8, loc="upper right")
    return fig


RUN_IT_LIVE = ("The sliders need a running Python kernel, which this page does not have, so this is a picture "
               "of their starting setting. To move them, open the chapter on Colab (rocket icon at the top "
               "of the page, then Colab) or in Jupyter, and run its cells.")
NO_IPYWIDGETS = ("The sliders need ipywidgets, which this Python does not have, so this is a picture of their "
                 "starting setting: run pip install ipywidgets, restart the kernel and run this cell again.")


def picture_html(fig, sliders, note=RUN_IT_LIVE):
    """A static stand-in for a widget: its sliders drawn disabled, a PNG of `fig` inline, and `note`.

    sliders: dict label -> value in [0, 1].  Returns an HTML string with no external resource
    (the image is a data: URL).  Introduced in chapter 1."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    rows = "".join(
        f'<label style="display:block">{html.escape(label)} '
        f'<input type="range" min="0" max="1" step="0.01" value="{value}" disabled> {value:.2f}</label>'
        for label, value in sliders.items())
    return (f'<figure class="lstm-lab-widget-picture">{rows}'
            f'<img src="data:image/png;base64,{png}" alt="{html.escape(fig.axes[0].get_title())}">'
            f'<figcaption>{html.escape(note)}</figcaption></figure>')


class LiveOrPicture:
    """A live widget and a static picture of it, displayed as one output with both representations.

    Jupyter and Colab rank the widget's mime type first and show the live widget; a page with no
    kernel (the rendered book drops the widget mime type) shows `picture`, an HTML string.
    `widget` is the ipywidgets object, or None where ipywidgets is missing (then only the picture
    shows).  Introduced in chapter 1."""

    def __init__(self, widget, picture):
        self.widget, self.picture = widget, picture

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = widget_bundle(self.widget) if self.widget is not None else {"text/plain": "(a picture)"}
        bundle["text/html"] = self.picture  # what a reader without a kernel sees
        return bundle


def widget_bundle(widget):
    """The display data of an ipywidgets widget, {"text/plain", "application/vnd.jupyter.widget-view+json"},
    with ipywidgets 8 or 7.

    ipywidgets 8 has `_repr_mimebundle_`.  ipywidgets 7 (Colab's) has none: it displays itself
    (`_ipython_display_`) with the same data and then runs its "displayed" callbacks, which draw an
    `interactive`'s first output; both are done here.  Introduced in chapter 1."""
    if hasattr(widget, "_repr_mimebundle_"):
        return dict(widget._repr_mimebundle_() or {})
    bundle = {"text/plain": repr(widget)[:110],
              "application/vnd.jupyter.widget-view+json": {"version_major": 2, "version_minor": 0,
                                                           "model_id": widget.model_id}}
    widget._handle_displayed()
    return bundle


def gate_explorer(seq_len=60, g=None, f=0.9, i=0.5, o=1.0):
    """Sliders for the forget, input and output gates, and a live plot of c_t and h_t.

    g: (seq_len,) candidate sequence (default: `write_pulse(seq_len)`).  Returns a `LiveOrPicture`
    (the ipywidgets container is its `.widget`); display it (or leave it as the last expression of a
    cell).  Where no kernel runs, it shows a picture of the starting setting and how to run it live;
    without ipywidgets (7 or 8), the picture and how to install it.  Introduced in chapter 1."""
    g = write_pulse(seq_len) if g is None else np.asarray(g, dtype=float)
    reach = max(1.0, float(np.abs(g).sum()))  # no gate setting can push |c_t| beyond this
    y_range = (-reach - 0.1 if g.min() < 0 else -0.1, reach + 0.1)
    fig = explorer_figure(g, f, i, o, y_range)
    sliders = {"forget f": f, "input i": i, "output o": o}
    try:
        import ipywidgets as widgets  # lazy: only the explorer needs ipywidgets
    except ImportError:
        picture = picture_html(fig, sliders, note=NO_IPYWIDGETS)
        plt.close(fig)
        return LiveOrPicture(None, picture)
    from IPython.display import display
    picture = picture_html(fig, sliders)
    plt.close(fig)

    def draw(f, i, o):
        fig = explorer_figure(g, f, i, o, y_range)
        display(fig)
        plt.close(fig)  # shown once, by display, whatever the backend

    slider = lambda value, name: widgets.FloatSlider(value=value, min=0.0, max=1.0, step=0.01,
                                                     description=name, continuous_update=False)
    live = widgets.interactive(draw, f=slider(f, "forget f"), i=slider(i, "input i"), o=slider(o, "output o"))
    return LiveOrPicture(live, picture)
