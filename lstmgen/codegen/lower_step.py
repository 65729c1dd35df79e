"""The lowering's elementwise passes: the row loops of each phase of the step, forward and backward.

Each assignment of the expression lists becomes a loop over the units of one batch row (or, for a per-row value,
a scalar store or a reduction), reading its symbols where :mod:`lstmgen.codegen.symbol_rows` places them. The
GEMMs between phases come from :mod:`lstmgen.codegen.lower_products`.
"""

from __future__ import annotations

import sympy

from lstmgen.codegen.equation_text import output_text, str_assignment
from lstmgen.codegen.kernel_ir import (
    Block,
    Buffer,
    Phase,
    Reduction,
    Row,
    RowLoop,
    Scalar,
    ScalarStore,
    Slice,
    Store,
    UnitLoop,
    View,
)
from lstmgen.codegen.lower_products import mid_step_adjoint_products, mid_step_products
from lstmgen.codegen.numba_printer import print_text
from lstmgen.codegen.symbol_rows import (
    buf_view,
    carry_row,
    forward_home,
    gate_param_row,
    invariant_row,
    read_row,
    saved_row,
    saved_scalar,
    scalar,
    scratch,
    seq_view,
    state_gradient_row,
    unit_gradient,
    view,
)
from lstmgen.functions import UNITS, sum_units
from lstmgen.symbolic.assignment import AssignmentList, Role
from lstmgen.symbolic.derive_backward import adjoint_symbol
from lstmgen.symbolic.forward_equations import unit_symbol
from lstmgen.symbolic.layout import Kind, Layout

#: What a backward phase writes: row -> (operator, the adjoint written there, its label).
Outputs = dict[Row, tuple[str, sympy.Expr, str]]


class RowLoopBuilder:
    """Collects the unit loops of one row loop; ``home`` is where each value of this phase was written."""

    def __init__(self, layout: Layout, backward: bool) -> None:
        self.layout = layout
        self.backward = backward
        self.home: dict[sympy.Symbol, Row] = {}
        self.body: list[UnitLoop] = []

    def row_of(self, sym: sympy.Symbol) -> Row:
        if sym in self.home:
            return self.home[sym]
        layout = self.layout
        record = (layout.backward if self.backward else layout.forward)[sym]
        output_seed = record.kind == Kind.STATE_SEED and record.owner == layout.spec.output_state
        if output_seed and layout.projection:
            # (dy_t + the error carried from step t+1) W_p^T: the GEMM before the row loops wrote it.
            self.home[sym] = buf_view(sym)
            return self.home[sym]
        if output_seed:
            # dy_t plus the error carried from step t+1, summed once per phase into a scratch row.
            dy = View("dy_row", Slice("dy", ("t", "nb")))
            carried = read_row(layout, sym, True)
            self.home[sym] = scratch(sym)
            self.store(
                f"{sym} = dy_t + (error carried from step t+1)",
                self.home[sym],
                sympy.Add(dy.element(), carried.element(), evaluate=False),
                (dy, carried),
            )
            return self.home[sym]
        return read_row(layout, sym, self.backward)

    def at(self, expr: sympy.Expr) -> tuple[sympy.Expr, tuple[Row, ...]]:
        """``expr`` with every symbol replaced by its row's element at unit j, and the rows it reads."""
        # Sorted: the order of first use decides the order of the row views, and must not depend on hashing.
        rows = {s: self.row_of(s) for s in sorted(expr.free_symbols - {UNITS}, key=str)}
        return expr.xreplace({s: row.element() for s, row in rows.items()}), tuple(rows.values())

    def store(self, comment: str, target: Row, value: sympy.Expr, reads: tuple[Row, ...], op: str = "=") -> None:
        self.body.append(UnitLoop(comment, (Store(target, value, reads, op),)))

    def compute(self, comment: str, target: Row, expr: sympy.Expr, op: str = "=") -> None:
        if isinstance(target, Scalar):
            if op != "=":  # pragma: no cover - per-row values are assigned once
                raise ValueError(f"per-row value {target.name}: cannot {op}")
            if isinstance(expr, sum_units):
                value, reads = self.at(expr.args[0])
                self.body.append(Reduction(comment, target, value, reads))
            else:
                value, reads = self.at(expr)
                self.body.append(ScalarStore(comment, target, value, reads))
            return
        value, reads = self.at(expr)
        self.store(comment, target, value, reads, op)


def _comment(lhs: sympy.Symbol, rhs: sympy.Expr, original: dict[sympy.Symbol, sympy.Expr]) -> str:
    return str_assignment(lhs, original.get(lhs, rhs))


def _phase_note(layout: Layout, p: int) -> str:
    n = layout.kernel.n_phases
    return f", phase {p + 1} of {n}" if n > 1 else ""


def invariant_loops(layout: Layout) -> tuple[list[Buffer], list[UnitLoop]]:
    """The values of the unit parameters alone, computed once before a kernel's time loop into (H,) rows."""
    rows = RowLoopBuilder(layout, backward=False)
    for a in layout.kernel.invariants:
        rows.home[a.lhs] = invariant_row(a.lhs)
        rows.compute(f"{str_assignment(a.lhs, a.rhs)}, the same at every step", rows.home[a.lhs], a.rhs)
    return list(rows.home.values()), rows.body


# ---------------------------------------------------------------------------------------------------- forward


def forward_phases(layout: Layout) -> list[Phase]:
    """Each forward phase: the mid-step GEMMs it waits for, then one unit loop per assignment."""
    original = {a.lhs: a.rhs for a in layout.equations.equations}
    phases = []
    for p, assignments in enumerate(layout.kernel.forward_phases):
        rows = RowLoopBuilder(layout, backward=False)
        _keep_saved_inputs(layout, rows, assignments)
        homes = _forward_aliases(layout, assignments)
        for a in assignments:
            _forward_assignment(layout, rows, a, homes, original)
        comments = (
            f"Elementwise step{_phase_note(layout, p)}, one short loop per equation; gate values overwrite their"
            " pre-activations in gate_seq.",
        )
        phases.append(Phase(mid_step_products(layout, p), RowLoop(comments, tuple(rows.body))))
    return phases


def _keep_saved_inputs(layout: Layout, rows: RowLoopBuilder, assignments: AssignmentList) -> None:
    """Inputs that backward needs, copied from where the step found them."""
    inputs_read = set(assignments.free_inputs())
    for sym in layout.kernel.saved:
        if layout.forward[sym].is_input and sym in inputs_read:
            source = read_row(layout, sym, False)
            rows.home[sym] = source
            rows.store(f"keep {sym} for backward", saved_row(sym), source.element(), (source,))


def _forward_assignment(layout: Layout, rows: RowLoopBuilder, a, homes: dict, original: dict) -> None:
    """One forward assignment: a per-row value into a local, a row value into its home (and its fed-back copy)."""
    record = layout.forward[a.lhs]
    if record.per_row:
        target = rows.home[a.lhs] = scalar(a.lhs)
        rows.compute(_comment(a.lhs, a.rhs, original), target, a.rhs)
        if record.saved:
            rows.body.append(ScalarStore("", saved_scalar(a.lhs), target.element(), (target,)))
        return
    value, reads = rows.at(a.rhs)
    target = homes.get(a.lhs) or forward_home(layout, a.lhs)
    same_memory = isinstance(target, View) and len(reads) == 1 and isinstance(reads[0], View)
    if same_memory and value == reads[0].element() and reads[0].source == target.source:
        rows.home[a.lhs] = target  # already there: an identity gate of its own pre-activation
        return
    stores = [Store(target, value, reads)]
    if record.fed_back is not None:
        fed_back = view(a.lhs, "fb_row", "fb_seq", "t + 1", "nb", Block(record.fed_back))
        stores.append(Store(fed_back, target.element(), (target,)))
    rows.home[a.lhs] = target
    comment = _comment(a.lhs, a.rhs, original)
    if a.role == Role.PREACTIVATION and a.lhs in homes:  # the identity gate shares the row
        comment += f"; {str(a.lhs).removeprefix('a_')} = {a.lhs}"
    rows.body.append(UnitLoop(comment, tuple(stores)))


def _forward_aliases(layout: Layout, assignments: AssignmentList) -> dict[sympy.Symbol, Row]:
    """Pre-activations whose gate is the identity: computed straight into the gate's row, which then holds both
    (not when backward needs the pre-activation saved, nor for a fed-back gate).

    Not done for other gates: ``z = sigmoid(xW_z)`` read from the row it overwrites ran 1.5x slower than through
    a scratch copy (mingru, float32, S1 and S2), the in-place loop no longer vectorizing."""
    homes: dict[sympy.Symbol, Row] = {}
    gate_of = {unit_symbol(f"a_{g.name}"): unit_symbol(g.name) for g in layout.spec.gates}
    rhs_of = {a.lhs: a.rhs for a in assignments}
    for a in assignments:
        gate = gate_of.get(a.lhs)
        if a.role != Role.PREACTIVATION or gate is None or layout.forward[a.lhs].saved:
            continue
        if rhs_of.get(gate) == a.lhs and layout.forward[gate].fed_back is None:
            homes[a.lhs] = forward_home(layout, gate)
    return homes


# ---------------------------------------------------------------------------------------------------- backward


def backward_phases(layout: Layout) -> list[Phase]:
    """Each backward phase, last to first: the mid-step GEMM on its sources' gradient, then its adjoints and
    outputs."""
    kernel, derived = layout.kernel, layout.derived
    original = {a.lhs: a.rhs for a in derived.adjoints}
    phases = []
    for p in reversed(range(kernel.n_phases)):
        comments = [str_assignment(a.lhs, a.rhs) for a in derived.adjoints if kernel.backward_phase[a.lhs] == p]
        if p == 0:
            comments += output_text(layout)
        rows = RowLoopBuilder(layout, backward=True)
        _backward_row_loops(layout, rows, p, original)
        header = (f"Elementwise step{_phase_note(layout, p)}, derived by SymPy:", *(f"  {c}" for c in comments))
        note = "past its length: the gradient passes through, the step's adjoints stay zero"
        phases.append(Phase(mid_step_adjoint_products(layout, p), RowLoop(header, tuple(rows.body), skip_note=note)))
    return phases


def _backward_row_loops(layout: Layout, rows: RowLoopBuilder, p: int, original: dict) -> None:
    """The adjoints of phase ``p`` into their rows, then what is written to the phase's outputs."""
    assignments = layout.kernel.backward_phases[p]
    outputs = _backward_outputs(layout, p)
    direct = _direct_homes(layout, outputs, assignments)
    accumulated = _accumulated_in_place(layout, outputs, assignments)
    aliases: set[sympy.Symbol] = set()
    for a in assignments:
        record = layout.backward[a.lhs]
        if a.lhs in accumulated:
            target, label = accumulated[a.lhs]
            rows.compute(f"{label} += {print_text(original.get(a.lhs, a.rhs))}", target, a.rhs, "+=")
            continue
        if record.per_row:
            if record.carried:  # pragma: no cover - no cell carries a per-row adjoint between phases
                raise ValueError(f"the per-row adjoint {a.lhs} would cross a mid-step GEMM")
            target = scalar(a.lhs)
        elif record.carried:
            target = carry_row(a.lhs)
        elif a.lhs not in direct and isinstance(a.rhs, sympy.Symbol) and a.rhs in rows.home:
            # Another name for a value of this phase (d_c_prev = tmp2): read where the value already is,
            # instead of a loop that copies it into a scratch row of its own.
            rows.home[a.lhs] = rows.home[a.rhs]
            aliases.add(a.lhs)
            continue
        else:
            target = direct.get(a.lhs) or scratch(a.lhs)
        rows.compute(_comment(a.lhs, a.rhs, original), target, a.rhs)
        rows.home[a.lhs] = target
    for target, (op, expr, label) in outputs.items():
        if op == "=" and isinstance(expr, sympy.Symbol) and rows.home.get(expr) == target:
            continue  # computed in place
        if op == "+=" and expr in accumulated:
            continue  # accumulated where it was computed
        text = print_text(expr)
        if text == label:  # a carry whose adjoint was computed under its own name: say where it goes
            # (and, for another name of a value computed above, what it is)
            defined = f" = {print_text(original[expr])}" if expr in aliases and expr in original else ""
            comment = f"{label}{defined}, carried to step t-1"
        else:
            comment = f"{label} {op} {text}"
        rows.compute(comment, target, expr, op)


def _own_row(layout: Layout, expr: sympy.Expr) -> bool:
    """Whether adjoint ``expr`` is a row of its own: not carried between phases, not per-row."""
    record = layout.backward.get(expr)
    return record is None or not (record.carried or record.per_row)


def _direct_homes(layout: Layout, outputs: Outputs, assignments: AssignmentList) -> dict[sympy.Symbol, Row]:
    """Adjoints computed straight into an output row (the first output that is exactly that adjoint)."""
    targets = set(assignments.targets)
    direct: dict[sympy.Symbol, Row] = {}
    # Not the state gradients carried to step t-1: the seeds of this step are still read from those rows.
    carries = {state_gradient_row(s) for s in layout.spec.state}
    for target, (op, expr, _) in outputs.items():
        if op == "=" and expr in targets and expr not in direct and _own_row(layout, expr) and target not in carries:
            direct[expr] = target
    return direct


def _accumulated_in_place(
    layout: Layout, outputs: Outputs, assignments: AssignmentList
) -> dict[sympy.Symbol, tuple[Row, str]]:
    """Adjoints of unit parameters read by nothing else: added straight into the parameter's gradient."""
    read = {s for a in assignments for s in a.rhs.free_symbols}
    return {
        expr: (target, label)
        for target, (op, expr, label) in outputs.items()
        if op == "+="
        and expr in assignments.targets
        and expr not in read
        and _own_row(layout, expr)
        and sum(e == expr for _, e, _ in outputs.values()) == 1
    }


def _backward_outputs(layout: Layout, p: int) -> Outputs:
    """Rows written by backward phase ``p`` -> (operator, the adjoint written there, its label)."""
    kernel, derived = layout.kernel, layout.derived

    def here(expr: sympy.Expr) -> bool:
        # An output adjoint is written in the phase that computes it (phase 0 for seeds and zeros).
        return kernel.backward_phase.get(expr, 0) == p

    outputs: Outputs = {}

    def write(kinds: tuple[Kind, ...], place, op: str = "=", label=None, nonzero: bool = False) -> None:
        for record in (r for kind in kinds for r in layout.of_kind(kind)):
            expr = derived.output(record.symbol)
            if here(expr) and not (nonzero and expr == 0):
                outputs[place(record)] = (op, expr, label(record) if label else f"d_{record.symbol}")

    def adjoint_view(buffer: str):
        return lambda r: view(adjoint_symbol(r.symbol), "row", buffer, "t", "nb", Block(r.column))

    def adjoint_seq(r):
        return seq_view(adjoint_symbol(r.symbol), adjoint_symbol(r.symbol), "t")

    write((Kind.INPUT_PROJECTION,), adjoint_view("d_gate_seq"))
    if kernel.separate_recurrent_adjoint:
        write((Kind.RECURRENT_PRODUCT,), adjoint_view("d_rec_seq"))
    write((Kind.MID_STEP_PRODUCT,), adjoint_seq)
    write((Kind.FEEDBACK_PRODUCT,), adjoint_view("d_fbq_seq"))
    write((Kind.INPUT_ROW,), adjoint_seq, nonzero=True)
    write((Kind.UNIT_PARAMETER,), unit_gradient, "+=", lambda r: f"gradient of {r.owner}")
    gate = [g.name for g in layout.spec.gates]
    param_label = lambda r: f"gradient of {r.owner}_{gate[r.column]}"  # noqa: E731
    write((Kind.GATE_PARAMETER,), lambda r: gate_param_row(layout, r, True), "+=", param_label, nonzero=True)
    if p == 0:  # the carries for step t-1 are written last: the seeds of step t are read from them first
        _state_carries(layout, outputs)
    return outputs


def _state_carries(layout: Layout, outputs: Outputs) -> None:
    """The gradients on the previous states, carried to step t-1 (h's only in part when R carries it)."""
    output_state = layout.spec.output_state
    for s, prev in layout.equations.prev:
        adjoint = layout.derived.output(prev)
        if s == output_state and layout.projection:
            continue  # read only through R (the spec guarantees it): the GEMM's result, or zero when truncated
        if s != output_state or not layout.recurrent:
            outputs[state_gradient_row(s)] = ("=", adjoint, f"d_{prev}")
        elif layout.elementwise_and_gemm_h:
            outputs[buf_view(adjoint_symbol(prev))] = ("=", adjoint, f"d_{prev}")
