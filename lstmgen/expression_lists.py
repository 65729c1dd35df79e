"""Stage 4 — derived equations → the expression lists a kernel computes, with common subexpressions shared.

The unit passed to the emission stage: for the forward loop and the backward loop, an ordered
:class:`~lstmgen.assignment.AssignmentList` after ``sympy.cse`` (canonical order and a counter for the
temporaries' names, so the same spec always gives the same lists), plus what each loop reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from lstmgen.assignment import Assignment, AssignmentList
from lstmgen.derive_backward import BackwardEquations
from lstmgen.forward_equations import unit_symbol


@dataclass(frozen=True)
class KernelExpressions:
    """Everything the fused loops compute, per unit.

    Attributes:
        backward: the derived equations these lists were built from.
        forward_loop: forward assignments (CSE'd); every forward value is a target.
        backward_loop: adjoint assignments (CSE'd); the step's output adjoints are targets or inputs.
        saved: forward values that backward reads and that are neither gates nor states: the forward loop
            stores them in their own (T, B, H) buffers.
        separate_recurrent_adjoint: true when some δhR_k differs from δxW_k (e.g. a reset gate applied after
            the recurrent product), so the kernel keeps a second buffer of recurrent adjoints.
    """

    backward: BackwardEquations
    forward_loop: AssignmentList
    backward_loop: AssignmentList
    saved: tuple[sympy.Symbol, ...]
    separate_recurrent_adjoint: bool

    @property
    def forward(self):
        return self.backward.forward


def eliminate_common_subexpressions(assignments: AssignmentList, prefix: str = "tmp") -> AssignmentList:
    """Run ``sympy.cse`` over the right-hand sides, keeping the targets and their order."""
    if not len(assignments):
        return assignments
    temporaries = sympy.numbered_symbols(prefix, cls=sympy.Symbol, real=True)
    replacements, reduced = sympy.cse(
        [a.rhs for a in assignments], symbols=temporaries, order="canonical", optimizations=None
    )
    # A temporary goes right before the first assignment that needs it, so the code reads top-down.
    pending = [Assignment(sym, expr, "temporary") for sym, expr in replacements]
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
    """Build the CSE'd forward and backward loop bodies of one cell."""
    forward = backward.forward
    stored_elsewhere = {unit_symbol(g.name) for g in forward.spec.gates}
    stored_elsewhere |= {s for _, s in forward.new} | {s for _, s in forward.prev}
    saved = tuple(s for s in backward.saved_values() if s not in stored_elsewhere)
    separate = any(
        backward.output(xw) != backward.output(hr) for (_, xw), (_, hr) in zip(forward.xW, forward.hR, strict=True)
    )
    return KernelExpressions(
        backward=backward,
        forward_loop=eliminate_common_subexpressions(forward.equations),
        backward_loop=eliminate_common_subexpressions(backward.adjoints),
        saved=saved,
        separate_recurrent_adjoint=separate,
    )
