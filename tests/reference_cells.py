"""Independent references: every cell written directly from shared/reference/variants.md and
modern-cells.md in PyTorch.

Nothing here comes from lstmgen: torch's autograd differentiates these, and the tests compare the generated
kernels' gradients with it. ``truncated=True`` detaches h_{t-1} where it enters a pre-activation, which is
the definition of the truncated gradient.
"""

from __future__ import annotations

import numpy as np
import torch

sigmoid, tanh = torch.sigmoid, torch.tanh


def _recurrent_input(h, truncated):
    return h.detach() if truncated else h


def rnn_tanh(p, x, state, truncated):
    (h,) = state
    return (tanh(x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]),)


def lstm_1997(p, x, state, truncated):
    h, c = state
    a_i, a_g, a_o = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(3, dim=-1)
    i, o = sigmoid(a_i), sigmoid(a_o)
    g = 4 * sigmoid(a_g) - 2  # the paper's squashing functions, in their sigmoid form
    c = c + i * g
    return o * (2 * sigmoid(c) - 1), c


def lstm_1997_blocks(p, x, state, truncated):
    """lstm_1997 with memory blocks (the 1997 paper's architecture): one input and one output gate per block of S
    cells, so W, R and b hold H/S columns for each of i and o; S is read from b's width, H + 2H/S."""
    h, c = state
    H = c.shape[-1]
    n = (p["b"].shape[0] - H) // 2
    a_i, a_g, a_o = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).split([n, H, n], dim=-1)
    i = sigmoid(a_i).repeat_interleave(H // n, dim=-1)  # block k's gate multiplies cells kS..kS+S-1
    o = sigmoid(a_o).repeat_interleave(H // n, dim=-1)
    c = c + i * (4 * sigmoid(a_g) - 2)
    return o * (2 * sigmoid(c) - 1), c


def lstm_1997_net_unroll(p, x, state, truncated):
    """The 1997 paper's network: lstm_1997 (memory blocks of S cells, S read from b's width, H + 2H/S) whose input
    and output gate activations of step t-1, one per block (zero before the first step), feed every input gate,
    cell input and output gate through Q ((2H/S, H/S + H + H/S): rows i then o per block, columns as W's)."""
    h, c = state
    H = c.shape[-1]
    n = (p["b"].shape[0] - H) // 2
    previous = torch.zeros(h.shape[0], 2 * n, dtype=h.dtype)
    ys = []
    for t in range(x.shape[0]):
        fed = previous.detach() if truncated else previous
        a = x[t] @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"] + fed @ p["Q"]
        a_i, a_g, a_o = a.split([n, H, n], dim=-1)
        i, o = sigmoid(a_i), sigmoid(a_o)
        c = c + i.repeat_interleave(H // n, dim=-1) * (4 * sigmoid(a_g) - 2)
        h = o.repeat_interleave(H // n, dim=-1) * (2 * sigmoid(c) - 1)
        previous = torch.cat([i, o], dim=-1)
        ys.append(h)
    return torch.stack(ys), (h, c)


def peephole_lstm(
    p, x, state, truncated, gates="ifgo", peepholes=True, g_act=tanh, h_act=tanh, cifg=False, feedback=None
):
    """The peephole LSTM with Greff et al.'s changes: a missing gate is 1, cifg sets f = 1 - i.

    ``feedback`` (FGR): a dict holding the previous step's (i, f, o), fed to a_i, a_f, a_o through Q
    (row block = source gate, column block = target gate); updated in place.
    """
    h, c = state
    projections = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(len(gates), -1)
    blocks = dict(zip(gates, projections, strict=True))
    if feedback is not None:
        previous = torch.cat(feedback["gates"], dim=-1)
        previous = previous.detach() if truncated else previous
        for name, q in zip("ifo", (previous @ p["Q"]).chunk(3, dim=-1), strict=True):
            blocks[name] = blocks[name] + q

    def peep(name, cell):
        return p[f"p_{name}"] * cell if peepholes else 0

    i = sigmoid(blocks["i"] + peep("i", c)) if "i" in blocks else 1
    f = sigmoid(blocks["f"] + peep("f", c)) if "f" in blocks else 1
    f = 1 - i if cifg else f
    g = g_act(blocks["g"])
    c = f * c + i * g
    o = sigmoid(blocks["o"] + peep("o", c)) if "o" in blocks else 1
    if feedback is not None:
        feedback["gates"] = (i, f, o)
    return o * h_act(c), c


def lstm_fgr_unroll(p, x, state, truncated):
    """The full-gate-recurrence LSTM: the previous (i, f, o) start at zero and are carried by the unroll."""
    zeros = torch.zeros_like(state[0])
    feedback = {"gates": (zeros, zeros, zeros)}
    ys = []
    for t in range(x.shape[0]):
        state = peephole_lstm(p, x[t], state, truncated, feedback=feedback)
        ys.append(state[0])
    return torch.stack(ys), state


def gru(p, x, state, truncated):
    (h,) = state
    hr = _recurrent_input(h, truncated)
    H = h.shape[-1]
    xw = x @ p["W"] + p["b"]
    hR = hr @ p["R"]
    r = sigmoid(xw[..., :H] + hR[..., :H])
    z = sigmoid(xw[..., H : 2 * H] + hR[..., H : 2 * H])
    n = tanh(xw[..., 2 * H :] + r * (hR[..., 2 * H :] + p["b_rn"]))
    return ((1 - z) * n + z * h,)


def gru_v3(p, x, state, truncated):
    (h,) = state
    hr = _recurrent_input(h, truncated)
    H = h.shape[-1]
    xw = x @ p["W"] + p["b"]
    R = p["R"]
    r = sigmoid(xw[..., :H] + hr @ R[:, :H])
    z = sigmoid(xw[..., H : 2 * H] + hr @ R[:, H : 2 * H])
    n = tanh(xw[..., 2 * H :] + (r * hr) @ R[:, 2 * H :])  # reset before the recurrent product
    return ((1 - z) * n + z * h,)


# The modern cells, from shared/reference/modern-cells.md. "No R": their only recurrence is elementwise.


def _blocks(p, x, count):
    return (x @ p["W"] + p["b"]).chunk(count, dim=-1)


def indrnn(p, x, state, truncated):
    (h,) = state
    return (torch.relu(_blocks(p, x, 1)[0] + p["u"] * _recurrent_input(h, truncated)),)


def sru(p, x, state, truncated):
    _h, c = state  # h_{t-1} is never read
    xw_n, xw_f, xw_r, xw_s = _blocks(p, x, 4)
    f = sigmoid(xw_f + p["v_f"] * c)
    r = sigmoid(xw_r + p["v_r"] * c)
    c = f * c + (1 - f) * xw_n
    return r * c + (1 - r) * xw_s, c


def mingru(p, x, state, truncated):
    (h,) = state
    xw_z, xw_n = _blocks(p, x, 2)
    z = sigmoid(xw_z)
    return ((1 - z) * h + z * xw_n,)


def minlstm(p, x, state, truncated):
    (h,) = state
    xw_f, xw_i, xw_n = _blocks(p, x, 3)
    f, i = sigmoid(xw_f), sigmoid(xw_i)
    return ((f * h + i * xw_n) / (f + i),)


def minlstm_log_space(p, x, state, truncated):
    """The paper's log-space minLSTM: f/(f + i) = exp(−softplus(d)), i/(f + i) = exp(−softplus(−d)) with
    d = softplus(−a_f) − softplus(−a_i); finite where both gates underflow."""
    (h,) = state
    xw_f, xw_i, xw_n = _blocks(p, x, 3)
    softplus = torch.nn.functional.softplus
    diff = softplus(-xw_f) - softplus(-xw_i)
    return (torch.exp(-softplus(diff)) * h + torch.exp(-softplus(-diff)) * xw_n,)


#: Griffin's _MAX_SQRT_GRADIENT.
MAX_SQRT_GRADIENT = 1000.0


class SqrtBoundDerivative(torch.autograd.Function):
    """Griffin's square root whose derivative is capped at MAX_SQRT_GRADIENT (recurrentgemma's torch code)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad_output):
        (x,) = ctx.saved_tensors
        return grad_output / torch.sqrt(torch.clip(4.0 * x, min=1 / MAX_SQRT_GRADIENT**2))


def rg_lru_griffin(p, x, state, truncated):
    """Griffin's RG-LRU as its authors' code computes it: SqrtBoundDerivative of 1 − a², the latter written
    −expm1(2 log a) (which does not round to 0 while log a is not 0)."""
    (h,) = state
    xw_a, xw_i = _blocks(p, x, 2)
    r, i = sigmoid(xw_a), sigmoid(xw_i)
    log_a = -8 * r * torch.nn.functional.softplus(p["lam"])
    return (torch.exp(log_a) * h + SqrtBoundDerivative.apply(-torch.expm1(2 * log_a)) * (i * x),)


def janet(p, x, state, truncated, beta=1.0):
    (h,) = state
    a_f, a_g = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(2, dim=-1)
    return (sigmoid(a_f) * h + (1 - sigmoid(a_f - beta)) * tanh(a_g),)


def ligru(p, x, state, truncated):
    (h,) = state
    a_z, a_n = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(2, dim=-1)
    z = sigmoid(a_z)
    return (z * h + (1 - z) * torch.relu(a_n),)


def rg_lru(p, x, state, truncated):
    (h,) = state
    xw_a, xw_i = _blocks(p, x, 2)
    r, i = sigmoid(xw_a), sigmoid(xw_i)
    log_a = -8 * r * torch.nn.functional.softplus(p["lam"])
    a = torch.exp(log_a)
    return (a * h + torch.sqrt(1 - a**2) * (i * x),)


def zoneout_lstm(p, x, state, truncated, keep_c, keep_h):
    h, c = state
    a_i, a_f, a_g, a_o = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(4, dim=-1)
    c_new = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)
    h_new = sigmoid(a_o) * tanh(c_new)
    return keep_h * h + (1 - keep_h) * h_new, keep_c * c + (1 - keep_c) * c_new


def block_diagonal_product(h, R):
    """h R for the compact block-diagonal R (K, d, G·d) of modern-cells.md: head k's units h[:, k·d:(k+1)·d]
    times R[k], whose column block g feeds units k·d…(k+1)·d of gate g. Returns (B, G·H), gate-major."""
    K, d, Gd = R.shape
    per_head = [h[:, k * d : (k + 1) * d] @ R[k] for k in range(K)]
    return torch.cat([per_head[k][:, g * d : (g + 1) * d] for g in range(Gd // d) for k in range(K)], dim=-1)


def slstm(p, x, state, truncated):
    """xLSTM's sLSTM with the authors' stabilisation; m = ã_i where the normaliser n_{t-1} is 0."""
    h, c, n, m = state
    a_i, a_f, a_z, a_o = (x @ p["W"] + p["b"] + block_diagonal_product(_recurrent_input(h, truncated), p["R"])).chunk(
        4, dim=-1
    )
    log_f = torch.nn.functional.logsigmoid(a_f)
    empty = n == 0
    m_new = torch.where(empty, a_i, torch.maximum(log_f + m, a_i))
    # From an empty normaliser nothing is carried (lstmgen's rule: f = 0 there, where the formula would give
    # exp(log_f + m - a_i) times the zero c and n, inf * 0 in float32 for a_i << 0).
    zero = torch.zeros_like(a_f)
    i, f = torch.exp(a_i - m_new), torch.where(empty, zero, torch.exp(torch.where(empty, zero, log_f + m - m_new)))
    c = f * c + i * tanh(a_z)
    n = f * n + i
    return sigmoid(a_o) * c / n, c, n, m_new


def layer_norm_sheet(v, gain, shift=None, eps=1e-5):
    """LN(v; γ, β) = γ ⊙ (v − mean(v)) / sqrt(var(v) + eps) + β over the last axis, biased variance (the sheet)."""
    mean = v.mean(dim=-1, keepdim=True)
    var = ((v - mean) ** 2).mean(dim=-1, keepdim=True)
    out = gain * (v - mean) / torch.sqrt(var + eps)
    return out if shift is None else out + shift


def _functional_layer_norm(v, gain, shift=None, eps=1e-5):
    """torch's own layer norm over the last axis, the same arguments as :func:`layer_norm_sheet`."""
    return torch.nn.functional.layer_norm(v, v.shape[-1:], weight=gain, bias=shift, eps=eps)


def layernorm_lstm(p, x, state, truncated, layer_norm=layer_norm_sheet):
    """Ba, Kiros & Hinton's LSTM: layer norm of x W and h R over all 4H pre-activations (gains gamma_x,
    gamma_h; their shifts fold into b) and of c before its tanh (gamma_c, beta_c), eps 1e-5. ``layer_norm``:
    the sheet's formula, or torch.nn.functional.layer_norm (:func:`layernorm_lstm_functional`)."""
    h, c = state
    a = layer_norm(x @ p["W"], p["gamma_x"]) + layer_norm(_recurrent_input(h, truncated) @ p["R"], p["gamma_h"])
    a_i, a_f, a_g, a_o = (a + p["b"]).chunk(4, dim=-1)
    c = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)
    return sigmoid(a_o) * tanh(layer_norm(c, p["gamma_c"], p["beta_c"])), c


def layernorm_lstm_functional(p, x, state, truncated):
    return layernorm_lstm(p, x, state, truncated, layer_norm=_functional_layer_norm)


def lstmp(p, x, state, truncated):
    """Sak et al.'s projected LSTM (torch.nn.LSTM(proj_size=P)): h (B, P) = (o * tanh(c)) W_p, R (P, 4H)."""
    h, c = state
    a_i, a_f, a_g, a_o = (x @ p["W"] + _recurrent_input(h, truncated) @ p["R"] + p["b"]).chunk(4, dim=-1)
    c = sigmoid(a_f) * c + sigmoid(a_i) * tanh(a_g)
    return (sigmoid(a_o) * tanh(c)) @ p["W_p"], c


STEPS = {
    "rnn_tanh": rnn_tanh,
    "lstm_1997": lstm_1997,
    "lstm_1997_net": None,  # unrolled by lstm_1997_net_unroll: it carries the previous gate values
    "lstm": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, peepholes=False),
    "lstm_np": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, peepholes=False),
    "lstm_peephole": peephole_lstm,
    "lstm_nig": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, gates="fgo"),
    "lstm_nfg": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, gates="igo"),
    "lstm_nog": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, gates="ifg"),
    "lstm_niaf": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, g_act=lambda a: a),
    "lstm_noaf": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, h_act=lambda c: c),
    "lstm_cifg": lambda p, x, s, tr: peephole_lstm(p, x, s, tr, gates="igo", cifg=True),
    "lstm_fgr": None,  # unrolled by lstm_fgr_unroll: it carries the previous gate values
    "gru": gru,
    "gru_v3": gru_v3,
    "indrnn": indrnn,
    "sru": sru,
    "mingru": mingru,
    "minlstm": minlstm,
    "janet": janet,
    "ligru": ligru,
    "rg_lru": rg_lru,
    "zoneout_lstm": zoneout_lstm,
    "slstm": slstm,
    "layernorm_lstm": layernorm_lstm,
    "lstmp": lstmp,
}
#: Second references of a variant, by a name of their own: the same cell written another way.
ALTERNATIVES = {
    "layernorm_lstm_functional": layernorm_lstm_functional,
    "lstm_1997_blocks": lstm_1997_blocks,
    "minlstm_log_space": minlstm_log_space,
    "rg_lru_griffin": rg_lru_griffin,
}
#: The references written in a stable form, by variant: where a reference of STEPS computes a quotient or a
#: difference that cancels at saturated gates (0/0, an infinite derivative), the same cell written as its
#: authors' code does. The saturation tests compare with these.
STABLE = {"minlstm": "minlstm_log_space", "rg_lru": "rg_lru_griffin"}


def run_reference(variant, x, params, state, truncated=False, inputs=None):
    """Unroll the reference cell: returns (y (T, B, H), or (T, B, P) when projected, final state tuple).
    ``inputs``: the per-step inputs (T, B, H) by name, passed to the step as keywords."""
    if variant == "lstm_fgr":
        return lstm_fgr_unroll(params, x, state, truncated)
    if variant == "lstm_1997_net":
        return lstm_1997_net_unroll(params, x, state, truncated)
    step = STEPS[variant] if variant in STEPS else ALTERNATIVES[variant]
    inputs = inputs or {}
    ys = []
    for t in range(x.shape[0]):
        state = step(params, x[t], state, truncated, **{k: v[t] for k, v in inputs.items()})
        ys.append(state[0])
    return torch.stack(ys), state


def reference_gradients(variant, x, params, state, dy, dstate, truncated=False, inputs=None, dtype=torch.float64):
    """Outputs and gradients of L = Σ y·dy + Σ final·dstate by torch autograd, all as float64 numpy arrays
    (``inputs``: the per-step inputs, constants of the loss; ``dtype``: the precision torch computes in)."""
    tinputs = {k: torch.tensor(np.array(v), dtype=dtype) for k, v in (inputs or {}).items()}
    return autograd_gradients(
        lambda tx, tp, ts: run_reference(variant, tx, tp, ts, truncated, tinputs), x, params, state, dy, dstate, dtype
    )


def autograd_gradients(unroll, x, params, state, dy, dstate, dtype=torch.float64):
    """Outputs and gradients of L = Σ y·dy + Σ final·dstate by torch autograd, as float64 numpy arrays, where
    ``unroll(x, params, state) -> (y, final state)`` runs the sequence on tensors of ``dtype``."""
    # torch.tensor refuses negative strides, which numpy keeps even on "contiguous" arrays of size-1 axes: copy.
    x, dy = np.array(x), np.array(dy)
    params = {k: np.array(v) for k, v in params.items()}
    state, dstate = tuple(map(np.array, state)), tuple(map(np.array, dstate))
    tx = torch.tensor(x, dtype=dtype, requires_grad=True)
    tp = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in params.items()}
    ts = tuple(torch.tensor(s, dtype=dtype, requires_grad=True) for s in state)
    y, final = unroll(tx, tp, ts)
    loss = (y * torch.tensor(dy, dtype=dtype)).sum()
    for f, d in zip(final, dstate, strict=True):
        loss = loss + (f * torch.tensor(d, dtype=dtype)).sum()
    tensors = [tx, *tp.values(), *ts]
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    grads = [torch.zeros_like(t) if g is None else g for t, g in zip(tensors, grads, strict=True)]
    as64 = lambda t: t.detach().numpy().astype(np.float64)  # noqa: E731
    return {
        "y": as64(y),
        "final": tuple(map(as64, final)),
        "dx": as64(grads[0]),
        "grads": {k: as64(g) for k, g in zip(tp, grads[1 : 1 + len(tp)], strict=True)},
        "dstate0": tuple(map(as64, grads[1 + len(tp) :])),
    }
