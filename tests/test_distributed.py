"""Data-parallel training (lstm_lab.distributed, `torchrun ... -m lstm_lab train`): two ranks on the CPU (gloo) take
the same steps as one process on all the streams, a killed DDP run resumes, and its checkpoints fit one process.

Each torchrun launch starts two fresh Python processes (a few seconds each).
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ddp_steps import TRAINING, tiny_run
from lstm_lab.checkpoint import load_checkpoint
from lstm_lab.cli import main
from lstm_lab.data.corpus import batchify
from lstm_lab.distributed import SINGLE, World, shard_streams, world_from_env
from lstm_lab.lm_train import load_lm_run, lm_loss, train
from test_run_folders import tiny, train_argv  # noqa: F401  (tiny: the fixture)

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
posix_only = pytest.mark.skipif(not hasattr(os, "killpg"), reason="needs process groups (Linux, macOS)")


# The torchrun launches are tested from torch 2.11 on.  On torch 2.4 (the lowest torch lstm_lab supports) two ranks
# that end in an error sometimes both hang in dist.destroy_process_group (gloo; seen on the build machine), and the
# ranks hang at the start unless GLOO_SOCKET_IFNAME names the loopback interface.
torchrun_tested = pytest.mark.skipif(torch.__version__ < (2, 11), reason=f"torch {torch.__version__}: torchrun "
                                     "launches are tested from torch 2.11 (gloo hangs seen on torch 2.4)")


def torchrun(*args, **popen):
    """Popen of `torchrun --standalone --nproc_per_node 2 ARGS` with this checkout's lstm_lab."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    return subprocess.Popen(command, cwd=REPO, env=env, text=True, **popen)


def finished(process, timeout=120):
    """Wait for a torchrun launch to end; its exit status and output."""
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


def test_the_streams_are_cut_as_by_one_process_and_shared_in_blocks():
    source = batchify(torch.arange(26), 4)  # (6, 4): the alphabet of batchify's docstring
    shards = [shard_streams(source, rank, 2) for rank in (0, 1)]
    assert torch.equal(torch.cat(shards, dim=1), source)  # rank 0 reads streams 0-1, rank 1 streams 2-3
    assert [s.shape for s in shards] == [(6, 2), (6, 2)]  # the same windows on every rank
    assert torch.equal(shard_streams(source, 0, 1), source)  # one process: all the streams


def test_a_batch_size_that_does_not_split_over_the_ranks_is_a_one_line_error(monkeypatch, capsys, tmp_path):
    with pytest.raises(ValueError, match=r"^batch_size 8 does not split over 3 processes: use --nproc_per_node "
                                         r"1, 2, 4, 8, or a batch size that is a multiple of 3$"):
        shard_streams(torch.zeros(10, 8), 0, 3)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(SystemExit) as info:  # the command line says so before it starts the process group
        main(train_argv(tmp_path / "run", 1))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "batch_size 8 does not split over 3 processes" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_world_comes_from_torchruns_variables():
    assert world_from_env({}) == world_from_env({"WORLD_SIZE": "1", "RANK": "0"}) == SINGLE
    assert world_from_env({"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1"}) == World(3, 4, 1)


@torchrun_tested
def test_two_ranks_take_the_same_steps_as_one_process_on_all_streams(tmp_path):
    """Zaremba's loss per rank (its streams) and DDP's mean over ranks give one process's gradient at batch B,
    so with the same learning rate and clipping the weights agree to float64 rounding."""
    out = tmp_path / "ddp.pt"
    status, log = finished(torchrun(TESTS / "ddp_steps.py", out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    assert status == 0, log[-3000:]
    ddp = torch.load(out, weights_only=True)

    model, data = tiny_run()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    source = batchify(data["train"], TRAINING.batch_size)
    logits, _ = model(source[:TRAINING.seq_len], model.init_state(TRAINING.batch_size))
    lm_loss(logits, source[1:TRAINING.seq_len + 1])[0].backward()
    assert torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")) > 2 * TRAINING.clip_norm  # clipped
    model.zero_grad()
    history = train(model, data, TRAINING, progress=False)

    assert ddp["state_dict"].keys() == model.state_dict().keys()  # the unwrapped model's names: no "module."
    for name, weight in model.state_dict().items():
        assert not torch.equal(weight, start[name]), name  # the three steps moved every weight
        torch.testing.assert_close(ddp["state_dict"][name], weight, rtol=1e-10, atol=1e-12, msg=name)
    (one,), (two,) = history, ddp["history"]
    assert two["train_tokens"] == one["train_tokens"] == 3 * TRAINING.seq_len * TRAINING.batch_size  # both ranks
    assert two["train_nll"] == pytest.approx(one["train_nll"], rel=1e-10)
    assert two["valid_nll"] == pytest.approx(one["valid_nll"], rel=1e-10)


def wait_for(path, process, timeout=120):
    """Wait until `path` exists; fail if `process` ends first or it takes longer than `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the launch ended ({process.returncode}) before {path.name} was written"
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.1)


def kill_launch(process, pids):
    """SIGKILL torchrun's process group and each worker's (torchrun starts every worker in a session of its own)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    for pid_file in pids.glob("rank-*.pid"):
        try:
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


@posix_only
@torchrun_tested
def test_a_killed_ddp_run_resumes_and_its_checkpoints_fit_one_process(tmp_path, tiny):
    run, pids = tmp_path / "run", tmp_path / "pids"
    pids.mkdir()
    with open(tmp_path / "killed.log", "w") as log:
        launch = torchrun(TESTS / "ddp_train.py", "--stall", pids, *train_argv(run, 3), stdout=log,
                          stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(pids / "stalled", launch)
            assert load_checkpoint(run / "checkpoint.pt")["epoch"] == 1
        finally:
            kill_launch(launch, pids)
    assert json.loads((run / "results.json").read_text())["complete"] is False

    status, log = finished(torchrun(TESTS / "ddp_train.py", *train_argv(run, 3, "--resume"), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
    assert status == 0, log[-3000:]
    resumed = json.loads((run / "results.json").read_text())
    assert resumed["complete"] and resumed["epochs"] == resumed["planned_epochs"] == 3
    assert [(s["start_epoch"], s["world_size"], s["backend"]) for s in resumed["sessions"]] == [(1, 2, "gloo"),
                                                                                                (2, 2, "gloo")]
    assert log.count("epoch   2  lr") == 1  # only rank 0 prints

    assert main(train_argv(tmp_path / "one", 3)) == 0  # one process on all 8 streams: the same run (smoke: no dropout)
    single = json.loads((tmp_path / "one" / "results.json").read_text())
    for key in ("train_ppl", "valid_ppl"):
        assert resumed[key] == pytest.approx(single[key], rel=1e-5), key  # float32: summed in another order

    model = load_lm_run(run, "cpu")[0]  # saved unwrapped: the checkpoints load into one process's model as they are
    model.load_state_dict(load_checkpoint(run / "best.pt")["state_dict"])
    assert main(train_argv(run, 4, "--resume")) == 0  # one process goes on with the DDP run
    extended = json.loads((run / "results.json").read_text())
    assert extended["epochs"] == 4 and extended["complete"]
    assert (extended["world_size"], extended["backend"]) == (1, None)


@posix_only
@torchrun_tested
def test_a_run_folder_rank_0_cannot_take_ends_every_rank_with_its_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_text("a run")
    status, log = finished(torchrun(TESTS / "ddp_train.py", *train_argv(tmp_path / "run", 1), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT))
    assert status != 0
    assert log.count(f"error: {tmp_path / 'run'} already holds a run: add --resume") == 2  # both ranks, no hang
