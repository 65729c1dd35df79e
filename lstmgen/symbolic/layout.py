"""Stage 5a — expression lists → the symbol table: what every symbol of a cell's two loops is, decided once.

Each symbol the forward or the backward loop reads or writes gets one :class:`SymbolRecord`: its
:class:`Kind` (a gate value, a part of a pre-activation, a previous or new state, a parameter, a per-step
input, a seed, a computed value or adjoint), its column block in the buffer its kind lives in, its units (H,
the P of a projected output, or one per batch row), and whether forward saves it for backward, backward carries
it between phases, or it is the same at every step. The lowering (:mod:`lstmgen.codegen.lower_kernel`) maps
kinds to buffers and reads nothing else about a symbol; the docstring builder reads the structure facts.

The two loops get a table each: their CSE temporaries are numbered independently, and a value's place differs
(backward reads what forward saved). Nothing here names a buffer: that is the code generator's business.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import sympy

from lstmgen.spec import CellSpec
from lstmgen.symbolic.assignment import Role
from lstmgen.symbolic.derive_backward import BackwardEquations
from lstmgen.symbolic.expression_lists import KernelExpressions
from lstmgen.symbolic.forward_equations import ForwardEquations, unit_symbol

#: The units of a symbol: a row of H units, of the P units of a projected output, or one value per batch row.
HIDDEN, PROJECTED, PER_ROW = "hidden", "proj", "row"


class Kind(StrEnum):
    """What a symbol is, which decides where it lives."""

    INPUT_PROJECTION = "input projection"  # xW_k = x_t W_k + b_k: block k of the input GEMM's result
    RECURRENT_PRODUCT = "recurrent product"  # hR_k = h_{t-1} R_k, a step-start block of the recurrent GEMM
    MID_STEP_PRODUCT = "mid-step product"  # hR_k = src_k R_k, multiplied once its source is computed
    FEEDBACK_PRODUCT = "feedback product"  # gQ_k: block k of [the fed-back gates of t-1] Q
    PREVIOUS_STATE = "previous state"  # s_prev
    NEW_STATE = "new state"  # s
    UNIT_PARAMETER = "unit parameter"  # one value per unit: an (H,) vector
    GATE_PARAMETER = "gate parameter"  # block k of a (G·H,) vector
    INPUT_ROW = "input row"  # x_t itself, unit by unit
    STEP_INPUT = "step input"  # a per-step input (a mask): read, never differentiated
    GATE = "gate"  # a gate's value: it overwrites the gate's block of the input GEMM's result
    VALUE = "value"  # any other value of the forward step (intermediates, hoisted calls, temporaries)
    STATE_SEED = "state seed"  # dnext_s: the gradient arriving on a new state from outside the step
    SOURCE_SEED = "source seed"  # dnext_src_k: the gradient on a mid-step source, from its GEMM
    FEEDBACK_SEED = "feedback seed"  # dnext_g: the gradient on a fed-back gate, from step t+1
    ADJOINT = "adjoint"  # any other value of the backward step


#: The kinds that are inputs of the forward step (present when it starts, or after a mid-step GEMM).
INPUT_KINDS = frozenset(
    {
        Kind.INPUT_PROJECTION,
        Kind.RECURRENT_PRODUCT,
        Kind.MID_STEP_PRODUCT,
        Kind.FEEDBACK_PRODUCT,
        Kind.PREVIOUS_STATE,
        Kind.UNIT_PARAMETER,
        Kind.GATE_PARAMETER,
        Kind.INPUT_ROW,
        Kind.STEP_INPUT,
    }
)


@dataclass(frozen=True)
class SymbolRecord:
    """One symbol of one loop.

    Attributes:
        symbol: the symbol.
        kind: what it is.
        owner: the spec name it belongs to: the gate of a product or a gate value, the state of a state or a state
            seed, the parameter of a parameter, the input's name; the symbol's own name otherwise.
        column: its column block: the gate's block (a gate value, an input projection, a gate parameter), its
            block among the step-start products, the mid-step ones or the feedback products. None where the
            kind has no blocks.
        units: HIDDEN, PROJECTED or PER_ROW.
        saved: forward keeps it in a buffer of its own, for backward or for a later phase.
        carried: an adjoint computed in one backward phase and read in a later-executed one.
        invariant: a value of the unit parameters alone, computed once before the time loop.
        fed_back: for a fed-back gate value, its block among the fed-back gates, else None.
    """

    symbol: sympy.Symbol
    kind: Kind
    owner: str
    column: int | None = None
    units: str = HIDDEN
    saved: bool = False
    carried: bool = False
    invariant: bool = False
    fed_back: int | None = None

    @property
    def per_row(self) -> bool:
        return self.units == PER_ROW

    @property
    def is_input(self) -> bool:
        return self.kind in INPUT_KINDS


@dataclass(frozen=True)
class Layout:
    """The symbol tables of both loops of a cell, and the facts of its kernel's structure.

    Attributes:
        kernel: the expression lists the tables describe.
        forward, backward: per loop, every symbol it reads or writes -> its record.
        early_gates: the indices of the gates whose recurrent product is computed at step start.
        late: (gate index, gate, its source's symbol) of each block of R applied mid-step.
        rec_block: gate -> its column block of R (the spec's recurrent-gates order).
        recurrent: whether backward carries the error through h_{t-1} R (a full gradient of a cell that has R).
        elementwise_and_gemm_h: whether d_h_prev also has an elementwise part, added to the GEMM's.
    """

    kernel: KernelExpressions
    forward: Mapping[sympy.Symbol, SymbolRecord]
    backward: Mapping[sympy.Symbol, SymbolRecord]
    early_gates: tuple[int, ...]
    late: tuple[tuple[int, str, sympy.Symbol], ...]
    rec_block: Mapping[str, int]
    recurrent: bool
    elementwise_and_gemm_h: bool

    @property
    def spec(self) -> CellSpec:
        return self.kernel.forward.spec

    @property
    def equations(self) -> ForwardEquations:
        return self.kernel.forward

    @property
    def derived(self) -> BackwardEquations:
        return self.kernel.backward

    @property
    def n_gates(self) -> int:
        return len(self.spec.gates)

    @property
    def n_feedback(self) -> int:
        """F: the fed-back gates (the row blocks of Q)."""
        return len(self.spec.feedback)

    @property
    def n_feedback_targets(self) -> int:
        """The gates fed back into (the column blocks of Q)."""
        return len(self.spec.feedback_targets)

    @property
    def projection(self) -> bool:
        return self.spec.projection

    @property
    def output(self) -> sympy.Symbol:
        """The new output state h."""
        return unit_symbol(self.spec.output_state)

    @property
    def h_prev(self) -> sympy.Symbol:
        return dict(self.equations.prev)[self.spec.output_state]

    @property
    def early_R_blocks(self) -> tuple[int, ...]:
        """The column block of R of each step-start gate, in the step-start products' order."""
        return tuple(self.rec_block[self.spec.gates[k].name] for k in self.early_gates)

    @property
    def hR(self) -> dict[str, sympy.Symbol]:
        """Gate -> the symbol of its recurrent product."""
        return dict(self.equations.hR)

    @property
    def gate_parameters(self) -> tuple[str, ...]:
        """The (G·H,) parameters read block by block (and b when the equations place it), in the spec's order."""
        return tuple(dict.fromkeys(r.owner for r in self.of_kind(Kind.GATE_PARAMETER)))

    def units(self, state: str) -> str:
        """The units of a state: PROJECTED for a projected output, else HIDDEN."""
        return PROJECTED if self.projection and state == self.spec.output_state else HIDDEN

    def of_kind(self, kind: Kind, backward: bool = False) -> tuple[SymbolRecord, ...]:
        """The records of one kind, in the order the table lists them."""
        table = self.backward if backward else self.forward
        return tuple(r for r in table.values() if r.kind == kind)


def build_layout(kernel: KernelExpressions) -> Layout:
    """The symbol tables of both loops of ``kernel``, and its structure."""
    forward, backward, spec = kernel.forward, kernel.backward, kernel.forward.spec
    hR = dict(forward.hR)
    late_gates = {gate for gate, _ in forward.sources}
    early_gates = tuple(k for k, g in enumerate(spec.gates) if g.name in hR and g.name not in late_gates)
    names = [g.name for g in spec.gates]
    late = tuple((names.index(gate), gate, src) for gate, src in forward.sources)
    recurrent = backward.recurrent_gemm and bool(early_gates)
    h_prev = dict(forward.prev)[spec.output_state]
    forward_table = _forward_table(kernel, early_gates)
    return Layout(
        kernel=kernel,
        forward=forward_table,
        backward=_backward_table(kernel, forward_table),
        early_gates=early_gates,
        late=late,
        rec_block={gate: r for r, (gate, _) in enumerate(forward.hR)},
        recurrent=recurrent,
        elementwise_and_gemm_h=recurrent and backward.output(h_prev) != 0,
    )


def _forward_table(kernel: KernelExpressions, early_gates: tuple[int, ...]) -> dict[sympy.Symbol, SymbolRecord]:
    forward, spec = kernel.forward, kernel.forward.spec
    saved, invariant = set(kernel.saved), {a.lhs for a in kernel.invariants}
    per_row = kernel.forward_scalars
    names = [g.name for g in spec.gates]
    hR = dict(forward.hR)
    early = {hR[spec.gates[k].name]: e for e, k in enumerate(early_gates)}
    table: dict[sympy.Symbol, SymbolRecord] = {}

    def add(sym: sympy.Symbol, kind: Kind, owner: str, column: int | None = None, fed_back: int | None = None):
        units = PER_ROW if sym in per_row else HIDDEN
        table[sym] = SymbolRecord(sym, kind, owner, column, units, sym in saved, False, sym in invariant, fed_back)

    for k, (gate, sym) in enumerate(forward.xW):
        add(sym, Kind.INPUT_PROJECTION, gate, k)
    for k in early_gates:
        gate = spec.gates[k].name
        add(hR[gate], Kind.RECURRENT_PRODUCT, gate, early[hR[gate]])
    for m, (gate, _) in enumerate(forward.sources):
        add(hR[gate], Kind.MID_STEP_PRODUCT, gate, m)
    for pos, (gate, sym) in enumerate(forward.gQ):
        add(sym, Kind.FEEDBACK_PRODUCT, gate, pos)
    for name, sym in forward.prev:
        add(sym, Kind.PREVIOUS_STATE, name)
    for name, sym in forward.unit_params:
        add(sym, Kind.UNIT_PARAMETER, name)
    for param, gate, sym in forward.gate_params:
        add(sym, Kind.GATE_PARAMETER, param, names.index(gate))
    for name, sym in forward.input_row:
        add(sym, Kind.INPUT_ROW, name)
    for name, sym in forward.step_inputs:
        add(sym, Kind.STEP_INPUT, name)
    fed_back = {unit_symbol(g): pos for pos, g in enumerate(spec.feedback)}
    for k, gate in enumerate(spec.gates):
        add(unit_symbol(gate.name), Kind.GATE, gate.name, k, fed_back.get(unit_symbol(gate.name)))
    for name, sym in forward.new:
        add(sym, Kind.NEW_STATE, name)
    values = (*kernel.invariants, *(a for phase in kernel.forward_phases for a in phase))
    for a in values:
        if a.lhs not in table:
            add(a.lhs, Kind.VALUE, str(a.lhs))
    return table


def _backward_table(
    kernel: KernelExpressions, forward_table: Mapping[sympy.Symbol, SymbolRecord]
) -> dict[sympy.Symbol, SymbolRecord]:
    """The forward symbols backward can read (not forward's CSE temporaries), the seeds and the adjoints."""
    backward, spec = kernel.backward, kernel.forward.spec
    temporaries = {a.lhs for phase in kernel.forward_phases for a in phase if a.role == Role.TEMPORARY}
    table = {sym: r for sym, r in forward_table.items() if sym not in temporaries}
    fed_back = {g: pos for pos, g in enumerate(spec.feedback)}
    for name, sym in backward.seeds:
        if name in spec.state:
            table[sym] = SymbolRecord(sym, Kind.STATE_SEED, name)
        elif name in fed_back:
            table[sym] = SymbolRecord(sym, Kind.FEEDBACK_SEED, name, fed_back[name])
        else:
            table[sym] = SymbolRecord(sym, Kind.SOURCE_SEED, name)
    per_row, carried = kernel.backward_scalars, set(kernel.carried)
    for a in (a for phase in kernel.backward_phases for a in phase):
        units = PER_ROW if a.lhs in per_row else HIDDEN
        table[a.lhs] = SymbolRecord(a.lhs, Kind.ADJOINT, str(a.lhs), units=units, carried=a.lhs in carried)
    return table
