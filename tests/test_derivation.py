"""The derivation itself: SymPy's adjoints equal the textbook BPTT of the peephole LSTM (variants.md §2)."""

from __future__ import annotations

import pytest
import sympy

from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations, unit_symbol
from lstmgen.variants import LSTM, LSTM_PEEPHOLE, VARIANTS

S = unit_symbol
i, f, g, o, c, c_prev, tanh_c = map(S, ["i", "f", "g", "o", "c", "c_prev", "tanh_c"])
p_i, p_f, p_o, dnext_h, dnext_c = map(S, ["p_i", "p_f", "p_o", "dnext_h", "dnext_c"])


def textbook_peephole():
    """Graves / Greff et al. BPTT of one peephole LSTM step, typed in from the literature (test oracle only)."""
    d_a_o = dnext_h * tanh_c * o * (1 - o)
    d_c = dnext_h * o * (1 - tanh_c**2) + p_o * d_a_o + dnext_c
    d_a_i = d_c * g * i * (1 - i)
    d_a_f = d_c * c_prev * f * (1 - f)
    d_a_g = d_c * i * (1 - g**2)
    return {
        "xW_i": d_a_i,
        "xW_f": d_a_f,
        "xW_g": d_a_g,
        "xW_o": d_a_o,
        "hR_i": d_a_i,
        "hR_f": d_a_f,
        "hR_g": d_a_g,
        "hR_o": d_a_o,
        "c_prev": f * d_c + p_i * d_a_i + p_f * d_a_f,
        "h_prev": sympy.Integer(0),
        "p_i": c_prev * d_a_i,
        "p_f": c_prev * d_a_f,
        "p_o": c * d_a_o,
    }


def test_peephole_adjoints_equal_textbook():
    backward = derive_backward(build_forward_equations(LSTM_PEEPHOLE))
    expected = textbook_peephole()
    assert {str(v) for v in backward.forward.inputs()} == set(expected)
    for value in backward.forward.inputs():
        derived = backward.expanded(value)
        assert sympy.simplify(derived - expected[str(value)]) == 0, f"d_{value}: {derived}"


def test_lstm_adjoints_are_the_peephole_ones_without_peepholes():
    backward = derive_backward(build_forward_equations(LSTM))
    no_peepholes = {p_i: 0, p_f: 0, p_o: 0}
    expected = {k: v.subs(no_peepholes) for k, v in textbook_peephole().items() if not k.startswith("p_")}
    for value in backward.forward.inputs():
        assert sympy.simplify(backward.expanded(value) - expected[str(value)]) == 0, str(value)


def test_derivative_of_a_wrong_cell_is_not_the_textbook_one():
    """The comparison above can fail: a cell with the output gate peeping at c_{t-1} differs in d_c_prev."""
    from dataclasses import replace

    from lstmgen.spec import Gate

    gates = (*LSTM_PEEPHOLE.gates[:3], Gate("o", "sigmoid", "xW_o + hR_o + p_o*c_prev"))
    backward = derive_backward(build_forward_equations(replace(LSTM_PEEPHOLE, name="other", gates=gates)))
    derived = backward.expanded(c_prev)
    assert sympy.simplify(derived - textbook_peephole()["c_prev"]) != 0


@pytest.mark.parametrize("name", list(VARIANTS))
def test_backward_reads_only_saved_values(name):
    """σ' and tanh' come out through the saved outputs: no function that forward computed is called again in
    any adjoint (derivative helpers such as relu's positive(n) read the saved output)."""
    from lstmgen.functions import HOISTED

    forward = build_forward_equations(VARIANTS[name])
    computed = {f for a in forward.equations for f in a.rhs.atoms(sympy.Function) if isinstance(f, HOISTED)}
    assert computed  # every built-in has an activation
    backward = derive_backward(forward)
    for a in backward.adjoints:
        # (expm1 of a saved value, softplus's derivative, is a call of the backward's own.)
        calls = [f for f in a.rhs.atoms(sympy.Function) if f in computed]
        assert not calls, f"{a} still calls {calls}"
    inputs = set(backward.adjoints.free_inputs())
    assert not inputs & {S(f"a_{gate.name}") for gate in VARIANTS[name].gates}


def test_truncated_mode_drops_only_the_recurrent_gemm():
    full = derive_backward(build_forward_equations(LSTM_PEEPHOLE), "full")
    truncated = derive_backward(build_forward_equations(LSTM_PEEPHOLE), "truncated")
    assert full.recurrent_gemm and not truncated.recurrent_gemm
    assert full.adjoints == truncated.adjoints


def test_kernel_lists_keep_targets_and_share_subexpressions():
    kernel = build_kernel_expressions(derive_backward(build_forward_equations(LSTM_PEEPHOLE)))
    assert kernel.saved == (tanh_c,)
    assert not kernel.separate_recurrent_adjoint
    assert kernel.n_phases == 1
    (backward_loop,) = kernel.backward_phases
    # CSE never changes a value: each adjoint re-expanded from the CSE'd list equals the uncse'd one.
    for a in kernel.backward.adjoints:
        assert sympy.expand(backward_loop.expanded(a.lhs) - kernel.backward.adjoints.expanded(a.lhs)) == 0
    assert any(a.role == "temporary" for a in backward_loop)


def test_reset_before_the_recurrent_product_splits_the_step_in_two_phases():
    """gru_v3: (r*h_prev) R_n needs r first, so n, h come after a mid-step GEMM; backward mirrors it."""
    kernel = build_kernel_expressions(derive_backward(build_forward_equations(VARIANTS["gru_v3"])))
    assert kernel.n_phases == 2
    first, second = ({str(s) for s in phase.targets} for phase in kernel.forward_phases)
    assert {"r", "z", "src_n"} <= first and {"n", "h"} <= second
    assert kernel.separate_recurrent_adjoint
    # d_h_prev = z*dh + r*d_src: the second term is the gradient through the reset product.
    h_prev, z_, r_ = S("h_prev"), S("z"), S("r")
    expected = z_ * S("dnext_h") + r_ * S("dnext_src_n")
    assert sympy.simplify(kernel.backward.expanded(h_prev) - expected) == 0


def test_truncated_gradient_cuts_h_prev_inside_a_recurrent_source():
    truncated = derive_backward(build_forward_equations(VARIANTS["gru_v3"]), "truncated")
    assert sympy.simplify(truncated.expanded(S("h_prev")) - S("z") * S("dnext_h")) == 0
    # ... but the reset gate still learns through the source.
    assert S("dnext_src_n") in truncated.expanded(S("xW_r")).free_symbols


def test_full_gate_recurrence_seeds_the_fed_back_gates():
    full = derive_backward(build_forward_equations(VARIANTS["lstm_fgr"]), "full")
    truncated = derive_backward(build_forward_equations(VARIANTS["lstm_fgr"]), "truncated")
    assert {str(s) for _, s in full.seeds} == {"dnext_h", "dnext_c", "dnext_i", "dnext_f", "dnext_o"}
    assert {str(s) for _, s in truncated.seeds} == {"dnext_h", "dnext_c"}
    # The gradient on i arriving from step t+1 enters before σ': d_a_i gains i(1-i)·dnext_i ...
    d_a_i = full.expanded(S("xW_i"))
    assert sympy.simplify(sympy.diff(d_a_i, S("dnext_i")) - i * (1 - i)) == 0
    # ... and without gradients from step t+1 on the gates, the two modes agree.
    no_feedback = {S("dnext_i"): 0, S("dnext_f"): 0, S("dnext_o"): 0}
    assert sympy.simplify(d_a_i.subs(no_feedback) - truncated.expanded(S("xW_i"))) == 0


def test_unknown_gradient_mode_is_refused():
    with pytest.raises(ValueError, match="gradient"):
        derive_backward(build_forward_equations(LSTM), "approximate")


def _example_specs():
    from conftest import REPO

    from lstmgen.spec_file import load_spec_file

    return [load_spec_file(path) for path in sorted((REPO / "examples").glob("*.toml"))]


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("spec", [*VARIANTS.values(), *_example_specs()], ids=lambda s: s.name)
def test_printed_backward_is_what_the_kernel_computes(spec, gradient):
    """Every printed adjoint, δh_{t-1} with its recurrent GEMM terms included, equals the derived value the
    kernel computes (the GRU's δh_{t-1} once lost its δa R^T terms in print while the kernel had them)."""
    from lstmgen.analysis.derivation import build_derivation
    from lstmgen.analysis.derivation_printer import render_derivation

    derivation = build_derivation(spec, gradient)
    backward = derivation.backward
    forward = backward.forward
    lines = derivation.backward_lines()
    by_lhs = {line.lhs: line for line in lines}
    assert len(by_lhs) == len(lines), "an adjoint is printed twice"
    RT = {gate: sympy.Symbol(f"RT_{gate}", commutative=False) for gate, _ in forward.hR}

    value_of: dict[sympy.Symbol, sympy.Expr] = {}
    for a in backward.adjoints:
        value_of[a.lhs] = a.rhs.xreplace(value_of)

    def printed(line):
        total = line.elementwise + sum((adj * RT[gate] for gate, adj in line.recurrent), sympy.Integer(0))
        return total.xreplace(value_of)

    for a in backward.adjoints:
        assert by_lhs[a.lhs].elementwise == a.rhs
    h_prev = dict(forward.prev)[spec.output_state]
    early = [g.name for g in spec.gates if g.name in spec.recurrent_gates and not g.recurrent_source]
    for value in forward.differentiable_inputs():
        # The kernel: the elementwise adjoint, plus for h_{t-1} (full gradient) the GEMM over the blocks of R
        # that multiply h_{t-1}.
        expected = backward.expanded(value)
        if value == h_prev and gradient == "full":
            expected += sum((backward.expanded(dict(forward.hR)[k]) * RT[k] for k in early), sympy.Integer(0))
        got = printed(by_lhs[unit_symbol(f"d_{value}")])
        assert sympy.expand(got - expected) == 0, f"printed d_{value} differs from the kernel's"
    text = render_derivation(derivation, "text", "modern", False)
    body = text.split("Backward", 1)[1].split("Weight gradients", 1)[0]
    # A projected output adds its seed's line: the kernel's GEMM (dy_t + carried) W_p^T before the step.
    assert sum(" = " in row for row in body.splitlines()) == len(lines) + spec.projection
    assert ("  δh̃[t] = δh[t]·W_pᵀ" in body.splitlines()) == spec.projection


def test_printed_gru_carried_error_has_every_recurrent_term():
    from lstmgen.analysis.derivation import build_derivation
    from lstmgen.analysis.derivation_printer import render_derivation

    text = render_derivation(build_derivation(VARIANTS["gru"]), "text", "modern", False)
    (line,) = [row for row in text.splitlines() if row.strip().startswith("δh[t-1] =")]
    assert line.strip() == "δh[t-1] = δh[t]·z[t] + δa_r[t]·R_rᵀ + δa_z[t]·R_zᵀ + δ(h R)_n[t]·R_nᵀ"


def test_error_flow_of_the_fed_back_gates_is_derived():
    """lstm_fgr carries the previous step's i, f, o (through Q): they are targets and a source of the Jacobian."""
    from lstmgen.analysis.derivation import build_derivation
    from lstmgen.analysis.derivation_printer import render_error_flow
    from lstmgen.analysis.error_flow import FEEDBACK, state_jacobian

    spec = VARIANTS["lstm_fgr"]
    blocks = {(b.target, b.source): b for b in state_jacobian(spec)}
    assert set(blocks) == {(t, s) for t in ("h", "c", "i", "f", "o") for s in ("h", "c", FEEDBACK)}
    i_, f_, g_, c_prev_ = S("i"), S("f"), S("g"), S("c_prev")
    # Oracles from the chain rule by hand: a_i reads gQ_i, a_f reads gQ_f; c = f c_prev + i g.
    assert dict(blocks[("i", FEEDBACK)].feedback) == {"i": i_ * (1 - i_)}
    expected_c = {"i": g_ * i_ * (1 - i_), "f": c_prev_ * f_ * (1 - f_)}
    got_c = dict(blocks[("c", FEEDBACK)].feedback)
    assert set(got_c) == set(expected_c)
    assert all(sympy.simplify(got_c[k] - expected_c[k]) == 0 for k in expected_c)
    assert not any(b.source == FEEDBACK for b in state_jacobian(spec, "truncated"))
    text = render_error_flow(build_derivation(spec))
    assert "∂c[t]/∂γ[t-1] = diag(g[t]·i[t]·(1 - i[t]))·Q_iᵀ + diag(c[t-1]·f[t]·(1 - f[t]))·Q_fᵀ" in text
    assert "the factor of the direct path only" in text and "scaled by this factor on every step" not in text
