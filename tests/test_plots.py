"""lstm_lab.book.plots: the figures return what they drew."""
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lstm_lab.book.plots import (plot_attention, plot_batchify_layout, plot_gradient_norms,  # noqa: E402
                                 plot_layer_gradients, plot_memory_trace, plot_recorded_runs, plot_relative_errors,
                                 plot_learning_rate_search, plot_seed_curves, plot_stacked_lstm)
from lstm_lab.experiments.records import load_recorded  # noqa: E402


def test_plot_memory_trace_draws_c_and_optionally_h():
    fig, ax = plt.subplots()
    g, c = np.array([1.0, 0.0, 0.0]), np.array([0.5, 0.25, 0.125])
    assert plot_memory_trace(ax, g, c, title="x") is ax
    assert len(ax.get_lines()) == 2  # c_t and the zero line
    np.testing.assert_array_equal(ax.get_lines()[0].get_ydata(), c)
    fig2, ax2 = plt.subplots()
    plot_memory_trace(ax2, g, c, h=np.tanh(c))
    assert len(ax2.get_lines()) == 3  # c_t, h_t and the zero line
    np.testing.assert_array_equal(ax2.get_lines()[1].get_ydata(), np.tanh(c))
    plt.close(fig)
    plt.close(fig2)


def test_plot_gradient_norms_one_geometric_mean_line_per_curve():
    rows = np.array([[1.0, 0.1, 0.01], [4.0, 0.4, 0.04]])
    fig, ax = plot_gradient_norms({"rnn": rows, "lstm": rows[0]})
    lines = ax.get_lines()
    assert len(lines) == 2 and ax.get_yscale() == "log"
    np.testing.assert_allclose(lines[0].get_ydata(), [2.0, 0.2, 0.02])  # sqrt(1 * 4) = 2
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["rnn", "lstm"]
    assert ax is fig.axes[0]
    plt.close(fig)


def test_plot_relative_errors_one_bar_per_parameter_and_check():
    checks = {"correct": {"x": 1e-10, "W_ih": 2e-10, "b_ih": 0.0},
              "typo": {"x": 0.5, "W_ih": 0.9, "b_ih": 0.8}}
    fig, ax = plot_relative_errors(checks, threshold=1e-7)
    assert len(ax.patches) == 6
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights[0] == 1e-20 and heights[-1] == 0.9  # zero errors are drawn at the floor of the log axis
    assert ax.get_lines()[0].get_ydata()[0] == 1e-7
    plt.close(fig)


def test_plot_batchify_layout_colours_each_stream_and_greys_the_dropped_tail():
    fig = plot_batchify_layout(n=10, batch_size=3, seq_len=2)  # 3 streams of 3 tokens; "j" is dropped
    top, bottom = fig.axes
    colours = [patch.get_facecolor() for patch in top.patches]
    assert len(colours) == 10 and colours[0] == colours[2] != colours[3] and colours[9][:3] == (0.85, 0.85, 0.85)
    assert [t.get_text() for t in bottom.texts[:3]] == ["a", "d", "g"]  # row 0: the first token of each stream
    plt.close(fig)


def test_plot_recorded_runs_draws_each_run_and_the_published_lines():
    run = load_recorded("ptb-zaremba-small-torch.json")
    fig, ax = plot_recorded_runs({"torch": run}, [{"model": "paper", "valid": 120.7, "test": 114.5}])
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), run["valid_ppl"])
    assert ax.get_lines()[1].get_ydata()[0] == run["test_ppl"]  # the star at the last epoch
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()[2:]) == [114.5, 120.7]
    plt.close(fig)


def test_plot_seed_curves_draws_the_mean_of_the_epochs_every_seed_reached_and_each_test():
    runs = [{"valid_ppl": [200, 150, 130], "test_ppl": 125.0}, {"valid_ppl": [210, 160], "test_ppl": None}]
    fig, ax = plot_seed_curves({"L2": runs})
    mean, tests = ax.get_lines()
    np.testing.assert_allclose(mean.get_ydata(), [205, 155])
    np.testing.assert_allclose(tests.get_ydata(), [125.0])
    assert "2 seeds" in ax.get_legend().get_texts()[0].get_text()
    plt.close(fig)


def test_plot_layer_gradients_one_panel_per_case_one_line_per_layer():
    norms = np.arange(1, 13, dtype=float).reshape(3, 4)  # (L, T)
    fig = plot_layer_gradients({"init": norms, "trained": norms * 2})
    assert len(fig.axes) == 2
    assert [len(ax.get_lines()) for ax in fig.axes] == [3, 3]
    np.testing.assert_allclose(fig.axes[1].get_lines()[2].get_ydata(), norms[2] * 2)
    plt.close(fig)


def test_plot_stacked_lstm_draws_a_box_per_layer_and_step():
    fig = plot_stacked_lstm(num_layers=2, seq_len=3)
    assert len(fig.axes[0].patches) == 2 * 3
    plt.close(fig)


def test_plot_attention_one_map_per_example_with_the_characters_as_ticks():
    weights = np.eye(3, 4)
    fig = plot_attention([("abcd", "xyz", weights), ("ab", "x", np.ones((1, 2)) / 2)], columns=3)
    first = fig.axes[0]
    np.testing.assert_allclose(first.get_images()[0].get_array(), weights)
    assert [t.get_text() for t in first.get_xticklabels()] == list("abcd")
    assert [t.get_text() for t in first.get_yticklabels()] == list("xyz")
    assert not fig.axes[2].axison  # the unused third panel is blank
    plt.close(fig)


def test_plot_learning_rate_search_draws_each_optimizer_and_circles_the_marked_rate():
    points = {"sgd": [(0.1, 400.0), (1.0, 200.0)], "adam": [(0.001, 170.0), (0.00316, 146.0)], "adagrad": []}
    fig, ax = plot_learning_rate_search(points, marked={"sgd": 0.1, "adam": 0.5})
    lines = ax.get_lines()
    assert [line.get_label() for line in lines if not line.get_label().startswith("_")] == ["sgd", "adam"]
    assert len(lines) == 3  # two curves and one circle: adam's marked rate was never tried
    circle = [line for line in lines if line.get_label().startswith("_")][0]
    assert list(circle.get_xdata()) == [0.1] and list(circle.get_ydata()) == [400.0]
    assert ax.get_xscale() == "log"
    plt.close(fig)
