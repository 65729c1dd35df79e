"""Independent references: the cells written directly from shared/reference/variants.md in PyTorch.

Nothing here comes from lstmgen: torch's autograd differentiates these, and the tests compare the
generated kernels' gradients with it.
"""

from __future__ import annotations

import torch


def _blocks(a: torch.Tensor, n: int) -> list[torch.Tensor]:
    return list(a.chunk(n, dim=-1))


def lstm_step(params, x_t, h, c):
    a_i, a_f, a_g, a_o = _blocks(x_t @ params["W"] + h @ params["R"] + params["b"], 4)
    i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
    c = f * c + i * g
    return o * torch.tanh(c), c


def lstm_peephole_step(params, x_t, h, c):
    a_i, a_f, a_g, a_o = _blocks(x_t @ params["W"] + h @ params["R"] + params["b"], 4)
    i = torch.sigmoid(a_i + params["p_i"] * c)
    f = torch.sigmoid(a_f + params["p_f"] * c)
    g = torch.tanh(a_g)
    c = f * c + i * g
    o = torch.sigmoid(a_o + params["p_o"] * c)  # the output gate peeps at the new state
    return o * torch.tanh(c), c


STEPS = {"lstm": lstm_step, "lstm_peephole": lstm_peephole_step}


def run_reference(variant: str, x, params, state):
    """Unroll the reference cell: returns (y (T, B, H), final state tuple)."""
    step = STEPS[variant]
    h, c = state
    ys = []
    for t in range(x.shape[0]):
        h, c = step(params, x[t], h, c)
        ys.append(h)
    return torch.stack(ys), (h, c)


def reference_gradients(variant: str, x, params, state, dy, dstate):
    """Outputs and gradients of L = Σ y·dy + Σ final·dstate by torch autograd, all as float64 numpy arrays."""
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    ts = tuple(torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in state)
    y, final = run_reference(variant, tx, tp, ts)
    loss = (y * torch.tensor(dy, dtype=torch.float64)).sum()
    for f, d in zip(final, dstate, strict=True):
        loss = loss + (f * torch.tensor(d, dtype=torch.float64)).sum()
    loss.backward()
    return {
        "y": y.detach().numpy(),
        "final": tuple(f.detach().numpy() for f in final),
        "dx": tx.grad.numpy(),
        "grads": {k: v.grad.numpy() for k, v in tp.items()},
        "dstate0": tuple(s.grad.numpy() for s in ts),
    }
