"""Random test problems shared by the numeric tests."""

from __future__ import annotations

import numpy as np


def proj_size(module, hidden):
    """The P a test gives a projected module: another size than H (smaller, as torch requires, where it can),
    None for a cell without projection."""
    if not getattr(module, "PROJECTED", False):
        return None
    return hidden - 1 if hidden > 1 else 2


def state_widths(module, hidden, proj):
    """The units of each state of ``module``: P for a projected output, else H."""
    return tuple(proj if proj is not None and k == 0 else hidden for k in range(len(module.STATE)))


def random_problem(module, sizes, dtype, seed):
    """Random x, params, initial state and cotangents (on every h_t and on the final state)."""
    T, B, I, H = sizes
    if getattr(module, "INPUT_ROW", False):
        I = H  # the cell reads x_t itself
    rng = np.random.default_rng(seed)
    heads = None
    if getattr(module, "HEADS", None) is not None:  # the most heads up to the default that divide H
        heads = max(k for k in range(1, module.HEADS + 1) if H % k == 0)
    proj = proj_size(module, H)
    widths = state_widths(module, H, proj)
    params = module.init_params(I, H, dtype=np.float64, seed=seed, heads=heads, **({"proj_size": proj} if proj else {}))
    # Wider than the default init so that saturation and peephole terms matter; the parameters init_params fills
    # with a constant (layer norm gains) drawn per unit, so that a mix-up of units or blocks shows.
    params = {k: (v * 1.5).astype(dtype) for k, v in params.items()}
    for k in getattr(module, "INIT", {}):
        params[k] = rng.uniform(0.5, 1.5, params[k].shape).astype(dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal((B, w))).astype(dtype) for w in widths)
    if module.VARIANT.startswith("slstm"):  # the sLSTM's normaliser n is positive once it has run a step
        k = module.STATE.index("n")
        state = (*state[:k], np.abs(state[k]) + dtype(0.5), *state[k + 1 :])
    dy = rng.standard_normal((T, B, widths[0])).astype(dtype)
    dstate = tuple(rng.standard_normal((B, w)).astype(dtype) for w in widths)
    return x, params, state, dy, dstate


def random_step_inputs(module, x, hidden, seed):
    """The module's per-step inputs (masks) for x: values in [0, 1], the caller's (T, B, H) arrays."""
    rng = np.random.default_rng(seed + 1000)
    steps, batch, _ = x.shape
    return {name: rng.uniform(0, 1, (steps, batch, hidden)).astype(x.dtype) for name in module.INPUTS}
