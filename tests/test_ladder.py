"""Every rung of the speed ladder is nn.LSTM: outputs, final state and every gradient (chapter 3)."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import lstm_lab.experiments.ladder as ladder_module
from lstm_lab.experiments.bench import forward_backward
from lstm_lab.experiments.compiling import count_compilations
from lstm_lab.experiments.ladder import (LSTMFunction, assert_same_as_nn_lstm, bptt_layer, compare_with_nn_lstm,
                                         compiled_layer, ladder, layer_inputs, lstm_weights, make_problem, rung)
from lstm_lab.lstm import LSTM, lstm_layer

SIZES = [  # seq_len 1, batch 1, one to three layers, input_size != hidden_size
    {"seq_len": 1, "batch_size": 1, "input_size": 3, "hidden_size": 4, "num_layers": 1},
    {"seq_len": 1, "batch_size": 2, "input_size": 2, "hidden_size": 3, "num_layers": 2},
    {"seq_len": 5, "batch_size": 1, "input_size": 4, "hidden_size": 6, "num_layers": 2},
    {"seq_len": 6, "batch_size": 3, "input_size": 5, "hidden_size": 4, "num_layers": 3},
]
FLOAT32_SIZE = {"seq_len": 7, "batch_size": 4, "input_size": 8, "hidden_size": 16, "num_layers": 2}
EAGER_RUNGS = list(ladder(compiled=False))


@pytest.mark.parametrize("name", EAGER_RUNGS)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: "T{seq_len}B{batch_size}I{input_size}H{hidden_size}L{num_layers}"
                         .format(**s))
def test_rung_equals_nn_lstm_float64(name, size):
    differences = assert_same_as_nn_lstm(ladder(compiled=False)[name], size, tolerance=1e-10)
    assert len(differences) == 6 + 4 * size["num_layers"]  # output, h_n, c_n, dx, dh0, dc0, 4 per layer


@pytest.mark.parametrize("name", EAGER_RUNGS)
def test_rung_equals_nn_lstm_float32(name):
    assert_same_as_nn_lstm(ladder(compiled=False)[name], FLOAT32_SIZE, tolerance=1e-4, dtype=torch.float32)


@pytest.mark.parametrize("size", SIZES[:3], ids=str)
def test_compiled_rung_traces_to_the_same_function(size):
    """aot_eager: dynamo traces and AOTAutograd builds the backward graph, without C++ code generation."""
    assert_same_as_nn_lstm(rung(compiled_layer("aot_eager")), size, tolerance=1e-10)


def test_compiled_rung_with_inductor_equals_nn_lstm():
    """The real compiler (C++ code generation on CPU): one small size, since compiling takes seconds."""
    size = {"seq_len": 3, "batch_size": 2, "input_size": 4, "hidden_size": 5, "num_layers": 2}
    assert_same_as_nn_lstm(ladder()["compiled"], size, tolerance=1e-4, dtype=torch.float32)


def test_comparison_agrees_with_a_direct_autograd_check():
    """The checker itself, against a hand-made comparison: hoisted layer vs the nn.LSTM module."""
    problem = make_problem(SIZES[2], dtype=torch.float64)
    lstm, x = problem["lstm"], problem["x"]
    ours = rung(lstm_layer)(x, problem["h0"], problem["c0"], lstm_weights(lstm))[0]
    theirs = lstm(x, (problem["h0"], problem["c0"]))[0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-12)
    ours_grad = torch.autograd.grad(ours.square().sum(), lstm.weight_hh_l1)[0]
    theirs_grad = torch.autograd.grad(theirs.square().sum(), lstm.weight_hh_l1)[0]
    torch.testing.assert_close(ours_grad, theirs_grad, rtol=0, atol=1e-12)


def test_a_wrong_gradient_fails_the_check():
    def broken(x, h0, c0, weights):
        out, (h, c) = rung(lstm_layer)(x, h0, c0, weights)
        return out, (h, c.detach())  # cuts the gradient path from c_n

    with pytest.raises(AssertionError, match="not the same function as nn.LSTM"):
        assert_same_as_nn_lstm(broken, SIZES[2])


def test_hand_written_backward_passes_gradcheck():
    T, B, I, H = 4, 2, 3, 5
    torch.manual_seed(1)
    inputs = [torch.randn(*s, dtype=torch.float64, requires_grad=True)
              for s in [(T, B, I), (B, H), (B, H), (4 * H, I), (4 * H, H), (4 * H,), (4 * H,)]]
    assert torch.autograd.gradcheck(LSTMFunction.apply, inputs)


def test_bptt_layer_skips_the_input_gradient_when_not_needed():
    problem = make_problem(SIZES[2], dtype=torch.float64)
    x, h0, c0 = problem["x"].detach(), problem["h0"][0], problem["c0"][0]
    weights = lstm_weights(problem["lstm"])[0]
    ours = torch.autograd.grad(bptt_layer(x, h0, c0, *weights)[0].sum(), weights)
    theirs = torch.autograd.grad(lstm_layer(x, h0, c0, *weights)[0].sum(), weights)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_compare_reports_every_quantity():
    differences = compare_with_nn_lstm(ladder(compiled=False)["bptt"], SIZES[1])
    assert list(differences)[:6] == ["output", "h_n", "c_n", "d x", "d h0", "d c0"]
    assert "d weight_hh_l1" in differences and max(differences.values()) < 1e-10


def test_lstm_weights_are_the_modules_own_parameters():
    lab = LSTM(3, 4, num_layers=2)
    weights = lstm_weights(lab)
    assert len(weights) == 2 and all(len(w) == 4 for w in weights)
    assert weights[1][0] is lab.weight_ih_l1


@pytest.mark.parametrize("kwargs", [{"bidirectional": True}, {"bias": False}, {"proj_size": 2}])
def test_lstm_weights_rejects_other_lstms(kwargs):
    with pytest.raises(ValueError, match="unidirectional LSTM with biases"):
        lstm_weights(torch.nn.LSTM(3, 4, **kwargs))


def test_every_new_seq_len_compiles_again():
    counts = count_compilations(lstm_layer, [3, 3, 4, 5, 3], layer_inputs(), dynamic=False)
    assert counts == [1, 1, 2, 3, 3]


def test_layer_inputs_fit_a_layer_at_every_length():
    make_inputs = layer_inputs(batch_size=2, input_size=3, hidden_size=4)
    for T in (1, 5):
        output, (h, c) = lstm_layer(*make_inputs(T))
        assert output.shape == (T, 2, 4) and h.shape == c.shape == (2, 4)
    assert make_inputs(1)[3] is make_inputs(2)[3]  # the same weights for every length


def test_ladder_order_ends_with_nn_lstm():
    assert list(ladder()) == ["naive", "fused", "hoisted", "bptt", "compiled", "onednn", "cpp", "aten", "nn.LSTM"]
    assert "compiled" not in ladder(compiled=False)
    on_gpu = ladder(compiled=False, device="cuda")
    assert "onednn" not in on_gpu and "cpp" not in on_gpu  # oneDNN and the C++ loop work on CPU memory only


def test_tanh_by_sigmoid_equals_torch_tanh():
    x = torch.cat([torch.linspace(-60, 60, 2001, dtype=torch.float64), torch.tensor([0.0, -0.0, 1e-30])])
    torch.testing.assert_close(ladder_module.tanh(x), torch.tanh(x), rtol=0, atol=1e-15)
    torch.testing.assert_close(ladder_module.tanh(x.float()), torch.tanh(x.float()), rtol=0, atol=3e-7)


def _onednn_calls(fn):
    with torch.profiler.profile() as profile:
        fn()
    return sum(event.count for event in profile.key_averages() if event.key == "mkldnn::_linear_pointwise")


@pytest.mark.parametrize("name", ["onednn", "cpp"])
def test_rung_uses_onednn_in_float32_and_torch_in_float64(name):
    """Float32 on CPU: every product goes to oneDNN, forward and backward (T + 1 and T + 3 per layer, and
    the results equal nn.LSTM's, checked by the tests above); float64, which oneDNN does not do: none."""
    size = {"seq_len": 4, "batch_size": 3, "input_size": 5, "hidden_size": 6, "num_layers": 2}
    run = ladder(compiled=False)[name]
    for dtype, expected in ((torch.float32, 2 * (4 + 1) + 2 * (4 + 3)), (torch.float64, 0)):
        problem = make_problem(size, dtype=dtype)
        assert _onednn_calls(lambda: forward_backward(run, problem)) == expected


def test_cpp_rung_propagates_nan_and_inf_like_nn_lstm():
    """The C++ loop is built with -ffast-math, which lets a compiler assume there are no NaNs or infinities
    and guarantees nothing about them: check that a diverging model still shows NaN where nn.LSTM does, and
    saturates where nn.LSTM saturates, in the outputs and in every gradient."""
    size = {"seq_len": 3, "batch_size": 4, "input_size": 2, "hidden_size": 5, "num_layers": 1}
    problem = make_problem(size, dtype=torch.float32)
    x = problem["x"].detach().clone()
    x[0, 0, 0], x[1, 1, 1], x[2, 2] = float("nan"), float("inf"), -1e30
    results = []
    for run in (rung(ladder_module.cpp_layer), ladder_module.nn_lstm):
        lstm = make_problem(size, dtype=torch.float32)["lstm"]  # same seed: the same weights for both
        x_leaf = x.clone().requires_grad_()
        out, (h, c) = run(x_leaf, problem["h0"], problem["c0"], lstm_weights(lstm))
        (out * problem["dout"]).sum().backward()
        results.append([out, h, c, x_leaf.grad] + [p.grad for p in lstm.parameters()])
    assert results[0][0].isnan().any() and results[0][3].isnan().any()
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("name", ["bptt", "onednn", "cpp"])
def test_hand_written_backward_refuses_a_second_derivative(name):
    """Their backward passes are not recorded by autograd: differentiating them again must raise, not
    silently return a wrong second derivative."""
    problem = make_problem({"seq_len": 2, "batch_size": 2, "input_size": 3, "hidden_size": 4, "num_layers": 1},
                           dtype=torch.float32)
    out, _ = ladder(compiled=False)[name](problem["x"], problem["h0"], problem["c0"], lstm_weights(problem["lstm"]))
    (dx,) = torch.autograd.grad(out.square().sum(), problem["x"], create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


def test_ladder_leaves_the_cpp_rung_out_without_a_compiler(monkeypatch):
    assert ladder_module.cpp_available() and "cpp" in ladder(compiled=False)  # this machine has both
    monkeypatch.setattr(ladder_module.shutil, "which", lambda name: None if name == "ninja" else "/usr/bin/" + name)
    assert not ladder_module.cpp_available()
    assert "cpp" not in ladder(compiled=False) and "onednn" in ladder(compiled=False)


@pytest.mark.parametrize("name, bad, message", [
    ("a_x", lambda t: t.double(), r"expected a_x to be a contiguous CPU Float tensor of shape \(2, 12\), got Double"),
    ("h", lambda t: t.t().contiguous().t(), r"expected h to be .* of shape \(2, 3\), got Float \[2, 3\] \(not contiguous\)"),
    ("acts", lambda t: t[:, :8], r"expected acts to be .* of shape \(2, 12\), got Float \[2, 8\]"),
])
def test_cpp_kernel_rejects_bad_tensors_with_a_clear_error(name, bad, message):
    B, H = 2, 3
    args = {"wh": torch.zeros(B, 4 * H), "a_x": torch.zeros(B, 4 * H), "c_prev": torch.zeros(B, H),
            "acts": torch.empty(B, 4 * H), "c": torch.empty(B, H), "h": torch.empty(B, H), "tanh_c": torch.empty(B, H)}
    args[name] = bad(args[name])
    with pytest.raises(RuntimeError, match="lstm_cell: " + message):
        ladder_module.cpp_cell().forward_step(*args.values())


def test_cpp_cell_without_a_compiler_says_what_it_needs(monkeypatch):
    def no_compiler(**kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions")
    ladder_module.cpp_cell.cache_clear()
    monkeypatch.setattr(ladder_module.cpp_extension, "load", no_compiler)
    try:
        with pytest.raises(RuntimeError, match="needs a C\\+\\+ compiler and ninja to build lstm_cell.cpp: Ninja is"):
            ladder_module.cpp_cell()
    finally:
        ladder_module.cpp_cell.cache_clear()  # the next caller builds (or loads) the real one


def test_onednn_products_give_the_gradients_of_torch_products():
    """The same LSTMFunction with either `matmul`: float32 results agree to rounding."""
    torch.manual_seed(0)
    T, B, I, H = 6, 4, 5, 7
    inputs = [torch.randn(T, B, I), torch.randn(B, H), torch.randn(B, H), torch.randn(4 * H, I),
              torch.randn(4 * H, H), torch.randn(4 * H), torch.randn(4 * H)]
    results = []
    for matmul in (ladder_module.TorchMatmul, ladder_module.OneDNNMatmul):
        leaves = [t.clone().requires_grad_() for t in inputs]
        hs, h, c = LSTMFunction.apply(*leaves, matmul)
        (hs.sin().sum() + h.square().sum() + c.sum()).backward()
        results.append([hs, h, c] + [leaf.grad for leaf in leaves])
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_cpp_flags_differ_only_in_fast_math():
    fast, plain = ladder_module.cpp_flags(), ladder_module.cpp_flags(fast_math=False)
    assert set(fast) - set(plain) == {"/fp:fast" if ladder_module.os.name == "nt" else "-ffast-math"}
    assert set(plain) < set(fast)


def fake_build(monkeypatch):
    """cpp_extension.load replaced by a recorder: build_cpp's locking and folders are tested without compiling."""
    calls = []
    monkeypatch.setattr(ladder_module.cpp_extension, "load", lambda **kwargs: calls.append(kwargs) or kwargs)
    return calls


def test_build_cpp_removes_the_lock_a_killed_build_left_and_keys_its_folder_by_source(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    calls = fake_build(monkeypatch)
    source = tmp_path / "cell.cpp"
    source.write_text("// one version\n")
    folder = Path(ladder_module.build_cpp("cell", source, ["-O3"])["build_directory"])
    (folder / "lock").touch()  # torch's lock file, as a build killed mid-way leaves it: torch would wait forever
    assert Path(ladder_module.build_cpp("cell", source, ["-O3"])["build_directory"]) == folder
    assert not (folder / "lock").exists() and len(calls) == 2
    source.write_text("// another version\n")
    other = Path(ladder_module.build_cpp("cell", source, ["-O3"])["build_directory"])
    flags = Path(ladder_module.build_cpp("cell", source, ["-O2"])["build_directory"])
    checkout = tmp_path / "another-checkout"
    checkout.mkdir()
    (checkout / "cell.cpp").write_text(source.read_text())
    moved = Path(ladder_module.build_cpp("cell", checkout / "cell.cpp", ["-O3"])["build_directory"])
    assert len({folder, other, flags, moved}) == 4  # an edited source, other flags or another checkout: its own


TINY_SOURCE = """#include <Python.h>
#define CONCAT_(a, b) a##b
#define CONCAT(a, b) CONCAT_(a, b)
static PyObject* answer(PyObject*, PyObject*) { return PyLong_FromLong(42); }
static PyMethodDef methods[] = {{"answer", answer, METH_NOARGS, "42"}, {nullptr, nullptr, 0, nullptr}};
static PyModuleDef module = {PyModuleDef_HEAD_INIT, "tiny", nullptr, -1, methods};
PyMODINIT_FUNC CONCAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&module); }
"""  # a module that builds in about a second: build_cpp's cache is tested with real builds, not the cell's minutes


def build_tiny(source, extensions, timeout=120):
    """Run build_cpp on `source` in a new process (extensions: $TORCH_EXTENSIONS_DIR) and call the module."""
    code = ("from lstm_lab.experiments.ladder import build_cpp; "
            f"print(build_cpp('tiny', {str(source)!r}, ['-O0']).answer())")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)})


@pytest.mark.skipif(not ladder_module.cpp_available() or os.name == "nt", reason="needs ninja, a C++ compiler, fork")
def test_a_damaged_cached_library_is_rebuilt_not_loaded(tmp_path):
    source, extensions = tmp_path / "tiny.cpp", tmp_path / "extensions"
    source.write_text(TINY_SOURCE)
    assert build_tiny(source, extensions).stdout == "42\n"
    library, = extensions.glob("tiny_*/tiny_*.so")
    library.write_bytes(library.read_bytes()[:8000])  # as a full disk or a killed copy leaves it: loaded, a bus error
    result = build_tiny(source, extensions)
    assert result.returncode == 0 and result.stdout == "42\n", result.stderr
    assert "is not the library that was built (damaged" in result.stderr
    assert build_tiny(source, extensions).stderr == ""  # the new build is recorded: loaded without a word


@pytest.mark.skipif(not ladder_module.cpp_available() or os.name == "nt", reason="needs ninja, a C++ compiler, fork")
def test_a_build_killed_midway_does_not_stop_the_next_one(tmp_path):
    source, extensions = tmp_path / "tiny.cpp", tmp_path / "extensions"
    source.write_text(TINY_SOURCE)
    code = ("from lstm_lab.experiments.ladder import build_cpp; build_cpp('tiny', %r, ['-O0'])" % str(source))
    builder = subprocess.Popen([sys.executable, "-c", code],
                               env={**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)})
    deadline = time.monotonic() + 60
    while not list(extensions.glob("tiny_*/lock")) and builder.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    builder.send_signal(signal.SIGKILL)  # mid-build: torch's lock file stays behind
    builder.wait()
    assert list(extensions.glob("tiny_*/lock")), "the build ended before it could be killed"
    result = build_tiny(source, extensions, timeout=60)  # without build_cpp's lock: torch waits here forever
    assert result.returncode == 0 and result.stdout == "42\n", result.stderr


@pytest.mark.skipif(ladder_module.os.name == "nt", reason="needs file locks")
def test_build_cpp_waits_for_a_live_builder_and_says_so(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    calls = fake_build(monkeypatch)
    source = tmp_path / "cell.cpp"
    source.write_text("// one version\n")
    folder = Path(ladder_module.build_cpp("cell", source, ["-O3"])["build_directory"])
    with open(folder / "build.flock", "a+") as held:  # another builder, alive
        assert ladder_module.try_lock(held)
        second = threading.Thread(target=ladder_module.build_cpp, args=("cell", source, ["-O3"]))
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and len(calls) == 1  # it waits while the other builds
    second.join(timeout=10)
    assert not second.is_alive() and len(calls) == 2
    assert "waiting for another process that is building cell.cpp" in capsys.readouterr().err
