"""The speed-ladder benchmark: forward + backward of every rung of `lstm_lab.experiments.ladder`, against nn.LSTM.

    python -m lstm_lab bench --json lstm_lab/recorded/bench-cpu.json       # the default size sets
    python -m lstm_lab bench --sizes ptb-small --repeats 5 --no-compile    # quicker
    python -m lstm_lab bench --shapes --json lstm_lab/recorded/shapes-cpu.json   # the shape sweep

All rungs run in one process on the same weights and input, timed round-robin (see
`lstm_lab.experiments.timing`), with warm-up and, on a GPU, synchronisation and TF32 set alike for every rung.
The result is a JSON-ready dict: provenance (device, versions, threads, commit, command, date) and,
per size set, each rung's median time and its ratio to nn.LSTM.  The shape sweep (`record_shapes`) times the two
modules themselves, `lstm_lab.LSTM` against `nn.LSTM`, training and inference, on the shapes real code uses
(SHAPES: long thin sequences, one sentence, wide batches ...), where the ladder times rungs on PTB windows.  The command line (`lstm_lab.cli`) checks the
options, calls `record_bench` and writes the record with `lstm_lab.checkpoint.atomic_write_json`.
Introduced in chapter 3.
"""
import functools
import os
import sys
import time

import matplotlib.pyplot as plt
import torch

from lstm_lab.experiments.ladder import ladder, lstm_weights, make_problem
from lstm_lab.lstm import LSTM
from lstm_lab.experiments.timing import interleaved_times, summarize, synchronize, time_call
from lstm_lab.provenance import provenance
from lstm_lab.runtime import capture_cuda_graph

__all__ = ["SIZES", "REFERENCE", "forward_backward", "set_tf32", "graphed_candidates", "bench_size", "run_bench",
           "record_bench", "sweep", "results_table", "table_lines", "plot_ladder", "plot_sweep", "SHAPES",
           "module_calls", "shape_row", "record_shapes", "shape_table", "shape_lines"]

SIZES = {  # named size sets; keys follow the book's glossary
    "ptb-small": {"seq_len": 35, "batch_size": 20, "input_size": 200, "hidden_size": 200, "num_layers": 2},
    "zaremba-medium": {"seq_len": 35, "batch_size": 20, "input_size": 650, "hidden_size": 650, "num_layers": 2},
    "fastrnns": {"seq_len": 100, "batch_size": 64, "input_size": 512, "hidden_size": 512, "num_layers": 1},
    "tiny": {"seq_len": 3, "batch_size": 2, "input_size": 4, "hidden_size": 5, "num_layers": 2},  # smoke test
}
REFERENCE = "nn.LSTM"  # every ratio is time / time of this rung
CPU_SIZES = ("ptb-small", "fastrnns")  # the size sets `bench` times by default on a CPU
GPU_SIZES = ("ptb-small", "zaremba-medium", "fastrnns")  # ... and on a GPU
# rungs also timed replayed from a CUDA graph on a GPU (`graphed_candidates`; `bench --no-graphs`: none); nn.LSTM among
# them, so that a replayed hand-written loop is compared with cuDNN replayed too, not only with cuDNN called eagerly
GRAPHED = ("hoisted", "bptt", "compiled", "nn.LSTM")
SHAPES = {  # the shape sweep: where real code meets the LSTM, well beyond the ladder's PTB-sized windows
    "ptb-small": {"seq_len": 35, "batch_size": 20, "input_size": 200, "hidden_size": 200, "num_layers": 2},
    "zaremba-medium": {"seq_len": 35, "batch_size": 20, "input_size": 650, "hidden_size": 650, "num_layers": 2},
    "fastrnns": {"seq_len": 100, "batch_size": 64, "input_size": 512, "hidden_size": 512, "num_layers": 1},
    "one-sentence": {"seq_len": 35, "batch_size": 1, "input_size": 200, "hidden_size": 200, "num_layers": 1},
    "wide-batch": {"seq_len": 35, "batch_size": 256, "input_size": 200, "hidden_size": 200, "num_layers": 1},
    "short-windows": {"seq_len": 5, "batch_size": 64, "input_size": 128, "hidden_size": 128, "num_layers": 1},
    "long-thin": {"seq_len": 500, "batch_size": 1, "input_size": 16, "hidden_size": 16, "num_layers": 1},
    "long-small-batch": {"seq_len": 1000, "batch_size": 4, "input_size": 64, "hidden_size": 64, "num_layers": 1},
}
MODULES = ("nn.LSTM", "lstm_lab.LSTM")  # the shape sweep's two modules; ratios are to the first


def forward_backward(rung, problem):
    """One forward and backward pass of `rung` on `problem`: the LSTM's share of a training step.

    Gradients land in problem["lstm"]'s parameters and problem["x"].grad (reset first).  Chapter 3."""
    for p in problem["lstm"].parameters():
        p.grad = None
    problem["x"].grad = None
    output, _ = rung(problem["x"], problem["h0"], problem["c0"], lstm_weights(problem["lstm"]))
    output.backward(problem["dout"])


def set_tf32(enabled):
    """Allow (or forbid) TF32 in both cuBLAS matmuls and cuDNN, so every rung computes alike.

    By default PyTorch lets cuDNN use TF32 but not matmul: nn.LSTM would get a head start.  Chapter 3."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def graphed_candidates(candidates, names=GRAPHED):
    """{name + " + graph": replay} for each of `names` in candidates, each captured in a CUDA graph
    (`lstm_lab.runtime.capture_cuda_graph`) and replayed.

    A capture that fails is reported and left out.  Chapter 3 (the GPU ladder)."""
    graphed = {}
    for name in names:
        if name in candidates:
            try:
                graphed[f"{name} + graph"] = capture_cuda_graph(candidates[name]).replay
            except Exception as error:  # noqa: BLE001 -- report, keep the other rungs
                print(f"warning: CUDA graph of {name!r} failed: {type(error).__name__}: {error}".splitlines()[0],
                      file=sys.stderr)
    return graphed


def first_calls(candidates, device, reference=REFERENCE):
    """Call each candidate once, timed: the first call pays for compilation and initialisation.

    A candidate other than `reference` that raises (e.g. torch.compile without a C++ compiler) is
    reported, not fatal.  Returns ({name: seconds}, {name: error message}).  Chapter 3."""
    seconds, errors = {}, {}
    for name, fn in candidates.items():
        try:
            seconds[name] = time_call(fn, device)
        except Exception as error:  # noqa: BLE001 -- one broken rung must not lose the others' numbers
            if name == reference:
                raise
            errors[name] = f"{type(error).__name__}: {error}".splitlines()[0]
            print(f"warning: rung {name!r} failed and is left out: {errors[name]}", file=sys.stderr)
    return seconds, errors


def bench_size(rungs, size, device, repeats=10, warmup=2, graphs=True):
    """Time forward_backward of every rung on one size set, interleaved.

    rungs: {name: rung} including REFERENCE.  graphs: on a GPU, also time the GRAPHED rungs replayed from
    a CUDA graph.  Returns {"size": size, "rungs": {name: {"median_ms", "q1_ms", "q3_ms", "ratio",
    "first_call_s", "times_ms"}}, "errors": {name: message}}.  Chapter 3."""
    problem = make_problem(size, device)
    candidates = {name: functools.partial(forward_backward, rung, problem) for name, rung in rungs.items()}
    first_call, errors = first_calls(candidates, device)
    candidates = {name: fn for name, fn in candidates.items() if name not in errors}
    if graphs and torch.device(device).type == "cuda":
        graphed = graphed_candidates(candidates)
        first_call.update({name: None for name in graphed})  # the capture ran the eager rung: no compile time
        candidates.update(graphed)
    times = interleaved_times(candidates, device, repeats, warmup)
    rows = summarize(times, reference=REFERENCE)
    for name, row in rows.items():
        row.update(first_call_s=first_call[name], times_ms=[1e3 * t for t in times[name]])
    return {"size": dict(size), "rungs": rows, "errors": errors}


def run_bench(size_names, device, repeats=10, warmup=2, compiled=True, graphs=True):
    """bench_size for each named size set in SIZES, with fresh rungs for each.  Chapter 3."""
    return {name: bench_size(ladder(compiled, device), SIZES[name], device, repeats, warmup, graphs)
            for name in size_names}


def record_bench(size_names, device, repeats=10, warmup=2, compiled=True, tf32=False, graphs=True, argv=()):
    """The benchmark's record: {"provenance": where, how and how long it ran, "results": `run_bench`'s}.

    size_names: keys of SIZES (None or empty: CPU_SIZES, or GPU_SIZES on a GPU).  device: "cpu", "cuda", a
    torch.device.  tf32: on a GPU, allow TF32 for every rung (`set_tf32`).  argv: the command line, e.g.
    ["bench", "--tf32"], recorded as "python -m lstm_lab bench --tf32".  Chapter 3."""
    device = torch.device(device)
    if device.type == "cuda":
        set_tf32(tf32)
    size_names = list(size_names or (GPU_SIZES if device.type == "cuda" else CPU_SIZES))
    start = time.perf_counter()
    results = run_bench(size_names, device, repeats, warmup, compiled, graphs)
    wall_seconds = round(time.perf_counter() - start, 3)
    return {"provenance": bench_provenance(argv, device, tf32, wall_seconds), "results": results}


def sweep(rungs, size, key, values, device, repeats=5, warmup=1):
    """Time every rung while one size varies: rows {key: value, "rung": name, "median_ms": ...}.

    size: a dict like SIZES["ptb-small"]; key: which entry to vary (e.g. "hidden_size").  Chapter 3."""
    rows = []
    for value in values:
        problem = make_problem({**size, key: value}, device)
        candidates = {name: functools.partial(forward_backward, rung, problem) for name, rung in rungs.items()}
        for name, row in summarize(interleaved_times(candidates, device, repeats, warmup)).items():
            rows.append({key: value, "rung": name, **row})
    return rows


def bench_provenance(argv, device, tf32, wall_seconds=None):
    """Where and how the benchmark ran: lstm_lab.provenance plus the kernels' switches and, when given, the
    benchmark's wall time in seconds.  argv: the command line after `python -m lstm_lab` ("bench", ...).
    Chapter 3."""
    record = provenance(list(argv), device)
    settings = {k: v for k, v in os.environ.items() if k.startswith(("TORCHINDUCTOR_", "TORCH_EXTENSIONS_", "OMP_", "MKL_"))}
    record.update(load_average=os.getloadavg(), mkldnn_enabled=torch.backends.mkldnn.is_available(),
                  environment=settings, wall_seconds=wall_seconds)
    if device.type == "cuda":
        record.update(cudnn_version=torch.backends.cudnn.version(), tf32=tf32)
    return record


def results_table(results):
    """Rows for `lstm_lab.book.show.show_table`: size set, rung, median ms, ratio to nn.LSTM.  Chapter 3."""
    return [{"sizes": size_name, "rung": name, "median ms": row["median_ms"],
             "x nn.LSTM": row["ratio"], "first call s": row.get("first_call_s")}
            for size_name, block in results.items() for name, row in block["rungs"].items()]


def table_lines(results):
    """One printable line per size set and rung: median ms, ratio to nn.LSTM, first call.  Chapter 3."""
    lines = []
    for row in results_table(results):
        first = "" if row["first call s"] is None else f"  (first call {row['first call s']:.2f} s)"
        lines.append(f"{row['sizes']:>14}  {row['rung']:>16}  {row['median ms']:9.2f} ms  "
                     f"{row['x nn.LSTM']:6.2f}x{first}")
    return lines


def plot_ladder(results, title=None):
    """Bar chart of each rung's time relative to nn.LSTM, one panel per size set.

    results: the "results" part of a bench JSON ({size_name: {"size", "rungs"}}).  Returns the figure.
    Chapter 3."""
    fig, axes = plt.subplots(len(results), 1, figsize=(6.5, 2.8 * len(results)), squeeze=False)
    for ax, (size_name, block) in zip(axes[:, 0], results.items()):
        names = list(block["rungs"])
        ratios = [block["rungs"][n]["ratio"] for n in names]
        colors = ["0.55" if n == REFERENCE else "C0" for n in names]
        bars = ax.barh(names[::-1], ratios[::-1], color=colors[::-1])
        labels = [f"{block['rungs'][n]['median_ms']:.3g} ms" for n in names[::-1]]
        ax.bar_label(bars, labels=labels, padding=3, fontsize=8)
        ax.axvline(1.0, color="0.3", lw=0.8, ls="--")
        ax.set_xlim(0, 1.25 * max(ratios))
        s = block["size"]
        ax.set_title(f"{size_name}: T{s['seq_len']} B{s['batch_size']} I{s['input_size']} "
                     f"H{s['hidden_size']} L{s['num_layers']}", fontsize=10)
        ax.set_xlabel("forward + backward time / nn.LSTM")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_sweep(rows, key, steps=None, title=None):
    """Median time of each rung against the swept size, log-log; rows from `sweep`.

    steps: if given, times are divided by it (the seq_len) to show time per step.  Returns the figure.
    Chapter 3."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name in dict.fromkeys(row["rung"] for row in rows):
        mine = [row for row in rows if row["rung"] == name]
        ax.plot([row[key] for row in mine], [row["median_ms"] / (steps or 1) for row in mine], "o-", label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    values = sorted({row[key] for row in rows})
    ax.set_xticks(values, [str(v) for v in values], minor=False)
    ax.set_xticks([], minor=True)
    ax.set_xlabel(key)
    ax.set_ylabel("forward + backward, ms" + (" per step" if steps else ""))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def module_calls(size, device, seed=0):
    """The shape sweep's calls on one shape: {mode: {module name: zero-argument fn}}.

    Both modules (MODULES) hold the same weights and read the same input.  "train": forward and backward,
    gradients reset first (the LSTM's share of a training step, as `forward_backward` for a rung); "infer":
    the forward alone under torch.no_grad().  Chapter 3."""
    torch.manual_seed(seed)
    layers = {"nn.LSTM": torch.nn.LSTM, "lstm_lab.LSTM": LSTM}
    arguments = (size["input_size"], size["hidden_size"], size["num_layers"])
    modules = {name: cls(*arguments).to(device) for name, cls in layers.items()}
    modules["lstm_lab.LSTM"].load_state_dict(modules["nn.LSTM"].state_dict())
    x = torch.randn(size["seq_len"], size["batch_size"], size["input_size"], device=device, requires_grad=True)

    def train(module):
        module.zero_grad(set_to_none=True)
        x.grad = None
        output, _ = module(x)
        output.sum().backward()

    def infer(module):
        with torch.no_grad():
            module(x)

    return {mode: {name: functools.partial(fn, module) for name, module in modules.items()}
            for mode, fn in (("train", train), ("infer", infer))}


def peak_memory_bytes(fn, device):
    """Peak bytes the CUDA allocator held above what it held before one call of fn(); None on a CPU, where
    no allocator counts what nn.LSTM's kernels allocate inside themselves.  Chapter 3."""
    if torch.device(device).type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def shape_row(size, device, repeats=5, warmup=1):
    """Both modules on one shape, each mode timed interleaved: {"size", "train": {name: summary}, "infer": ...},
    a summary being `summarize`'s row (median_ms, quartiles, ratio to nn.LSTM) plus "per_step_us" and, on a
    GPU, "peak_bytes".  Chapter 3."""
    row = {"size": dict(size)}
    for mode, calls in module_calls(size, device).items():
        summary = summarize(interleaved_times(calls, device, repeats, warmup), reference=MODULES[0])
        for name, fn in calls.items():
            summary[name]["per_step_us"] = 1e3 * summary[name]["median_ms"] / size["seq_len"]
            summary[name]["peak_bytes"] = peak_memory_bytes(fn, device)
        row[mode] = summary
    return row


def record_shapes(shape_names, device, repeats=5, warmup=1, tf32=False, argv=()):
    """The shape sweep's record: {"provenance", "results": {shape name: `shape_row`}}.  shape_names: keys of
    SHAPES (None or empty: all).  `python -m lstm_lab bench --shapes`.  Chapter 3."""
    device = torch.device(device)
    if device.type == "cuda":
        set_tf32(tf32)
    start = time.perf_counter()
    results = {name: shape_row(SHAPES[name], device, repeats, warmup) for name in (shape_names or SHAPES)}
    wall_seconds = round(time.perf_counter() - start, 3)
    return {"provenance": bench_provenance(argv, device, tf32, wall_seconds), "results": results}


def shape_table(results):
    """Rows for show_table: per shape, each mode's lstm_lab.LSTM time and its ratio to nn.LSTM.  Chapter 3."""
    rows = []
    for name, block in results.items():
        s = block["size"]
        row = {"shape": name, "T, B, H, layers": f"{s['seq_len']}, {s['batch_size']}, {s['hidden_size']}, "
                                                 f"{s['num_layers']}"}
        for mode in ("train", "infer"):
            ours = block[mode][MODULES[1]]
            row[f"{mode} ms"] = ours["median_ms"]
            row[f"{mode} x nn.LSTM"] = ours["ratio"]
            if ours.get("peak_bytes") is not None:
                row[f"{mode} memory x nn.LSTM"] = ours["peak_bytes"] / max(block[mode][MODULES[0]]["peak_bytes"], 1)
        rows.append(row)
    return rows


def shape_lines(results):
    """One printable line per shape: the book's LSTM against nn.LSTM, training and inference.  Chapter 3."""
    return [f"{row['shape']:>18}  T,B,H,L {row['T, B, H, layers']:>16}  train {row['train ms']:9.2f} ms "
            f"{row['train x nn.LSTM']:6.2f}x   infer {row['infer ms']:9.2f} ms {row['infer x nn.LSTM']:6.2f}x"
            for row in shape_table(results)]
