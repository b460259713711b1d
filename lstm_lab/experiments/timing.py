"""Timing PyTorch code fairly, and the small speed questions chapter 3 answers with it.

Three rules every function here follows:
    synchronise   on a GPU the launch returns before the kernel ends: `torch.cuda.synchronize()` around
                  the timed region, or you time the launch and not the work
    warm up       the first call pays for allocation, library initialisation, compilation
    interleave    on a shared machine the load changes from second to second: time the candidates in
                  turn, round after round, and compare medians, never one long run of A and then of B
"""
import collections
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from lstm_lab.experiments.ladder import OneDNNMatmul, TorchMatmul, cpp_cell, tanh

__all__ = ["synchronize", "time_call", "cuda_event_ms", "interleaved_times", "unsynchronised_seconds", "event_seconds",
           "timer_comparison", "summarize", "matmul_operators", "library_kernel_times", "step_times", "thread_times",
           "count_kernels", "indexing_backward_times"]


def synchronize(device):
    """Wait for every queued kernel on `device` to finish (a no-op on CPU).  Chapter 3."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device, sync=synchronize):
    """Seconds one call of fn() takes, with sync(device) before and after.  Chapter 3.

    Before: the clock starts when the GPU has finished earlier work.  After: it stops when fn's kernels
    have run, not when they were queued (chapter 7 shows the difference)."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def cuda_event_ms(fn, warmup=3, repeats=10):
    """Median milliseconds of fn() on the current CUDA stream, measured by CUDA events after `warmup` calls.

    The events are recorded into the stream around each call, so they time the GPU's work alone; reading
    them waits for the GPU (`elapsed_time` needs both events finished).  Chapter 7."""
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        pairs.append((start, end))
    torch.cuda.synchronize()
    return statistics.median(start.elapsed_time(end) for start, end in pairs)


def interleaved_times(candidates, device, repeats=10, warmup=2):
    """Time several zero-argument callables round-robin: each round calls every candidate once.

    candidates: {name: fn}.  `warmup` untimed rounds come first.  The starting candidate rotates from
    round to round, so no candidate always goes first.  Returns {name: [seconds per round]}.
    Chapter 3."""
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    synchronize(device)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(time_call(candidates[name], device))
    return times


def unsynchronised_seconds(fn, device):
    """Seconds from calling fn() to its return, with no synchronisation after it: on a GPU, the time to queue its
    kernels.  The GPU is synchronised before the clock starts, so the queue is empty.  Chapter 7."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def event_seconds(fn, device):
    """Seconds the GPU spent between two CUDA events recorded around fn() (reading them waits for both).
    Chapter 7."""
    synchronize(device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def timer_comparison(fn, device, repeats=20, warmup=5):
    """fn() timed by several timers, round by round with the first timer rotating, after `warmup` calls: a
    `perf_counter` read without synchronisation, `time_call` (synchronised), and on a GPU CUDA events.

    Returns `summarize` rows, each with its ratio to time_call's median.  Chapter 7."""
    timers = {"perf_counter, no synchronisation": unsynchronised_seconds, "time_call (synchronised)": time_call}
    if torch.device(device).type == "cuda":
        timers["CUDA events"] = event_seconds
    for _ in range(warmup):
        fn()
    names = list(timers)
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(timers[name](fn, device))
    return summarize(times, reference="time_call (synchronised)")


def summarize(times, reference=None):
    """Median and quartiles (milliseconds) of each candidate, and its ratio to `reference`'s median.

    times: {name: [seconds]}.  Returns {name: {"median_ms", "q1_ms", "q3_ms", "ratio"}}.  Chapter 3."""
    out = {}
    for name, ts in times.items():
        q1, median, q3 = statistics.quantiles(ts, n=4, method="inclusive") if len(ts) > 1 else ts * 3
        out[name] = {"median_ms": 1e3 * median, "q1_ms": 1e3 * q1, "q3_ms": 1e3 * q3}
    if reference is not None:
        for row in out.values():
            row["ratio"] = row["median_ms"] / out[reference]["median_ms"]
    return out


def matmul_operators(batch_size, in_features, out_features, device, repeats=200):
    """`a @ W.t()`, `torch.matmul(a, W.t())`, `F.linear(a, W)` and `nn.Linear` on the same numbers.

    Returns {name: {"median_ms", ...}} from `summarize`, timed interleaved; all four run one GEMM.
    Chapter 3."""
    a = torch.randn(batch_size, in_features, device=device)
    W = torch.randn(out_features, in_features, device=device)
    linear = torch.nn.Linear(in_features, out_features, bias=False).to(device)
    with torch.no_grad():
        linear.weight.copy_(W)
    candidates = {"a @ W.t()": lambda: a @ W.t(), "torch.matmul(a, W.t())": lambda: torch.matmul(a, W.t()),
                  "F.linear(a, W)": lambda: F.linear(a, W), "nn.Linear": lambda: linear(a)}
    with torch.no_grad():
        times = interleaved_times(candidates, device, repeats, warmup=5)
    return summarize(times, reference="torch.matmul(a, W.t())")


def library_kernel_times(batch_size=20, hidden_size=200, seq_len=35, repeats=200):
    """What oneDNN, the library inside nn.LSTM on a CPU, does faster than plain torch operators there.

    Two interleaved comparisons on the CPU, at one step's sizes:
      products     one step's recurrent product a_x + h W_hh^T, (B, H) by (H, 4H): torch's `addmm` (the BLAS
                   torch was built with), oneDNN on the weight as it is, and oneDNN on a weight packed once
      tanh         torch.tanh, torch.sigmoid, and `lstm_lab.experiments.ladder.tanh` (2 sigmoid(2x) - 1), on a (T, B, H)
                   tensor: the tanh(c_t) of a whole sequence
    Returns {"products": summarize rows, ratio to addmm; "tanh": summarize rows, ratio to torch.tanh}.
    Needs oneDNN (`ladder.OneDNNMatmul.applies`).  Chapter 3."""
    H = hidden_size
    h, a_x = torch.randn(batch_size, H), torch.randn(batch_size, 4 * H)
    W_hh = torch.randn(4 * H, H)
    packed = OneDNNMatmul.prepare(W_hh, batch_size)
    products = {"torch addmm": lambda: TorchMatmul.linear(h, W_hh, a_x),
                "oneDNN": lambda: OneDNNMatmul.linear(h, W_hh, a_x),
                "oneDNN, W_hh packed": lambda: OneDNNMatmul.linear(h, packed, a_x)}
    c = torch.randn(seq_len, batch_size, H)
    tanhs = {"torch.tanh": lambda: torch.tanh(c), "torch.sigmoid": lambda: torch.sigmoid(c),
             "2 sigmoid(2x) - 1": lambda: tanh(c)}
    with torch.no_grad():
        return {"products": summarize(interleaved_times(products, "cpu", repeats, warmup=5), reference="torch addmm"),
                "tanh": summarize(interleaved_times(tanhs, "cpu", repeats, warmup=5), reference="torch.tanh")}


def step_times(batch_size=20, hidden_size=200, repeats=200):
    """One forward step of a layer, in its parts: what rung 7 moves into C++ and what it leaves.

    Interleaved on the CPU, float32, at one step's sizes (B, H):
      the product                 h_{t-1} W_hh^T, (B, H) by (H, 4H), by oneDNN on a packed weight where it
                                  applies (else torch): the same in rungs 6 and 7
      PyTorch operators (rung 6)  the gates' nonlinearities and the state update as `LSTMFunction` does them:
                                  one sigmoid, g from it, c_t, tanh(c_t), h_t; about ten operators
      one C++ loop (rung 7)       the same work, plus adding the input projection, in one call of
                                  `cpp_cell().forward_step`
    Returns summarize rows, ratio to the product.  Compiles the C++ loop on first use.  Chapter 3."""
    B, H = batch_size, hidden_size
    matmul = OneDNNMatmul if OneDNNMatmul.applies(torch.empty(0)) else TorchMatmul
    h, c, W_hh = torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, H)
    W, a_x, a = matmul.prepare(W_hh, B), torch.randn(B, 4 * H), torch.randn(B, 4 * H)
    acts, c_t, h_t, tanh_c = torch.empty(B, 4 * H), torch.empty(B, H), torch.empty(B, H), torch.empty(B, H)
    i, f, g, o = acts.chunk(4, dim=1)

    a_sum = a + a_x  # rung 6 adds a_x inside its product: its operators start from the sum
    a_sum[:, 2 * H:3 * H] *= 2  # g's pre-activation doubled, as LSTMFunction does once per sequence

    def python_operators():  # the body of LSTMFunction's forward loop, after its product
        torch.sigmoid(a_sum, out=acts)
        g.mul_(2).sub_(1)
        torch.addcmul(f * c, i, g, out=c_t)
        torch.mul(o, tanh(c_t), out=h_t)

    cell = cpp_cell()
    python_operators()
    h_python = h_t.clone()
    cell.forward_step(a, a_x, c, acts, c_t, h_t, tanh_c)
    torch.testing.assert_close(h_t, h_python)  # both candidates compute the same step
    candidates = {"the product": lambda: matmul.linear(h, W),
                  "PyTorch operators (rung 6)": python_operators,
                  "one C++ loop (rung 7)": lambda: cell.forward_step(a, a_x, c, acts, c_t, h_t, tanh_c)}
    with torch.no_grad():
        return summarize(interleaved_times(candidates, "cpu", repeats, warmup=5), reference="the product")


def thread_times(fn, thread_counts=(1, 2), repeats=10, warmup=2):
    """Median seconds of fn() on CPU with each number of intra-op threads, interleaved round by round.

    Restores the thread count it found.  Returns {threads: {"median_ms", ...}}.  Chapter 3."""
    before = torch.get_num_threads()
    times = {n: [] for n in thread_counts}
    try:
        for r in range(warmup + repeats):
            for n in thread_counts:
                torch.set_num_threads(n)
                seconds = time_call(fn, "cpu")
                if r >= warmup:
                    times[n].append(seconds)
    finally:
        torch.set_num_threads(before)
    return summarize(times)


class _KernelCounter(TorchDispatchMode):
    """Counts the aten operators that reach a kernel, skipping views (they move no data)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view and func.overloadpacket is not torch.ops.aten.detach:
            self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def count_kernels(fn):
    """Run fn() and count the aten operators it dispatches, forward and backward, views left out.

    On a GPU each one is (at least) one kernel launch.  Returns a Counter {op name: calls}.  Chapters 1 and 3."""
    with _KernelCounter() as counter:
        fn()
    return counter.counts


def indexing_backward_times(seq_len, batch_size, features, device, repeats=10):
    """Backward through reading a (T, B, F) tensor step by step: `x[t]` in a loop vs `for x_t in x`.

    Each `x[t]` has its own backward, which builds a zero gradient of the full (T, B, F) shape and
    copies one step into it, so reading all T steps costs O(T^2 B F); iterating splits the tensor once
    (`unbind`) and its backward stacks the T gradients.  Returns `summarize` rows.  Chapter 3."""
    x = torch.randn(seq_len, batch_size, features, device=device, requires_grad=True)
    candidates = {"x[t] for t in range(T)": lambda: sum(x[t].sum() for t in range(seq_len)).backward(),
                  "for x_t in x": lambda: sum(x_t.sum() for x_t in x).backward()}
    return summarize(interleaved_times(candidates, device, repeats, warmup=2), reference="for x_t in x")
