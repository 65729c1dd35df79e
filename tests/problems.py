"""Random test problems shared by the numeric tests."""

from __future__ import annotations

import numpy as np


def random_problem(module, sizes, dtype, seed):
    """Random x, params, initial state and cotangents (on every h_t and on the final state)."""
    T, B, I, H = sizes
    if getattr(module, "INPUT_ROW", False):
        I = H  # the cell reads x_t itself
    rng = np.random.default_rng(seed)
    heads = None
    if getattr(module, "HEADS", None) is not None:  # the most heads up to the default that divide H
        heads = max(k for k in range(1, module.HEADS + 1) if H % k == 0)
    params = module.init_params(I, H, dtype=np.float64, seed=seed, heads=heads)
    # Wider than the default init so that saturation and peephole terms matter.
    params = {k: (v * 1.5).astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in module.STATE)
    if module.VARIANT.startswith("slstm"):  # the sLSTM's normaliser n is positive once it has run a step
        k = module.STATE.index("n")
        state = (*state[:k], np.abs(state[k]) + dtype(0.5), *state[k + 1 :])
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstate = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in module.STATE)
    return x, params, state, dy, dstate


def random_step_inputs(module, x, hidden, seed):
    """The module's per-step inputs (masks) for x: values in [0, 1], the caller's (T, B, H) arrays."""
    rng = np.random.default_rng(seed + 1000)
    steps, batch, _ = x.shape
    return {name: rng.uniform(0, 1, (steps, batch, hidden)).astype(x.dtype) for name in module.INPUTS}
