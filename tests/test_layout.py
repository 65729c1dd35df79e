"""The symbol table: every symbol of both loops classified once, and the one rule for per-row values."""

from __future__ import annotations

import pytest
import sympy

import lstmgen
from lstmgen.functions import UNITS, sum_units
from lstmgen.symbolic.assignment import Assignment, Role, per_row_values
from lstmgen.symbolic.forward_equations import unit_symbol
from lstmgen.symbolic.layout import HIDDEN, PER_ROW, Kind, build_layout
from lstmgen.variants import VARIANTS

S = unit_symbol


def _layout(variant: str, gradient: str = "full"):
    return lstmgen.stages(variant, gradient).layout


def test_lstm_peephole_records():
    layout = _layout("lstm_peephole")
    fwd, bwd = layout.forward, layout.backward
    assert fwd[S("xW_f")].kind == Kind.INPUT_PROJECTION and fwd[S("xW_f")].column == 1
    assert fwd[S("hR_o")].kind == Kind.RECURRENT_PRODUCT and fwd[S("hR_o")].owner == "o"
    assert fwd[S("i")].kind == Kind.GATE and fwd[S("i")].column == 0 and fwd[S("i")].fed_back is None
    assert fwd[S("c_prev")].kind == Kind.PREVIOUS_STATE and fwd[S("c_prev")].owner == "c"
    assert fwd[S("c")].kind == Kind.NEW_STATE
    assert fwd[S("p_i")].kind == Kind.UNIT_PARAMETER and fwd[S("p_i")].owner == "p_i"
    # tanh(c) is read by backward: forward keeps it; a gate lives in gate_seq, not saved.
    assert fwd[S("tanh_c")].kind == Kind.VALUE and fwd[S("tanh_c")].saved
    assert not fwd[S("i")].saved
    assert bwd[S("dnext_h")].kind == Kind.STATE_SEED and bwd[S("dnext_h")].owner == "h"
    assert bwd[S("d_c")].kind == Kind.ADJOINT and bwd[S("d_c")].units == HIDDEN
    assert layout.recurrent and layout.early_gates == (0, 1, 2, 3) and not layout.late


def test_truncated_gradient_carries_no_error_through_R():
    assert not _layout("lstm", "truncated").recurrent


def test_mid_step_product_and_its_seed():
    layout = _layout("gru_v3")
    (late,) = layout.of_kind(Kind.MID_STEP_PRODUCT)
    assert late.symbol == S("hR_n") and late.column == 0
    assert [r.owner for r in layout.of_kind(Kind.RECURRENT_PRODUCT)] == ["r", "z"]
    (seed,) = layout.of_kind(Kind.SOURCE_SEED, backward=True)
    assert seed.symbol == S("dnext_src_n")
    assert layout.forward[S("src_n")].saved  # dR needs the source


def test_feedback_records():
    layout = _layout("lstm_fgr")
    products = layout.of_kind(Kind.FEEDBACK_PRODUCT)
    assert [r.column for r in products] == list(range(len(layout.spec.feedback)))
    fed = [r for r in layout.of_kind(Kind.GATE) if r.fed_back is not None]
    assert [r.owner for r in fed] == list(layout.spec.feedback)
    seeds = layout.of_kind(Kind.FEEDBACK_SEED, backward=True)
    assert [r.owner for r in seeds] == list(layout.spec.feedback)
    assert not _layout("lstm_fgr", "truncated").of_kind(Kind.FEEDBACK_SEED, backward=True)


def test_per_row_values_of_layer_norm():
    layout = _layout("layernorm_lstm")
    per_row = {r.symbol for r in layout.forward.values() if r.units == PER_ROW}
    assert per_row and all(layout.forward[s].kind == Kind.VALUE for s in per_row)
    assert per_row == set(layout.kernel.forward_scalars)
    backward_rows = {s for s, r in layout.backward.items() if r.kind == Kind.ADJOINT and r.units == PER_ROW}
    assigned = {a.lhs for phase in layout.kernel.backward_phases for a in phase}
    assert backward_rows and backward_rows == set(layout.kernel.backward_scalars) & assigned


def test_invariants_step_inputs_and_projection():
    assert any(r.invariant for r in _layout("rg_lru").forward.values())
    masks = _layout("zoneout_lstm").of_kind(Kind.STEP_INPUT)
    assert [r.owner for r in masks] == list(VARIANTS["zoneout_lstm"].inputs)
    lstmp = _layout("lstmp")
    assert lstmp.units("h") == "proj" and lstmp.units("c") == HIDDEN


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_every_symbol_of_both_loops_has_one_record(variant, gradient):
    """What each loop reads and writes is in its table, and the kinds agree with the equations' groups."""
    layout = _layout(variant, gradient)
    kernel = layout.kernel
    forward_symbols = {s for phase in kernel.forward_phases for a in phase for s in (a.lhs, *a.rhs.free_symbols)}
    forward_symbols |= {s for a in kernel.invariants for s in (a.lhs, *a.rhs.free_symbols)}
    assert forward_symbols - {UNITS} <= set(layout.forward)
    backward_symbols = {s for phase in kernel.backward_phases for a in phase for s in (a.lhs, *a.rhs.free_symbols)}
    assert backward_symbols - {UNITS} <= set(layout.backward)
    for gate, sym in kernel.forward.xW:
        assert layout.forward[sym].kind == Kind.INPUT_PROJECTION and layout.forward[sym].owner == gate
    for name, sym in kernel.forward.prev:
        assert layout.forward[sym].kind == Kind.PREVIOUS_STATE and layout.forward[sym].owner == name
    assert {s for s in layout.forward if layout.forward[s].saved} == set(kernel.saved)
    assert {s for s in layout.backward if layout.backward[s].carried} == set(kernel.carried)


def test_the_layout_is_what_the_lowering_reads():
    """lower() takes the table, and gives the plan it gives for the expression lists."""
    from lstmgen.codegen.lower_kernel import lower

    stages = lstmgen.stages("gru")
    assert lower(stages.layout) == lower(stages.expressions) == stages.plan
    assert build_layout(stages.expressions) == stages.layout


def test_per_row_rule():
    s, m, v, x, t = (sympy.Symbol(n, real=True) for n in ("s", "m", "v", "x", "t"))
    assignments = [
        Assignment(s, sum_units(x), Role.REDUCTION),
        Assignment(m, s / UNITS, Role.INTERMEDIATE),  # from a per-row value and H alone
        Assignment(v, m * x, Role.INTERMEDIATE),  # reads a unit's value: a row
        Assignment(t, 1 / UNITS, Role.TEMPORARY),  # a CSE constant: a local
        Assignment(sympy.Symbol("g", real=True), m, Role.GATE),  # a gate is a row whatever it reads
        Assignment(sympy.Symbol("k", real=True), sympy.Integer(2), Role.INTERMEDIATE),  # a named constant: a row
    ]
    assert per_row_values(assignments) == {s, m, t}
    assert per_row_values(assignments[2:3], also=[m]) == frozenset()
    assert per_row_values([Assignment(v, 2 * m, Role.INTERMEDIATE)], also=[m]) == {v}
