"""Random test problems shared by the numeric tests."""

from __future__ import annotations

import numpy as np


def random_problem(module, sizes, dtype, seed):
    """Random x, params, initial state and cotangents (on every h_t and on the final state)."""
    T, B, I, H = sizes
    rng = np.random.default_rng(seed)
    params = module.init_params(I, H, dtype=np.float64, seed=seed)
    # Wider than the default init so that saturation and peephole terms matter.
    params = {k: (v * 1.5).astype(dtype) for k, v in params.items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in module.STATE)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstate = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in module.STATE)
    return x, params, state, dy, dstate
