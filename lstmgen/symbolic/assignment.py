"""The currency passed between stages: ordered assignments ``lhs = rhs`` over SymPy symbols."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import sympy


@dataclass(frozen=True)
class Assignment:
    """One equation ``lhs = rhs``; ``role`` says what the left-hand side is (used by printers and templates)."""

    lhs: sympy.Symbol
    rhs: sympy.Expr
    role: str = "intermediate"

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
