"""The kernel IR: the plan of each kernel (buffers, GEMMs, unit loops), checked as nodes, not as text."""

from pathlib import Path

import pytest
import sympy

from lstmgen.codegen import module_runtime
from lstmgen.codegen.kernel_ir import (
    Buffer,
    Gemm,
    Scalar,
    ScalarStore,
    ScalarView,
    Slice,
    Transposed,
    UnitLoop,
    View,
    row_items,
    unit_loops,
)
from lstmgen.codegen.kernel_printer import LINE_WIDTH
from lstmgen.codegen.lower_kernel import lower
from lstmgen.codegen.render_module import runtime_source
from lstmgen.functions import UNITS
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations
from lstmgen.variants import VARIANTS

GENERATED = Path(__file__).resolve().parent.parent / "generated"


def plan(variant: str, gradient: str = "full"):
    forward = build_forward_equations(VARIANTS[variant])
    return lower(build_kernel_expressions(derive_backward(forward, gradient)))


def operands(gemm: Gemm) -> tuple[str, str, str]:
    def name(node):
        return f"{name(node.operand)}.T" if isinstance(node, Transposed) else node.buffer

    return name(gemm.a), name(gemm.b), name(gemm.out)


def test_lstm_does_one_recurrent_gemm_per_step_each_way():
    p = plan("lstm")
    assert [operands(g) for g in p.forward.gemms()] == [("h__seq", "R", "rec_buf")]
    assert [operands(g) for g in p.backward.gemms()] == [("R", "d_gate_seq.T", "gemm_h_buf")]
    # No separate recurrent adjoints: δhR_k = δxW_k for every gate, so backward reads d_gate_seq twice.
    names = {b.name for b in p.backward_buffers}
    assert "d_gate_seq" in names and "d_rec_seq" not in names
    assert [b.name for b in p.forward.locals] == ["rec_buf"] + [f"a_{g}__scratch" for g in "ifgo"]


def test_truncated_gradient_has_no_backward_recurrent_gemm():
    p = plan("lstm", "truncated")
    assert p.backward.gemms() == ()
    assert "gemm_h_buf" not in {b.name for b in p.backward.locals}


def test_mid_step_block_is_its_own_gemm_after_its_source():
    p = plan("gru_v3")
    assert [operands(g) for g in p.forward.gemms()] == [
        ("h__seq", "R_early", "rec_buf"),
        ("src_n__seq", "n__R", "hR_n__buf"),
    ]
    assert [operands(g) for g in p.backward.gemms()] == [
        ("d_hR_n__seq", "n__RT", "dnext_src_n__buf"),
        ("R_early", "d_rec_seq.T", "gemm_h_buf"),
    ]
    assert "src_n__seq" in {b.name for b in p.tape_extra}  # dR_n needs the source of every step


def test_gate_feedback_adds_its_gemms_and_buffers():
    p = plan("lstm_fgr")
    assert ("fb_seq", "Q", "fbq_buf") in [operands(g) for g in p.forward.gemms()]
    assert ("Q", "d_fbq_seq.T", "gemm_fb_buf") in [operands(g) for g in p.backward.gemms()]
    assert p.tape_extra[0].name == "fb_seq" and p.tape_extra[0].shape[0] == "steps + 1"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_every_store_reads_exactly_the_rows_it_names(variant, gradient):
    """An element in a unit loop is an Indexed node of a row the store lists, or a per-row value it lists; no
    index hides in a symbol."""
    p = plan(variant, gradient)
    for kernel in (p.forward, p.backward):
        for item in row_items(kernel):
            stores = item.stores if isinstance(item, UnitLoop) else (item,)
            for store in stores:
                per_row = {row.name for row in store.reads if isinstance(row, (Scalar, ScalarView))}
                bases = {str(e.base) for e in store.value.atoms(sympy.Indexed)}
                assert bases | per_row == {row.name for row in store.reads}, item.comment
                elements = {e: sympy.Dummy() for e in store.value.atoms(sympy.Indexed)}
                bare = store.value.xreplace(elements).free_symbols - set(elements.values()) - {UNITS}
                assert {str(s) for s in bare} == per_row, f"{item.comment}: {bare} are not storage locations"
                assert all("[" not in str(s) for s in store.value.atoms(sympy.Symbol))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_views_are_named_after_one_slice(variant):
    p = plan(variant)
    for kernel in (p.forward, p.backward):
        bound: dict[str, Slice] = {}
        for loop in unit_loops(kernel):
            for store in loop.stores:
                for row in (store.target, *store.reads):
                    if isinstance(row, View):
                        assert bound.setdefault(row.name, row.source) == row.source
                    elif not isinstance(row, Scalar):
                        assert isinstance(row, Buffer)
                        assert row.shape == ("hidden",) or row.name in ("gemm_h_buf", "gemm_fb_buf"), row.name


def test_modules_inline_the_static_half_verbatim():
    static = runtime_source()
    assert "class Tape" in static and "VARIANT = " not in static  # the stand-ins stay out
    for path in sorted(GENERATED.glob("*.py")):
        if path.name != "__init__.py":
            assert static in path.read_text(), path.name
    assert module_runtime.INLINE_MARKER in Path(module_runtime.__file__).read_text()


def test_generated_modules_fit_the_line_width():
    for path in sorted(GENERATED.glob("*.py")):
        long = [n for n, line in enumerate(path.read_text().splitlines(), 1) if len(line) > LINE_WIDTH]
        assert not long, f"{path.name}: lines {long} are longer than {LINE_WIDTH}"


def test_generated_code_blemishes_are_gone():
    for path in sorted(GENERATED.glob("*.py")):
        text = path.read_text()
        for line in text.splitlines():
            stripped = line.strip()
            if stripped.startswith("# ") and " = " in stripped:
                lhs, rhs = stripped[2:].split(" = ", 1)
                assert lhs != rhs, f"{path.name}: {stripped}"
        assert "__tmp" not in text and "_gate_row" not in text
    gru_v3 = (GENERATED / "gru_v3.py").read_text()
    assert "hR_n = src_n R_n with src_n = h_prev*r" in gru_v3
    assert "dR_n = sum_t src_n^T d_hR_n" in gru_v3


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_per_row_values_stay_per_row(variant, gradient):
    """A value computed from per-row values alone (``1/sqrt_h`` of a saved one) is a local, not a row filled with
    H copies; and a per-row statement reads no unit's element (it would read a stale ``j``)."""
    p = plan(variant, gradient)
    for kernel in (p.forward, p.backward):
        for item in row_items(kernel):
            if isinstance(item, UnitLoop):
                for store in item.stores:
                    constant = not store.value.free_symbols  # d_h_prev = 0 of the truncated rule
                    assert constant or store.value.atoms(sympy.Indexed), f"{item.comment}: per-row value per unit"
            elif isinstance(item, ScalarStore):
                assert not item.value.atoms(sympy.Indexed), f"{item.comment}: reads a unit's element"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_backward_copies_no_value_into_a_scratch_row(variant, gradient):
    """Another name for a value of the step (lstm's d_c_prev = tmp2) is read from the row that value is in: no
    unit loop copies it into a scratch row of its own."""
    for item in row_items(plan(variant, gradient).backward):
        if isinstance(item, UnitLoop):
            for store in item.stores:
                if isinstance(store.target, Buffer) and store.target.name.endswith("__scratch"):
                    assert not isinstance(store.value, sympy.Indexed), f"{item.comment}: a copy into a scratch row"
