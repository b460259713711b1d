"""Stacked LSTMs: how parameters grow with depth, and the depth study of chapter 5.

A stacked LSTM feeds layer k-1's output sequence to layer k.  Every layer has its own four matrices: layer 0
reads the input, (4H, I) and (4H, H); every layer above reads the one below, (4H, H) and (4H, H).

    lstm_parameters(200, 200, 2)          # 643,200: weights and both biases of two layers, as nn.LSTM has them
    equal_parameter_hidden(200, 3, 643_200)   # 160: the H at which three layers have as many
    language_model_parameters(10_000, 200, 313, 1)   # embedding, LSTM and decoder of the whole model

The study (`DEPTH_STUDY`) trains 1, 2 and 3 layers on Penn Treebank at equal width (H = 200) and at equal
LSTM parameter count (that of 2 x 200), each for several seeds, with the same budget and the same learning
rate rule (preset `depth-200`, lr 1 for every depth, as Zaremba et al. use for every size).  Only the LSTM's
parameters are matched: the decoder grows with H, so the whole models differ (`language_model_parameters`).
`tools/depth_study.py` runs it; the results land in `lstm_lab/recorded/depth-200/`.  Introduced in chapter 5.
"""
import math
from dataclasses import dataclass

__all__ = ["DEPTH_PRESET", "DEPTH_RECORDED", "DEPTH_STUDY", "DEPTH_SEEDS", "lstm_parameters", "equal_parameter_hidden",
           "tied_layers_parameters", "language_model_parameters", "depth_study", "result_name"]

DEPTH_PRESET = "depth-200"  # the preset every run of the CPU study starts from (see lstm_lab.config)
DEPTH_RECORDED = "depth-200"  # the folder in lstm_lab/recorded/ that holds its results


def lstm_parameters(input_size, hidden_size, num_layers=1):
    """Trainable scalars of an `nn.LSTM(input_size, hidden_size, num_layers)`: weights and both bias vectors.

    Layer 0: 4H(I + H) weights; layers above: 4H(H + H); every layer 2 x 4H biases.  Chapter 5."""
    first = 4 * hidden_size * (input_size + hidden_size + 2)
    above = 4 * hidden_size * (2 * hidden_size + 2)
    return first + (num_layers - 1) * above


def equal_parameter_hidden(input_size, num_layers, parameters):
    """The hidden size H at which a `num_layers` LSTM has `parameters` trainable scalars (rounded to nearest).

    lstm_parameters is a quadratic in H: 4(2L - 1) H^2 + 4(I + 2L) H = parameters.  Chapter 5."""
    a = 4 * (2 * num_layers - 1)
    b = 4 * (input_size + 2 * num_layers)
    return round((-b + math.sqrt(b * b + 4 * a * parameters)) / (2 * a))


def tied_layers_parameters(input_size, hidden_size, num_layers):
    """Trainable scalars of a `TiedLayersLSTM`: layer 0's own, plus one (4H, H), (4H, H), 2 x (4H,) set shared
    by every layer above it (none if num_layers is 1).  Chapter 5."""
    return lstm_parameters(input_size, hidden_size, 1) + (num_layers > 1) * 4 * hidden_size * (2 * hidden_size + 2)


def language_model_parameters(vocab_size, embed_size, hidden_size, num_layers, tie_layers=False):
    """Trainable scalars of a `LanguageModel` without weight tying, part by part: {"embedding": V x E,
    "LSTM": the stacked (or tied-layers) LSTM's, "decoder": (V, H) weights and V biases}.  Chapter 5."""
    lstm = (tied_layers_parameters if tie_layers else lstm_parameters)(embed_size, hidden_size, num_layers)
    return {"embedding": vocab_size * embed_size, "LSTM": lstm, "decoder": vocab_size * (hidden_size + 1)}


@dataclass(frozen=True)
class DepthRun:
    """One configuration of the depth study: layers, width, dropout."""
    num_layers: int
    hidden_size: int
    dropout: float = 0.0
    sizing: str = "equal width"  # or "equal parameters"
    tie_layers: bool = False  # layers 2..L share their weights (TiedLayersLSTM)
    lr: float = 1.0  # the first learning rate (the preset's is 1)

    @property
    def name(self):
        """e.g. L2-H200-d0 (2 layers of 200, no dropout), L3-H200-d0-tied, L1-H200-d0-lr2."""
        name = f"L{self.num_layers}-H{self.hidden_size}-d{self.dropout:g}" + ("-tied" if self.tie_layers else "")
        return name + (f"-lr{self.lr:g}" if self.lr != 1.0 else "")

    def overrides(self):
        """Command-line options that turn preset depth-200 into this configuration (after any --rnn)."""
        tied = ["--tie-layers", "--rnn", "lab"] if self.tie_layers else []
        return ["--num-layers", str(self.num_layers), "--hidden-size", str(self.hidden_size),
                "--dropout", f"{self.dropout:g}", "--lr", f"{self.lr:g}", *tied]


def depth_study(width=200, embed_size=200, depths=(1, 2, 3), reference_layers=2, dropout=0.2, lrs=(0.5, 2.0)):
    """The configurations of the study, most important first: every depth at `width`; the other depths at
    the LSTM parameter count of `reference_layers` x `width`; the deepest with its upper layers tied; every
    depth with `dropout`; the shallowest and the deepest with each other first learning rate in `lrs`.
    Word vectors stay `embed_size` wide in every run.  Chapter 5."""
    budget = lstm_parameters(embed_size, width, reference_layers)
    runs = [DepthRun(layers, width) for layers in depths]
    runs += [DepthRun(layers, equal_parameter_hidden(embed_size, layers, budget), sizing="equal parameters")
             for layers in depths if layers != reference_layers]
    runs.append(DepthRun(max(depths), width, sizing="tied layers", tie_layers=True))
    runs += [DepthRun(layers, width, dropout, sizing="dropout") for layers in depths]
    runs += [DepthRun(layers, width, sizing="learning rate", lr=lr) for lr in lrs for layers in (depths[0], depths[-1])]
    return runs


DEPTH_STUDY = depth_study()
DEPTH_SEEDS = (0, 1, 2)


def result_name(run, seed):
    """The file name of one run's results in the study folder, e.g. L2-H200-d0-seed1.json.  Chapter 5."""
    return f"{run.name}-seed{seed}.json"
