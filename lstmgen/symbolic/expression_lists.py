"""Stage 4 — derived equations → the expression lists a kernel computes, with common subexpressions shared.

The unit passed to the emission stage: for the forward loop and the backward loop, an ordered
:class:`~lstmgen.symbolic.assignment.AssignmentList` after ``sympy.cse`` (canonical order and a counter for the
temporaries' names, so the same spec always gives the same lists), plus what each loop reads and writes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import sympy

from lstmgen.functions import UNITS
from lstmgen.symbolic.assignment import Assignment, AssignmentList, Role, per_row_values
from lstmgen.symbolic.derive_backward import BackwardEquations, adjoint_symbol
from lstmgen.symbolic.forward_equations import ForwardEquations, unit_symbol


@dataclass(frozen=True)
class KernelExpressions:
    """Everything the elementwise loops compute, per unit, split into phases.

    A step has one phase per mid-step GEMM plus one: phase p + 1 starts once the blocks of R whose sources
    phase p computed have been multiplied. Most cells have a single phase. Backward runs the phases in
    reverse, each after the GEMM that brings the gradient on its sources.

    Attributes:
        backward: the derived equations these lists were built from.
        forward_phases: per phase, the forward assignments (CSE'd within the phase).
        backward_phases: per phase (indexed like the forward ones, executed last to first), the adjoints.
        forward_phase: the phase of every forward value and input (when it becomes available).
        backward_phase: the phase in which each adjoint is computed.
        saved: forward values stored in their own (T, B, H) buffers: what backward reads that is neither a
            gate nor a state, what a later phase reads, and the mid-step sources (dR needs them).
        carried: adjoints computed in one backward phase and read in a later-executed one: each gets a
            (B, H) buffer for the step.
        separate_recurrent_adjoint: true when some δhR_k differs from δxW_k (e.g. a reset gate applied after
            the recurrent product), so the kernel keeps a buffer of recurrent adjoints.
        invariants: forward values of the unit parameters alone (the RG-LRU's softplus(lam)), the same at every
            step: each kernel computes them once, before its time loop, into a (H,) row; no phase holds them.
        forward_scalars, backward_scalars: the per-row values of each loop (reductions over the units, what is
            computed from them alone, and the CSE temporaries of such values): one number per batch row, held in
            a local. Two sets: the loops number their temporaries independently.
    """

    backward: BackwardEquations
    forward_phases: tuple[AssignmentList, ...]
    backward_phases: tuple[AssignmentList, ...]
    forward_phase: dict[sympy.Symbol, int]
    backward_phase: dict[sympy.Symbol, int]
    saved: tuple[sympy.Symbol, ...]
    carried: tuple[sympy.Symbol, ...]
    separate_recurrent_adjoint: bool
    invariants: AssignmentList
    forward_scalars: frozenset[sympy.Symbol] = frozenset()
    backward_scalars: frozenset[sympy.Symbol] = frozenset()

    @property
    def forward(self) -> ForwardEquations:
        return self.backward.forward

    @property
    def n_phases(self) -> int:
        return len(self.forward_phases)


def temporaries() -> Iterator[sympy.Symbol]:
    """The names of CSE temporaries: tmp0, tmp1, ..."""
    return sympy.numbered_symbols("tmp", cls=sympy.Symbol, real=True)


def eliminate_common_subexpressions(
    assignments: AssignmentList, names: Iterator[sympy.Symbol] | None = None
) -> AssignmentList:
    """Run ``sympy.cse`` over the right-hand sides, keeping the targets and their order.

    ``names`` gives the temporaries' symbols (:func:`temporaries` when None); lists that share one iterator
    never reuse a name.
    """
    if not len(assignments):
        return assignments
    replacements, reduced = sympy.cse(
        [a.rhs for a in assignments], symbols=names or temporaries(), order="canonical", optimizations=None
    )
    # A temporary goes right before the first assignment that needs it, so the code reads top-down.
    pending = [Assignment(sym, expr, Role.TEMPORARY) for sym, expr in replacements]
    out: list[Assignment] = []
    defined: set[sympy.Symbol] = set()
    for a, rhs in zip(assignments, reduced, strict=True):
        needed = _closure(rhs.free_symbols, pending)
        for t in pending:
            if t.lhs in needed and t.lhs not in defined:
                out.append(t)
                defined.add(t.lhs)
        out.append(Assignment(a.lhs, rhs, a.role))
    return AssignmentList.of(out)


def _closure(symbols: set[sympy.Symbol], pending: list[Assignment]) -> set[sympy.Symbol]:
    by_lhs = {t.lhs: t for t in pending}
    needed, stack = set(), [s for s in symbols if s in by_lhs]
    while stack:
        s = stack.pop()
        if s not in needed:
            needed.add(s)
            stack.extend(x for x in by_lhs[s].rhs.free_symbols if x in by_lhs)
    return needed


def build_kernel_expressions(backward: BackwardEquations) -> KernelExpressions:
    """Split both loop bodies into phases and run CSE on each."""
    forward = backward.forward
    invariants = _invariants(forward)
    equations = tuple(a for a in forward.equations if a not in invariants)
    phase = _forward_phase(forward, invariants, equations)
    n_phases = 1 + max(phase.values(), default=0)
    backward_phase = _backward_phase(backward, invariants, equations, phase)

    def split(assignments: AssignmentList, phase_of: dict[sympy.Symbol, int]) -> tuple[AssignmentList, ...]:
        """One CSE'd list per phase; temporaries numbered across the phases, so each name means one value."""
        names = temporaries()
        return tuple(
            eliminate_common_subexpressions(AssignmentList.of(a for a in assignments if phase_of[a.lhs] == p), names)
            for p in range(n_phases)
        )

    forward_phases = split(AssignmentList.of(equations), phase)
    backward_phases = split(backward.adjoints, backward_phase)
    return KernelExpressions(
        backward=backward,
        forward_phases=forward_phases,
        backward_phases=backward_phases,
        forward_phase=phase,
        backward_phase=backward_phase,
        saved=_saved(backward, invariants, equations, phase),
        carried=tuple(
            a.lhs
            for a in backward.adjoints
            if any(
                a.lhs in b.rhs.free_symbols and backward_phase[b.lhs] < backward_phase[a.lhs] for b in backward.adjoints
            )
        ),
        separate_recurrent_adjoint=_separate_recurrent_adjoint(backward),
        invariants=AssignmentList.of(invariants),
        forward_scalars=per_row_values(_chain(forward_phases), forward.scalars),
        backward_scalars=per_row_values(_chain(backward_phases), backward.scalars, also=forward.scalars),
    )


def _invariants(forward: ForwardEquations) -> list[Assignment]:
    """Values of the unit parameters alone: they do not change from step to step, so are computed once."""
    constant = {s for _, s in forward.unit_params}
    invariants = []
    for a in forward.equations:
        values = a.rhs.free_symbols - {UNITS}
        if a.role in (Role.INTERMEDIATE, Role.HOISTED) and values and values <= constant:
            invariants.append(a)
            constant.add(a.lhs)
    return invariants


def _forward_phase(
    forward: ForwardEquations, invariants: list[Assignment], equations: tuple[Assignment, ...]
) -> dict[sympy.Symbol, int]:
    """The phase of each forward value: inputs are there at the start (0), a mid-step projection once its
    source's phase ended."""
    phase: dict[sympy.Symbol, int] = {s: 0 for s in (*forward.inputs(), *(a.lhs for a in invariants), UNITS)}
    late = forward.late_projections
    for a in equations:
        phase[a.lhs] = max((phase[s] for s in a.rhs.free_symbols), default=0)
        for projection, source in late.items():
            if source == a.lhs:
                phase[projection] = phase[a.lhs] + 1
    return phase


def _backward_phase(
    backward: BackwardEquations,
    invariants: list[Assignment],
    equations: tuple[Assignment, ...],
    phase: dict[sympy.Symbol, int],
) -> dict[sympy.Symbol, int]:
    """The phase of each adjoint: its value's phase; an input's once every reader is done."""
    forward = backward.forward
    value_of = {adjoint_symbol(a.lhs): a.lhs for a in (*equations, *invariants)}
    first_reader = {
        s: min((phase[a.lhs] for a in equations if s in a.rhs.free_symbols), default=0) for s in forward.inputs()
    }
    value_of.update({adjoint_symbol(s): s for s in forward.inputs()})
    backward_phase = {}
    for a in backward.adjoints:
        if a.lhs in value_of:
            value = value_of[a.lhs]
            backward_phase[a.lhs] = first_reader[value] if value in first_reader else phase[value]
    # A sum over the units that the derivation named (sum_d_mu) runs in the phase of the adjoint reading it.
    for a in reversed(backward.adjoints.assignments):
        if a.lhs not in backward_phase:
            readers = [backward_phase[b.lhs] for b in backward.adjoints if a.lhs in b.rhs.free_symbols]
            backward_phase[a.lhs] = max(readers, default=0)
    return backward_phase


def _saved(
    backward: BackwardEquations,
    invariants: list[Assignment],
    equations: tuple[Assignment, ...],
    phase: dict[sympy.Symbol, int],
) -> tuple[sympy.Symbol, ...]:
    """The forward values kept in buffers of their own: what backward reads that is neither a gate nor a state
    nor a parameter, what a later phase reads, and the mid-step sources (dR needs them)."""
    forward = backward.forward
    groups = (forward.new, forward.prev, forward.unit_params, forward.input_row, forward.step_inputs)
    stored_elsewhere = {unit_symbol(g.name) for g in forward.spec.gates}
    stored_elsewhere |= (
        {s for group in groups for _, s in group} | {a.lhs for a in invariants} | set(forward.parameters)
    )
    # Inputs stay readable all step long (gate_seq, the GEMM outputs); computed values crossing phases do not.
    inputs = set(forward.inputs()) | {a.lhs for a in invariants}
    crossing = {s for a in equations for s in a.rhs.free_symbols - inputs if phase[s] < phase[a.lhs]}
    wanted = set(backward.saved_values()) | crossing | {src for _, src in forward.sources}
    candidates = (*forward.inputs(), *(a.lhs for a in equations))
    return tuple(s for s in candidates if s in wanted and s not in stored_elsewhere)


def _separate_recurrent_adjoint(backward: BackwardEquations) -> bool:
    """Whether the kernel needs a buffer of recurrent adjoints: d_gate_seq serves as them only when R has every
    gate's block and each δhR_k = δxW_k (not with a reset gate applied after the recurrent product)."""
    forward = backward.forward
    xW = dict(forward.xW)
    return bool(forward.hR) and (
        len(forward.hR) != len(forward.xW)
        or any(backward.output(xW[gate]) != backward.output(hr) for gate, hr in forward.hR)
        or bool(forward.sources)
    )


def _chain(lists: tuple[AssignmentList, ...]) -> tuple[Assignment, ...]:
    return tuple(a for assignments in lists for a in assignments)
