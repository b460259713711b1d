"""How often `torch.compile` compiles an LSTM, and why: one graph per sequence length.

`torch.compile(model)` hands the model's Python code to TorchDynamo, which records the tensor operations it
runs into a graph and passes the graph to a backend (Inductor by default) to turn into fused kernels.  The
graph is only valid for what the recording assumed -- shapes, among others -- so each call first checks those
assumptions ("guards") and, when one fails, records and compiles again.  A Python loop over time steps, as in
`lstm_layer`, unrolls into the graph: T steps, T copies of the cell.  So the graph depends on T, every new
sequence length is a new compilation, and `dynamic=True` cannot help (the number of loop iterations must be a
plain integer).  Past `torch._dynamo.config.recompile_limit` compilations of one function, Dynamo gives up and
runs that function eagerly for any new shape.  For that reason Dynamo does not trace LSTM modules at all:
`nn.LSTM` and `lstm_lab.LSTM` (an nn.LSTM) run outside its graphs, at any length.

    counts = count_compilations(lstm_layer, [35, 35, 20, 35], ladder.layer_inputs())   # [1, 1, 2, 2]
    counts = count_compilations(LSTM(8, 16), lengths=[35, 20])   # [0, 0]: left out of the graphs

Introduced in chapter 3 (one layer function); chapter 7 compares the loop with whole modules.
"""
import logging

import torch
import torch._dynamo

__all__ = ["recompile_limit", "count_compilations", "window_lengths"]

QUIET_LOGGERS = ("torch._dynamo", "torch._guards")  # their warnings repeat what the counts show


def recompile_limit():
    """How many graphs Dynamo compiles for one function before it runs it eagerly:
    `torch._dynamo.config.recompile_limit`, called `cache_size_limit` before torch 2.7.  Chapter 7."""
    config = torch._dynamo.config
    return config.recompile_limit if hasattr(config, "recompile_limit") else config.cache_size_limit


def counting_backend(counter):
    """A torch.compile backend that compiles nothing: it adds 1 to counter["graphs"] for every graph Dynamo
    hands it and runs the graph as recorded.  Counting costs almost nothing, unlike compiling with Inductor."""
    def backend(graph_module, example_inputs):
        counter["graphs"] += 1
        return graph_module.forward
    return backend


def compile_counting(fn, **compile_kwargs):
    """(torch.compile(fn) with `counting_backend`, its counter {"graphs": n}), after resetting Dynamo's caches so
    the count starts from zero.  compile_kwargs go to torch.compile (e.g. dynamic=False).  Chapters 3 and 7."""
    torch._dynamo.reset()
    counter = {"graphs": 0}
    return torch.compile(fn, backend=counting_backend(counter), **compile_kwargs), counter


def sequence_inputs(input_size, batch_size=4):
    """make_inputs for `count_compilations` when the compiled function is an LSTM module: T -> (x,), x a random
    (T, batch_size, input_size) input.  Chapter 7."""
    return lambda T: (torch.randn(T, batch_size, input_size),)


def count_compilations(fn, lengths, make_inputs=None, mark_dynamic=False, **compile_kwargs):
    """Call torch.compile(fn) on inputs of each sequence length in turn; returns the graphs compiled so far after
    each call (a list as long as `lengths`).

    make_inputs(T) -> the tuple of arguments of one call, its first a (T, ...) sequence; by default
    `sequence_inputs(fn.input_size)`, for an LSTM module.  mark_dynamic=True marks the time dimension of that
    first argument as dynamic (`torch._dynamo.mark_dynamic`), which raises if the code specialises on T.
    compile_kwargs go to torch.compile (e.g. dynamic=False).  Dynamo's caches are reset first, so counts start
    from zero, and its log lines are held back while it runs.  Chapters 3 and 7."""
    make_inputs = make_inputs or sequence_inputs(fn.input_size)
    compiled, counter = compile_counting(fn, **compile_kwargs)
    counts = []
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:  # Dynamo logs the recompile limit and failed guards at length; the counts say it
        logger.setLevel(logging.CRITICAL)
    try:
        for T in lengths:
            inputs = make_inputs(T)
            if mark_dynamic:
                torch._dynamo.mark_dynamic(inputs[0], 0)  # dimension 0 is time
            compiled(*inputs)
            counts.append(counter["graphs"])
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
    return counts


def window_lengths(num_tokens, batch_size, seq_len):
    """The distinct window lengths of one epoch of `bptt_windows` over `num_tokens` tokens in `batch_size`
    streams: {length: how many windows}.  The last window is shorter unless seq_len divides the steps.  Chapter 7."""
    steps = num_tokens // batch_size - 1  # rows of batchify's output that have a next token
    lengths = {seq_len: steps // seq_len}
    if steps % seq_len:
        lengths[steps % seq_len] = 1
    return lengths
