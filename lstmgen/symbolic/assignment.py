"""The currency passed between stages: ordered assignments ``lhs = rhs`` over SymPy symbols."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum

import sympy

from lstmgen.functions import UNITS, sum_units


class Role(StrEnum):
    """What the left-hand side of an assignment is. A string: ``Role.GATE == "gate"``."""

    PREACTIVATION = "preactivation"  # a_k: the gate's argument
    GATE = "gate"  # k = activation(a_k)
    SOURCE = "source"  # src_k: what a block of R multiplies mid-step
    STATE = "state"  # a new state
    INTERMEDIATE = "intermediate"  # a value the spec names
    HOISTED = "hoisted"  # an activation call given its own name (tanh_c)
    REDUCTION = "reduction"  # a sum over the units: one value per batch row
    INPUT = "input"  # the adjoint of an input of the step (d_xW_i, d_h_prev)
    TEMPORARY = "temporary"  # a common subexpression


#: Roles whose adjoints keep their own name in the printed equations and the kernel: the textbook's δa_k, δc_t,
#: and the step's outputs. Other adjoints read once are folded into their single reader.
NAMED_ROLES = frozenset({Role.PREACTIVATION, Role.STATE, Role.SOURCE, Role.INPUT})
#: Roles whose values are rows of H units even when computed from per-row values alone.
PER_UNIT_ROLES = frozenset({Role.PREACTIVATION, Role.GATE, Role.STATE, Role.SOURCE, Role.INPUT})


@dataclass(frozen=True)
class Assignment:
    """One equation ``lhs = rhs``; ``role`` says what the left-hand side is (used by printers and templates)."""

    lhs: sympy.Symbol
    rhs: sympy.Expr
    role: str = Role.INTERMEDIATE

    def __str__(self) -> str:
        return f"{self.lhs} = {sympy.sstr(self.rhs, order='lex')}"


@dataclass(frozen=True)
class AssignmentList:
    """An ordered, immutable list of assignments: each right-hand side uses only inputs and earlier targets."""

    assignments: tuple[Assignment, ...]

    def __iter__(self) -> Iterator[Assignment]:
        return iter(self.assignments)

    def __len__(self) -> int:
        return len(self.assignments)

    @property
    def targets(self) -> tuple[sympy.Symbol, ...]:
        return tuple(a.lhs for a in self.assignments)

    def rhs_of(self, lhs: sympy.Symbol) -> sympy.Expr:
        for a in self.assignments:
            if a.lhs == lhs:
                return a.rhs
        raise KeyError(lhs)

    def free_inputs(self) -> tuple[sympy.Symbol, ...]:
        """Symbols read but never assigned, sorted by name."""
        targets = set(self.targets)
        used: set[sympy.Symbol] = set()
        for a in self.assignments:
            used |= a.rhs.free_symbols
        return tuple(sorted(used - targets, key=str))

    def expanded(self, lhs: sympy.Symbol) -> sympy.Expr:
        """The right-hand side of ``lhs`` with every earlier target substituted: a function of inputs only."""
        value: dict[sympy.Symbol, sympy.Expr] = {}
        for a in self.assignments:
            value[a.lhs] = a.rhs.xreplace(value)
            if a.lhs == lhs:
                return value[lhs]
        raise KeyError(lhs)

    @classmethod
    def of(cls, assignments: Iterable[Assignment]) -> AssignmentList:
        return cls(tuple(assignments))


def per_row_values(
    assignments: Iterable[Assignment],
    known: Iterable[sympy.Symbol] = (),
    also: Iterable[sympy.Symbol] = (),
) -> frozenset[sympy.Symbol]:
    """The targets that hold one value per batch row rather than one per unit, with ``known`` ones.

    The one rule, for the forward step, the derived backward step and the CSE'd lists: a sum over the units,
    and a value computed from per-row values alone (``also``: per-row values of another list, read here), unless
    its role makes it a row of H units. A constant is per-row only as a CSE temporary (``1/H``); a named constant
    stays a row.
    """
    out, context = set(known), set(also)
    for a in assignments:
        values = a.rhs.free_symbols - {UNITS}
        from_per_row = values <= out | context and (bool(values) or a.role == Role.TEMPORARY)
        if isinstance(a.rhs, sum_units) or (a.role not in PER_UNIT_ROLES and from_per_row):
            out.add(a.lhs)
    return frozenset(out)
