"""Every cell at the edges: saturated gates, relu and select arguments exactly 0, max/min ties.

A derived gradient must be finite wherever the true one is, and equal to it. Each built-in and each example
cell runs, in both dtypes and both gradient modes, in three regimes, and is compared with a float64 torch
reference written in a stable form (``reference_cells.STABLE``: the authors' forms where the equations as
written cancel), whose outputs and gradients are all finite in these regimes:

- ``exact``: W = R = 0, so every pre-activation is its bias, one of −1e4, 0, 1e4 (each pair of the first
  three gates sees every pair of values across the units); a zero initial state. Gates saturate to exactly
  0 or 1, a relu or select argument is exactly 0, a max of equal values ties (sLSTM: log σ(1e4) + 0 = 0 = ĩ).
  The values are exact in both dtypes, so both take the same branch.
- ``saturated``: small random W and R, biases ±1e2 and ±1e4 by unit, a random initial state.
- ``scaled``: the usual random parameters, inputs scaled by 1e2 and by 1e4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from problems import random_problem, random_step_inputs
from reference_cells import STABLE, autograd_gradients, run_reference
from test_kernels_vs_autograd import assert_close
from test_spec_files import REFERENCES as EXAMPLE_STEPS
from test_spec_files import example_modules  # noqa: F401 (a fixture)

from lstmgen import load_module, write_module
from lstmgen.spec import CellSpec, Gate
from lstmgen.variants import VARIANTS

REGIMES = ["exact", "saturated", "scaled_1e2", "scaled_1e4"]
#: T, B, I, H: 9 units hold every pair of the three exact values for the first three gates.
SIZES = (3, 2, 3, 9)
EXACT_VALUES = (-1e4, 0.0, 1e4)
#: The suite's tolerances (test_kernels_vs_autograd): rtol, atol relative to max|ref|, atol floor.
#: Both with the float64 tests' floor of 1: at saturation many gradients are tiny next to the cotangents and
#: weights (of order 1) they are made of, and float32's derivative through a saturated output (1 − tanh² at
#: tanh within a few ulps of 1) knows them only to that scale.
TOLERANCES = {np.float64: (1e-9, 1e-12, 1.0), np.float32: (1e-4, 1e-5, 1.0)}


def exact_biases(width, hidden):
    """Bias value of column k = g·H + j: EXACT_VALUES[(p + g·q) mod 3] for unit j = 3p + q, so that for
    gates g ≠ g' < 3 the pairs of values over the units are all 9 pairs."""
    g, j = np.divmod(np.arange(width), hidden)
    p, q = np.divmod(j, 3)
    return np.asarray(EXACT_VALUES)[(p + g * q) % 3]


def edge_problem(module, regime, dtype, seed):
    """x, params, state, dy, dstate (and per-step inputs) of one regime; the arrays in ``dtype``."""
    x, params, state, dy, dstate = random_problem(module, SIZES, np.float64, seed)
    hidden = SIZES[3]
    rng = np.random.default_rng(seed)
    params = dict(params)
    if regime == "exact":
        for name in ("W", "R", "Q"):
            if name in params:
                params[name] = np.zeros_like(params[name])
        params["b"] = exact_biases(params["b"].size, hidden).reshape(params["b"].shape)
        state = tuple(np.zeros_like(s) for s in state)
    elif regime == "saturated":
        for name in ("W", "R", "Q"):
            if name in params:
                params[name] = 0.1 * params[name]
        size = params["b"].size
        magnitude = np.where(np.arange(size) % 2 == 0, 1e2, 1e4)
        params["b"] = (magnitude * rng.choice([-1.0, 1.0], size)).reshape(params["b"].shape)
    else:
        x = x * float(regime.removeprefix("scaled_"))
    cast = lambda a: np.asarray(a, dtype=dtype)  # noqa: E731
    inputs = {k: cast(v) for k, v in random_step_inputs(module, x, dy.shape[2], seed).items()}
    return (
        cast(x),
        {k: cast(v) for k, v in params.items()},
        tuple(map(cast, state)),
        cast(dy),
        tuple(map(cast, dstate)),
        inputs,
    )


def check_against(module, unroll, problem, dtype, regime):
    """The module's outputs and gradients against torch autograd of ``unroll(x, params, state)`` in float64,
    which must be finite everywhere, so that the comparison covers every element.

    Each array passes within the suite's tolerances, or, in float32, with an error at most twice the one torch
    makes running the same reference in float32 (as flash-attention's tests bound theirs): at inputs of 1e4
    some results are differences of much larger terms, which no float32 computation gets to 1e-4.
    """
    x, params, state, dy, dstate, inputs = problem
    reference = _flatten(autograd_gradients(unroll, *_float64(problem)[:5]))
    for name, value in reference.items():
        assert np.all(np.isfinite(value)), f"{regime}: the reference's {name} is not finite"
    torch32 = _flatten(autograd_gradients(unroll, *problem[:5], dtype=torch.float32)) if dtype == np.float32 else {}
    y, final, tape = module.forward(x, params, state, inputs=inputs)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    actual = _flatten({"y": y, "final": final, "dx": dx, "grads": grads, "dstate0": dstate0})
    rtol, atol, floor = TOLERANCES[dtype]
    for name, value in reference.items():
        label = f"{regime} {dtype.__name__}: {name}"
        assert np.all(np.isfinite(actual[name])), f"{label} is not finite"
        # Below the dtype's smallest normal number a value is 0 to the kernels (their exp flushes there).
        tiny = float(np.finfo(dtype).tiny)
        if name in torch32:
            torch_error = float(np.max(np.abs(torch32[name] - value), initial=0.0))
            if float(np.max(np.abs(actual[name] - value), initial=0.0)) <= 2 * torch_error + tiny:
                continue
        assert_close(actual[name], value, rtol, atol, label, floor, tiny)


def _flatten(result):
    out = {"y": result["y"], "dx": result["dx"]}
    out |= {f"final[{k}]": v for k, v in enumerate(result["final"])}
    out |= {f"d{k}": v for k, v in result["grads"].items()}
    out |= {f"dstate0[{k}]": v for k, v in enumerate(result["dstate0"])}
    return out


def _float64(problem):
    x, params, state, dy, dstate, inputs = problem
    to64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    return (
        to64(x),
        {k: to64(v) for k, v in params.items()},
        tuple(map(to64, state)),
        to64(dy),
        tuple(map(to64, dstate)),
        {k: to64(v) for k, v in inputs.items()},
    )


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_at_the_edges(generated_module, variant, gradient, regime, dtype):
    module = generated_module(variant if gradient == "full" else f"{variant}_{gradient}")
    problem = edge_problem(module, regime, dtype, seed=11)
    inputs = problem[5]

    def unroll(tx, tp, ts):
        masks = {k: torch.tensor(v, dtype=tx.dtype) for k, v in inputs.items()}
        return run_reference(STABLE.get(variant, variant), tx, tp, ts, gradient == "truncated", masks)

    check_against(module, unroll, problem, dtype, regime)


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", REGIMES)
@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("name", sorted(EXAMPLE_STEPS))
def test_example_at_the_edges(example_modules, name, gradient, regime, dtype):  # noqa: F811
    module = example_modules[(name, gradient)]

    def unroll(tx, tp, ts):
        current, ys = ts, []
        for t in range(tx.shape[0]):
            current = EXAMPLE_STEPS[name](tp, tx[t], current, gradient == "truncated")
            ys.append(current[0])
        return torch.stack(ys), current

    check_against(module, unroll, edge_problem(module, regime, dtype, seed=13), dtype, regime)


#: A cell whose derivation multiplies an indicator with an infinite factor where the indicator is 0: relu
#: and select's [r > 0] with log(r)' = 1/r at r = 0, max's tie step with log(q)' at q = 0.
GUARDED = CellSpec(
    name="guarded_log",
    description="the usual guards on a log: select(r, log(r), 0) and max(log(q), -1) with r, q = relu(·)",
    paper="",
    gates=(Gate("u", "identity"), Gate("v", "identity")),
    state=("h",),
    equations=(("r", "relu(u)"), ("q", "relu(v)"), ("h", "select(r, log(r), 0) + max(log(q), -1)")),
)


def guarded_log(p, x, state, truncated):
    (h,) = state
    hr = h.detach() if truncated else h
    r, q = torch.relu(x @ p["W"] + hr @ p["R"] + p["b"]).chunk(2, dim=-1)
    guarded = torch.where(r > 0, torch.log(r), torch.zeros_like(r))
    return (guarded + torch.maximum(torch.log(q), torch.full_like(q, -1.0)),)


@pytest.fixture(scope="module")
def guarded_modules(tmp_path_factory):
    out = tmp_path_factory.mktemp("guarded")
    return {mode: load_module(write_module(GUARDED, out, mode)) for mode in ("full", "truncated")}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("regime", ["exact", "saturated"])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_an_indicator_masks_an_infinite_factor(guarded_modules, gradient, regime, dtype):
    """Where r = 0 (q = 0) the branch through log is not taken: the gradients are finite, as autograd's."""
    module = guarded_modules[gradient]

    def unroll(tx, tp, ts):
        current, ys = ts, []
        for t in range(tx.shape[0]):
            current = guarded_log(tp, tx[t], current, gradient == "truncated")
            ys.append(current[0])
        return torch.stack(ys), current

    check_against(module, unroll, edge_problem(module, regime, dtype, seed=17), dtype, regime)
