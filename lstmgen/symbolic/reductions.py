"""The algebra of sums over the units, for the backward derivation.

A reduction ``sum_units(e)`` is Σ_j e_j over the H units of a batch row. Two rules make a derived backward of a
normalisation what the textbook writes, with no pass over the units that computes a known quantity:

- linearity: a per-row factor leaves the sum (Σ_j s·e_j = s·Σ_j e_j), Σ_j s = H·s, and terms sharing a per-row
  coefficient share one sum;
- known sums: a sum that forward computed is its value, so Σ_j (v_j − mean(v)) is Σ_j v_j − H·mean(v) = 0.

:func:`extract_sums` then gives every remaining sum an assignment of its own (role "reduction"), so that each is
one loop over the units and no per-unit expression contains one.
"""

from __future__ import annotations

from collections.abc import Iterable

import sympy

from lstmgen.functions import UNITS, sum_units
from lstmgen.symbolic.assignment import Assignment, AssignmentList, Role


def _distributed(e: sympy.Expr) -> sympy.Expr:
    """Products distributed over sums at the top level only (powers and function arguments kept)."""
    return sympy.expand(e, deep=False, mul=True, multinomial=False, power_exp=False, power_base=False, log=False)


class SumAlgebra:
    """The sums forward computes and which values are per-row (a batch row's, not a unit's).

    ``known``: forward's reductions ``(sum symbol, argument)``; ``per_row``: the per-row symbols (forward's scalar
    values and the adjoints of those); ``value_of``: for a sum symbol, the per-row expression to write instead
    (``4*H*mu`` when forward defines ``mu = sum_mu/(4*H)``), so that cancellations show.
    """

    def __init__(
        self,
        known: Iterable[tuple[sympy.Symbol, sympy.Expr]],
        per_row: Iterable[sympy.Symbol],
        value_of: dict[sympy.Symbol, sympy.Expr] | None = None,
    ) -> None:
        self.per_row = frozenset(per_row) | {UNITS}
        self.value_of = value_of or {}
        self.known = []
        for symbol, argument in known:
            terms = self._terms(argument)
            if all(not c.free_symbols - {UNITS} for c in terms.values()):
                self.known.append((symbol, terms))

    def is_per_row(self, e: sympy.Expr) -> bool:
        """Whether ``e`` has one value per batch row (a sum over the units is one, whatever it sums)."""
        outside = e.replace(lambda x: isinstance(x, sum_units), lambda x: UNITS)
        return outside.free_symbols <= self.per_row

    def split(self, term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
        """(per-row coefficient, per-unit part) of one product."""
        coefficient, unit = [], []
        for factor in sympy.Mul.make_args(term):
            (coefficient if self.is_per_row(factor) else unit).append(factor)
        return sympy.Mul(*coefficient), sympy.Mul(*unit)

    def _terms(self, e: sympy.Expr) -> dict[sympy.Expr, sympy.Expr]:
        """The distributed sum as per-unit part -> coefficient (per-unit part 1: a per-row term)."""
        out: dict[sympy.Expr, sympy.Expr] = {}
        for term in sympy.Add.make_args(_distributed(e)):
            coefficient, unit = self.split(term)
            out[unit] = out.get(unit, sympy.Integer(0)) + coefficient
        return out

    def _resolved(self, argument: sympy.Expr) -> sympy.Expr | None:
        """Σ_j argument as a per-row expression, when linearity and the known sums account for all of it."""
        terms = self._terms(argument)
        total = terms.pop(sympy.Integer(1), sympy.Integer(0)) * UNITS
        for symbol, known in self.known:
            first = next(iter(known))
            if first not in terms:
                continue
            ratio = terms[first] / known[first]
            if all(u in terms and sympy.simplify(terms[u] - ratio * c) == 0 for u, c in known.items()):
                for u, c in known.items():
                    terms[u] = sympy.simplify(terms[u] - ratio * c)
                total += ratio * self.value_of.get(symbol, symbol)
        if any(c != 0 for c in terms.values()):
            return None
        return sympy.simplify(total)

    def reduce(self, expr: sympy.Expr) -> sympy.Expr:
        """``expr`` with every sum over the units rewritten by the two rules."""

        def rewrite(call: sympy.Expr) -> sympy.Expr:
            (argument,) = call.args
            whole = self._resolved(argument)
            if whole is not None:
                return whole
            per_row = sympy.Integer(0)
            shared: dict[sympy.Expr, list[sympy.Expr]] = {}
            for term in sympy.Add.make_args(argument):
                resolved = self._resolved(term)
                if resolved is not None:
                    per_row += resolved
                    continue
                coefficient, unit = self.split(term)
                shared.setdefault(coefficient, []).append(unit)
            return per_row + sympy.Add(*(c * sum_units(sympy.Add(*units)) for c, units in shared.items()))

        return expr.replace(lambda e: isinstance(e, sum_units), rewrite)


def extract_sums(assignments: AssignmentList, taken: set[str]) -> AssignmentList:
    """Every sum over the units inside a right-hand side becomes an assignment of its own, ``sum_<lhs> =
    sum_units(...)`` (role "reduction"), right before the assignment that reads it."""
    out: list[Assignment] = []
    for a in assignments:
        if isinstance(a.rhs, sum_units):
            out.append(Assignment(a.lhs, a.rhs, Role.REDUCTION))
            continue
        named: dict[sympy.Expr, sympy.Symbol] = {}

        def name(call: sympy.Expr, lhs: sympy.Symbol = a.lhs, named: dict = named) -> sympy.Symbol:
            if call not in named:
                base, k = f"sum_{lhs}", 2
                candidate = base
                while candidate in taken:
                    candidate, k = f"{base}{k}", k + 1
                taken.add(candidate)
                named[call] = sympy.Symbol(candidate, real=True)
                out.append(Assignment(named[call], call, Role.REDUCTION))
            return named[call]

        rhs = a.rhs.replace(lambda e: isinstance(e, sum_units), name)
        out.append(Assignment(a.lhs, rhs, a.role))
    return AssignmentList.of(out)


def sum_aliases(equations: Iterable[Assignment]) -> dict[sympy.Symbol, sympy.Expr]:
    """For each forward sum ``s`` that some per-row value ``m = k*s`` scales by a constant k (a mean: k = 1/H),
    ``s -> m/k``: the adjoint is then written through the value the equations name."""
    sums = {a.lhs for a in equations if a.role == Role.REDUCTION}
    out: dict[sympy.Symbol, sympy.Expr] = {}
    for a in equations:
        values = a.rhs.free_symbols - {UNITS}
        if a.role == Role.INTERMEDIATE and len(values) == 1 and values <= sums:
            (s,) = values
            k = sympy.simplify(a.rhs / s)
            if not k.free_symbols - {UNITS} and s not in out:
                out[s] = a.lhs / k
    return out
