"""Stage 5 — expression lists → the kernel IR (:mod:`lstmgen.codegen.kernel_ir`) of both kernels.

Decides where every value of the step lives (its buffer and its row view), which GEMMs run when, and which
unit loops compute what. Nothing here prints text: :mod:`lstmgen.codegen.kernel_printer` does.

Every buffer and view derived from a spec name is named ``<value>__<role>``
(:func:`~lstmgen.codegen.kernel_names.kernel_name`); a view is named after the value it holds, so the block of
``gate_seq`` that holds x_t W_i + b_i is read as ``xW_i__row`` and written, once the gate is computed, as
``i__row``.
"""

from __future__ import annotations

import sympy

from lstmgen.codegen.kernel_ir import (
    BATCH_ROW,
    Assign,
    Block,
    Buffer,
    Contiguous,
    Dot,
    Flat,
    Gemm,
    HeadProjection,
    HeadProjectionT,
    HeadWeightGradient,
    InputProjection,
    Kernel,
    ModulePlan,
    Ones,
    Phase,
    Plus,
    Reduction,
    Row,
    RowLoop,
    Scalar,
    ScalarStore,
    ScalarView,
    Slice,
    Store,
    TimeLoop,
    Transposed,
    UnitLoop,
    View,
    width,
)
from lstmgen.codegen.kernel_names import kernel_name
from lstmgen.codegen.numba_printer import print_text
from lstmgen.functions import UNITS, sum_units
from lstmgen.spec import PROJECTION_MATRIX
from lstmgen.symbolic.assignment import AssignmentList
from lstmgen.symbolic.derive_backward import adjoint_symbol, seed_symbol
from lstmgen.symbolic.expression_lists import KernelExpressions
from lstmgen.symbolic.forward_equations import unit_symbol

SEQ = ("steps", "batch", "hidden")
SEQ_PLUS_ONE = ("steps + 1", "batch", "hidden")
ROW = ("batch", "hidden")
#: The extent of a projected output's units (P): h = u W_p.
PROJ = "proj"


def str_assignment(lhs: sympy.Symbol, rhs: sympy.Expr) -> str:
    return f"{lhs} = {print_text(rhs)}"


class CellStorage:
    """Where each value of the step lives, for one cell: pure lookups, no state."""

    def __init__(self, kernel: KernelExpressions) -> None:
        self.kernel = kernel
        backward = self.backward = kernel.backward
        forward = self.forward = backward.forward
        spec = self.spec = forward.spec
        self.gate_column = {unit_symbol(g.name): k for k, g in enumerate(spec.gates)}
        self.xW_column = {sym: k for k, (_, sym) in enumerate(forward.xW)}
        late_gates = {gate for gate, _ in forward.sources}
        self.hR = dict(forward.hR)
        #: Column block of R of each recurrent gate (RECURRENT_GATES order).
        self.rec_block = {gate: r for r, (gate, _) in enumerate(forward.hR)}
        self.early_gates = tuple(k for k, g in enumerate(spec.gates) if g.name in self.hR and g.name not in late_gates)
        self.early_column = {self.hR[spec.gates[k].name]: e for e, k in enumerate(self.early_gates)}
        #: The column block of R of each step-start gate, in R_early's order.
        self.early_R_blocks = tuple(self.rec_block[spec.gates[k].name] for k in self.early_gates)
        names = [g.name for g in spec.gates]
        self.late = tuple((names.index(gate), gate, src) for gate, src in forward.sources)
        self.late_projection = {self.hR[gate]: gate for _, gate, _ in self.late}
        self.feedback_column = {sym: pos for pos, (_, sym) in enumerate(forward.gQ)}
        self.feedback_gate_column = {unit_symbol(g): pos for pos, g in enumerate(spec.feedback)}
        self.prev_state = {sym: name for name, sym in forward.prev}
        self.new_state = {sym: name for name, sym in forward.new}
        self.unit_param = {sym: name for name, sym in forward.unit_params}
        self.input_row = {sym for _, sym in forward.input_row}
        self.step_input = {sym: name for name, sym in forward.step_inputs}
        self.invariant = {a.lhs for a in kernel.invariants}
        #: Per-row values: forward's (also what backward reads back from the tape), and backward's own.
        self.scalars = kernel.forward_scalars
        self.backward_scalars = kernel.backward_scalars
        #: Block k of a (G·H,) gate parameter: symbol -> (parameter, gate column).
        self.gate_param = {sym: (p, names.index(gate)) for p, gate, sym in forward.gate_params}
        self.saved = tuple(kernel.saved)
        self.seeds = {sym: name for name, sym in backward.seeds}
        self.carried = set(kernel.carried)
        self.h_prev = dict(forward.prev)[spec.output_state]
        #: Whether backward carries the error through h_{t-1} R (a full gradient of a cell that has R).
        self.recurrent = backward.recurrent_gemm and bool(self.early_gates)
        self.elementwise_and_gemm_h = self.recurrent and backward.output(self.h_prev) != 0
        self.n_gates = len(spec.gates)
        self.n_feedback = len(spec.feedback)
        self.rec_matrix = "R_early" if self.late else "R"
        self.d_rec_seq = "d_rec_seq" if kernel.separate_recurrent_adjoint else "d_gate_seq"
        #: A projected output: its equation's value u (H units) lives in <h>__cell_seq, h = u W_p in <h>__seq.
        self.projection = spec.projection
        self.output = unit_symbol(spec.output_state)

    def units(self, state: str) -> str:
        """The extent of a state's units: P for a projected output, else H."""
        return PROJ if self.projection and state == self.spec.output_state else "hidden"

    def cell_output(self) -> Buffer:
        """(T, B, H): a projected output before its projection, at every step (kept for dW_p)."""
        name = self.spec.output_state
        return Buffer(
            kernel_name(name, "cell_seq"), SEQ, f"{name} before its projection, for backward", "zeros_if_padded"
        )

    # Views of one step and batch row.
    @staticmethod
    def view(owner: object, role: str, buffer: str, *index: str | Block) -> View:
        return View(kernel_name(owner, role), Slice(buffer, index))

    def seq_view(self, owner: object, seq_owner: object, step: str, role: str = "row") -> View:
        return self.view(owner, role, kernel_name(seq_owner, "seq"), step, "nb")

    def buf_view(self, owner: object, role: str = "row", buf_role: str = "buf") -> View:
        return self.view(owner, role, kernel_name(owner, buf_role), "nb")

    def gate_block(self, owner: object, k: int) -> View:
        return self.view(owner, "row", "gate_seq", "t", "nb", Block(k))

    def scratch(self, sym: sympy.Symbol) -> Buffer:
        return Buffer(kernel_name(sym, "scratch"), ("hidden",), f"{sym} of the current batch row", "scratch")

    def unit_vector(self, sym: sympy.Symbol) -> Buffer:
        return Buffer(
            kernel_name(sym, "vec"),
            ("hidden",),
            f"unit parameter {self.unit_param[sym]}",
            "param",
            param=self.unit_param[sym],
        )

    def unit_gradient(self, sym: sympy.Symbol) -> Buffer:
        return Buffer(kernel_name(sym, "grad"), ("hidden",), f"gradient of {self.unit_param[sym]}", "zeros")

    def invariant_row(self, sym: sympy.Symbol) -> Buffer:
        return Buffer(kernel_name(sym, "vec"), ("hidden",), f"{sym}, the same at every step")

    def gate_vector(self, param: str) -> Buffer:
        """A (G·H,) gate parameter (b itself when the cell places its bias in the equations)."""
        name = "b" if param == "b" else kernel_name(param, "vec")
        return Buffer(name, (width(self.n_gates),), f"parameter {param}", "param", param=param)

    def gate_gradient(self, param: str) -> Buffer:
        name = "db" if param == "b" else kernel_name(param, "grad")
        return Buffer(name, (width(self.n_gates),), f"gradient of {param}", "zeros")

    def gate_param_row(self, sym: sympy.Symbol, gradient: bool = False) -> View:
        param, k = self.gate_param[sym]
        vector = self.gate_gradient(param) if gradient else self.gate_vector(param)
        return self.view(sym, "grad_row" if gradient else "row", vector.name, Block(k))

    @staticmethod
    def scalar(sym: sympy.Symbol) -> Scalar:
        return Scalar(kernel_name(sym, "value"))

    def saved_scalar(self, sym: sympy.Symbol) -> Slice:
        return Slice(kernel_name(sym, "seq"), ("t", "nb"))

    def new_state_row(self, sym: sympy.Symbol) -> View:
        """The row of a state's new value: step t + 1 of its buffer (of <h>__cell_seq, step t, when projected)."""
        if self.projection and sym == self.output:
            return self.view(sym, "row", self.cell_output().name, "t", "nb")
        return self.seq_view(sym, self.new_state[sym], "t + 1")

    def read(self, sym: sympy.Symbol, backward: bool) -> Row:
        """The row that holds input or saved value ``sym`` for the current step and batch row."""
        if sym in self.invariant:
            return self.invariant_row(sym)
        if sym in self.scalars:
            if backward and sym in self.saved:
                return ScalarView(kernel_name(sym, "saved"), self.saved_scalar(sym))
            raise ValueError(f"the per-row value {sym} is read before it is computed")  # pragma: no cover
        if sym in self.gate_param:
            return self.gate_param_row(sym)
        if sym in self.saved and (backward or sym not in self.forward.inputs()):
            return self.seq_view(sym, sym, "t", "saved_row")
        if sym in self.gate_column:
            return self.gate_block(sym, self.gate_column[sym])
        if sym in self.xW_column:
            return self.gate_block(sym, self.xW_column[sym])
        if sym in self.early_column:
            return self.view(sym, "row", "rec_buf", "nb", Block(self.early_column[sym]))
        if sym in self.late_projection:
            return self.buf_view(sym)
        if sym in self.feedback_column:
            return self.view(sym, "row", "fbq_buf", "nb", Block(self.feedback_column[sym]))
        if sym in self.prev_state:
            return self.seq_view(sym, self.prev_state[sym], "t")
        if sym in self.new_state:
            return self.new_state_row(sym)
        if sym in self.unit_param:
            return self.unit_vector(sym)
        if sym in self.input_row:
            return self.view(sym, "row", "x", "t", "nb")
        if sym in self.step_input:
            return self.seq_view(sym, sym, "t")
        if sym in self.seeds:
            name = self.seeds[sym]
            if name in self.spec.state:
                return self.buf_view(name, "grad_row", "grad_buf")
            if unit_symbol(name) in self.feedback_gate_column:
                pos = self.feedback_gate_column[unit_symbol(name)]
                return self.view(name, "fb_grad_row", "grad_fb_buf", "nb", Block(pos))
            return self.buf_view(sym)  # a mid-step source: its GEMM wrote <dnext_src_k>__buf
        if sym in self.carried:
            return self.buf_view(sym, "carry_row", "carry_buf")
        raise ValueError(f"no storage for {sym}")  # pragma: no cover - every input is classified above

    def forward_home(self, sym: sympy.Symbol) -> Row:
        """Where a forward value is written: its gate block, its state row, its saved row, a scratch row, or a
        local for a per-row value."""
        if sym in self.scalars:
            return self.scalar(sym)
        if sym in self.gate_column:
            return self.gate_block(sym, self.gate_column[sym])
        if sym in self.new_state:
            return self.new_state_row(sym)
        if sym in self.saved:
            return self.seq_view(sym, sym, "t", "saved_row")
        return self.scratch(sym)


class _RowLoopBuilder:
    """Collects the unit loops of one row loop; ``home`` is where each value of this phase was written."""

    def __init__(self, storage: CellStorage, backward: bool) -> None:
        self.storage = storage
        self.backward = backward
        self.home: dict[sympy.Symbol, Row] = {}
        self.body: list[UnitLoop] = []

    def row_of(self, sym: sympy.Symbol) -> Row:
        if sym in self.home:
            return self.home[sym]
        storage = self.storage
        if self.backward and storage.projection and sym == seed_symbol(storage.spec.output_state):
            # (dy_t + the error carried from step t+1) W_p^T: the GEMM before the row loops wrote it.
            self.home[sym] = storage.buf_view(sym)
            return self.home[sym]
        if self.backward and sym in storage.seeds and storage.seeds[sym] == storage.spec.output_state:
            # dy_t plus the error carried from step t+1, summed once per phase into a scratch row.
            dy = View("dy_row", Slice("dy", ("t", "nb")))
            carried = storage.read(sym, True)
            self.home[sym] = storage.scratch(sym)
            self.store(
                f"{sym} = dy_t + (error carried from step t+1)",
                self.home[sym],
                sympy.Add(dy.element(), carried.element(), evaluate=False),
                (dy, carried),
            )
            return self.home[sym]
        return storage.read(sym, self.backward)

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


def _invariant_loops(storage: CellStorage) -> tuple[list[Buffer], list[UnitLoop]]:
    """The values of the unit parameters alone, computed once before a kernel's time loop into (H,) rows."""
    rows = _RowLoopBuilder(storage, backward=False)
    for a in storage.kernel.invariants:
        rows.home[a.lhs] = storage.invariant_row(a.lhs)
        rows.compute(f"{str_assignment(a.lhs, a.rhs)}, the same at every step", rows.home[a.lhs], a.rhs)
    return list(rows.home.values()), rows.body


def _forward_phases(storage: CellStorage) -> list[Phase]:
    kernel, forward = storage.kernel, storage.forward
    original = {a.lhs: a.rhs for a in forward.equations}
    phases = []
    for p, assignments in enumerate(kernel.forward_phases):
        gemms = tuple(
            Gemm(
                Slice(kernel_name(src, "seq"), ("t",)),
                Slice(kernel_name(gate, "R")),
                Slice(kernel_name(storage.hR[gate], "buf")),
                f"Mid-step recurrent projection of gate {gate}: ({src}) R_{gate}, one GEMM (B, H) x (H, H).",
            )
            for _k, gate, src in storage.late
            if kernel.forward_phase[src] == p - 1
        )
        rows = _RowLoopBuilder(storage, backward=False)
        inputs_read = set(assignments.free_inputs())
        for sym in storage.saved:  # inputs that backward needs, copied from where the step found them
            if sym in forward.inputs() and sym in inputs_read:
                source = storage.read(sym, False)
                rows.home[sym] = source
                rows.store(
                    f"keep {sym} for backward",
                    storage.seq_view(sym, sym, "t", "saved_row"),
                    source.element(),
                    (source,),
                )
        homes = _forward_aliases(storage, assignments)
        for a in assignments:
            if a.lhs in storage.scalars:
                target = rows.home[a.lhs] = storage.scalar(a.lhs)
                rows.compute(_comment(a.lhs, a.rhs, original), target, a.rhs)
                if a.lhs in storage.saved:
                    kept = ScalarStore("", storage.saved_scalar(a.lhs), target.element(), (target,))
                    rows.body.append(kept)
                continue
            value, reads = rows.at(a.rhs)
            target = homes.get(a.lhs) or storage.forward_home(a.lhs)
            same_memory = isinstance(target, View) and len(reads) == 1 and isinstance(reads[0], View)
            if same_memory and value == reads[0].element() and reads[0].source == target.source:
                rows.home[a.lhs] = target  # already there: an identity gate of its own pre-activation
                continue
            stores = [Store(target, value, reads)]
            if a.lhs in storage.feedback_gate_column:
                pos = storage.feedback_gate_column[a.lhs]
                fed_back = storage.view(a.lhs, "fb_row", "fb_seq", "t + 1", "nb", Block(pos))
                stores.append(Store(fed_back, target.element(), (target,)))
            rows.home[a.lhs] = target
            comment = _comment(a.lhs, a.rhs, original)
            if a.role == "preactivation" and a.lhs in homes:  # the identity gate shares the row
                comment += f"; {str(a.lhs).removeprefix('a_')} = {a.lhs}"
            rows.body.append(UnitLoop(comment, tuple(stores)))
        phase_note = f", phase {p + 1} of {kernel.n_phases}" if kernel.n_phases > 1 else ""
        comments = (
            f"Elementwise step{phase_note}, one short loop per equation; gate values overwrite their"
            " pre-activations in gate_seq.",
        )
        phases.append(Phase(gemms, RowLoop(comments, tuple(rows.body))))
    return phases


def _forward_aliases(storage: CellStorage, assignments: AssignmentList) -> dict[sympy.Symbol, Row]:
    """Pre-activations whose gate is the identity: computed straight into the gate's row, which then holds both
    (not when backward needs the pre-activation saved, nor for a fed-back gate).

    Not done for other gates: ``z = sigmoid(xW_z)`` read from the row it overwrites ran 1.5x slower than through
    a scratch copy (mingru, float32, S1 and S2), the in-place loop no longer vectorizing."""
    homes: dict[sympy.Symbol, Row] = {}
    gate_of = {unit_symbol(f"a_{g.name}"): unit_symbol(g.name) for g in storage.spec.gates}
    rhs_of = {a.lhs: a.rhs for a in assignments}
    for a in assignments:
        gate = gate_of.get(a.lhs)
        if a.role != "preactivation" or gate is None or a.lhs in storage.saved:
            continue
        if rhs_of.get(gate) == a.lhs and gate not in storage.feedback_gate_column:
            homes[a.lhs] = storage.forward_home(gate)
    return homes


def _backward_phases(storage: CellStorage) -> list[Phase]:
    kernel, backward = storage.kernel, storage.backward
    original = {a.lhs: a.rhs for a in backward.adjoints}
    phases = []
    for p in reversed(range(kernel.n_phases)):
        assignments = kernel.backward_phases[p]
        comments = [str_assignment(a.lhs, a.rhs) for a in backward.adjoints if kernel.backward_phase[a.lhs] == p]
        if p == 0:
            comments += output_text(storage)
        gemms = tuple(
            Gemm(
                Slice(kernel_name(adjoint_symbol(storage.hR[gate]), "seq"), ("t",)),
                Slice(kernel_name(gate, "RT")),
                Slice(kernel_name(seed_symbol(str(src)), "buf")),
                f"Gradient on the source of gate {gate}'s mid-step projection: d_hR_{gate} R_{gate}^T.",
            )
            for _k, gate, src in storage.late
            if kernel.forward_phase[src] == p
        )
        rows = _RowLoopBuilder(storage, backward=True)
        outputs = _backward_outputs(storage, p)
        direct = _direct_homes(storage, outputs, assignments)
        accumulated = _accumulated_in_place(storage, outputs, assignments)
        aliases: set[sympy.Symbol] = set()
        for a in assignments:
            if a.lhs in accumulated:
                target, label = accumulated[a.lhs]
                rows.compute(f"{label} += {print_text(original.get(a.lhs, a.rhs))}", target, a.rhs, "+=")
                continue
            if a.lhs in storage.backward_scalars:
                if a.lhs in storage.carried:  # pragma: no cover - no cell carries a per-row adjoint between phases
                    raise ValueError(f"the per-row adjoint {a.lhs} would cross a mid-step GEMM")
                target = storage.scalar(a.lhs)
            elif a.lhs in storage.carried:
                target = storage.buf_view(a.lhs, "carry_row", "carry_buf")
            elif a.lhs not in direct and isinstance(a.rhs, sympy.Symbol) and a.rhs in rows.home:
                # Another name for a value of this phase (d_c_prev = tmp2): read where the value already is,
                # instead of a loop that copies it into a scratch row of its own.
                rows.home[a.lhs] = rows.home[a.rhs]
                aliases.add(a.lhs)
                continue
            else:
                target = direct.get(a.lhs) or storage.scratch(a.lhs)
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
        phase_note = f", phase {p + 1} of {kernel.n_phases}" if kernel.n_phases > 1 else ""
        header = (f"Elementwise step{phase_note}, derived by SymPy:", *(f"  {c}" for c in comments))
        note = "past its length: the gradient passes through, the step's adjoints stay zero"
        phases.append(Phase(gemms, RowLoop(header, tuple(rows.body), skip_note=note)))
    return phases


def _direct_homes(
    storage: CellStorage, outputs: dict[Row, tuple[str, sympy.Expr, str]], assignments: AssignmentList
) -> dict[sympy.Symbol, Row]:
    """Adjoints computed straight into an output row (the first output that is exactly that adjoint)."""
    targets = set(assignments.targets)
    direct: dict[sympy.Symbol, Row] = {}
    # Not the state gradients carried to step t-1: the seeds of this step are still read from those rows.
    carries = {storage.buf_view(s, "grad_row", "grad_buf") for s in storage.spec.state}
    for target, (op, expr, _) in outputs.items():
        if (
            op == "="
            and expr in targets
            and expr not in direct
            and expr not in storage.carried
            and expr not in storage.backward_scalars
            and target not in carries
        ):
            direct[expr] = target
    return direct


def _accumulated_in_place(
    storage: CellStorage, outputs: dict[Row, tuple[str, sympy.Expr, str]], assignments: AssignmentList
) -> dict[sympy.Symbol, tuple[Row, str]]:
    """Adjoints of unit parameters read by nothing else: added straight into the parameter's gradient."""
    read = {s for a in assignments for s in a.rhs.free_symbols}
    return {
        expr: (target, label)
        for target, (op, expr, label) in outputs.items()
        if op == "+="
        and expr in assignments.targets
        and expr not in read
        and expr not in storage.carried
        and expr not in storage.backward_scalars
        and sum(e == expr for _, e, _ in outputs.values()) == 1
    }


def _backward_outputs(storage: CellStorage, p: int) -> dict[Row, tuple[str, sympy.Expr, str]]:
    """Rows written by backward phase ``p`` -> (operator, the adjoint written there, its label)."""
    kernel, backward, forward, spec = storage.kernel, storage.backward, storage.forward, storage.spec

    def here(expr: sympy.Expr) -> bool:
        # An output adjoint is written in the phase that computes it (phase 0 for seeds and zeros).
        return kernel.backward_phase.get(expr, 0) == p

    outputs: dict[Row, tuple[str, sympy.Expr, str]] = {}
    for k, (_gate, xw) in enumerate(forward.xW):
        if here(backward.output(xw)):
            row = storage.view(adjoint_symbol(xw), "row", "d_gate_seq", "t", "nb", Block(k))
            outputs[row] = ("=", backward.output(xw), f"d_{xw}")
    if kernel.separate_recurrent_adjoint:
        for sym, e in storage.early_column.items():
            if here(backward.output(sym)):
                row = storage.view(adjoint_symbol(sym), "row", "d_rec_seq", "t", "nb", Block(e))
                outputs[row] = ("=", backward.output(sym), f"d_{sym}")
    for sym in storage.late_projection:
        if here(backward.output(sym)):
            row = storage.seq_view(adjoint_symbol(sym), adjoint_symbol(sym), "t")
            outputs[row] = ("=", backward.output(sym), f"d_{sym}")
    for sym, pos in storage.feedback_column.items():
        if here(backward.output(sym)):
            row = storage.view(adjoint_symbol(sym), "row", "d_fbq_seq", "t", "nb", Block(pos))
            outputs[row] = ("=", backward.output(sym), f"d_{sym}")
    for _name, sym in forward.input_row:
        if backward.output(sym) != 0 and here(backward.output(sym)):
            row = storage.seq_view(adjoint_symbol(sym), adjoint_symbol(sym), "t")
            outputs[row] = ("=", backward.output(sym), f"d_{sym}")
    for name, sym in forward.unit_params:
        if here(backward.output(sym)):
            outputs[storage.unit_gradient(sym)] = ("+=", backward.output(sym), f"gradient of {name}")
    for name, gate, sym in forward.gate_params:
        if backward.output(sym) != 0 and here(backward.output(sym)):
            outputs[storage.gate_param_row(sym, True)] = ("+=", backward.output(sym), f"gradient of {name}_{gate}")
    if p == 0:  # the carries for step t-1 are written last: the seeds of step t are read from them first
        for s, prev in forward.prev:
            adjoint = backward.output(prev)
            if s == spec.output_state and storage.projection:
                continue  # read only through R (the spec guarantees it): the GEMM's result, or zero when truncated
            if s != spec.output_state or not storage.recurrent:
                outputs[storage.buf_view(s, "grad_row", "grad_buf")] = ("=", adjoint, f"d_{prev}")
            elif storage.elementwise_and_gemm_h:
                outputs[storage.buf_view(adjoint_symbol(prev))] = ("=", adjoint, f"d_{prev}")
    return outputs


def output_text(storage: CellStorage) -> list[str]:
    """The step's output adjoints that are aliases; adjoints sharing one expression print on one line."""
    backward, spec = storage.backward, storage.spec
    defined = set(backward.adjoints.targets)
    groups: dict[sympy.Expr, list[str]] = {}
    text = []
    blocks = ", ".join(spec.gates[k].name for k in storage.early_gates)
    gemm = f"d_hR R^T  (one GEMM per step over the blocks {blocks} of R, after the loop)"
    for sym, expr in backward.outputs:
        if sym == storage.h_prev and storage.recurrent:
            if adjoint_symbol(sym) in defined:  # its elementwise part is printed above
                text.append(f"d_{sym} += {gemm}")
            else:
                text.append(f"d_{sym} = {'' if expr == 0 else f'{print_text(expr)} + '}{gemm}")
            continue
        if adjoint_symbol(sym) in defined:
            continue
        groups.setdefault(expr, []).append(str(adjoint_symbol(sym)))
    return text + [" = ".join([*names, print_text(expr)]) for expr, names in groups.items()]


def _projection_seed(storage: CellStorage, d_output_seq: Buffer) -> list:
    """The first statements of a backward step of a projected output: the gradient on h (P units) for every row,
    kept for dW_p, then its GEMM with W_p^T, the seed of the cell's H units."""
    spec = storage.spec
    h = spec.output_state
    seed = seed_symbol(h)
    dy = View("dy_row", Slice("dy", ("t", "nb")))
    carried = storage.buf_view(h, "grad_row", "grad_buf")
    kept = storage.view(seed, "proj_row", d_output_seq.name, "t", "nb")
    loops = [
        UnitLoop(
            f"{seed} = dy_t + (error carried from step t+1), P units",
            (Store(kept, sympy.Add(dy.element(), carried.element(), evaluate=False), (dy, carried)),),
            unit=PROJ,
        )
    ]
    if not storage.recurrent:  # no error flows back through h_{t-1}: nothing is carried to step t-1
        loops.append(UnitLoop(f"d_{storage.h_prev} = 0", (Store(carried, sympy.Integer(0), ()),), unit=PROJ))
    note = "past its length: the gradient passes through"
    return [
        RowLoop((f"The gradient on the projected output {h} (P units) of the step.",), tuple(loops), skip_note=note),
        Gemm(
            Slice(d_output_seq.name, ("t",)),
            Transposed(Slice(PROJECTION_MATRIX)),
            Slice(kernel_name(seed, "buf")),
            f"Its gradient on the cell's H units, {seed} W_p^T: one GEMM (B, P) x (P, H) per step.",
        ),
    ]


def _matrix_blocks(storage: CellStorage, transposed: bool) -> tuple[list[Buffer], list[Assign]]:
    """R_early (the blocks of R applied to h_{t-1}) and each mid-step block of R, for a cell with late blocks."""
    if not storage.late:
        return [], []
    allocated = [Buffer("R_early", ("hidden", width(len(storage.early_gates))), "the blocks of R applied to h_{t-1}")]
    setup = [
        Assign(Slice("R_early", (":", Block(e))), Slice("R", (":", Block(r))))
        for e, r in enumerate(storage.early_R_blocks)
    ]
    for _k, gate, _src in storage.late:
        block: Slice | Transposed = Slice("R", (":", Block(storage.rec_block[gate])))
        block = Transposed(block) if transposed else block
        setup.append(Assign(kernel_name(gate, "RT" if transposed else "R"), Contiguous(block)))
    return allocated, setup


def lower(kernel: KernelExpressions | CellStorage) -> ModulePlan:
    """Both kernels of one cell and gradient mode, and what the module's wrappers allocate for them.

    ``kernel``: the expression lists, or their :class:`CellStorage` when the caller has it already.
    """
    storage = kernel if isinstance(kernel, CellStorage) else CellStorage(kernel)
    kernel = storage.kernel
    spec, forward = storage.spec, storage.forward
    G, F = storage.n_gates, storage.n_feedback
    n_early = len(storage.early_gates)
    heads = spec.heads is not None
    head_rows = width(n_early, "head_size")
    recurrent = storage.recurrent
    R_blocks = len(forward.hR)
    if F and not storage.early_gates:
        raise ValueError(f"spec {spec.name}: gate feedback needs a gate with a recurrent product hR_k at step start")

    projection = storage.projection
    state_seqs = tuple(
        Buffer(
            kernel_name(s, "seq"), ("steps + 1", "batch", storage.units(s)), f"state {s} at steps 0..T", "initial", k
        )
        for k, s in enumerate(spec.state)
    )
    output_seq = state_seqs[spec.state.index(spec.output_state)]
    gate_seq = Buffer("gate_seq", ("steps", "batch", width(G)), "per gate block: x W + b, then the gate's value")
    fb_seq = Buffer("fb_seq", ("steps + 1", "batch", width(F)), "the fed-back gates of steps 0..T", "zeros")
    saved = tuple(
        Buffer(
            kernel_name(s, "seq"),
            ("steps", "batch") if s in storage.scalars else SEQ,
            f"{s} at every step{' (one per batch row)' if s in storage.scalars else ''}, for backward",
            "zeros_if_padded",
        )
        for s in storage.saved
    )
    cell_output = storage.cell_output()
    tape_extra = ((fb_seq,) if F else ()) + saved + ((cell_output,) if projection else ())
    matrices = tuple(
        Buffer(name, (), f"parameter {name}", "param", param=name)
        for name in (
            "W",
            *(["R"] if R_blocks else []),
            "b",
            *([PROJECTION_MATRIX] if projection else []),
            *(["Q"] if F else []),
        )
    )
    # The kernels' sizes: H from gate_seq when the output is projected (its buffer then has P units).
    hidden = f"gate_seq.shape[2] // {G}" if projection else f"{output_seq.name}.shape[2]"
    proj = f"{output_seq.name}.shape[2]" if projection else ""
    gate_params = tuple(dict.fromkeys(p for p, _, _ in forward.gate_params))
    vectors = tuple(storage.gate_vector(p) for p in gate_params if p != "b")
    vectors += tuple(storage.unit_vector(sym) for _, sym in forward.unit_params)
    x = Buffer("x", ("steps", "batch", "n_in"), "the input", "input")
    lengths = Buffer("lengths", ("batch",), "the length of each sequence", "input")
    step_inputs = tuple(
        Buffer(kernel_name(sym, "seq"), SEQ, f"the per-step input {name}", "step_input", param=name)
        for name, sym in forward.step_inputs
    )

    # ------------------------------------------------------------------ forward kernel
    rec_buf = Buffer("rec_buf", ("batch", width(len(storage.early_gates))), "h_{t-1} R of the step")
    fbq_buf = Buffer("fbq_buf", ("batch", width(F)), "the fed-back gates times Q")
    allocated, setup = _matrix_blocks(storage, transposed=False)
    invariant_rows, invariant_loops = _invariant_loops(storage)
    allocated += invariant_rows
    allocated += [
        Buffer(kernel_name(storage.hR[gate], "buf"), ROW, f"hR_{gate} of the step") for _, gate, _ in storage.late
    ]
    allocated += ([rec_buf] if n_early else []) + ([fbq_buf] if F else [])
    step: list = []
    if n_early and heads:
        allocated += [
            Buffer("head_in", ("heads", "batch", "head_size"), "each head's units of h_{t-1}"),
            Buffer("head_out", ("heads", "batch", head_rows), "each head's h_{t-1} R[k]"),
        ]
        step.append(
            HeadProjection(
                Slice(output_seq.name, ("t",)),
                "rec_buf",
                n_early,
                f"Recurrent projection, block-diagonal: one GEMM (B, d) x (d, {n_early}d) per head and step "
                "(d = H/heads).",
            )
        )
    elif n_early:
        step.append(
            Gemm(
                Slice(output_seq.name, ("t",)),
                Slice(storage.rec_matrix),
                Slice("rec_buf"),
                f"Recurrent projection: one GEMM (B, H) x (H, {width(n_early, 'H').replace(' * ', '')}) per step.",
            )
        )
    if F:
        step.append(
            Gemm(
                Slice("fb_seq", ("t",)),
                Slice("Q"),
                Slice("fbq_buf"),
                f"Gate feedback from step t-1: one GEMM (B, {F}H) x ({F}H, {F}H) per step.",
            )
        )
    step += _forward_phases(storage)
    if projection:
        step.append(
            Gemm(
                Slice(cell_output.name, ("t",)),
                Slice(PROJECTION_MATRIX),
                Slice(output_seq.name, ("t + 1",)),
                f"Output projection: {spec.output_state} = ({spec.output_state} of the equations) W_p, one GEMM"
                " (B, H) x (H, P) per step (rows past a length are restored below).",
            )
        )
    hold = [Assign(Slice(s.name, ("t + 1", "nb")), Slice(s.name, ("t", "nb"))) for s in state_seqs]
    hold += [Assign(Slice("fb_seq", ("t + 1", "nb")), Slice("fb_seq", ("t", "nb")))] if F else []
    kept = " and its fed-back gates" if F else ""
    step.append(
        RowLoop((f"A sequence past its length keeps its state{kept} (ONNX semantics).",), tuple(hold), past=True)
    )
    forward_kernel = Kernel(
        "_forward_kernel",
        (x, lengths, *step_inputs, *matrices, *vectors, *state_seqs, gate_seq, *tape_extra),
        (*invariant_loops, InputProjection("gate_seq", G, spec.input_bias), *setup),
        TimeLoop(False, tuple(step)),
        allocated=tuple(allocated),
        hidden=hidden,
        proj=proj,
        heads=heads and bool(n_early),
    )

    # ------------------------------------------------------------------ backward kernel
    state_grads = tuple(
        Buffer(kernel_name(s, "grad_buf"), ("batch", storage.units(s)), f"gradient on state {s}", "final", k)
        for k, s in enumerate(spec.state)
    )
    grad_fb = (
        (Buffer("grad_fb_buf", ("batch", width(F)), "gradient on the fed-back gates", "zeros"),)
        if F and recurrent
        else ()
    )
    d_gate_seq = Buffer("d_gate_seq", gate_seq.shape, "per gate block: the adjoint of x W + b", "zeros_if_padded")
    adjoint_seqs = [d_gate_seq]
    if kernel.separate_recurrent_adjoint:
        adjoint_seqs.append(
            Buffer(
                "d_rec_seq",
                ("steps", "batch", width(len(storage.early_gates))),
                "the adjoints of h_{t-1} R",
                "zeros_if_padded",
            )
        )
    d_hR_seqs = {
        gate: Buffer(
            kernel_name(adjoint_symbol(storage.hR[gate]), "seq"), SEQ, f"the adjoint of hR_{gate}", "zeros_if_padded"
        )
        for _, gate, _ in storage.late
    }
    adjoint_seqs += d_hR_seqs.values()
    if F:
        adjoint_seqs.append(
            Buffer(
                "d_fbq_seq", ("steps", "batch", width(F)), "the adjoints of the feedback products", "zeros_if_padded"
            )
        )
    d_x_rows = [
        Buffer(kernel_name(adjoint_symbol(sym), "seq"), SEQ, "the elementwise adjoint of x_t", "zeros_if_padded")
        for _, sym in forward.input_row
        if storage.backward.output(sym) != 0
    ]
    adjoint_seqs += d_x_rows
    output_seed = seed_symbol(spec.output_state)
    d_output_seq = Buffer(
        kernel_name(output_seed, "seq"),
        ("steps", "batch", PROJ),
        f"the gradient on {spec.output_state} at every step (P units), for dW_p",
        "zeros_if_padded",
    )
    adjoint_seqs += [d_output_seq] if projection else []
    unit_grads = tuple((p, storage.gate_gradient(p)) for p in gate_params)
    unit_grads += tuple((name, storage.unit_gradient(sym)) for name, sym in forward.unit_params)
    dy = Buffer("dy", ("steps", "batch", storage.units(spec.output_state)), "the gradient on every output", "input")

    allocated, setup = _matrix_blocks(storage, transposed=True)
    allocated += invariant_rows
    allocated += [
        Buffer(kernel_name(seed_symbol(str(src)), "buf"), ROW, f"gradient on src_{gate}")
        for _, gate, src in storage.late
    ]
    if projection:
        allocated.append(Buffer(kernel_name(output_seed, "buf"), ROW, f"the gradient on {spec.output_state} W_p^T"))
    if recurrent:
        allocated.append(
            Buffer("gemm_h_buf", (storage.units(spec.output_state), "batch"), "d_hR R^T of the step, feature-major")
        )
        if heads:
            allocated.append(Buffer("head_grad", ("heads", "batch", head_rows), "each head's columns of d_hR"))
        if F:
            allocated.append(Buffer("gemm_fb_buf", (width(F), "batch"), "d_gQ Q^T of the step, feature-major"))
    if storage.elementwise_and_gemm_h:
        allocated.append(
            Buffer(kernel_name(adjoint_symbol(storage.h_prev), "buf"), ROW, "the elementwise part of d_h_prev")
        )
    allocated += [Buffer(kernel_name(s, "carry_buf"), ROW, f"{s}, carried between phases") for s in kernel.carried]
    step = _projection_seed(storage, d_output_seq) if projection else []
    step += _backward_phases(storage)
    elementwise = "(its elementwise part) + " if storage.elementwise_and_gemm_h else ""
    if recurrent:
        if heads:
            step.append(
                HeadProjectionT(
                    Slice(storage.d_rec_seq, ("t",)),
                    "gemm_h_buf",
                    n_early,
                    f"d_h_prev = {elementwise}d_hR R^T, block-diagonal: one GEMM per head and step, computed "
                    f"transposed: (d, {n_early}d) x ({n_early}d, B).",
                )
            )
        else:
            step.append(
                Gemm(
                    Slice(storage.rec_matrix),
                    Transposed(Slice(storage.d_rec_seq, ("t",))),
                    Slice("gemm_h_buf"),
                    f"d_h_prev = {elementwise}d_hR R^T: one GEMM per step, computed transposed: "
                    f"(H, {n_early}H) x ({n_early}H, B).",
                )
            )
        if F:
            step.append(
                Gemm(
                    Slice("Q"),
                    Transposed(Slice("d_fbq_seq", ("t",))),
                    Slice("gemm_fb_buf"),
                    "Gradient on the fed-back gates of step t-1: one GEMM per step, computed transposed like the one"
                    " above.",
                )
            )
        merge = []
        out_grad = storage.buf_view(spec.output_state, "grad_row", "grad_buf")
        gemm_h = Buffer("gemm_h_buf", (storage.units(spec.output_state), "batch"), "")
        value: sympy.Expr = gemm_h.element(BATCH_ROW)
        reads: tuple[Row, ...] = (gemm_h,)
        if storage.elementwise_and_gemm_h:
            d_h_prev = storage.buf_view(adjoint_symbol(storage.h_prev))
            value, reads = sympy.Add(value, d_h_prev.element(), evaluate=False), (gemm_h, d_h_prev)
        merge.append(
            UnitLoop(
                f"d_{storage.h_prev}: into the gradient carried to step t-1",
                (Store(out_grad, value, reads),),
                unit=storage.units(spec.output_state),
            )
        )
        if F:
            gemm_fb = Buffer("gemm_fb_buf", (width(F), "batch"), "")
            grad_fb_row = View("grad_fb_row", Slice("grad_fb_buf", ("nb",)))
            merge.append(
                UnitLoop(
                    "the fed-back gates' gradient, carried to step t-1",
                    (Store(grad_fb_row, gemm_fb.element(BATCH_ROW), (gemm_fb,)),),
                    F,
                )
            )
        step.append(
            RowLoop(
                ("The recurrent GEMMs' results, read transposed, into the gradients carried to step t-1.",),
                tuple(merge),
            )
        )
    flat_d_gates = Slice("d_gates_2d")
    after: list = [
        Assign(
            "d_gates_2d",
            Flat(Slice("d_gate_seq"), width(G)),
            "Weight gradients over all steps at once: single large GEMMs.",
        ),
        Assign(
            "dx",
            Plus(Dot(flat_d_gates, Transposed(Slice("W")), ("steps", "batch", "n_in")), Slice(d_x_rows[0].name))
            if d_x_rows
            else Dot(flat_d_gates, Transposed(Slice("W")), ("steps", "batch", "n_in")),
        ),
        Assign("dW", Dot(Transposed(Flat(Slice("x"), "n_in")), flat_d_gates)),
    ]
    if spec.input_bias:
        after.append(
            Assign(
                "db",
                Dot(Ones("steps * batch"), flat_d_gates),
                "db sums d_xW over steps and batch rows, as a GEMV: 4-7x faster here than numba's column sum, and"
                " BLAS's\nblocked summation is more accurate than its sequential one.",
            )
        )
    if n_early:
        h_units = storage.units(spec.output_state)
        after.append(Assign("h_prev_2d", Flat(Contiguous(Slice(output_seq.name, (":steps",))), h_units)))
    if storage.late:
        allocated.append(Buffer("dR", ("hidden", width(R_blocks)), "the gradient of R"))
        if n_early:
            after.append(
                Assign("dR_early", Dot(Transposed(Slice("h_prev_2d")), Flat(Slice("d_rec_seq"), width(n_early))))
            )
        after += [
            Assign(Slice("dR", (":", Block(r))), Slice("dR_early", (":", Block(e))))
            for e, r in enumerate(storage.early_R_blocks)
        ]
        for _k, gate, src in storage.late:
            after.append(
                Assign(
                    Slice("dR", (":", Block(storage.rec_block[gate]))),
                    Dot(
                        Transposed(Flat(Slice(kernel_name(src, "seq")), "hidden")),
                        Flat(Slice(d_hR_seqs[gate].name), "hidden"),
                    ),
                )
            )
    elif R_blocks and heads:
        right = "d_gates_2d"
        if storage.d_rec_seq != "d_gate_seq":
            right = "d_rec_2d"
            after.append(Assign(right, Flat(Slice(storage.d_rec_seq), width(R_blocks))))
        after.append(HeadWeightGradient("h_prev_2d", right, R_blocks, "dR[k] = sum_t h_{t-1}[head k]^T d_hR[head k]"))
    elif R_blocks:
        d_rec = Flat(Slice(storage.d_rec_seq), width(R_blocks))
        after.append(Assign("dR", Dot(Transposed(Slice("h_prev_2d")), d_rec)))
    if projection:
        after.append(
            Assign(
                "dW_p",
                Dot(Transposed(Flat(Slice(cell_output.name), "hidden")), Flat(Slice(d_output_seq.name), PROJ)),
                f"dW_p = sum_t ({spec.output_state} of the equations)_t^T dnext_{spec.output_state}_t",
            )
        )
    if F:
        after.append(Assign("fb_prev_2d", Flat(Contiguous(Slice("fb_seq", (":steps",))), width(F))))
        after.append(Assign("dQ", Dot(Transposed(Slice("fb_prev_2d")), Flat(Slice("d_fbq_seq"), width(F)))))
    backward_kernel = Kernel(
        "_backward_kernel",
        (
            dy,
            x,
            lengths,
            *step_inputs,
            *(m for m in matrices if m.name != "b" or not spec.input_bias),
            *vectors,
            *state_seqs,
            gate_seq,
            *tape_extra,
            *state_grads,
            *grad_fb,
            *adjoint_seqs,
            *(g for _, g in unit_grads),
        ),
        (*invariant_loops, *setup),
        TimeLoop(True, tuple(step)),
        hidden=hidden,
        proj=proj,
        heads=heads and bool(n_early),
        after=tuple(after),
        returns=(
            "dx",
            "dW",
            *(["dR"] if R_blocks else []),
            *(["db"] if spec.input_bias else []),
            *(["dW_p"] if projection else []),
            *(["dQ"] if F else []),
        ),
        allocated=tuple(allocated),
    )
    return ModulePlan(
        forward=forward_kernel,
        backward=backward_kernel,
        forward_buffers=(*state_seqs, gate_seq, *tape_extra),
        tape_extra=tape_extra,
        tape_extra_shapes=((1, F),) * bool(F)
        + tuple((0, 0 if s in storage.scalars else 1) for s in storage.saved)
        + ((0, 1),) * projection,
        backward_buffers=(*state_grads, *grad_fb, *adjoint_seqs, *(g for _, g in unit_grads)),
        state_seqs=state_seqs,
        state_grads=state_grads,
        unit_grads=unit_grads,
        output_seq=output_seq,
    )
