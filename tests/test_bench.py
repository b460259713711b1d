"""The benchmark harness: structure, ratios against nn.LSTM, the JSON it writes.  No timing assertions."""
import json

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

from lstm_lab import cli  # noqa: E402
from lstm_lab.experiments import bench  # noqa: E402
from lstm_lab.experiments.ladder import OneDNNMatmul, TorchMatmul, ladder, nn_lstm  # noqa: E402
from lstm_lab.experiments.timing import (count_kernels, indexing_backward_times, interleaved_times,  # noqa: E402
                                         library_kernel_times, matmul_operators, step_times, summarize,
                                         thread_times, timer_comparison)

TINY = bench.SIZES["tiny"]


def test_make_problem_shapes():
    p = bench.make_problem(TINY, "cpu")
    T, B, I, H, L = (TINY[k] for k in ("seq_len", "batch_size", "input_size", "hidden_size", "num_layers"))
    assert p["x"].shape == (T, B, I) and p["x"].requires_grad
    assert p["h0"].shape == p["c0"].shape == (L, B, H) and p["dout"].shape == (T, B, H)
    assert p["lstm"].num_layers == L


def test_forward_backward_fills_every_gradient_afresh():
    p = bench.make_problem(TINY, "cpu")
    bench.forward_backward(nn_lstm, p)
    first = [q.grad.clone() for q in p["lstm"].parameters()]
    bench.forward_backward(nn_lstm, p)  # gradients are reset, not accumulated
    for q, g in zip(p["lstm"].parameters(), first):
        torch.testing.assert_close(q.grad, g)
    assert p["x"].grad is not None


def test_summarize_medians_and_ratios():
    rows = summarize({"a": [0.003, 0.001, 0.002], "nn.LSTM": [0.004, 0.004, 0.004]}, reference="nn.LSTM")
    assert rows["a"]["median_ms"] == pytest.approx(2.0)
    assert rows["a"]["ratio"] == pytest.approx(0.5)
    assert rows["nn.LSTM"]["ratio"] == pytest.approx(1.0)
    assert rows["a"]["q1_ms"] <= rows["a"]["median_ms"] <= rows["a"]["q3_ms"]


def test_interleaved_times_rotates_the_order():
    calls = []
    candidates = {name: (lambda name=name: calls.append(name)) for name in "abc"}
    times = interleaved_times(candidates, "cpu", repeats=3, warmup=1)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")


def test_timer_comparison_times_the_same_call_with_each_timer_in_turn():
    calls = []
    rows = timer_comparison(lambda: calls.append("fn"), "cpu", repeats=4, warmup=2)
    assert list(rows) == ["perf_counter, no synchronisation", "time_call (synchronised)"]  # CUDA events on a GPU only
    assert len(calls) == 2 + 4 * 2  # the warm-up calls, then one call per timer per round
    assert rows["time_call (synchronised)"]["ratio"] == pytest.approx(1.0)
    assert all(row["median_ms"] >= 0 for row in rows.values())

def test_bench_size_structure_and_ratio_to_nn_lstm():
    rungs = {k: v for k, v in ladder(compiled=False).items() if k in ("hoisted", "bptt", "nn.LSTM")}
    result = bench.bench_size(rungs, TINY, "cpu", repeats=3, warmup=1)
    assert result["size"] == TINY and result["errors"] == {}
    assert list(result["rungs"]) == ["hoisted", "bptt", "nn.LSTM"]
    reference = result["rungs"]["nn.LSTM"]
    assert reference["ratio"] == pytest.approx(1.0)
    for row in result["rungs"].values():
        assert len(row["times_ms"]) == 3 and row["first_call_s"] > 0
        assert row["ratio"] == pytest.approx(row["median_ms"] / reference["median_ms"])


def test_a_failing_rung_is_reported_not_fatal():
    def broken(x, h0, c0, weights):
        raise RuntimeError("no compiler here")

    result = bench.bench_size({"broken": broken, "nn.LSTM": nn_lstm}, TINY, "cpu", repeats=2, warmup=1)
    assert list(result["rungs"]) == ["nn.LSTM"]
    assert result["errors"] == {"broken": "RuntimeError: no compiler here"}


def test_a_failing_reference_raises():
    def broken(x, h0, c0, weights):
        raise RuntimeError("broken reference")

    with pytest.raises(RuntimeError, match="broken reference"):
        bench.bench_size({"nn.LSTM": broken}, TINY, "cpu", repeats=2, warmup=1)


def check_record(record, sizes):
    assert set(record) == {"provenance", "results"}
    for key in ("device", "torch_version", "threads", "cpu", "commit", "date", "command"):
        assert key in record["provenance"]
    assert list(record["results"]) == sizes
    for block in record["results"].values():
        assert block["rungs"]["nn.LSTM"]["ratio"] == pytest.approx(1.0)


def test_the_bench_command_writes_a_valid_json(tmp_path, capsys):
    path = tmp_path / "sub" / "bench.json"
    threads = torch.get_num_threads()
    try:
        assert cli.main(["bench", "--json", str(path), "--sizes", "tiny", "--repeats", "2", "--warmup", "1",
                         "--no-compile"]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads(path.read_text())
    check_record(record, ["tiny"])
    assert record["provenance"]["command"].startswith("python -m lstm_lab bench --json")
    assert record["provenance"]["threads"] == 1
    assert 0 < record["provenance"]["wall_seconds"] < 600
    assert "compiled" not in record["results"]["tiny"]["rungs"]
    assert capsys.readouterr().out.splitlines() == bench.table_lines(record["results"])


def test_record_bench_takes_plain_arguments():
    record = bench.record_bench(["tiny"], "cpu", repeats=1, warmup=1, compiled=False, argv=["bench", "--sizes", "tiny"])
    check_record(record, ["tiny"])
    assert record["provenance"]["command"] == "python -m lstm_lab bench --sizes tiny"
    lines = bench.table_lines(record["results"])
    assert len(lines) == len(record["results"]["tiny"]["rungs"]) and "nn.LSTM" in lines[-1]


def test_plot_ladder_has_one_panel_per_size_set():
    rungs = {k: v for k, v in ladder(compiled=False).items() if k in ("fused", "nn.LSTM")}
    results = {"tiny": bench.bench_size(rungs, TINY, "cpu", repeats=2, warmup=1),
               "tiny-again": bench.bench_size(rungs, TINY, "cpu", repeats=2, warmup=1)}
    fig = bench.plot_ladder(results)
    assert len(fig.axes) == 2
    assert [b.get_width() for b in fig.axes[0].containers[0]][0] == pytest.approx(1.0)  # nn.LSTM at the top
    rows = bench.results_table(results)
    assert len(rows) == 4 and rows[0]["rung"] == "fused"


def test_sweep_rows():
    rungs = {k: v for k, v in ladder(compiled=False).items() if k in ("hoisted", "nn.LSTM")}
    rows = bench.sweep(rungs, TINY, "hidden_size", [2, 3], "cpu", repeats=2)
    assert [(r["hidden_size"], r["rung"]) for r in rows] == [(2, "hoisted"), (2, "nn.LSTM"), (3, "hoisted"),
                                                             (3, "nn.LSTM")]
    assert all(r["median_ms"] > 0 for r in rows)


def test_count_kernels_leaves_out_views():
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(5, 4)
    counts = count_kernels(lambda: (a @ b.t()).sum().backward())
    assert counts["aten.mm"] == 2  # forward, and the gradient for a
    assert "aten.t" not in counts and "aten.detach" not in counts


def test_at_and_matmul_dispatch_the_same_kernel():
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert count_kernels(lambda: a @ b) == count_kernels(lambda: torch.matmul(a, b))


def test_matmul_operators_rows():
    rows = matmul_operators(4, 8, 16, "cpu", repeats=3)
    assert set(rows) == {"a @ W.t()", "torch.matmul(a, W.t())", "F.linear(a, W)", "nn.Linear"}
    assert rows["torch.matmul(a, W.t())"]["ratio"] == pytest.approx(1.0)


def test_library_kernel_times_rows():
    rows = library_kernel_times(batch_size=3, hidden_size=4, seq_len=2, repeats=3)
    assert set(rows["products"]) == {"torch addmm", "oneDNN", "oneDNN, W_hh packed"}
    assert set(rows["tanh"]) == {"torch.tanh", "torch.sigmoid", "2 sigmoid(2x) - 1"}
    assert rows["products"]["torch addmm"]["ratio"] == pytest.approx(1.0)
    assert rows["tanh"]["torch.tanh"]["ratio"] == pytest.approx(1.0)


def test_step_times_rows():
    rows = step_times(batch_size=3, hidden_size=4, repeats=3)
    assert list(rows) == ["the product", "PyTorch operators (rung 6)", "one C++ loop (rung 7)"]
    assert rows["the product"]["ratio"] == pytest.approx(1.0)
    assert all(row["median_ms"] > 0 for row in rows.values())


@pytest.mark.parametrize("add", ["none", "bias", "matrix"])
@pytest.mark.parametrize("packed", [False, True])
def test_onednn_products_equal_torch_products(add, packed):
    """What library_kernel_times times as one product is one product: the same numbers in every form."""
    torch.manual_seed(0)
    a, W = torch.randn(5, 7), torch.randn(12, 7)
    addend = {"none": None, "bias": torch.randn(12), "matrix": torch.randn(5, 12)}[add]
    weight = OneDNNMatmul.prepare(W, 5) if packed else W
    torch.testing.assert_close(OneDNNMatmul.linear(a, weight, addend), TorchMatmul.linear(a, W, addend),
                               rtol=1e-5, atol=1e-5)


def test_thread_times_restores_the_thread_count():
    before = torch.get_num_threads()
    rows = thread_times(lambda: torch.randn(8, 8) @ torch.randn(8, 8), (1, 2), repeats=2, warmup=1)
    assert set(rows) == {1, 2} and torch.get_num_threads() == before


def test_set_tf32_sets_both_switches():
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        bench.set_tf32(True)
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        bench.set_tf32(False)
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def test_indexing_backward_rows():
    rows = indexing_backward_times(4, 2, 3, "cpu", repeats=2)
    assert set(rows) == {"x[t] for t in range(T)", "for x_t in x"}
    assert rows["for x_t in x"]["ratio"] == pytest.approx(1.0)


def test_indexing_and_iterating_give_the_same_gradient():
    x = torch.randn(4, 2, 3, requires_grad=True)
    by_index = torch.autograd.grad(sum((x[t] * t).sum() for t in range(4)), x)[0]
    by_iteration = torch.autograd.grad(sum((x_t * t).sum() for t, x_t in enumerate(x)), x)[0]
    torch.testing.assert_close(by_index, by_iteration)


def test_plot_sweep_one_line_per_rung():
    rows = [{"hidden_size": h, "rung": r, "median_ms": float(h)} for h in (2, 4) for r in ("a", "b")]
    fig = bench.plot_sweep(rows, "hidden_size", steps=2)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["a", "b"]
    assert list(lines[0].get_ydata()) == [1.0, 2.0]  # divided by steps


def test_the_shape_sweep_times_both_modules_training_and_inference(monkeypatch):
    monkeypatch.setattr(bench, "SHAPES", {"tiny": TINY, "tiny, one layer": {**TINY, "num_layers": 1}})
    record = bench.record_shapes(None, "cpu", repeats=2, warmup=1, argv=["bench", "--shapes"])
    assert list(record["results"]) == ["tiny", "tiny, one layer"]
    for block in record["results"].values():
        for mode in ("train", "infer"):
            assert list(block[mode]) == ["nn.LSTM", "lstm_lab.LSTM"]
            assert block[mode]["nn.LSTM"]["ratio"] == 1.0
            ours = block[mode]["lstm_lab.LSTM"]
            assert ours["ratio"] == pytest.approx(ours["median_ms"] / block[mode]["nn.LSTM"]["median_ms"])
            assert ours["per_step_us"] == pytest.approx(1e3 * ours["median_ms"] / TINY["seq_len"])
            assert ours["peak_bytes"] is None  # no allocator counts nn.LSTM's own memory on a CPU
    rows = bench.shape_table(record["results"])
    assert [row["T, B, H, layers"] for row in rows] == ["3, 2, 5, 2", "3, 2, 5, 1"]
    assert len(bench.shape_lines(record["results"])) == 2
    assert record["provenance"]["command"] == "python -m lstm_lab bench --shapes"


def test_the_shape_sweeps_calls_train_with_gradients_and_infer_without():
    calls = bench.module_calls(TINY, "cpu")
    for name, train in calls["train"].items():
        train()
    modules = {name: fn.args[0] for name, fn in calls["train"].items()}
    grads = {name: [p.grad for p in module.parameters()] for name, module in modules.items()}
    assert all(g is not None for g in grads["lstm_lab.LSTM"])
    for ours, theirs in zip(grads["lstm_lab.LSTM"], grads["nn.LSTM"]):  # the same weights, the same input
        assert torch.allclose(ours, theirs, atol=1e-5)
    for module in modules.values():
        module.zero_grad(set_to_none=True)
    for infer in calls["infer"].values():
        infer()
    assert all(p.grad is None for module in modules.values() for p in module.parameters())


def test_the_bench_command_runs_the_shape_sweep(tmp_path, capsys):
    path = tmp_path / "shapes.json"
    threads = torch.get_num_threads()
    try:
        assert cli.main(["bench", "--shapes", "short-windows", "--repeats", "1", "--warmup", "1", "--device", "cpu",
                         "--json", str(path)]) == 0
    finally:
        torch.set_num_threads(threads)
    record = json.loads(path.read_text())
    assert list(record["results"]) == ["short-windows"]
    assert capsys.readouterr().out.splitlines() == bench.shape_lines(record["results"])
    with pytest.raises(SystemExit) as refused:
        cli.main(["bench", "--shapes", "no-such-shape"])
    assert refused.value.code == 2
