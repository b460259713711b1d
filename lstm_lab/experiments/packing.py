"""Batches of sequences of different lengths: what padding does to an LSTM, and what packing fixes.

Padding a short sequence to the batch's longest and running the LSTM over the whole padded tensor feeds it
the padding too: its outputs at the real steps are right (the padding comes after them), but its last
state h_n is the state after the padding, not after its last real step.  Packing
(`torch.nn.utils.rnn.pack_padded_sequence`) stops each sequence at its length, so h_n is right and no
work is spent on padding.  See `lstm_lab.lstm` for the packed layout.  Introduced in chapter 7.
"""
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = ["padded_batch", "run_packed", "last_states_alone", "forward_backward_candidates"]


def padded_batch(lengths, input_size, generator=None, dtype=torch.float32):
    """Random sequences of the given lengths, zero-padded to the longest: ((T, B, input_size), lengths (B,)).

    lengths: any order (packing with enforce_sorted=False sorts them).  lengths stays on the CPU, where
    pack_padded_sequence wants it.  Chapter 7."""
    lengths = torch.as_tensor(lengths, dtype=torch.int64)
    if lengths.ndim != 1 or len(lengths) == 0 or lengths.min() < 1:
        raise ValueError(f"lengths must be a non-empty list of positive integers, got {lengths.tolist()}")
    x = torch.randn(int(lengths.max()), len(lengths), input_size, generator=generator, dtype=dtype)
    steps = torch.arange(x.shape[0]).unsqueeze(1)  # (T, 1)
    x[steps >= lengths] = 0.0  # zero the padding: (T, B) mask of steps past each sequence's end
    return x, lengths


def run_packed(lstm, padded, lengths):
    """Run `lstm` (nn.LSTM or lstm_lab.LSTM) on a padded batch packed first: (padded output, (h_n, c_n)).

    The output is padded back with zeros; h_n and c_n are each sequence's state after its own last step, in
    the batch's original order (enforce_sorted=False sorts and unsorts).  Chapter 7."""
    packed = pack_padded_sequence(padded, lengths, enforce_sorted=False)
    output, state = lstm(packed)
    return pad_packed_sequence(output, total_length=padded.shape[0])[0], state


def last_states_alone(lstm, padded, lengths):
    """h_n of every sequence run through `lstm` on its own, with no padding: (num_layers * D, B, H).

    The reference a batched run must give.  Chapter 7."""
    return torch.cat([lstm(padded[:n, b:b + 1])[1][0] for b, n in enumerate(lengths.tolist())], dim=1)


def forward_backward_candidates(lstm, padded, lengths):
    """{"padded": fn, "packed": fn}: forward and backward of `lstm` on the batch, padded or packed.

    The loss is the sum of the outputs at the real steps, so both compute the same gradients; the padded run
    also works through the padding.  For `lstm_lab.experiments.timing.interleaved_times`.  Chapter 7."""
    mask = (torch.arange(padded.shape[0]).unsqueeze(1) < lengths).unsqueeze(2).to(padded.dtype)  # (T, B, 1)

    def padded_step():
        lstm.zero_grad(set_to_none=True)
        (lstm(padded)[0] * mask).sum().backward()

    def packed_step():
        lstm.zero_grad(set_to_none=True)
        run_packed(lstm, padded, lengths)[0].sum().backward()

    return {"padded": padded_step, "packed": packed_step}
