"""Three training windows of a tiny float64 model with DistributedDataParallel, through the real `train` path
(sharded streams, one state per rank, clipping, the epoch's numbers summed over ranks).  tests/test_distributed.py
runs it under torchrun and compares rank 0's result with one process training all the streams:

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_steps.py OUT.pt
"""
import os
import sys

import torch

from lstm_lab.config import ModelConfig, TrainConfig
from lstm_lab.distributed import start_process_group, stop_process_group, world_from_env, wrap
from lstm_lab.lm_train import train
from lstm_lab.model import LanguageModel

MODEL = ModelConfig(vocab_size=20, embed_size=6, hidden_size=8, num_layers=2, dropout=0.0)
# 3 windows of 5 steps over 4 streams (2 per rank); clip_norm small enough that every window is clipped
TRAINING = TrainConfig(batch_size=4, seq_len=5, eval_batch_size=2, epochs=1, max_batches=3, clip_norm=0.5)


def tiny_run():
    """(model, data) that every process builds alike: float64 weights seeded 0, random token texts."""
    torch.manual_seed(0)
    model = LanguageModel(MODEL).double()
    g = torch.Generator().manual_seed(1)
    data = {"train": torch.randint(0, MODEL.vocab_size, (400,), generator=g),
            "valid": torch.randint(0, MODEL.vocab_size, (100,), generator=g)}
    return model, data


def main(out):
    """Train the tiny run on this rank; rank 0 saves the weights and the epoch's record to `out`."""
    device = torch.device("cpu")
    world = start_process_group(world_from_env(os.environ), device)
    try:
        model, data = tiny_run()
        history = train(wrap(model, device, world, seed=0), data, TRAINING, device, progress=False, world=world)
        if world.rank == 0:
            torch.save({"state_dict": model.state_dict(), "history": history}, out)
    finally:
        stop_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
