"""`runtime.capture_cuda_graph`, the one CUDA-graph capture of the package, checked without a GPU: its argument
checks, its error on a machine without CUDA, and the order of warm-up, hook and capture on a fake torch.cuda."""
import contextlib

import pytest
import torch

from lstm_lab.experiments import bench
from lstm_lab.runtime import capture_cuda_graph

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class FakeCuda:
    """What capture_cuda_graph uses of torch.cuda, recording into `events` which stream each call runs on."""

    def __init__(self):
        self.events, self.current = [], "default"
        fake = self

        class Stream:
            def __init__(self, name="side"):
                self.name = name

            def wait_stream(self, other):
                fake.events.append(f"{self.name} waits for {other.name}")

        class CUDAGraph:
            def replay(self):
                fake.events.append("replay")

        self.Stream, self.CUDAGraph = Stream, CUDAGraph

    def current_stream(self):
        return self.Stream(self.current)

    @contextlib.contextmanager
    def stream(self, stream):
        before, self.current = self.current, stream.name
        yield
        self.current = before

    @contextlib.contextmanager
    def graph(self, graph):
        self.events.append("capture begins")
        yield
        self.events.append("capture ends")


@pytest.fixture
def fake_cuda(monkeypatch):
    fake = FakeCuda()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name in ("Stream", "CUDAGraph", "current_stream", "stream", "graph"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    return fake


def test_warm_up_on_a_side_stream_then_the_hook_then_one_capture(fake_cuda):
    fn = lambda: fake_cuda.events.append(f"fn on {fake_cuda.current}")  # noqa: E731
    graph = capture_cuda_graph(fn, warmup=2, before_capture=lambda: fake_cuda.events.append("hook"))
    assert fake_cuda.events == ["side waits for default", "fn on side", "fn on side", "default waits for side",
                                "hook", "capture begins", "fn on default", "capture ends"]
    assert isinstance(graph, fake_cuda.CUDAGraph)
    graph.replay()
    assert fake_cuda.events[-1] == "replay" and fake_cuda.events.count("fn on default") == 1  # fn not run again


def test_without_a_hook_the_capture_follows_the_warm_up(fake_cuda):
    capture_cuda_graph(lambda: fake_cuda.events.append("fn"))
    assert fake_cuda.events == ["side waits for default", "fn", "fn", "fn", "default waits for side",
                                "capture begins", "fn", "capture ends"]


@pytest.mark.parametrize("warmup", [0, -1, 2.5, True, "3"])
def test_warmup_must_be_a_positive_number_of_calls(warmup, fake_cuda):
    with pytest.raises(ValueError, match="warmup must be a positive number of calls before the capture"):
        capture_cuda_graph(lambda: None, warmup=warmup)
    assert fake_cuda.events == []


@pytest.mark.parametrize("fn, hook", [(None, None), (lambda: None, "not callable")])
def test_fn_and_the_hook_must_be_callables(fn, hook, fake_cuda):
    with pytest.raises(TypeError, match="needs fn, and before_capture if given, to be callables"):
        capture_cuda_graph(fn, before_capture=hook)
    assert fake_cuda.events == []


def test_without_cuda_it_says_so_and_runs_nothing(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    calls = []
    with pytest.raises(RuntimeError, match="capturing a CUDA graph needs a CUDA GPU, and this machine has none"):
        capture_cuda_graph(lambda: calls.append("fn"))
    assert calls == []


def test_the_benchmark_replays_each_captured_rung_and_reports_a_failed_capture(monkeypatch, capsys):
    captured = []

    class Graph:
        def __init__(self, fn):
            self.replay = fn

    def capture(fn, warmup=3, before_capture=None):
        if fn() == "broken":
            raise RuntimeError("operation not permitted when stream is capturing")
        captured.append(fn)
        return Graph(fn)

    monkeypatch.setattr(bench, "capture_cuda_graph", capture)
    candidates = {"hoisted": lambda: "hoisted", "bptt": lambda: "broken", "nn.LSTM": lambda: "nn.LSTM"}
    graphed = bench.graphed_candidates(candidates)
    assert list(graphed) == ["hoisted + graph", "nn.LSTM + graph"] and graphed["hoisted + graph"]() == "hoisted"
    assert graphed["nn.LSTM + graph"]() == "nn.LSTM"  # cuDNN replayed too: like for like with the replayed rungs
    assert "CUDA graph of 'bptt' failed: RuntimeError: operation not permitted" in capsys.readouterr().err


@cuda
def test_a_replay_recomputes_on_what_the_captured_input_holds():
    x = torch.ones(4, device="cuda")
    y = torch.empty(4, device="cuda")
    graph = capture_cuda_graph(lambda: torch.mul(x, 2, out=y), before_capture=lambda: y.zero_())
    x.fill_(3)
    graph.replay()
    torch.cuda.synchronize()
    assert y.tolist() == [6.0] * 4
