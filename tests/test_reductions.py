"""Reductions over the units (mean, var, layer_norm) and gate parameters: the derived backward against the
textbook's closed form, the sum rules, the kernel plan, a vector whose units are all equal, and the errors."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
import sympy
import torch
from conftest import import_without_jit
from problems import random_problem
from reference_cells import layernorm_lstm, layernorm_lstm_functional, reference_gradients
from test_kernels_vs_autograd import assert_close

from lstmgen import generate_source, load_module, write_module
from lstmgen.codegen.kernel_ir import Reduction, row_items
from lstmgen.codegen.lower_kernel import lower
from lstmgen.functions import LAYER_NORM_EPS, UNITS, sqrt, sum_units
from lstmgen.generate import write_source
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.spec_file import spec_from_table
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations, unit_symbol
from lstmgen.variants import VARIANTS

#: h = gam ⊙ layer_norm(v) + bet for the identity gate v = x W + b: a layer norm and nothing else.
LAYER_NORM = CellSpec(
    name="layer_norm_only",
    description="a layer norm of x W + b",
    paper="",
    gates=(Gate("v", "identity", "xW_v"),),
    state=("h",),
    equations=(("h", "gam*layer_norm(v) + bet"),),
    unit_params=("gam", "bet"),
)


def _instantiate(expr, j, units, definitions):
    """``expr`` at unit j of ``units`` units: each per-unit symbol s becomes s@j, each sum_units(e) the sum of e
    at every unit, each per-row value (a key of ``definitions``) its definition over the units, and lstmgen's
    sqrt SymPy's."""
    expr = expr.replace(
        lambda e: isinstance(e, sum_units),
        lambda e: sympy.Add(*(_instantiate(e.args[0], k, units, definitions) for k in units)),
    )
    per_unit = {
        s: sympy.Symbol(f"{s}@{j}", real=True) for s in expr.free_symbols if s not in definitions and "@" not in str(s)
    }
    expr = expr.xreplace(per_unit).xreplace(definitions)
    return expr.replace(lambda e: isinstance(e, sqrt), lambda e: sympy.sqrt(e.args[0]))


def test_the_derived_layer_norm_backward_is_the_textbook_one():
    """dv = (1/σ)(dŷ − mean(dŷ) − x̂ mean(dŷ x̂)) with x̂ = (v − μ)/σ, σ = √(var + ε), dŷ = γ ⊙ dh: the
    derivation's sums, written out over N = 3 units, simplify to it."""
    backward = derive_backward(build_forward_equations(LAYER_NORM))
    forward = backward.forward
    N = 3
    units = range(N)
    v, dh, gam = ([sympy.Symbol(f"{name}@{k}", real=True) for k in units] for name in ("v", "dnext_h", "gam"))
    # The per-row values forward saved, over the N units.
    definitions: dict[sympy.Symbol, sympy.Expr] = {UNITS: sympy.Integer(N)}
    for a in forward.equations:
        if a.lhs in forward.scalars:
            definitions[a.lhs] = _instantiate(a.rhs, 0, units, definitions)
    derived = backward.expanded(dict(forward.xW)["v"])
    mean = sum(v) / N
    # σ as a symbol of its own (σ² = var + ε), so that simplify works on rational functions.
    sigma = sympy.Symbol("sigma", positive=True)
    variance = sum((x - mean) ** 2 for x in v) / N + LAYER_NORM_EPS
    x_hat = [(x - mean) / sigma for x in v]
    dy = [g * d for g, d in zip(gam, dh, strict=True)]
    mean_dy = sum(dy) / N
    mean_dy_x = sum(a * b for a, b in zip(dy, x_hat, strict=True)) / N
    for j in units:
        textbook = (dy[j] - mean_dy - x_hat[j] * mean_dy_x) / sigma
        ours = _instantiate(derived, j, units, definitions).xreplace({variance: sigma**2})
        assert not ours.has(sympy.sqrt(variance)) and ours.has(sigma)
        assert sympy.simplify(ours - textbook) == 0


def test_the_sum_of_deviations_from_the_mean_is_not_computed():
    """Σ_j (v_j − mean(v)) = 0: the derived backward of a layer norm has exactly two sums over the units
    (Σ γ dh and Σ γ dh (v − μ)), as the textbook's; none of them a sum that forward already knows."""
    backward = derive_backward(build_forward_equations(LAYER_NORM))
    sums = [a for a in backward.adjoints if isinstance(a.rhs, sum_units)]
    assert len(sums) == 2
    assert all(not a.rhs.has(sum_units(unit_symbol("xW_v"))) for a in backward.adjoints)


@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_layernorm_lstm_runs_two_passes_per_normalised_vector(gradient):
    """Three normalised vectors (x W, h R over 4H units, c over H): two reductions each per step, forward
    and backward."""
    plan = lower(
        build_kernel_expressions(derive_backward(build_forward_equations(VARIANTS["layernorm_lstm"]), gradient))
    )
    for kernel in (plan.forward, plan.backward):
        reductions = [item for item in row_items(kernel) if isinstance(item, Reduction)]
        assert len(reductions) == 6, kernel.name
    # The bias is placed by the equations: no bias in the input projection, db derived in the step.
    assert "db" not in plan.backward.returns
    assert dict(plan.unit_grads)["b"].name == "db"


def _module(tmp_path, spec, gradient="full"):
    return load_module(write_module(spec, tmp_path, gradient))


def test_a_vector_whose_units_are_all_equal_normalises_to_zero_with_the_documented_epsilon(tmp_path):
    """var = 0: the output is the shift alone, finite, and the gradient is γ dh / √ε minus its mean."""
    module = _module(tmp_path, LAYER_NORM)
    T, B, I, H = 2, 3, 2, 5
    rng = np.random.default_rng(0)
    params = {
        "W": np.repeat(rng.standard_normal((I, 1)), H, axis=1),  # every unit gets the same x W
        "b": np.full(H, 0.25),
        "gam": rng.standard_normal(H),
        "bet": rng.standard_normal(H),
    }
    x = rng.standard_normal((T, B, I))
    y, _, tape = module.forward(x, params)
    assert np.all(np.isfinite(y))
    # x̂ is 0 up to the rounding of the mean (a few ulp of v, divided by √ε).
    np.testing.assert_allclose(y, np.broadcast_to(params["bet"], y.shape), rtol=0, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    dx, grads, _ = module.backward(dy, tape)
    dv = params["gam"] * dy
    dv = (dv - dv.mean(axis=-1, keepdims=True)) / np.sqrt(float(LAYER_NORM_EPS))
    np.testing.assert_allclose(dx, dv @ params["W"].T, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grads["b"], dv.sum(axis=(0, 1)), rtol=1e-12, atol=1e-12)
    assert float(LAYER_NORM_EPS) == 1e-5
    np.testing.assert_allclose(grads["gam"], np.zeros(H), rtol=0, atol=1e-11)  # x̂ = 0


def test_layernorm_lstm_matches_the_reference_built_on_torch_layer_norm(generated_module):
    """The reference written from the sheet's formula and one built on torch.nn.functional.layer_norm agree
    with the kernels alike (the autograd tests use the former)."""
    module = generated_module("layernorm_lstm")
    x, params, state, dy, dstate = random_problem(module, (5, 3, 4, 6), np.float64, seed=5)
    ref = reference_gradients("layernorm_lstm_functional", x, params, state, dy, dstate)
    sheet = reference_gradients("layernorm_lstm", x, params, state, dy, dstate)
    y, _, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    assert_close(y, ref["y"], 1e-12, 1e-14, "y")
    assert_close(sheet["y"], ref["y"], 1e-12, 1e-14, "y (sheet)")
    assert_close(dx, ref["dx"], 1e-10, 1e-13, "dx")
    for k in module.PARAMS:
        assert_close(grads[k], ref["grads"][k], 1e-10, 1e-13, f"d{k}")
    for got, want in zip(dstate0, ref["dstate0"], strict=True):
        assert_close(got, want, 1e-10, 1e-13, "dstate0")
    assert layernorm_lstm is not layernorm_lstm_functional


def test_layernorm_lstm_gradients_pass_gradcheck_through_its_reference():
    """The sheet's reference itself is differentiable as torch checks it (so the autograd oracle is sound)."""
    rng = np.random.default_rng(1)
    B, I, H = 2, 3, 2
    p = {
        "W": rng.standard_normal((I, 4 * H)),
        "R": rng.standard_normal((H, 4 * H)),
        "b": rng.standard_normal(4 * H),
        "gamma_x": rng.standard_normal(4 * H),
        "gamma_h": rng.standard_normal(4 * H),
        "gamma_c": rng.standard_normal(H),
        "beta_c": rng.standard_normal(H),
    }
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    x = torch.tensor(rng.standard_normal((B, I)), requires_grad=True)
    h, c = (torch.tensor(rng.standard_normal((B, H)), requires_grad=True) for _ in range(2))

    def step(x, h, c, *values):
        return layernorm_lstm(dict(zip(tensors, values, strict=True)), x, (h, c), False)

    assert torch.autograd.gradcheck(step, (x, h, c, *tensors.values()))


def test_mean_var_and_layer_norm_are_reductions_of_one_argument():
    spec = CellSpec("m", "", "", (Gate("v", "identity"),), ("h",), (("h", "v - mean(v) + var(v)"),))
    forward = build_forward_equations(spec)
    assert [a.role for a in forward.equations].count("reduction") == 2
    with pytest.raises(SpecError, match=r"equations\[0\] \(h\): mean takes exactly one argument"):
        build_forward_equations(CellSpec("m", "", "", (Gate("v", "identity"),), ("h",), (("h", "mean(v, v)"),)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"input_bias": False}, r"input_bias: false, but no equation reads b_v"),
        ({"input_bias": "no"}, r"input_bias: expected true or false, got 'no'"),
        ({"gate_params": ("H",)}, r"gate_params\[0\]: 'H' is reserved"),
        ({"gate_params": ("gam",)}, r"gate_params\[0\]: 'gam' is already defined by unit_params\[0\]"),
    ],
)
def test_spec_errors_of_reductions_and_gate_params(kwargs, message):
    fields = {
        "name": "m",
        "description": "",
        "paper": "",
        "gates": (Gate("v", "identity"),),
        "state": ("h",),
        "equations": (("h", "gam*v"),),
        "unit_params": ("gam",),
    } | kwargs
    with pytest.raises(SpecError, match=message):
        build_forward_equations(CellSpec(**fields))


def test_a_gate_parameter_block_name_cannot_be_defined_twice():
    with pytest.raises(SpecError, match=r"'g_v' is already defined by gate_params\[0\] \(block v of g\)"):
        CellSpec("m", "", "", (Gate("v", "identity"),), ("h",), (("g_v", "v"), ("h", "g_v")), gate_params=("g",))


def test_a_toml_spec_places_its_bias_and_gains(tmp_path):
    text = """
name = "ln_rnn"
state = ["h"]
gate_params = ["gain"]
input_bias = false
[[gates]]
name = "n"
activation = "tanh"
preactivation = "gain_n*layer_norm(xW_n) + hR_n + b_n"
[equations]
h = "n"
"""
    spec = spec_from_table(tomllib.loads(text))
    assert spec.params == ("W", "R", "b", "gain")
    module = _module(tmp_path, spec)
    assert module.param_shapes(3, 4) == {"W": (3, 4), "R": (4, 4), "b": (4,), "gain": (4,)}
    x, params, state, _, _ = random_problem(module, (4, 2, 3, 4), np.float64, seed=2)
    y, _, _ = module.forward(x, params, state)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    h = torch.tensor(state[0], requires_grad=True)
    ys, current = [], h
    for t in range(x.shape[0]):
        xw = torch.tensor(x[t]) @ tp["W"]
        normed = torch.nn.functional.layer_norm(xw, (4,), weight=tp["gain"], eps=1e-5)
        current = torch.tanh(normed + current @ tp["R"] + tp["b"])
        ys.append(current)
    np.testing.assert_allclose(y, torch.stack(ys).detach().numpy(), rtol=1e-12, atol=1e-14)


def test_init_params_start_the_layer_norm_gains_at_one_and_its_shift_at_zero(generated_module):
    """As torch.nn.LayerNorm starts; the other parameters are the same draws as without INIT."""
    m = generated_module("layernorm_lstm")
    assert m.INIT == {"gamma_x": 1.0, "gamma_h": 1.0, "gamma_c": 1.0, "beta_c": 0.0}
    params = m.init_params(3, 4, seed=0, dtype=np.float32)
    for name, value in m.INIT.items():
        assert params[name].dtype == np.float32
        np.testing.assert_array_equal(params[name], np.full(m.param_shapes(3, 4)[name], value))
    bound = 1 / np.sqrt(4)
    drawn = np.random.default_rng(0).uniform(-bound, bound, size=(3, 16)).astype(np.float32)  # W is drawn first
    np.testing.assert_array_equal(params["W"], drawn)


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ("init = 1", "init: expected a table of parameter = number"),
        ("[init]\nW_x = 1.0", r"init\[0\]: expected a distinct parameter of \('W', 'R', 'b'\), got 'W_x'"),
        ('[init]\nb = "one"', r"init\[0\] \(b\): expected a finite number, got 'one'"),
        ("[init]\nb = inf", r"init\[0\] \(b\): expected a finite number of magnitude at most .*, got inf"),
        ("[init]\nb = 1e300", r"init\[0\] \(b\): .* at most 3.40282e\+38 \(float32's range\), got 1e\+300"),
        ("[init]\nb = " + "9" * 400, r"init\[0\] \(b\): .* \(float32's range\), got an integer of 400 digits"),
    ],
)
def test_spec_errors_of_init(init, message):
    text = 'name = "c"\nstate = ["h"]\n' + init + '\n[[gates]]\nname = "g"\nactivation = "tanh"\n[equations]\nh = "g"\n'
    with pytest.raises(SpecError, match=message):
        spec_from_table(tomllib.loads(text))


@pytest.mark.parametrize("mode", ["full", "truncated"])
def test_equations_may_read_the_number_of_units(tmp_path, mode):
    """H, listed in the README's vocabulary, is the number of units (it was refused as an unknown name)."""
    spec = CellSpec(
        name="units_average",
        description="",
        paper="",
        gates=(Gate("n", "tanh"),),
        state=("h",),
        equations=(("h", "n/H + h_prev*(H - 1)/H"),),
    )
    module = import_without_jit(write_source(generate_source(spec, mode), tmp_path, "units_average"))
    T, B, I, H = 3, 2, 3, 5
    rng = np.random.default_rng(0)
    params = module.init_params(I, H, dtype=np.float64, seed=0)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H))
    y, _, tape = module.forward(x, params)
    dx, grads, _ = module.backward(dy, tape)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    h, ys = torch.zeros(B, H, dtype=torch.float64), []
    for t in range(T):
        hr = h.detach() if mode == "truncated" else h
        n = torch.tanh(tx[t] @ tp["W"] + hr @ tp["R"] + tp["b"])
        h = n / H + h * (H - 1) / H
        ys.append(h)
    (torch.stack(ys) * torch.tensor(dy)).sum().backward()
    np.testing.assert_allclose(y, torch.stack(ys).detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14)
    for k, g in grads.items():
        np.testing.assert_allclose(g, tp[k].grad.numpy(), rtol=1e-12, atol=1e-14)
