"""A numpy LSTM layer with a hand-written backward pass (BPTT), and a finite-difference checker.

Nothing here uses PyTorch: this is the reference chapter 2 derives line by line.  Weights use
PyTorch's layout, so they can be copied to and from `nn.LSTM` (rows stacked in gate order i, f, g, o):

    W_ih (4H, I)   W_hh (4H, H)   b_ih (4H,)   b_hh (4H,)

One step, with a = W_ih x + b_ih + W_hh h + b_hh split into a_i, a_f, a_g, a_o:

    i = sigmoid(a_i)   f = sigmoid(a_f)   g = tanh(a_g)   o = sigmoid(a_o)
    c_t = f * c_{t-1} + i * g
    h_t = o * tanh(c_t)
"""
import numpy as np

__all__ = ["INPUTS", "sigmoid", "lstm_forward", "lstm_backward", "numerical_gradient", "relative_error",
           "random_lstm_problem", "hand_gradients", "gradient_check"]


def sigmoid(a):
    """Logistic function 1 / (1 + exp(-a)), computed without overflow for large |a|.  Chapters 1, 2 and 3."""
    e = np.exp(-np.abs(a))
    return np.where(a >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def lstm_forward(x, h0, c0, W_ih, W_hh, b_ih, b_hh):
    """Forward pass of one LSTM layer over a sequence.

    x: (T, B, I);  h0, c0: (B, H).  Returns hs (T, B, H), (h_T, c_T), and a cache for `lstm_backward`.
    Introduced in chapter 2."""
    h, c = h0, c0
    hs, steps = [], []
    for x_t in x:
        a = x_t @ W_ih.T + b_ih + h @ W_hh.T + b_hh  # (B, 4H) pre-activations
        a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
        i, f, g, o = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c_new = f * c + i * g
        tanh_c = np.tanh(c_new)
        h_new = o * tanh_c
        steps.append((x_t, h, c, i, f, g, o, tanh_c))  # what the backward pass needs from this step
        h, c = h_new, c_new
        hs.append(h)
    cache = {"steps": steps, "W_ih": W_ih, "W_hh": W_hh}
    return np.stack(hs), (h, c), cache


def lstm_backward(dhs, dh_T, dc_T, cache, tanh_grad=lambda g: 1 - g ** 2, tanh_grad_back=None):
    """Backpropagation through time for `lstm_forward`.

    dhs: (T, B, H) gradient of the loss w.r.t. every output h_t;  dh_T, dc_T: (B, H) gradients w.r.t.
    the final state (zeros if the loss ignores it).  `tanh_grad(g)` is the derivative of the candidate
    g = tanh(a_g) written in terms of g.  `tanh_grad_back`, if given, replaces it on the path back to
    x_t and h_{t-1} only, the weights' gradients keeping `tanh_grad`: chapter 2 puts a misprint there,
    where a student report has it (its equation 7), to see the check fail.
    Returns a dict of gradients with keys x (T, B, I), h0, c0 (B, H), W_ih, W_hh, b_ih, b_hh (their
    own shapes).  Introduced in chapter 2."""
    W_ih, W_hh = cache["W_ih"], cache["W_hh"]
    grads = {"W_ih": np.zeros_like(W_ih), "W_hh": np.zeros_like(W_hh),
             "b_ih": np.zeros(W_ih.shape[0]), "b_hh": np.zeros(W_hh.shape[0])}
    dx = []
    dh_next, dc_next = dh_T, dc_T  # gradients flowing back from step t + 1
    for t in reversed(range(len(cache["steps"]))):
        x_t, h_prev, c_prev, i, f, g, o, tanh_c = cache["steps"][t]
        dh = dhs[t] + dh_next  # h_t feeds both the output and the next step
        do = dh * tanh_c
        dc = dc_next + dh * o * (1 - tanh_c ** 2)  # c_t feeds h_t and c_{t+1}
        di, df, dg = dc * g, dc * c_prev, dc * i
        dc_next = dc * f  # the forget gate is the only path back to c_{t-1}
        # through the nonlinearities: sigmoid' = s (1 - s), tanh' = 1 - tanh^2 (not (1 - tanh)^2)
        da = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * tanh_grad(g), do * o * (1 - o)], axis=1)
        grads["W_ih"] += da.T @ x_t  # (4H, B) @ (B, I)
        grads["W_hh"] += da.T @ h_prev
        grads["b_ih"] += da.sum(axis=0)
        grads["b_hh"] += da.sum(axis=0)
        if tanh_grad_back is not None:  # the path back to x_t and h_{t-1} uses another derivative of g
            da = np.concatenate([da[:, :2 * g.shape[1]], dg * tanh_grad_back(g), da[:, 3 * g.shape[1]:]], axis=1)
        dx.append(da @ W_ih)  # (B, 4H) @ (4H, I)
        dh_next = da @ W_hh
    grads.update(x=np.stack(dx[::-1]), h0=dh_next, c0=dc_next)
    return grads


def numerical_gradient(f, array, eps=1e-6):
    """Central finite differences of the scalar function f() w.r.t. every entry of `array`.

    `array` is perturbed in place and restored; f takes no arguments and reads it.  Introduced in chapter 2."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        f_plus = f()
        array[index] = saved - eps
        f_minus = f()
        array[index] = saved
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def relative_error(a, b):
    """||a - b|| / (||a|| + ||b||): 0 for equal arrays, about 1 for unrelated ones.  Chapter 2."""
    denominator = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denominator == 0 else float(np.linalg.norm(a - b) / denominator)


def random_lstm_problem(seq_len, batch_size, input_size, hidden_size, seed=0):
    """Random float64 inputs, state, weights and loss weights for a gradient check.

    Returns a dict with x, h0, c0, W_ih, W_hh, b_ih, b_hh, and R_hs, R_h, R_c: the loss used by
    `gradient_check` is sum(hs * R_hs) + sum(h_T * R_h) + sum(c_T * R_c).  Introduced in chapter 2."""
    rng = np.random.default_rng(seed)
    T, B, I, H = seq_len, batch_size, input_size, hidden_size
    shapes = {"x": (T, B, I), "h0": (B, H), "c0": (B, H), "W_ih": (4 * H, I), "W_hh": (4 * H, H),
              "b_ih": (4 * H,), "b_hh": (4 * H,), "R_hs": (T, B, H), "R_h": (B, H), "R_c": (B, H)}
    return {name: rng.standard_normal(shape) for name, shape in shapes.items()}


INPUTS = ("x", "h0", "c0", "W_ih", "W_hh", "b_ih", "b_hh")  # what a problem's loss is differentiated by


def hand_gradients(problem, tanh_grad=lambda g: 1 - g ** 2, tanh_grad_back=None):
    """The gradients of a `random_lstm_problem`'s loss by the hand-written backward pass.

    Returns {name: array} for every name in INPUTS; tanh_grad and tanh_grad_back are passed on to
    `lstm_backward` (chapter 2 swaps in a misprinted one).  Introduced in chapter 2."""
    _, _, cache = lstm_forward(*(problem[name] for name in INPUTS))
    return lstm_backward(problem["R_hs"], problem["R_h"], problem["R_c"], cache, tanh_grad, tanh_grad_back)


def gradient_check(problem, eps=1e-6, tanh_grad=lambda g: 1 - g ** 2, tanh_grad_back=None):
    """Compare `hand_gradients` with central differences on every input of `problem`.

    problem: a dict from `random_lstm_problem`; tanh_grad and tanh_grad_back go to `lstm_backward`.
    Returns {name: relative error}.  Introduced in chapter 2."""
    def loss():
        hs, (h_T, c_T), _ = lstm_forward(*(problem[name] for name in INPUTS))
        return np.sum(hs * problem["R_hs"]) + np.sum(h_T * problem["R_h"]) + np.sum(c_T * problem["R_c"])

    analytic = hand_gradients(problem, tanh_grad, tanh_grad_back)
    return {name: relative_error(analytic[name], numerical_gradient(loss, problem[name], eps)) for name in INPUTS}
