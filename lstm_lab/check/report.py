"""What every check returns: a `Report` of measured properties and, for a failure, its most likely causes.

    report = check_cell(my_cell)           # any check of lstm_lab.check
    print(report)                          # about ten lines: each property, its numbers, the likely cause
    assert report                          # True when every property holds
    report.raise_if_failed()               # or raise CheckFailed with the printed text
    report.cause_ids                       # ["gate_order"]: what the check diagnosed, most likely first

Each cause names the chapter and the section that explain it (`CAUSES`); tests hold every section title to the
chapter it names.  Introduced with the coursework checks (chapter 4).
"""
from dataclasses import dataclass, field

__all__ = ["CAUSES", "Cause", "Property", "Report", "CheckFailed", "cause", "describe_error"]

# cause id -> (what went wrong, chapter, section that explains it)
CAUSES = {
    # a cell (chapter 1)
    "gate_order": ("the four gate blocks are read in another order than PyTorch's i, f, g, o", 1,
                   "The gate equations in PyTorch's notation"),
    "missing_bias": ("the biases are never added", 1, "Only the sum of the two biases matters"),
    "one_bias_missing": ("only one of the two biases is added", 1, "Only the sum of the two biases matters"),
    "doubled_bias": ("a bias is added twice", 1, "Only the sum of the two biases matters"),
    "transposed_weights": ("a square weight matrix is used transposed (h @ W where W h is meant)", 1,
                           "Shapes and parameter count"),
    "activation_swapped": ("tanh and sigmoid are swapped somewhere in the cell", 1,
                           "The gate equations in PyTorch's notation"),
    "missing_tanh": ("h = o * c: the tanh of the new cell state is missing", 1,
                     "The gate equations in PyTorch's notation"),
    "h_for_c": ("the cell update uses h where c belongs: c' = f * h + i * g", 1,
                "The gate equations in PyTorch's notation"),
    "stale_c": ("h is computed from the old cell state instead of the new one", 1,
                "The gate equations in PyTorch's notation"),
    "state_swapped": ("the cell returns (c, h) instead of (h, c)", 1, "The gate equations in PyTorch's notation"),
    "shape_error": ("a tensor has the wrong shape", 1, "Shapes and parameter count"),
    "unexplained": ("no single known bug explains the difference", 1,
                    "Are the two notations the same model? A numerical proof"),
    # gradients (chapters 2, 3, 4)
    "gradient_blocked": ("a gradient is cut inside the computation (.detach(), .data, no_grad or a copy "
                         "through numpy)", 4, "What autograd keeps, and when it lets go"),
    "wrong_custom_backward": ("the outputs are right but a hand-written backward returns wrong gradients", 3,
                              "Rung 4: chapter 2's backward pass as an `autograd.Function`"),
    "tanh_derivative_typo": ("the candidate's derivative is written (1 - g)^2 instead of 1 - g^2, the printed "
                             "derivations' typo", 2, "A typo that often appears in printed derivations"),
    "gate_derivative": ("a gate's derivative is wrong in one step (sigmoid' = s (1 - s), tanh' = 1 - tanh^2)", 2,
                        "Two derivatives to know by heart"),
    "sign_error": ("a gradient has the wrong sign", 2, "One step backward"),
    "scale_error": ("a gradient is off by a constant factor (a mean where a sum belongs, a missing 1/2...)", 2,
                    "One step backward"),
    "one_step_error": ("one step's backward is wrong", 2, "One step backward"),
    "bptt_carry": ("the gradient carried back to the previous step is wrong (dh into h_{t-1}, or dc * f into "
                   "c_{t-1})", 2, "Backpropagation through time"),
    "input_path_error": ("the weights' gradients are right but the gradient back to x and h is wrong", 2,
                         "A typo that often appears in printed derivations"),
    # autograd errors and silent bugs (chapter 4)
    "unregistered_parameters": ("weights held as plain tensors or in a Python list are not registered "
                                "parameters: the optimizer never updates them", 4,
                                "Silent bug: weights that are not parameters"),
    "device_mismatch": ("tensors on different devices", 4, "\"Expected all tensors to be on the same device\""),
    "inplace_write": ("a tensor autograd saved is overwritten in place (a preallocated output written step by "
                      "step)", 4, "\"Modified by an inplace operation\""),
    "state_not_detached": ("the state carried into the next window is not detached", 4,
                           "\"Trying to backward through the graph a second time\""),
    "retain_graph": ("backward(retain_graph=True) keeps every earlier window's graph: each window is slower", 4,
                     "The wrong fix: `retain_graph=True`"),
    "reads_other_layer_gate": ("a layer's update reads another layer's gate", 4,
                               "Silent bug: a second layer that reads the first layer's gate"),
    "reads_other_layer_state": ("a layer's update reads another layer's cell state", 4,
                                "Silent bug: a second layer that reads the first layer's gate"),
    "h_n_batch_first": ("h_n and c_n are returned batch-first; nn.LSTM's are always (num_layers, batch, hidden)",
                        4, "Silent bug: `batch_first` and the shape of `h_n`"),
    "output_layout": ("the output is not laid out as batch_first asks", 4,
                      "Silent bug: `batch_first` and the shape of `h_n`"),
    # stacking layers (chapter 5)
    "layer_reads_input": ("an upper layer reads the input x instead of the output of the layer below", 5,
                          "One layer's output is the next layer's input"),
    "same_initial_state": ("every layer starts from layer 0's initial state", 5,
                           "One layer's output is the next layer's input"),
    "h_n_layer_order": ("h_n and c_n list the layers in the wrong order (layer 0 comes first)", 5,
                        "One layer's output is the next layer's input"),
    "shared_weights": ("the layers share one set of weights; nn.LSTM gives every layer its own", 5,
                       "Are the H and C weights shared across layers?"),
    "dropout_in_recurrence": ("dropout is applied on the recurrent path h_{t-1} -> h_t", 5,
                              "Dropout between layers, and only there"),
    "dropout_on_input": ("dropout is applied to the first layer's input inside the LSTM", 5,
                         "Dropout between layers, and only there"),
    "dropout_on_output": ("dropout is applied after the last layer (with one layer: the only one)", 5,
                          "Dropout between layers, and only there"),
    "dropout_missing": ("dropout > 0 is asked for but never applied between layers", 5,
                        "Dropout between layers, and only there"),
    # training (chapters 6 and 8)
    "state_reset": ("the state starts from zeros in every window instead of being carried", 6,
                    "Truncated BPTT: carry the state, cut the graph"),
    "parameters_frozen": ("registered parameters never change: the optimizer does not get them, or the "
                          "gradients are cleared before the step", 4, "Why the report's perplexity stayed near 7,000"),
    "loss_not_per_token": ("the loss is not the mean negative log-likelihood per token", 6, "The loss, and perplexity"),
    "loss_wrong_base": ("the loss is not in nats (natural log)", 6, "The loss, and perplexity"),
    "perplexity_wrong_mean": ("perplexity is not exp of the mean NLL over all tokens", 6,
                              "The loss, and perplexity"),
    "perplexity_wrong_base": ("perplexity raises the wrong base to the NLL in nats", 6, "The loss, and perplexity"),
    "perplexity_state_reset": ("evaluation starts every window from a zero state", 6,
                               "Truncated BPTT: carry the state, cut the graph"),
    "perplexity_train_mode": ("perplexity is measured with dropout on (model.train())", 6,
                              "The loss, and perplexity"),
    "padding_in_loss": ("padding positions count in the loss", 8, "What a loss that counts the padding reports"),
    "lr_too_high": ("the learning rate is far too high: the loss rises or diverges", 8,
                    "Optimizers, each at its own tuned learning rate"),
    "lr_too_low": ("the learning rate is far too low: the weights barely move", 8,
                   "Optimizers, each at its own tuned learning rate"),
}

CHAPTER_FILES = {1: "01_lstm_cell", 2: "02_gradients", 3: "03_step_by_step", 4: "04_error_clinic",
                 5: "05_stacking_layers", 6: "06_language_model", 8: "08_tang_poems"}


@dataclass(frozen=True)
class Cause:
    """A diagnosed cause: its id in `CAUSES`, and what the check saw that points to it.  Chapter 4."""
    id: str
    evidence: str

    def __str__(self):
        what, chapter, section = CAUSES[self.id]
        return f"{what} [{self.id}]: {self.evidence}\n      read: chapter {chapter}, \u00a7 {section}"


def cause(cause_id, evidence):
    """A `Cause`, refusing an id `CAUSES` does not know (a typo in a check, found by its tests).  Chapter 4."""
    if cause_id not in CAUSES:
        raise KeyError(f"unknown cause id {cause_id!r}")
    return Cause(cause_id, evidence)


@dataclass(frozen=True)
class Property:
    """One checked property: its name, whether it holds, and the numbers measured.  Chapter 4."""
    name: str
    passed: bool
    measured: str = ""

    def __str__(self):
        return f"  [{'ok' if self.passed else 'FAIL'}] {self.name}" + (f": {self.measured}" if self.measured else "")


class CheckFailed(AssertionError):
    """Raised by `Report.raise_if_failed`; its message is the printed report.  Chapter 4."""


@dataclass
class Report:
    """The result of one check: `properties` (each a `Property`) and `causes` (each a `Cause`, most likely first).

    bool(report) is True when every property holds, so `assert report` works in a student's own tests and prints
    the report when it fails.  Introduced with the coursework checks (chapter 4)."""
    what: str
    properties: list = field(default_factory=list)
    causes: list = field(default_factory=list)

    def add(self, name, passed, measured=""):
        """Record a property; returns whether it passed."""
        self.properties.append(Property(name, bool(passed), measured))
        return bool(passed)

    def diagnose(self, *causes):
        """Record causes (None entries are skipped), keeping the first of any id seen twice."""
        known = set(self.cause_ids)
        for c in causes:
            if c is not None and c.id not in known:
                self.causes.append(c)
                known.add(c.id)

    @property
    def passed(self):
        return all(p.passed for p in self.properties)

    @property
    def cause_ids(self):
        return [c.id for c in self.causes]

    def __bool__(self):
        return self.passed

    def __str__(self):
        verdict = "passed" if self.passed else "FAILED"
        lines = [f"{self.what}: {verdict}"] + [str(p) for p in self.properties]
        lines += [f"  likely cause: {c}" if k == 0 else f"  also: {c}" for k, c in enumerate(self.causes)]
        return "\n".join(lines)

    __repr__ = __str__

    def raise_if_failed(self):
        """Raise `CheckFailed` (an AssertionError) with the printed report unless every property holds."""
        if not self.passed:
            raise CheckFailed(str(self))
        return self


# (words in an exception's message, cause id): what an error raised by the student's code points to
ERROR_CAUSES = [("backward through the graph a second time", "state_not_detached"),
                ("modified by an inplace operation", "inplace_write"),
                ("same device", "device_mismatch"),
                ("shape", "shape_error"), ("size of tensor", "shape_error"), ("must match the size", "shape_error"),
                ("cannot be multiplied", "shape_error"), ("expected input", "shape_error")]


def describe_error(error):
    """The `Cause` an exception raised by the student's code points to, or None.  Chapter 4."""
    message = str(error).splitlines()[0] if str(error) else type(error).__name__
    for words, cause_id in ERROR_CAUSES:
        if words in str(error):
            return cause(cause_id, f"{type(error).__name__}: {message[:160]}")
    return None
