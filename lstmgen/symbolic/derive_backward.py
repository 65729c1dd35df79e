"""Stage 3 — forward equations → BPTT equations, derived by SymPy differentiation.

Reverse-mode over the forward assignments of one unit: the adjoint of each value is the sum, over the
assignments that read it, of ∂rhs/∂value times the reader's adjoint, plus the gradient arriving from outside
the step when the value is a new state (``dnext_h`` = dy_t + the carry from step t+1, ``dnext_c``). Each
partial derivative comes from ``sympy.diff``; where the right-hand side is an activation call, the call is
replaced by the value it produced, so σ' becomes s(1−s) and tanh' becomes 1−t² through the derivation
itself. The matrix products are left to the fixed adjoint rules, applied by the kernel:
dx_t = δxW Wᵀ, dh_{t−1} += δhR Rᵀ, dW = Σ_t x_tᵀ δxW, dR = Σ_t h_{t−1}ᵀ δhR, db = Σ δxW.

A per-row value (a reduction over the units and what is computed from it alone) read by per-unit values gets
the sum over the units of their contributions: the adjoint of ``mean(v)`` is Σ_j (…)_j, and each v_j then
receives it divided by H through ``sympy.diff`` of the sum. :mod:`lstmgen.symbolic.reductions` simplifies those
sums (linearity, sums forward already knows) and gives each its own assignment.

A product with an indicator factor (relu′, select's branches, max/min's tie step, sign) is written last as
``masked(indicator, rest)`` (:mod:`lstmgen.symbolic.masking`): where the branch is not taken, nothing of it
reaches a gradient, not even an infinite factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import sympy

from lstmgen.functions import UNITS, sum_units
from lstmgen.symbolic.assignment import NAMED_ROLES, Assignment, AssignmentList, Role, per_row_values
from lstmgen.symbolic.forward_equations import ForwardEquations, unit_symbol
from lstmgen.symbolic.masking import mask_indicators
from lstmgen.symbolic.reductions import SumAlgebra, extract_sums, sum_aliases

GradientMode = Literal["full", "truncated"]
GRADIENT_MODES: tuple[str, ...] = ("full", "truncated")


def adjoint_symbol(value: sympy.Symbol) -> sympy.Symbol:
    """d_<value>: the symbol of ∂L/∂value."""
    return unit_symbol(f"d_{value}")


def seed_symbol(state: str) -> sympy.Symbol:
    """dnext_<state>: the gradient on the new state arriving from outside the step."""
    return unit_symbol(f"dnext_{state}")


@dataclass(frozen=True)
class BackwardEquations:
    """The backward step of one unit.

    Attributes:
        forward: the forward equations differentiated.
        gradient: "full", or "truncated" (no error through h_{t−1} where it enters a pre-activation).
        adjoints: assignments ``d_v = ...`` in evaluation order; their right-hand sides read saved forward
            values, unit parameters, the seeds and earlier adjoints.
        outputs: for every differentiable input of the step (xW_k, hR_k, s_prev, unit parameters, x_t), the
            expression of its adjoint: an adjoint symbol defined in ``adjoints``, or 0.
        seeds: the gradients arriving from outside the elementwise step, as (name, symbol): ``dnext_<state>``
            on each new state, ``dnext_src_<k>`` on each mid-step source, ``dnext_<gate>`` on each fed-back
            gate (full gradient only).
    """

    forward: ForwardEquations
    gradient: GradientMode
    adjoints: AssignmentList
    outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    seeds: tuple[tuple[str, sympy.Symbol], ...]

    def output(self, value: sympy.Symbol) -> sympy.Expr:
        """The adjoint expression of input ``value`` (a symbol of ``forward.inputs()``)."""
        return dict(self.outputs)[value]

    def expanded(self, value: sympy.Symbol) -> sympy.Expr:
        """The adjoint of input ``value`` as one expression in saved values, parameters and seeds."""
        expr = self.output(value)
        return expr if expr == 0 else self.adjoints.expanded(expr)

    @property
    def recurrent_gemm(self) -> bool:
        """Whether the error is carried back through h_{t−1} R (false for the truncated gradient)."""
        return self.gradient == "full"

    def saved_values(self) -> tuple[sympy.Symbol, ...]:
        """Forward values the backward step reads (sorted by name): what the forward pass must keep."""
        exclude = {s for _, s in self.seeds} | {s for _, s in self.forward.step_inputs} | {UNITS}
        exclude |= set(self.forward.parameters)
        return tuple(s for s in self.adjoints.free_inputs() if s not in exclude)

    @property
    def scalars(self) -> frozenset[sympy.Symbol]:
        """The per-row adjoints and reductions (one value per batch row): those of forward's per-row values and
        the sums over the units of the backward step."""
        forward = self.forward.scalars
        return per_row_values(self.adjoints, known={adjoint_symbol(v) for v in forward}, also=forward)


def derive_backward(forward: ForwardEquations, gradient: GradientMode = "full") -> BackwardEquations:
    """Differentiate the forward step: the vector–Jacobian product with respect to every input of the step."""
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient: expected one of {GRADIENT_MODES}, got {gradient!r}")
    equations = tuple(forward.equations)
    # Gradients arriving from outside the elementwise step: on each new state (dy_t and step t+1), on each
    # mid-step source (from src_k R_k, by a GEMM), and on each fed-back gate (from step t+1 through Q; cut by
    # the truncated gradient, like h_{t-1}).
    seeded = [*forward.new, *((str(src), src) for _, src in forward.sources)]
    if gradient == "full":
        seeded += [(gate, unit_symbol(gate)) for gate in forward.spec.feedback]
    seeds = tuple((name, seed_symbol(name)) for name, _ in seeded)
    seed_of = {sym: seed_symbol(name) for name, sym in seeded}
    cut = dict(forward.prev)[forward.spec.output_state] if gradient == "truncated" else None
    scalars = forward.scalars
    algebra = SumAlgebra(
        ((a.lhs, a.rhs.args[0]) for a in equations if a.role == Role.REDUCTION),
        scalars | {adjoint_symbol(v) for v in scalars},
        sum_aliases(equations),
    )

    readers: dict[sympy.Symbol, list[Assignment]] = {}
    for a in equations:
        for s in sorted(a.rhs.free_symbols, key=str):
            readers.setdefault(s, []).append(a)

    def pull(value: sympy.Symbol) -> sympy.Expr:
        """Σ over readers of ∂(reader's rhs)/∂value · d_reader, plus the outside gradient for new states."""
        total = seed_of.get(value, sympy.Integer(0))
        per_unit = sympy.Integer(0)  # a per-row value's contributions from per-unit readers: summed over units
        for reader in readers.get(value, ()):
            if value == cut and reader.role in (Role.SOURCE, Role.PREACTIVATION):
                continue  # truncated: h_{t-1} is a constant where it enters a pre-activation
            partial = _local_partial(reader, value)
            if value in scalars and reader.role == Role.REDUCTION:
                partial = sum_units(partial)  # ∂(Σ_j e_j)/∂s = Σ_j ∂e_j/∂s for a per-row s
            if value in scalars and reader.lhs not in scalars:
                per_unit += partial * adjoint_symbol(reader.lhs)
            else:
                total += partial * adjoint_symbol(reader.lhs)
        if per_unit != 0:
            total += sum_units(per_unit)
        return algebra.reduce(total) if total.has(sum_units) else total

    raw = [Assignment(adjoint_symbol(a.lhs), pull(a.lhs), a.role) for a in reversed(equations)]
    # The per-step inputs (masks) get no gradient: they are constants of the step.
    differentiable = forward.differentiable_inputs()
    raw += [Assignment(adjoint_symbol(v), pull(v), Role.INPUT) for v in differentiable]
    per_row = {adjoint_symbol(v) for v in scalars}
    adjoints, outputs = _simplify_adjoints(raw, {adjoint_symbol(v) for v in differentiable}, per_row)
    if any(a.rhs.has(sum_units) for a in adjoints):
        taken = {str(s) for a in (*equations, *adjoints) for s in (a.lhs, *a.rhs.free_symbols)}
        adjoints = extract_sums(adjoints, taken)
    # Last, so that no simplification separates an indicator from the factors it guards.
    adjoints = AssignmentList.of(Assignment(a.lhs, mask_indicators(a.rhs), a.role) for a in adjoints)
    outputs = {s: mask_indicators(e) for s, e in outputs.items()}
    return BackwardEquations(
        forward=forward,
        gradient=gradient,
        adjoints=adjoints,
        outputs=tuple((v, outputs[adjoint_symbol(v)]) for v in differentiable),
        seeds=seeds,
    )


def _local_partial(a: Assignment, value: sympy.Symbol) -> sympy.Expr:
    """∂a.rhs/∂value, written through a.lhs where the rhs is an activation (σ' = σ(1−σ) → lhs(1−lhs))."""
    partial = sympy.diff(a.rhs, value)
    if isinstance(a.rhs, sympy.Function):
        partial = partial.xreplace({a.rhs: a.lhs})
    return partial


def _simplify_adjoints(
    raw: list[Assignment], output_symbols: set[sympy.Symbol], per_row: set[sympy.Symbol] = frozenset()
) -> tuple[AssignmentList, dict[sympy.Symbol, sympy.Expr]]:
    """Rules, in order: drop zeros; replace aliases (d_xW_i = d_a_i); fold single-use adjoints; factor.

    A per-row adjoint (``per_row``) is folded only into another per-row one: in a per-unit expression it would
    be computed once per unit. Returns the remaining assignments and, for each output adjoint symbol, the
    expression that holds it.
    """
    value: dict[sympy.Symbol, sympy.Expr] = {}  # symbol -> what to write instead of it
    kept: list[Assignment] = []
    uses: dict[sympy.Symbol, int] = {}
    reader: dict[sympy.Symbol, sympy.Symbol] = {}
    for a in raw:
        for s in a.rhs.free_symbols:
            uses[s] = uses.get(s, 0) + 1
            reader[s] = a.lhs
    for a in raw:
        rhs = a.rhs.xreplace(value)
        if rhs == 0 or isinstance(rhs, sympy.Symbol):
            value[a.lhs] = rhs  # zero or alias: nothing to compute
            continue
        into_unit = a.lhs in per_row and reader.get(a.lhs) not in per_row
        if a.role not in NAMED_ROLES and uses.get(a.lhs, 0) == 1 and not into_unit:
            value[a.lhs] = rhs
            continue
        rhs = sympy.factor_terms(rhs)
        kept.append(Assignment(a.lhs, rhs, a.role))
    outputs = {s: value.get(s, s) for s in output_symbols}
    # An output that aliases another output's symbol must still be defined: keep only used assignments.
    needed = set()
    for expr in outputs.values():
        needed |= expr.free_symbols
    result: list[Assignment] = []
    for a in reversed(kept):
        if a.lhs in needed:
            result.append(a)
            needed |= a.rhs.free_symbols
    return AssignmentList.of(reversed(result)), outputs
