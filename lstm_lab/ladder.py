"""The speed ladder: seven ways to run a multi-layer LSTM, each the same function as `nn.LSTM`.

Every rung has one signature, `nn.LSTM`'s in functional form, so the tests and the benchmark treat
them alike:

    rung(x, h0, c0, weights) -> output, (h_n, c_n)
        x         (T, B, I)   time-major, as nn.LSTM without batch_first
        h0, c0    (L, B, H)   one state per layer
        weights   L tuples (weight_ih, weight_hh, bias_ih, bias_hh) in nn.LSTM's layout
                  (rows stacked in gate order i, f, g, o); `lstm_weights(lstm)` takes them from a module
        output    (T, B, H)   the top layer's h at every step;  h_n, c_n (L, B, H)

In the order chapter 3 builds them, roughly slowest first (measured there):

    naive      one matrix per gate: eight small matrix multiplies per step, autograd records every op
    fused      the four gates in one matrix multiply per step (PyTorch's weight layout)
    hoisted    the input projection for all steps in one big multiply before the loop
    bptt       a torch.autograd.Function: the hoisted forward without autograd's bookkeeping, and
               chapter 2's hand-derived backward pass (BPTT) over the whole sequence
    compiled   torch.compile of the hoisted layer: the loop is unrolled, so each new seq_len recompiles
    aten       nn.LSTM with oneDNN and cuDNN switched off: PyTorch's C++ loop of LSTM cells
    nn.LSTM    PyTorch's own kernel (`_VF.lstm`): oneDNN on CPU, cuDNN on an NVIDIA GPU
"""
import torch
import torch.nn.functional as F

from lstm_lab.cells import cell_update
from lstm_lab.compiling import compile_counting
from lstm_lab.lstm import lstm_layer


def lstm_weights(lstm):
    """The per-layer weight tuples of an `nn.LSTM` or `lstm_lab.LSTM` (unidirectional, with biases).

    Returns a list of num_layers tuples (weight_ih, weight_hh, bias_ih, bias_hh): the module's own
    parameters, not copies, so gradients computed through them land in the module.  Chapter 3."""
    if getattr(lstm, "bidirectional", False) or getattr(lstm, "proj_size", 0) or not lstm.bias:
        raise ValueError("lstm_weights expects a unidirectional LSTM with biases and no projection")
    names = ("weight_ih_l{}", "weight_hh_l{}", "bias_ih_l{}", "bias_hh_l{}")
    return [tuple(getattr(lstm, name.format(k)) for name in names) for k in range(lstm.num_layers)]


def stack_layers(layer, x, h0, c0, weights):
    """Run `layer` once per layer, each layer's output sequence feeding the next.

    layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh) -> (output, (h, c)) runs one layer.
    x (T, B, I); h0, c0 (L, B, H).  Returns output (T, B, H) and (h_n, c_n), each (L, B, H).  Chapter 3."""
    h_n, c_n = [], []
    for k, layer_weights in enumerate(weights):
        x, (h, c) = layer(x, h0[k], c0[k], *layer_weights)  # layer k reads layer k-1's h sequence
        h_n.append(h)
        c_n.append(c)
    return x, (torch.stack(h_n), torch.stack(c_n))


def naive_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One layer the way the equations read: a separate matrix per gate, eight multiplies per step.

    x (T, B, I); h, c (B, H).  Returns output (T, B, H) and the final (h, c).  Chapter 3."""
    W_ii, W_if, W_ig, W_io = weight_ih.chunk(4)  # (H, I) each, gate order i, f, g, o
    W_hi, W_hf, W_hg, W_ho = weight_hh.chunk(4)  # (H, H) each
    b_ii, b_if, b_ig, b_io = bias_ih.chunk(4)
    b_hi, b_hf, b_hg, b_ho = bias_hh.chunk(4)
    outputs = []
    for x_t in x:
        i = torch.sigmoid(F.linear(x_t, W_ii, b_ii) + F.linear(h, W_hi, b_hi))
        f = torch.sigmoid(F.linear(x_t, W_if, b_if) + F.linear(h, W_hf, b_hf))
        c_tilde = torch.tanh(F.linear(x_t, W_ig, b_ig) + F.linear(h, W_hg, b_hg))
        o = torch.sigmoid(F.linear(x_t, W_io, b_io) + F.linear(h, W_ho, b_ho))
        c = f * c + i * c_tilde
        h = o * torch.tanh(c)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


def fused_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One layer with the four gates stacked: two (B, ·) @ (·, 4H) multiplies per step.

    x (T, B, I); h, c (B, H).  Returns output (T, B, H) and the final (h, c).  Chapter 3."""
    outputs = []
    for x_t in x:
        gates = F.linear(x_t, weight_ih, bias_ih) + F.linear(h, weight_hh, bias_hh)  # (B, 4H)
        h, c = cell_update(gates, c)
        outputs.append(h)
    return torch.stack(outputs), (h, c)


# The hoisted rung is the package's own layer, the one `lstm_lab.LSTM` runs: the input projection of
# every step in one multiply before the loop, only W_hh h_{t-1} inside it.
hoisted_layer = lstm_layer


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer as a single autograd node: forward without a graph, backward by hand (BPTT).

    A torch port of `lstm_lab.numpy_lstm.lstm_forward` / `lstm_backward` (chapter 2): same equations,
    same names.  apply(x, h0, c0, W_ih, W_hh, b_ih, b_hh) -> (hs (T, B, H), h_T (B, H), c_T (B, H)).
    Introduced in chapter 3."""

    @staticmethod
    def forward(ctx, x, h0, c0, W_ih, W_hh, b_ih, b_hh):
        T, B, H = x.shape[0], x.shape[1], W_hh.shape[1]
        # input projection for every step at once; autograd is off inside forward, so the loop
        # below may write into preallocated tensors
        a_x = torch.addmm(b_ih + b_hh, x.reshape(T * B, -1), W_ih.t()).view(T, B, 4 * H)
        acts = x.new_empty(T, B, 4 * H)  # i, f, g, o after their nonlinearities, every step
        hs, cs = x.new_empty(T, B, H), x.new_empty(T, B, H)
        h, c = h0, c0
        for t in range(T):
            a = torch.addmm(a_x[t], h, W_hh.t())  # (B, 4H) pre-activations
            torch.sigmoid(a, out=acts[t])
            torch.tanh(a[:, 2 * H:3 * H], out=acts[t, :, 2 * H:3 * H])  # g uses tanh, not sigmoid
            i, f, g, o = acts[t].chunk(4, dim=1)
            c = f * c + i * g
            h = o * torch.tanh(c)
            hs[t], cs[t] = h, c
        ctx.save_for_backward(x, h0, c0, W_ih, W_hh, hs, cs, acts)  # all BPTT needs
        return hs, h, c

    @staticmethod
    def backward(ctx, dhs, dh_T, dc_T):
        x, h0, c0, W_ih, W_hh, hs, cs, acts = ctx.saved_tensors
        H = W_hh.shape[1]
        i, f, g, o = acts.chunk(4, dim=2)  # (T, B, H) each
        tanh_c = torch.tanh(cs)
        h_prev = torch.cat([h0[None], hs[:-1]])  # (T, B, H): the h each step read
        c_prev = torch.cat([c0[None], cs[:-1]])
        # the slopes of the nonlinearities, for every step at once: sigmoid' = s (1 - s), tanh' = 1 - tanh^2
        slopes = acts * (1 - acts)  # (T, B, 4H)
        slopes[..., 2 * H:3 * H] = 1 - g ** 2
        o_dtanh_c = o * (1 - tanh_c ** 2)  # dh_t/dc_t through h_t = o_t tanh(c_t)
        das = torch.empty_like(acts)  # (T, B, 4H): gradient w.r.t. the pre-activations a
        dh_next, dc_next = dh_T, dc_T  # gradients flowing back from step t + 1
        for t in reversed(range(x.shape[0])):
            dh = dhs[t] + dh_next  # h_t feeds both the output and the next step
            do = dh * tanh_c[t]
            dc = dc_next + dh * o_dtanh_c[t]  # c_t feeds h_t and c_{t+1}
            di, df, dg = dc * g[t], dc * c_prev[t], dc * i[t]
            dc_next = dc * f[t]  # the forget gate is the only path back to c_{t-1}
            torch.mul(torch.cat([di, df, dg, do], dim=1), slopes[t], out=das[t])  # through the nonlinearities
            dh_next = das[t] @ W_hh  # (B, 4H) @ (4H, H)
        # the sums over t of chapter 2 (dW_ih += da_t^T x_t, ...) as one multiply each, after the loop
        da = das.flatten(0, 1)  # (T*B, 4H)
        dW_ih = da.t() @ x.flatten(0, 1)  # (4H, T*B) @ (T*B, I)
        dW_hh = da.t() @ h_prev.flatten(0, 1)
        db = da.sum(dim=0)  # b_ih and b_hh enter as a sum: both get the same gradient
        dx = (da @ W_ih).view_as(x) if ctx.needs_input_grad[0] else None
        return dx, dh_next, dc_next, dW_ih, dW_hh, db, db


def bptt_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One layer through `LSTMFunction`.  Same signature and result as `hoisted_layer`.  Chapter 3."""
    hs, h, c = LSTMFunction.apply(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    return hs, (h, c)


def compiled_layer(backend="inductor"):
    """`hoisted_layer` compiled with torch.compile.  The Python loop over time is unrolled while tracing,
    so the compiled code is specialised to one seq_len: a new seq_len compiles again (and after
    torch._dynamo.config.recompile_limit versions, dynamo falls back to eager).  Chapter 3."""
    return torch.compile(hoisted_layer, backend=backend, dynamic=False)


def count_compilations(layer, seq_lens, batch_size=2, input_size=3, hidden_size=4):
    """How often torch.compile traces `layer` again as seq_len changes.

    Compiles `layer` with a counting backend (`lstm_lab.compiling.compile_counting`: it runs the traced graph
    as it is, no code generation, so this takes seconds), calls it once per entry of `seq_lens`, and returns a
    list of (seq_len, graphs traced so far).  Chapter 3; chapter 7 counts whole modules the same way."""
    compiled, counter = compile_counting(layer, dynamic=False)
    H = hidden_size
    weights = [torch.randn(4 * H, input_size), torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H)]
    counts = []
    for T in seq_lens:
        zeros = torch.zeros(batch_size, H)
        compiled(torch.randn(T, batch_size, input_size), zeros, zeros, *weights)
        counts.append((T, counter["graphs"]))
    return counts


def nn_lstm(x, h0, c0, weights):
    """PyTorch's own LSTM: the call `nn.LSTM.forward` makes after its checks (`torch._VF.lstm`).

    Same signature as every rung.  Dispatches to cuDNN on CUDA and to oneDNN (mkldnn) for float32
    on CPU, else to aten's C++ loop of LSTM cells (see `aten_lstm`).  Chapter 3."""
    flat = [w for layer_weights in weights for w in layer_weights]
    output, h_n, c_n = torch._VF.lstm(x, (h0, c0), flat, True, len(weights), 0.0, True, False, False)
    return output, (h_n, c_n)


def aten_lstm(x, h0, c0, weights):
    """`nn_lstm` with oneDNN (mkldnn) and cuDNN switched off for the call: what nn.LSTM runs where
    neither library applies (e.g. float64 on CPU) -- a C++ loop over time of aten LSTM cells: on CUDA
    each step is matrix multiplies plus one fused kernel for the gate arithmetic.  Same signature as every rung.  Chapter 3."""
    saved = torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled
    torch.backends.mkldnn.enabled = torch.backends.cudnn.enabled = False
    try:
        return nn_lstm(x, h0, c0, weights)  # the backward kernel is chosen here, in the forward
    finally:
        torch.backends.mkldnn.enabled, torch.backends.cudnn.enabled = saved


def make_problem(size, device="cpu", dtype=torch.float32, seed=0):
    """An nn.LSTM of the given sizes, an input that requires grad, a random state and output gradient.

    size: dict with seq_len, batch_size, input_size, hidden_size, num_layers (as lstm_lab.bench.SIZES).
    Returns {"lstm", "x" (T, B, I), "h0", "c0" (L, B, H), "dout" (T, B, H)}.  Chapter 3."""
    T, B, I, H, L = (size[k] for k in ("seq_len", "batch_size", "input_size", "hidden_size", "num_layers"))
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lstm = torch.nn.LSTM(I, H, L).to(device, dtype)
    draw = lambda *shape: torch.randn(*shape, generator=generator).to(device, dtype)
    return {"lstm": lstm, "x": draw(T, B, I).requires_grad_(), "h0": draw(L, B, H), "c0": draw(L, B, H),
            "dout": draw(T, B, H)}


def outputs_and_gradients(run, problem, seed=1):
    """{name: tensor} for output, h_n, c_n and the gradients of a random loss on all three w.r.t. x, h0,
    c0 and every parameter.  run(x, h0, c0, lstm) -> (output, (h_n, c_n)).  Chapter 3."""
    lstm = problem["lstm"]
    x, h0, c0 = (problem[k].detach().clone().requires_grad_() for k in ("x", "h0", "c0"))
    output, (h_n, c_n) = run(x, h0, c0, lstm)
    generator = torch.Generator().manual_seed(seed)
    loss = sum((t * torch.randn(t.shape, generator=generator).to(t)).sum() for t in (output, h_n, c_n))
    named = [("x", x), ("h0", h0), ("c0", c0)] + list(lstm.named_parameters())
    grads = torch.autograd.grad(loss, [t for _, t in named])
    return {"output": output, "h_n": h_n, "c_n": c_n, **{f"d {n}": g for (n, _), g in zip(named, grads)}}


def compare_with_nn_lstm(rung, size, dtype=torch.float64, seed=0):
    """Max |rung - nn.LSTM| over the output, final state and every gradient, same weights and input.

    rung: any function with the rungs' signature.  Returns {name: max abs difference}.  Chapter 3."""
    problem = make_problem(size, "cpu", dtype, seed)
    ours = outputs_and_gradients(lambda x, h0, c0, lstm: rung(x, h0, c0, lstm_weights(lstm)), problem)
    theirs = outputs_and_gradients(lambda x, h0, c0, lstm: lstm(x, (h0, c0)), problem)
    return {name: (ours[name] - theirs[name]).abs().max().item() for name in theirs}


def assert_same_as_nn_lstm(rung, size, tolerance=1e-10, dtype=torch.float64):
    """The equivalence test: raise AssertionError naming the worst quantity if `rung` differs from
    nn.LSTM by more than `tolerance` (float64: 1e-10 when the math is the same).  Chapter 3."""
    differences = compare_with_nn_lstm(rung, size, dtype)
    worst = max(differences, key=differences.get)
    if differences[worst] > tolerance:
        raise AssertionError(f"not the same function as nn.LSTM: output differs by {differences['output']:.3g}, "
                             f"{worst} by {differences[worst]:.3g} (tolerance {tolerance:g})")
    return differences


def rung(layer):
    """Turn a one-layer function into a rung: rung(x, h0, c0, weights) -> output, (h_n, c_n).  Chapter 3."""
    def run(x, h0, c0, weights):
        return stack_layers(layer, x, h0, c0, weights)
    run.__name__ = run.__qualname__ = getattr(layer, "__name__", "compiled_layer")
    return run


def ladder(compiled=True):
    """The rungs in order, slowest first: {name: rung}.  `compiled=False` leaves out torch.compile
    (its first call compiles for tens of seconds per seq_len on a small CPU).  Chapter 3."""
    rungs = {"naive": rung(naive_layer), "fused": rung(fused_layer), "hoisted": rung(hoisted_layer),
             "bptt": rung(bptt_layer)}
    if compiled:
        rungs["compiled"] = rung(compiled_layer())
    rungs.update({"aten": aten_lstm, "nn.LSTM": nn_lstm})
    return rungs
