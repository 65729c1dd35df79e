"""The generated modules' exp-free-of-libm activations at their branch points and extremes, per dtype."""

from __future__ import annotations

import numpy as np
import pytest

SPECIAL = [
    0.0,
    -0.0,
    1e-30,
    1e-8,
    0.3465,
    0.3466,
    0.5,
    1.0,
    9.0,
    17.0,
    19.0,
    37.0,
    43.5,
    87.0,
    88.7,
    89.0,
    100.0,
    708.0,
    710.0,
    1e4,
    1e30,
    np.inf,
]
POINTS = np.array(SPECIAL + [-v for v in SPECIAL] + list(np.linspace(-20, 20, 4001)))


def reference_sigmoid(x):
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


@pytest.mark.parametrize(("dtype", "rtol", "tiny"), [(np.float32, 4e-7, 1.2e-38), (np.float64, 4.5e-16, 2.3e-308)])
@pytest.mark.parametrize("name", ["sigmoid", "tanh"])
def test_helper_accuracy_and_ieee_edges(generated_module, name, dtype, rtol, tiny):
    helper = getattr(generated_module("lstm"), f"_{name}")
    x = POINTS.astype(dtype)
    got = np.array([helper(v, dtype) for v in x])
    ref = reference_sigmoid(x.astype(np.float64)) if name == "sigmoid" else np.tanh(x.astype(np.float64))
    err = np.abs(got.astype(np.float64) - ref)
    # Relative accuracy, except below the smallest normal number, where results flush to zero.
    assert np.all((err <= 4 * rtol * np.abs(ref)) | (err <= tiny)), x[np.argmax(err / np.maximum(np.abs(ref), tiny))]
    assert np.isnan(helper(dtype(np.nan), dtype))
    if name == "sigmoid":
        assert helper(dtype(-np.inf), dtype) == 0 and helper(dtype(np.inf), dtype) == 1
    if name == "tanh":
        assert np.signbit(helper(dtype(-0.0), dtype)) and not np.signbit(helper(dtype(0.0), dtype))
