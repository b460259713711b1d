"""lstm_lab.book.widgets: the gate explorer's arithmetic, the explorer, and its picture for pages with no kernel."""
import base64
import math
import subprocess
import sys

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from lstm_lab.book.widgets import (gate_explorer, half_life, memory_grid, memory_trace, picture_html,  # noqa: E402
                                   write_pulse)


def test_memory_trace_follows_the_cell_recurrence_by_hand():
    # c_1 = 0.5 * 2 + 1 * 1 = 2,  c_2 = 0.5 * 2 + 1 * 0 = 1,  c_3 = 0.5 * 1 + 1 * (-1) = -0.5
    c, h = memory_trace(f=0.5, i=1.0, g=[1.0, 0.0, -1.0], o=0.5, c0=2.0)
    np.testing.assert_allclose(c, [2.0, 1.0, -0.5], rtol=0, atol=1e-15)
    np.testing.assert_allclose(h, 0.5 * np.tanh([2.0, 1.0, -0.5]), rtol=0, atol=1e-15)


def test_memory_trace_accepts_gates_that_change_over_time():
    g = np.array([1.0, 1.0, 1.0, 0.0])
    f, i = np.array([0.0, 0.9, 0.1, 0.5]), np.array([0.2, 0.3, 1.0, 0.7])
    c, _ = memory_trace(f, i, g)
    expected, c_prev = [], 0.0
    for t in range(4):
        c_prev = f[t] * c_prev + i[t] * g[t]
        expected.append(c_prev)
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-15)


def test_memory_decays_by_the_forget_gate_after_a_write():
    g = write_pulse(30, start=2, length=3)
    c, _ = memory_trace(0.8, 0.5, g)
    np.testing.assert_allclose(c[6:] / c[5:-1], 0.8, rtol=1e-12)  # nothing written after step 4


def test_memory_trace_rejects_a_batch_of_candidates():
    with pytest.raises(ValueError, match="1-D"):
        memory_trace(0.5, 0.5, np.zeros((3, 2)))


def test_write_pulse():
    np.testing.assert_array_equal(write_pulse(6, start=1, length=2, value=-2.0), [0, -2, -2, 0, 0, 0])
    with pytest.raises(ValueError, match="start"):
        write_pulse(5, start=5)


def test_half_life():
    assert half_life(0.5) == pytest.approx(1.0)
    assert 0.9 ** half_life(0.9) == pytest.approx(0.5)
    assert half_life(1.0) == math.inf and half_life(0.0) == 0.0
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        half_life(1.5)


def test_memory_grid_has_one_panel_per_setting():
    fig = memory_grid([0.5, 0.9], [0.2, 0.5, 1.0], write_pulse(20))
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 6
    c, _ = memory_trace(0.9, 1.0, write_pulse(20))
    np.testing.assert_allclose(panels[5].get_lines()[0].get_ydata(), c)  # row f=0.9, column i=1.0
    matplotlib.pyplot.close(fig)


def test_importing_the_package_does_not_import_ipywidgets():
    code = "import sys, lstm_lab, lstm_lab.book.widgets; assert 'ipywidgets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gate_explorer_builds_sliders_and_redraws_on_change():
    pytest.importorskip("ipywidgets")
    explorer = gate_explorer(seq_len=20, f=0.7).widget
    sliders = {w.description: w for w in explorer.children[:-1]}
    assert set(sliders) == {"forget f", "input i", "output o"}
    assert sliders["forget f"].value == 0.7
    sliders["forget f"].value = 0.25  # the callback runs again with the new value
    assert explorer.kwargs["f"] == 0.25
    matplotlib.pyplot.close("all")


def test_gate_explorer_offers_the_live_widget_and_a_picture_with_how_to_run_it_live():
    pytest.importorskip("ipywidgets")
    bundle = gate_explorer(seq_len=20, f=0.7)._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle  # Jupyter and Colab: the sliders
    page = bundle["text/html"]  # the rendered book: a picture of the starting setting
    assert 'value="0.7" disabled' in page and "f = 0.70" in page
    assert "Colab" in page and "Jupyter" in page  # says how to run it live
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert png.startswith(b"\x89PNG")
    assert "http" not in page  # nothing for the page to fetch
    matplotlib.pyplot.close("all")


def test_picture_html_escapes_its_text():
    fig, ax = matplotlib.pyplot.subplots()
    ax.set_title("a < b")
    page = picture_html(fig, {"x & y": 0.5}, note="<run it>")
    assert "a &lt; b" in page and "x &amp; y" in page and "&lt;run it&gt;" in page
    matplotlib.pyplot.close(fig)


class Widget7:
    """A widget as ipywidgets 7 makes it (Colab's): no _repr_mimebundle_, a model id, "displayed" callbacks."""

    model_id = "abc123"

    def __init__(self):
        self.displayed = 0

    def __repr__(self):
        return "Widget7()"

    def _handle_displayed(self):
        self.displayed += 1  # an ipywidgets 7 `interactive` draws its first output here


class Widget8(Widget7):
    """A widget as ipywidgets 8 makes it: it gives its own display data."""

    def _repr_mimebundle_(self, **kwargs):
        return {"text/plain": "Widget8()", "application/vnd.jupyter.widget-view+json":
                {"version_major": 2, "version_minor": 0, "model_id": self.model_id}}


@pytest.mark.parametrize("widget_class", [Widget7, Widget8])
def test_the_live_widget_is_shown_with_ipywidgets_7_and_8(widget_class):
    from lstm_lab.book.widgets import LiveOrPicture
    widget = widget_class()
    bundle = LiveOrPicture(widget, "<figure>picture</figure>")._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"] == {"version_major": 2, "version_minor": 0,
                                                                  "model_id": "abc123"}
    assert bundle["text/html"] == "<figure>picture</figure>"
    assert widget.displayed == (1 if widget_class is Widget7 else 0)  # 7 draws the first plot when displayed


def test_without_ipywidgets_the_explorer_shows_its_picture_and_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # import ipywidgets now raises ImportError
    bundle = gate_explorer(seq_len=20, f=0.7)._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "pip install ipywidgets" in bundle["text/html"] and 'value="0.7" disabled' in bundle["text/html"]
    matplotlib.pyplot.close("all")
