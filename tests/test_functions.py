"""The function table: each function of the vocabulary parsed, derived, printed and computed right.

- the table is consistent (arity, helper, vocabulary) and each derivative equals the textbook one;
- the Numba helpers of a compiled module at their branch points and extremes, per dtype: ±0, subnormal, tiny,
  huge, ±inf, NaN, ties;
- cells using every new function (exp, log, softplus, logsigmoid, sqrt, abs, max, min) against PyTorch
  autograd, both gradient modes, float64 and float32, and once compiled;
- their LaTeX (which compiles) and their text.
"""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import sympy
import torch
from conftest import import_without_jit
from test_kernels_vs_autograd import assert_close

from lstmgen.analysis.derivation import build_derivation
from lstmgen.analysis.derivation_printer import render_derivation
from lstmgen.codegen import kernel_helpers
from lstmgen.codegen.helper_sources import helper_closure
from lstmgen.functions import BY_NAME, FUNCTIONS, VOCABULARY, maximum, minimum, not_positive, tie_step
from lstmgen.generate import generate_source, write_source
from lstmgen.loader import load_module
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.forward_equations import build_forward_equations, unit_symbol

X, Y = sympy.symbols("x y", real=True)

# ------------------------------------------------------------------------------------------------ table


def test_every_record_is_complete():
    for record in FUNCTIONS:
        if record.cls is not None:
            assert record.arity in record.cls.nargs, record.name  # SymPy's log also takes a base
        if record.helper:
            assert hasattr(kernel_helpers, record.helper), record.name
            assert record.helper in helper_closure({record.helper})
        assert record.latex.format(*["a"] * record.arity)  # the template has one field per argument
    assert {"exp", "log", "softplus", "logsigmoid", "sqrt", "abs", "max", "min", "select"} <= set(VOCABULARY)
    assert "positive" not in VOCABULARY and "tie_step" not in VOCABULARY


@pytest.mark.parametrize(
    ("name", "textbook"),
    [
        ("exp", sympy.exp(X)),
        ("log", 1 / X),
        ("softplus", 1 / (1 + sympy.exp(-X))),
        ("logsigmoid", 1 - 1 / (1 + sympy.exp(-X))),
        ("sqrt", 1 / (2 * sympy.sqrt(X))),
        ("sigmoid", sympy.exp(-X) / (1 + sympy.exp(-X)) ** 2),
    ],
)
def test_derivatives_equal_the_textbook_ones(name, textbook):
    """The table's derivative (through the output where it says so), with the output put back as a formula."""
    record = BY_NAME[name]
    call = record.make(X)
    closed = {
        "exp": sympy.exp(X),
        "log": sympy.log(X),
        "softplus": sympy.log(1 + sympy.exp(X)),
        "logsigmoid": -sympy.log(1 + sympy.exp(-X)),
        "sqrt": sympy.sqrt(X),
        "sigmoid": 1 / (1 + sympy.exp(-X)),
    }[name]
    derivative = sympy.diff(call, X).xreplace({call: closed})
    derivative = derivative.replace(BY_NAME["expm1"].cls, lambda u: sympy.exp(u) - 1)
    assert sympy.simplify(derivative - textbook) == 0


def test_select_sends_the_gradient_to_the_branch_taken():
    c, a, b = sympy.symbols("c a b", real=True)
    call = BY_NAME["select"].make(c, a * a, b)
    positive = BY_NAME["positive"].cls
    assert sympy.diff(call, c) == 0
    assert sympy.diff(call, a) == 2 * a * positive(c) and sympy.diff(call, b) == not_positive(c)


def test_max_and_min_split_the_gradient_at_a_tie():
    a, b = sympy.symbols("a b", real=True)
    assert sympy.diff(maximum(a, b), a) == tie_step(a, b) and sympy.diff(maximum(a, b), b) == tie_step(b, a)
    assert sympy.diff(minimum(a, b), a) == tie_step(b, a) and sympy.diff(minimum(a, b), b) == tie_step(a, b)
    assert sympy.diff(sympy.Abs(X), X) == sympy.sign(X)


@pytest.mark.parametrize(
    ("equation", "message"),
    [
        ("max(g)", "max takes exactly 2 arguments"),
        ("max(g, h_prev, g)", "max takes exactly 2 arguments"),
        ("exp(g, g)", "exp takes exactly one argument"),
        ("tie_step(g, g)", "unknown function 'tie_step'"),
        ("positive(g)", "unknown function 'positive'"),
    ],
)
def test_calls_with_the_wrong_arity_are_refused(equation, message):
    spec = CellSpec("c", "", "", (Gate("g", "tanh"),), ("h",), (("h", equation),))
    with pytest.raises(SpecError, match=message):
        build_forward_equations(spec)


def test_two_argument_functions_are_not_gate_activations():
    with pytest.raises(SpecError, match=r"gates\[0\].activation: unknown activation 'max'"):
        CellSpec("c", "", "", (Gate("g", "max"),), ("h",), (("h", "g"),))


# ---------------------------------------------------------------------------------------------- helpers
#: A cell that calls every function, so that its module holds every helper.
EVERY_FUNCTION = CellSpec(
    "every_function",
    "every function of the vocabulary",
    "",
    (Gate("a", "identity"), Gate("u", "softplus"), Gate("g", "tanh")),
    ("h",),
    (
        ("m", "max(a, u) + min(a, g) + select(g, a, u)"),
        ("h", "0.5*tanh(m) + g*sqrt(1 + a*a)/4 - log(1 + abs(g))/8 + exp(-u)/8 + logsigmoid(a)/8"),
    ),
)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    return load_module(write_source(generate_source(EVERY_FUNCTION), tmp_path_factory.mktemp("fns"), "every_function"))


SPECIAL = [0.0, 1e-320, 1e-310, 1e-45, 1.1754943e-38, 1e-30, 1e-8, 0.3465, 0.3466, 0.5, 1.0, 2.0, 17.0, 37.0,
           87.0, 88.7, 88.73, 89.0, 100.0, 708.0, 709.7, 709.8, 710.0, 1e30, 1e300, np.inf]  # fmt: skip
POINTS = np.array(SPECIAL + [-v for v in SPECIAL] + [-0.0] + list(np.linspace(-30, 30, 1201)))


def _references(name, x):
    with np.errstate(all="ignore"):
        return {
            "_exp": lambda: np.exp(x),
            "_expm1": lambda: np.expm1(x),
            "_log": lambda: np.log(x),
            "_softplus": lambda: np.logaddexp(0.0, x),
            "_logsigmoid": lambda: -np.logaddexp(0.0, -x),
            "_sqrt": lambda: np.sqrt(x),
            "_sign": lambda: np.sign(x),
        }[name]()


@pytest.mark.parametrize(
    ("dtype", "eps", "tiny"), [(np.float32, 1.2e-7, 1.2e-38), (np.float64, 2.3e-16, 2.3e-308)], ids=["f32", "f64"]
)
@pytest.mark.parametrize("name", ["_exp", "_expm1", "_log", "_softplus", "_logsigmoid", "_sqrt", "_sign"])
def test_helper_accuracy_and_ieee_edges(compiled, name, dtype, eps, tiny):
    helper = getattr(compiled, name)
    with np.errstate(over="ignore"):
        x = POINTS.astype(dtype)
    got = np.array([helper(v, dtype) for v in x])  # numba returns a float32 result as a Python float
    ref = _references(name, x.astype(np.float64))
    with np.errstate(over="ignore"):
        ref_in_dtype = ref.astype(dtype).astype(np.float64)
    finite = np.isfinite(ref_in_dtype)
    # Special values exactly: the same NaN, infinity and sign of zero as the reference.
    assert np.array_equal(np.isnan(got), np.isnan(ref)), x[np.isnan(got) != np.isnan(ref)]
    assert np.array_equal(got[~finite & ~np.isnan(ref)], ref_in_dtype[~finite & ~np.isnan(ref)])
    # Finite values within a few units in the last place, except below the smallest normal number (flushed).
    err = np.abs(got[finite].astype(np.float64) - ref[finite])
    ok = (err <= 4 * eps * np.abs(ref[finite])) | (err <= tiny)
    assert np.all(ok), (x[finite][~ok][:5], got[finite][~ok][:5], ref[finite][~ok][:5])
    if name in ("_exp", "_expm1", "_softplus", "_logsigmoid", "_sqrt"):
        zero = helper(dtype(-0.0), dtype) if name != "_exp" else None
        if name in ("_expm1", "_sqrt"):
            assert np.signbit(zero), "-0 keeps its sign"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_max_min_and_the_tie_share(compiled, dtype):
    nan, inf = dtype(np.nan), dtype(np.inf)
    cases = [(1, 2), (2, 1), (3, 3), (-0.0, 0.0), (-inf, inf), (inf, inf), (nan, 1), (1, nan), (1e-45, 0)]
    for a, b in cases:
        a, b = dtype(a), dtype(b)
        for helper, reference in ((compiled._maximum, np.maximum), (compiled._minimum, np.minimum)):
            got, ref = helper(a, b, dtype), reference(a, b)
            assert (np.isnan(got) and np.isnan(ref)) or got == ref, (a, b)
        share = compiled._tie_step(a, b, dtype)
        expected = 1.0 if a > b else 0.5 if a == b else 0.0
        assert share == expected, (a, b)
    # select(c, a, b): a where c > 0, else b (NaN, -0 and 0 select b, as torch.where(c > 0, a, b)).
    for c in (1e-45, 1.0, inf, 0.0, -0.0, -1.0, -inf, nan):
        c = dtype(c)
        expected = dtype(2) if c > 0 else dtype(3)
        assert compiled._select(c, dtype(2), dtype(3), dtype) == expected, c


# ------------------------------------------------------------------------------------- cells vs autograd
def _exp_cell_reference(p, x, state, truncated):
    """Gates softplus and logsigmoid; c = exp(f) c_prev + i g: f = log σ(a_f), so exp(f) = σ(a_f)."""
    h, c = state
    hr = h.detach() if truncated else h
    a_i, a_f, a_g, a_o = (x @ p["W"] + hr @ p["R"] + p["b"]).chunk(4, dim=-1)
    i, f = torch.nn.functional.softplus(a_i, threshold=1e9), torch.nn.functional.logsigmoid(a_f)
    c = torch.exp(f) * c + i * torch.tanh(a_g)
    return torch.sigmoid(a_o) * torch.tanh(c), c


EXP_CELL = CellSpec(
    "exp_cell",
    "an LSTM with a softplus input gate and a forget gate in log space",
    "",
    (Gate("i", "softplus"), Gate("f", "logsigmoid"), Gate("g", "tanh"), Gate("o", "sigmoid")),
    ("h", "c"),
    (("c", "exp(f)*c_prev + i*g"), ("h", "o*tanh(c)")),
)


def _every_function_reference(p, x, state, truncated):
    (h,) = state
    hr = h.detach() if truncated else h
    a, a_u, a_g = (x @ p["W"] + hr @ p["R"] + p["b"]).chunk(3, dim=-1)
    u, g = torch.nn.functional.softplus(a_u, threshold=1e9), torch.tanh(a_g)
    m = torch.maximum(a, u) + torch.minimum(a, g) + torch.where(g > 0, a, u)
    h = (
        0.5 * torch.tanh(m)
        + g * torch.sqrt(1 + a * a) / 4
        - torch.log(1 + torch.abs(g)) / 8
        + torch.exp(-u) / 8
        + torch.nn.functional.logsigmoid(a) / 8
    )
    return (h,)


CELLS = {"exp_cell": (EXP_CELL, _exp_cell_reference), "every_function": (EVERY_FUNCTION, _every_function_reference)}


def _plain_module(spec, gradient, directory):
    """The generated module run as plain Python (numba's JIT off: the same code, quick to start)."""
    return import_without_jit(write_source(generate_source(spec, gradient), directory, f"{spec.name}_{gradient}"))


def _against_autograd(module, reference, dtype, truncated, ties=False):
    rng = np.random.default_rng(11)
    T, B, I, H = 4, 3, 2, 3
    params = {k: (1.5 * v).astype(dtype) for k, v in module.init_params(I, H, seed=3).items()}
    if ties:  # the gates a and b get the same pre-activation: max(a, b) and min sit exactly on a tie
        params = {k: v.copy() for k, v in params.items()}
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state = tuple((0.5 * rng.standard_normal((B, H))).astype(dtype) for _ in module.STATE)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    dstate = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in module.STATE)
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    ts = tuple(torch.tensor(s, dtype=torch.float64, requires_grad=True) for s in state)
    current, ys = ts, []
    for t in range(T):
        current = reference(tp, tx[t], current, truncated)
        ys.append(current[0])
    loss = (torch.stack(ys) * torch.tensor(dy, dtype=torch.float64)).sum()
    loss = loss + sum((f * torch.tensor(d, dtype=torch.float64)).sum() for f, d in zip(current, dstate, strict=True))
    loss.backward()
    y, _, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    rtol, atol, floor = (1e-9, 1e-12, 1.0) if dtype == np.float64 else (1e-4, 1e-5, 0.0)
    assert_close(y, torch.stack(ys).detach().numpy(), rtol, atol, "y", floor)
    assert_close(dx, tx.grad.numpy(), rtol, atol, "dx", floor)
    for k in module.PARAMS:
        assert_close(grads[k], tp[k].grad.numpy(), rtol, atol, f"d{k}", floor)
    for g, ref in zip(dstate0, ts, strict=True):
        expected = np.zeros_like(g) if ref.grad is None else ref.grad.numpy()
        assert_close(g, expected, rtol, atol, "dstate0", floor)
    return y, dx, grads


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cells_of_the_new_functions_match_autograd(cell, gradient, dtype, tmp_path):
    spec, reference = CELLS[cell]
    _against_autograd(_plain_module(spec, gradient, tmp_path), reference, dtype, gradient == "truncated")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_kernels_of_the_new_functions_match_autograd(compiled, dtype):
    _against_autograd(compiled, _every_function_reference, dtype, truncated=False)


def test_a_tie_inside_the_kernel_splits_the_gradient(tmp_path):
    """Two gates with the same weights: max(a, b) and min(a, b) tie on every unit; dW of each gets half."""
    spec = CellSpec(
        "tie", "", "", (Gate("a", "identity"), Gate("u", "identity")), ("h",), (("h", "tanh(max(a, u) - min(a, u)/2)"),)
    )
    module = _plain_module(spec, "full", tmp_path)
    H = 2
    p = module.init_params(2, H, seed=0)
    for name in ("W", "R", "b"):
        p[name][..., H:] = p[name][..., :H]  # gate b is a copy of gate a
    x = np.random.default_rng(0).standard_normal((3, 2, 2))

    def reference(tp, tx, state, truncated):
        (h,) = state
        a, b = (tx @ tp["W"] + h @ tp["R"] + tp["b"]).chunk(2, dim=-1)
        return (torch.tanh(torch.maximum(a, b) - torch.minimum(a, b) / 2),)

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx = torch.tensor(x)
    state = (torch.zeros(2, H, dtype=torch.float64),)
    ys = []
    for t in range(3):
        state = reference(tp, tx[t], state, False)
        ys.append(state[0])
    torch.stack(ys).sum().backward()
    y, _, tape = module.forward(x, p)
    _, grads, _ = module.backward(np.ones_like(y), tape)
    for k in module.PARAMS:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=k)
    np.testing.assert_allclose(grads["W"][:, :H], grads["W"][:, H:], rtol=1e-15)  # split evenly


# ------------------------------------------------------------------------------------------- printing
def test_latex_and_text_of_the_new_functions():
    derivation = build_derivation(EVERY_FUNCTION)
    latex = render_derivation(derivation, "latex", "modern", standalone=False)
    for piece in (r"\max\left(", r"\min\left(", r"\sqrt{", r"\log{\left(", r"\left|", r"\log\sigma\left(", "e^{"):
        assert piece in latex, piece
    text = render_derivation(derivation, "text", "modern", standalone=False)
    assert "max(a[t], u[t])" in text and "|g[t]|" in text and "tie_step(" in text


def test_their_standalone_document_compiles(tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed here (.ci/run installs it)")
    for spec in (EVERY_FUNCTION, EXP_CELL):
        (tmp_path / "doc.tex").write_text(render_derivation(build_derivation(spec), "latex", "modern", True))
        run = subprocess.run(
            ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stdout[-2000:]


def test_nested_calls_whose_derivative_reads_the_output_are_saved():
    """exp(f) nested in an equation is hoisted (its derivative is itself); log and abs are not (theirs read
    the argument)."""
    forward = build_forward_equations(EVERY_FUNCTION)
    hoisted = {str(a.lhs) for a in forward.equations if a.role == "hoisted"}
    assert any(name.startswith("exp_") for name in hoisted)
    assert not any(name.startswith(("log_", "Abs_", "maximum_", "minimum_")) for name in hoisted)
    backward = derive_backward(forward)
    assert unit_symbol("a") in set(backward.saved_values()) or unit_symbol("a") in set(forward.inputs())


def test_every_new_function_is_usable_from_a_toml_spec(tmp_path):
    from lstmgen.spec_file import load_spec_file

    (tmp_path / "f.toml").write_text(
        'name = "from_toml"\nstate = ["h"]\n[[gates]]\nname = "g"\nactivation = "softplus"\n[[gates]]\n'
        'name = "q"\nactivation = "logsigmoid"\n[equations]\n'
        'h = "max(g, exp(q)) - min(sqrt(g), abs(q)) + log(1 + g)"\n'
    )
    spec = load_spec_file(tmp_path / "f.toml")
    names = {type(f).__name__ for a in build_forward_equations(spec).equations for f in a.rhs.atoms(sympy.Function)}
    assert {"maximum", "minimum", "sqrt", "Abs", "log", "exp"} <= names
