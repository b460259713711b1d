"""Measuring how gradients flow back through time in a tanh RNN and an LSTM (PyTorch).

The question: a loss read at the last step T, how strongly does it depend on the input x_t that
came k = T - 1 - t steps earlier?  For a tanh RNN every step back multiplies the gradient by
diag(1 - h_t^2) W_hh, which typically shrinks it geometrically (Bengio et al. 1994).  An LSTM has a second
path back, along the cell state, where each step multiplies by the forget gate f_t alone; its bias
decides how long the memory lasts (Gers et al. 2000; Jozefowicz et al. 2015).
Introduced in chapter 1, measured properly in chapter 2; through depth as well as time in chapter 5.
"""
import numpy as np
import torch
import torch.nn.functional as F

from lstm_lab.cells import cell_update

__all__ = ["tanh_rnn_layer", "forget_gate_activations", "gradient_norms_through_time", "gradient_norms_over_seeds",
           "geometric_mean", "decay_per_step", "layer_states", "gradient_norms_by_layer"]


def tanh_rnn_layer(x, h, weight_ih, weight_hh, bias_ih=None, bias_hh=None):
    """The simple ("vanilla") RNN, h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), over a sequence.

    x: (T, B, I);  h: (B, H);  weight_ih (H, I), weight_hh (H, H), biases (H,): `nn.RNN`'s layout.
    Returns output (T, B, H) and the final h (B, H).  Introduced in chapter 2."""
    x_proj = F.linear(x, weight_ih, bias_ih)  # (T, B, H): input projection for every step at once
    outputs = []
    for t in range(x.shape[0]):
        h = torch.tanh(x_proj[t] + F.linear(h, weight_hh, bias_hh))  # (B, H): the only path back in time
        outputs.append(h)
    return torch.stack(outputs), h


def forget_gate_activations(lstm, x):
    """The forget gate f_t of the first layer at every step, for input x (T, B, I): a (T, B, H) tensor.

    lstm: `lstm_lab.LSTM` or `nn.LSTM` (time-major).  Introduced in chapter 2."""
    W_ih, W_hh = lstm.weight_ih_l0, lstm.weight_hh_l0  # (4H, I), (4H, H)
    b = lstm.bias_ih_l0 + lstm.bias_hh_l0 if lstm.bias else None  # (4H,): only the sum matters
    H = lstm.hidden_size
    h = c = x.new_zeros(x.shape[1], H)  # (B, H)
    forget = []
    with torch.no_grad():
        for x_t in x:
            gates = F.linear(x_t, W_ih, b) + F.linear(h, W_hh)  # (B, 4H) in order i, f, g, o
            forget.append(torch.sigmoid(gates[:, H:2 * H]))
            h, c = cell_update(gates, c)
    return torch.stack(forget)


def gradient_norms_through_time(model, x):
    """How much the last output depends on each earlier input: norms of dL/dx_t, L = sum(h_T).

    model: maps x (T, B, I) to output (T, B, H), or to (output, state) as `nn.RNN`/`nn.LSTM` do.
    Returns a numpy array of shape (T,) indexed by distance k = T - 1 - t: entry k is the mean over
    the batch of ||dL/dx_{T-1-k}||, so entry 0 is the last step.  Introduced in chapter 1."""
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D (seq_len, batch_size, input_size), got shape {tuple(x.shape)}")
    x = x.detach().clone().requires_grad_(True)
    output = model(x)
    output = output[0] if isinstance(output, tuple) else output  # (T, B, H)
    output[-1].sum().backward()  # L = sum of h_T over the batch and the features
    norms = x.grad.norm(dim=2).mean(dim=1)  # (T,): ||dL/dx_t|| averaged over the batch
    return norms.flip(0).cpu().numpy()  # index by distance from the end


def gradient_norms_over_seeds(make_model, seeds, seq_len, batch_size, input_size, dtype=torch.float64):
    """`gradient_norms_through_time` for several random models and inputs: a (len(seeds), T) array.

    make_model(): builds a fresh model (called after seeding, so each seed gives new weights).
    float64 by default: the RNN's gradients fall below float32's range within ~100 steps.
    Introduced in chapter 1."""
    rows = []
    for seed in seeds:
        torch.manual_seed(seed)
        model = make_model().to(dtype)
        x = torch.randn(seq_len, batch_size, input_size, dtype=dtype)  # (T, B, I)
        rows.append(gradient_norms_through_time(model, x))
    return np.stack(rows)


def geometric_mean(norms):
    """Mean over seeds in log space: (n_seeds, T) -> (T,).  The right average for quantities that
    vary over orders of magnitude.  Introduced in chapter 1."""
    return np.exp(np.log(np.atleast_2d(norms)).mean(axis=0))


def decay_per_step(norms, start, stop):
    """Average factor by which the gradient norm shrinks per step back, between distances start and stop.

    norms: (T,) or (n, T) indexed by distance (rows are averaged in log space first).  Fits
    log(norm_k) = a + k log(r) by least squares over start <= k < stop and returns r.  Chapter 2."""
    log_norms = np.log(geometric_mean(norms)[start:stop])  # (stop - start,)
    slope = np.polyfit(np.arange(start, stop), log_norms, 1)[0]
    return float(np.exp(slope))


def layer_states(lstm, x, inject=None):
    """Run a stacked LSTM layer by layer, step by step, keeping every layer's hidden state h^k_t.

    lstm: `lstm_lab.LSTM` or `nn.LSTM` (one direction, time-major; dropout is not applied, as in eval mode).
    x: (T, B, I).  inject: optional {(k, t): (B, H) tensor} added to h^k_t before anything reads it (for
    finite-difference checks).  Returns states, a list of L lists of T tensors (B, H): states[k][t] is
    h^k_t, and the top layer's output (T, B, H), equal to the module's own output.  Chapter 5."""
    inject = inject or {}
    H = lstm.hidden_size
    states, layer_input = [], x
    for k in range(lstm.num_layers):
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        weights = [getattr(lstm, f"{name}_l{k}", None) for name in names]  # biases None if bias=False
        h = c = x.new_zeros(x.shape[1], H)  # (B, H)
        layer = []
        for t, x_t in enumerate(layer_input):  # x_t: (B, I) for layer 0, (B, H) above: h^{k-1}_t
            gates = F.linear(x_t, weights[0], weights[2]) + F.linear(h, weights[1], weights[3])  # (B, 4H)
            h, c = cell_update(gates, c)
            if (k, t) in inject:
                h = h + inject[(k, t)]
            layer.append(h)
        states.append(layer)
        layer_input = torch.stack(layer)  # (T, B, H): the next layer's input sequence
    return states, layer_input


def gradient_norms_by_layer(lstm, x, loss_fn=None):
    """How strongly a loss depends on every layer's hidden state at every step: norms of dL/dh^k_t.

    Every path counts: h^k_t reaches the loss through layer k's later steps and through the layers above.
    lstm, x: as `layer_states`.  loss_fn(output (T, B, H)) -> scalar; default: the sum of the top layer's
    last output, as `gradient_norms_through_time`.  Returns a numpy array (L, T): entry [k, t] is the mean
    over the batch of ||dL/dh^k_t||.  Chapter 5."""
    states, output = layer_states(lstm, x)
    loss = output[-1].sum() if loss_fn is None else loss_fn(output)
    flat = [h for layer in states for h in layer]  # L * T tensors, layer by layer
    grads = torch.autograd.grad(loss, flat)  # total derivatives, through time and through depth
    norms = torch.stack([g.norm(dim=1).mean() for g in grads])  # (L * T,)
    return norms.view(lstm.num_layers, x.shape[0]).detach().cpu().numpy()
