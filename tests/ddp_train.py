"""`python -m lstm_lab train` on the tiny corpus of test_run_folders, for tests/test_distributed.py to launch under
torchrun (its processes cannot be monkeypatched from the test):

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_train.py [--stall FOLDER] train ...

--stall FOLDER: every rank writes its process id to FOLDER/rank-R.pid; rank 0 writes FOLDER/stalled once its
first epoch is recorded and then waits, and the other ranks with it, until the test kills them all.
"""
import os
import sys
import time
from pathlib import Path

import lstm_lab.cli as cli
import lstm_lab.lm_train as lm_train
from lstm_lab.runs import RunRecorder
from test_run_folders import tiny_corpus


def stall_after_first_epoch(folder):
    """Make rank 0 hang after recording its first epoch, with every rank's process id in `folder`."""
    (folder / f"rank-{os.environ['RANK']}.pid").write_text(str(os.getpid()))
    epoch_done = RunRecorder.epoch_done

    def record_then_wait(self, model, optimizer, run_state):
        epoch_done(self, model, optimizer, run_state)
        (folder / "stalled").write_text(str(run_state["epoch"]))
        time.sleep(600)
    RunRecorder.epoch_done = record_then_wait


if __name__ == "__main__":
    lm_train.load_corpus = cli.load_corpus = lambda *args, **kwargs: tiny_corpus()
    argv = sys.argv[1:]
    if argv[0] == "--stall":
        stall_after_first_epoch(Path(argv[1]))
        argv = argv[2:]
    sys.exit(cli.main(argv))
