"""The speed ladder: nine ways to run a multi-layer LSTM, each the same function as `nn.LSTM`.

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
    onednn     the bptt rung with its matrix products done by oneDNN, the library nn.LSTM uses on a CPU,
               W_hh packed once per sequence, and tanh as 2 sigmoid(2x) - 1 (CPU only)
    cpp        the onednn rung with each step's elementwise work, forward and backward, in one C++ loop
               (csrc/lstm_cell.cpp, compiled on first use; CPU only)
    aten       nn.LSTM with oneDNN and cuDNN switched off: PyTorch's C++ loop of LSTM cells
    nn.LSTM    PyTorch's own kernel (`_VF.lstm`): oneDNN on CPU, cuDNN on an NVIDIA GPU
"""
import contextlib
import functools
import hashlib
import io
import os
import platform
import shutil
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

# Imported quietly: a CUDA build of torch on a machine without a GPU prints "No CUDA runtime is found" when
# cpp_extension is imported, which says nothing about building this CPU code (and every command would print it).
with contextlib.redirect_stderr(io.StringIO()):
    from torch.utils import cpp_extension

from lstm_lab.cells import cell_update
from lstm_lab.files import sha256_of, try_lock, wait_lock, write_bytes
from lstm_lab.lstm import lstm_layer

__all__ = ["CPP_SOURCE", "lstm_weights", "stack_layers", "naive_layer", "fused_layer", "tanh", "TorchMatmul",
           "OneDNNMatmul", "parameter_gradients", "LSTMFunction", "bptt_layer", "onednn_layer", "cpp_flags",
           "build_cpp", "cpp_cell", "cpp_available", "CppLSTMFunction", "cpp_layer", "compiled_layer", "layer_inputs",
           "nn_lstm", "aten_lstm", "make_problem", "compare_with_nn_lstm", "assert_same_as_nn_lstm", "rung", "ladder"]


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


def tanh(x):
    """tanh(x) as 2 sigmoid(2x) - 1, the same function to float rounding.  `torch.tanh` runs at several
    times `torch.sigmoid`'s cost per element in some CPU builds (chapter 3 measures it); oneDNN's LSTM has
    its own fast tanh.  Chapter 3."""
    return torch.sigmoid(2 * x).mul_(2).sub_(1)


class TorchMatmul:
    """The matrix products of `LSTMFunction` done by torch's own `addmm`: MKL (or OpenBLAS) on CPU, cuBLAS
    on a GPU.  Every product the layer needs has `F.linear`'s form, a @ b.T (+ add).  Chapter 3."""

    @staticmethod
    def prepare(weight, rows):
        """The weight as `linear` wants it for inputs of `rows` rows: as it is."""
        return weight

    @staticmethod
    def linear(a, b, add=None):
        """a @ b.T, plus `add` (a bias vector or a full matrix) if given."""
        return a @ b.t() if add is None else torch.addmm(add, a, b.t())


class OneDNNMatmul:
    """The same products done by oneDNN, the library nn.LSTM itself runs on a CPU, in float32.

    `prepare` packs a weight once into oneDNN's blocked layout for inputs of `rows` rows, as nn.LSTM does
    with W_hh before its loop; each step's product then reads the packed copy.  Chapter 3 measures why
    this matters: on some CPUs torch's `addmm` runs these products well below oneDNN's speed."""

    @staticmethod
    def applies(x):
        """Whether this class does the products for tensors like x: float32 on a CPU, with oneDNN."""
        return (x.device.type == "cpu" and x.dtype == torch.float32
                and torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"))

    @staticmethod
    def prepare(weight, rows):
        """The weight packed into oneDNN's layout for inputs of `rows` rows (an opaque oneDNN tensor)."""
        return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)

    @staticmethod
    def linear(a, b, add=None):
        """a @ b.T, plus `add` (a bias vector or a full matrix) if given; b as it is or from `prepare`."""
        if add is None or add.dim() == 1:  # no addend, or a bias vector
            return torch.ops.mkldnn._linear_pointwise(a, b, add, "none", [], "")
        return torch.ops.mkldnn._linear_pointwise.binary(a, add, b, None, "add")  # + a full matrix, fused


def input_projection(x, W_ih, b_ih, b_hh, matmul):
    """W_ih x_t + b_ih + b_hh for every step at once, one product before the loop (rung 3's hoisting).

    x (T, B, I); returns (T, B, 4H).  `matmul` as in `LSTMFunction`.  Chapter 3."""
    T, B = x.shape[0], x.shape[1]
    return matmul.linear(x.reshape(T * B, -1), W_ih, b_ih + b_hh).view(T, B, -1)


def parameter_gradients(das, x, h_prev, W_ih, matmul, input_grad=True):
    """The gradients a layer's backward pass returns besides dh_0 and dc_0, from every step's da at once.

    das (T, B, 4H): dL/da_t for every step; x (T, B, I) and h_prev (T, B, H): what each step read.
    Chapter 2's sums over t (dW_ih += da_t^T x_t, ...) become one product each, after the loop.
    Returns (dx or None if not input_grad, dW_ih, dW_hh, db).  Chapter 3."""
    da = das.flatten(0, 1)  # (T*B, 4H)
    # dW = da^T x computed as (x^T da)^T with the transposes passed as views, so any copy the product needs
    # is made by the library; measured a few percent faster for the cpp rung than copying da^T ourselves
    dW_ih = matmul.linear(x.flatten(0, 1).t(), da.t()).t()  # (I, T*B) @ (T*B, 4H), transposed
    dW_hh = matmul.linear(h_prev.flatten(0, 1).t(), da.t()).t()
    db = da.sum(dim=0)  # b_ih and b_hh enter as a sum: both get the same gradient
    dx = matmul.linear(da, W_ih.t()).view_as(x) if input_grad else None
    return dx, dW_ih, dW_hh, db


class LSTMFunction(torch.autograd.Function):
    """One LSTM layer as a single autograd node: forward without a graph, backward by hand (BPTT).

    A torch port of `lstm_lab.numpy_lstm.lstm_forward` / `lstm_backward` (chapter 2): same equations,
    same names.  apply(x, h0, c0, W_ih, W_hh, b_ih, b_hh, matmul=TorchMatmul) -> (hs (T, B, H),
    h_T (B, H), c_T (B, H)).  `matmul` says who does the matrix products (`TorchMatmul` or
    `OneDNNMatmul`); the arithmetic is the same.  Introduced in chapter 3."""

    @staticmethod
    def forward(ctx, x, h0, c0, W_ih, W_hh, b_ih, b_hh, matmul=TorchMatmul):
        T, B, H = x.shape[0], x.shape[1], W_hh.shape[1]
        # input projection for every step at once; autograd is off inside forward, so the loop
        # below may write straight into preallocated tensors (out=), with no copies
        a_x = input_projection(x, W_ih, b_ih, b_hh, matmul)
        # g uses tanh, computed as 2 sigmoid(2a) - 1 (see `tanh`): with g's pre-activation doubled (its
        # rows of W_hh and its part of a_x), one sigmoid serves all four gates
        a_x[..., 2 * H:3 * H] *= 2
        W = matmul.prepare(torch.cat([W_hh[:2 * H], 2 * W_hh[2 * H:3 * H], W_hh[3 * H:]]), B)  # once per sequence
        acts = x.new_empty(T, B, 4 * H)  # i, f, g, o after their nonlinearities, every step
        hs, cs = x.new_empty(T, B, H), x.new_empty(T, B, H)
        h, c = h0, c0
        # one view per step of every tensor the loop reads or writes, taken once (zip unbinds each along T)
        for a_x_t, acts_t, (i, f, g, o), h_t, c_t in zip(a_x, acts, zip(*acts.chunk(4, dim=2)), hs, cs):
            torch.sigmoid(matmul.linear(h, W, a_x_t), out=acts_t)  # W_hh h_{t-1} + a_x_t, then i, f, o
            g.mul_(2).sub_(1)  # ... and g = 2 sigmoid(2a) - 1
            c = torch.addcmul(f * c, i, g, out=c_t)  # c_t = f c_{t-1} + i g
            h = torch.mul(o, tanh(c), out=h_t)  # h_t = o tanh(c_t)
        ctx.save_for_backward(x, h0, c0, W_ih, W_hh, hs, cs, acts)  # all BPTT needs
        ctx.matmul = matmul
        return hs, h, c

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative raises, not lies
    def backward(ctx, dhs, dh_T, dc_T):
        x, h0, c0, W_ih, W_hh, hs, cs, acts = ctx.saved_tensors
        matmul = ctx.matmul
        B, H = x.shape[1], W_hh.shape[1]
        i, f, g, o = acts.chunk(4, dim=2)  # (T, B, H) each
        tanh_c = tanh(cs)
        h_prev = torch.cat([h0[None], hs[:-1]])  # (T, B, H): the h each step read
        c_prev = torch.cat([c0[None], cs[:-1]])
        # Everything in chapter 2's step that does not depend on the incoming gradients, for every step at
        # once, the slopes of the nonlinearities folded in (sigmoid' = s (1 - s), tanh' = 1 - tanh^2):
        #   da_i = dc g sigmoid'   da_f = dc c_{t-1} sigmoid'   da_g = dc i tanh'   da_o = dh tanh(c_t) sigmoid'
        dc_to_ifg = torch.stack([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g ** 2)], dim=2)  # (T, B, 3, H)
        dh_to_o = tanh_c * o * (1 - o)
        dh_to_c = o * (1 - tanh_c ** 2)  # dh_t/dc_t through h_t = o_t tanh(c_t)
        das = torch.empty_like(acts)  # (T, B, 4H): gradient w.r.t. the pre-activations a
        da_ifg, da_o = das[..., :3 * H].unflatten(2, (3, H)), das[..., 3 * H:]  # views into das
        W_back = matmul.prepare(W_hh.t(), B)  # dh_{t-1} = da_t @ W_hh
        dh_next, dc_next = dh_T, dc_T  # gradients flowing back from step t + 1
        steps = zip(dhs, f, dh_to_c, dh_to_o, dc_to_ifg, das, da_ifg, da_o)  # one view per step, as in forward
        for dh_out, f_t, dh_to_c_t, dh_to_o_t, dc_to_ifg_t, da_t, da_ifg_t, da_o_t in reversed(list(steps)):
            dh = dh_out + dh_next  # h_t feeds both the output and the next step
            dc = torch.addcmul(dc_next, dh, dh_to_c_t)  # c_t feeds h_t and c_{t+1}
            torch.mul(dc[:, None], dc_to_ifg_t, out=da_ifg_t)
            torch.mul(dh, dh_to_o_t, out=da_o_t)
            dc_next = dc * f_t  # the forget gate is the only path back to c_{t-1}
            dh_next = matmul.linear(da_t, W_back)  # (B, 4H) @ (4H, H)
        dx, dW_ih, dW_hh, db = parameter_gradients(das, x, h_prev, W_ih, matmul, ctx.needs_input_grad[0])
        return dx, dh_next, dc_next, dW_ih, dW_hh, db, db, None


def bptt_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One layer through `LSTMFunction`.  Same signature and result as `hoisted_layer`.  Chapter 3."""
    hs, h, c = LSTMFunction.apply(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh)
    return hs, (h, c)


def onednn_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """`bptt_layer` with its matrix products done by oneDNN (`OneDNNMatmul`) where it applies (float32 on a
    CPU), else by torch as in `bptt_layer`.  Same signature and result.  Chapter 3."""
    matmul = OneDNNMatmul if OneDNNMatmul.applies(x) else TorchMatmul
    hs, h, c = LSTMFunction.apply(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, matmul)
    return hs, (h, c)


CPP_SOURCE = Path(__file__).parent / "csrc" / "lstm_cell.cpp"


def cpp_flags(fast_math=True):
    """The compiler flags `cpp_cell` builds with: optimised, tuned for this CPU on x86 (-march=native), and
    with fast-math, which lets the compiler call a vectorised exp.  fast_math=False leaves that out (chapter
    3's exercise 5 builds the same file both ways).  Chapter 3."""
    if os.name == "nt":  # Microsoft's compiler
        return ["/O2"] + (["/fp:fast"] if fast_math else [])
    native = ["-march=native"] if platform.machine() == "x86_64" else []
    return ["-O3"] + (["-ffast-math"] if fast_math else []) + native


def build_cpp(name, source, flags):
    """Build (or load the earlier build of) the C++ file `source` as a Python module, safely shared between
    processes and checkouts.  Chapter 3.

    The build folder is torch's for `name` plus a hash of the source and where it is, the flags, the machine
    and torch's version, so an edited source or another kind of machine never reuses a stale build, and two
    checkouts do not rebuild each other's (torch's build file names the source's path, and a build from another
    path starts again).  One process builds at a time: the others wait (saying so) on a file lock the operating
    system releases when its holder ends, however it ends.  torch's own lock file, which a builder killed mid-build leaves behind (and which makes
    every later `cpp_extension.load` wait forever), is removed once we hold our lock, since no builder can be
    using it then.  The sha256 of every library built is recorded beside it, and a library that does not match
    its record (truncated by a full disk or a killed copy: loading it would end the process with a bus error) is
    rebuilt, saying so."""
    key = hashlib.sha256(Path(source).read_bytes() + str(Path(source).resolve()).encode() + " ".join(flags).encode()
                         + platform.machine().encode() + torch.__version__.encode()).hexdigest()[:12]
    folder = Path(cpp_extension._get_build_directory(f"{name}_{key}", verbose=False))  # torch's folder for it
    library = folder / f"{name}_{key}{'.pyd' if os.name == 'nt' else '.so'}"  # what torch's build makes
    record = folder / "built.sha256"  # the sha256 of the library as it was built
    with open(folder / "build.flock", "a+") as lock:
        if not try_lock(lock):
            print(f"waiting for another process that is building {Path(source).name} in {folder}", file=sys.stderr,
                  flush=True)
            wait_lock(lock)
        (folder / "lock").unlink(missing_ok=True)  # torch's lock of a killed build: nobody else builds now
        if library.exists() and (not record.exists() or record.read_text().strip() != sha256_of(library)):
            print(f"the cached build of {Path(source).name} in {folder} is not the library that was built "
                  "(damaged, or built before its sha256 was recorded): building it again", file=sys.stderr, flush=True)
            for product in folder.iterdir():
                if product.name not in ("build.flock", "build.ninja"):
                    product.unlink()
        before = library.stat().st_mtime_ns if library.exists() else None
        module = cpp_extension.load(name=f"{name}_{key}", sources=[str(source)], extra_cflags=flags,
                                    build_directory=str(folder))
        if library.exists() and library.stat().st_mtime_ns != before:  # built just now: what a later load must find
            write_bytes(record, sha256_of(library).encode())
        return module


@functools.cache
def cpp_cell():
    """The C++ step kernels of csrc/lstm_cell.cpp, compiled on the first call (tens of seconds; `build_cpp`).
    torch keeps the build in its extensions folder ($TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions
    on Linux), so later processes only load it.  The build is tuned for the CPU it runs on (-march=native on
    x86).  Needs a C++ compiler and ninja (`pip install ninja`).  Returns the module with `forward_step` and
    `backward_step`.  Chapter 3."""
    try:
        return build_cpp("lstm_lab_cell", CPP_SOURCE, cpp_flags())
    except (RuntimeError, OSError, ImportError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"the cpp rung needs a C++ compiler and ninja to build {CPP_SOURCE.name}: {message}") \
            from error


def cpp_available():
    """Whether this machine has what `cpp_cell` needs, ninja and a C++ compiler on PATH (checked without
    building anything).  Chapter 3."""
    compiler = os.environ.get("CXX", "cl" if os.name == "nt" else "c++")  # the compiler torch's build uses
    return shutil.which("ninja") is not None and shutil.which(compiler) is not None


class CppLSTMFunction(torch.autograd.Function):
    """`LSTMFunction` with each step's elementwise work done by one C++ loop (`cpp_cell`), forward and
    backward; the matrix products stay in Python, done by `matmul` as in `LSTMFunction`.

    apply(x, h0, c0, W_ih, W_hh, b_ih, b_hh, matmul=TorchMatmul) -> (hs (T, B, H), h_T, c_T), float32 or
    float64 on a CPU; h_T and c_T are views of the last step of hs and cs, as in `LSTMFunction`.  The
    backward step needs no precomputed factors: the C++ loop reads the saved gates, cell states and
    tanh(c_t) and does all of chapter 2's step but the product.  Chapter 3."""

    @staticmethod
    def forward(ctx, x, h0, c0, W_ih, W_hh, b_ih, b_hh, matmul=TorchMatmul):
        cell = cpp_cell()
        T, B, H = x.shape[0], x.shape[1], W_hh.shape[1]
        a_x = input_projection(x, W_ih, b_ih, b_hh, matmul)
        W = matmul.prepare(W_hh, B)  # once per sequence
        acts = x.new_empty(T, B, 4 * H)  # i, f, g, o after their nonlinearities, every step
        hs, cs, tanh_cs = x.new_empty(T, B, H), x.new_empty(T, B, H), x.new_empty(T, B, H)
        h, c = h0.contiguous(), c0.contiguous()
        for a_x_t, acts_t, h_t, c_t, tanh_c_t in zip(a_x, acts, hs, cs, tanh_cs):
            cell.forward_step(matmul.linear(h, W), a_x_t, c, acts_t, c_t, h_t, tanh_c_t)  # writes the last four
            h, c = h_t, c_t
        ctx.save_for_backward(x, h0, c0, W_ih, W_hh, hs, cs, acts, tanh_cs)
        ctx.matmul = matmul
        return hs, h, c

    @staticmethod
    @once_differentiable  # the backward is not itself differentiable: a second derivative raises, not lies
    def backward(ctx, dhs, dh_T, dc_T):
        x, h0, c0, W_ih, W_hh, hs, cs, acts, tanh_cs = ctx.saved_tensors
        matmul, cell = ctx.matmul, cpp_cell()
        B = x.shape[1]
        das = torch.empty_like(acts)  # (T, B, 4H): gradient w.r.t. the pre-activations a
        W_back = matmul.prepare(W_hh.t(), B)  # dh_{t-1} = da_t @ W_hh
        dh_next = dh_T.contiguous()  # dL/dh_t through step t + 1
        dc = dc_T.clone(memory_format=torch.contiguous_format)  # dL/dc_t through step t + 1; updated in place
        c_prevs = [c0.contiguous(), *cs[:-1]]  # the c each step read
        steps = zip(dhs.contiguous(), acts, c_prevs, tanh_cs, das)
        for dh_out, acts_t, c_prev, tanh_c_t, da_t in reversed(list(steps)):
            cell.backward_step(dh_next, dh_out, dc, acts_t, c_prev, tanh_c_t, da_t)  # writes da_t and dc
            dh_next = matmul.linear(da_t, W_back)  # (B, 4H) @ (4H, H)
        h_prev = torch.cat([h0[None], hs[:-1]])  # (T, B, H): the h each step read
        dx, dW_ih, dW_hh, db = parameter_gradients(das, x, h_prev, W_ih, matmul, ctx.needs_input_grad[0])
        return dx, dh_next, dc, dW_ih, dW_hh, db, db, None


def cpp_layer(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh):
    """One layer through `CppLSTMFunction`, its products done by oneDNN where it applies (float32 on a CPU)
    and by torch otherwise.  Same signature and result as `bptt_layer`.  Chapter 3."""
    matmul = OneDNNMatmul if OneDNNMatmul.applies(x) else TorchMatmul
    hs, h, c = CppLSTMFunction.apply(x, h, c, weight_ih, weight_hh, bias_ih, bias_hh, matmul)
    return hs, (h, c)


def compiled_layer(backend="inductor"):
    """`hoisted_layer` compiled with torch.compile.  The Python loop over time is unrolled while tracing,
    so the compiled code is specialised to one seq_len: a new seq_len compiles again (and after
    torch._dynamo.config.recompile_limit versions, dynamo falls back to eager).  Chapter 3."""
    return torch.compile(hoisted_layer, backend=backend, dynamic=False)


def layer_inputs(batch_size=2, input_size=3, hidden_size=4):
    """make_inputs for `lstm_lab.experiments.compiling.count_compilations` when the compiled function is one layer
    (`hoisted_layer`'s signature): T -> (x (T, B, I), h, c (B, H), weight_ih, weight_hh, bias_ih, bias_hh), x
    random and the state zero, the same random weights for every T.  Chapter 3 counts how often
    `compiled_layer` traces again as seq_len changes."""
    H = hidden_size
    weights = (torch.randn(4 * H, input_size), torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H))
    zeros = torch.zeros(batch_size, H)
    return lambda T: (torch.randn(T, batch_size, input_size), zeros, zeros, *weights)


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

    size: dict with seq_len, batch_size, input_size, hidden_size, num_layers (as lstm_lab.experiments.bench.SIZES).
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


def ladder(compiled=True, device="cpu"):
    """The rungs in order, slowest first: {name: rung}.  `compiled=False` leaves out torch.compile
    (its first call compiles for tens of seconds per seq_len on a small CPU).  The onednn rung is there
    only on a CPU with oneDNN: elsewhere it would be the bptt rung again; the cpp rung only on a CPU with a
    C++ compiler and ninja (its first call compiles it).  Chapter 3."""
    rungs = {"naive": rung(naive_layer), "fused": rung(fused_layer), "hoisted": rung(hoisted_layer),
             "bptt": rung(bptt_layer)}
    if compiled:
        rungs["compiled"] = rung(compiled_layer())
    if torch.device(device).type == "cpu":
        if OneDNNMatmul.applies(torch.empty(0)):
            rungs["onednn"] = rung(onednn_layer)
        if cpp_available():  # the C++ loop reads CPU memory only, and needs a compiler (its first call builds it)
            rungs["cpp"] = rung(cpp_layer)
    rungs.update({"aten": aten_lstm, "nn.LSTM": nn_lstm})
    return rungs
