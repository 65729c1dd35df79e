"""Stage 2 — spec → forward equations of one hidden unit (elementwise form), in evaluation order.

For each gate k: ``a_k = <preactivation>`` and ``k = activation(a_k)``; then the spec's equations. Every
activation call that is not the whole right-hand side of an assignment is hoisted into its own named value
(``h = o*tanh(c)`` becomes ``tanh_c = tanh(c); h = o*tanh_c``), so that each derivative can later be written
through a value the forward pass saved. The matrix products (x_t W, h_{t-1} R) stay outside: they enter as the
symbols ``xW_k`` and ``hR_k``.

A reduction over the units (``mean(v)`` is ``sum_units(v) / H``) is hoisted the same way, into a value of role
"reduction" (``sum_mu = sum_units(v)``): one value per batch row, not per unit. Values computed from such values
alone (``mu = sum_mu / H``, ``1/sqrt(var + eps)``) are per-row too: :attr:`ForwardEquations.scalars`.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import sympy

from lstmgen.functions import HOISTED, UNITS, sum_units
from lstmgen.spec import CellSpec, SpecError
from lstmgen.symbolic.assignment import Assignment, AssignmentList, Role, per_row_values
from lstmgen.symbolic.equation_parser import parse_expression


def unit_symbol(name: str) -> sympy.Symbol:
    """The SymPy symbol for one unit's value of ``name`` (all cell quantities are real)."""
    return sympy.Symbol(name, real=True)


@dataclass(frozen=True)
class ForwardEquations:
    """The forward step of one unit.

    Attributes:
        spec: the cell spec these equations came from.
        equations: the assignments in evaluation order; roles are "preactivation", "gate", "hoisted",
            "intermediate", "source" (what a block of R multiplies mid-step) and "state".
        xW, hR: per gate name, the symbols of the input and recurrent projections.
        gQ: per gate fed back into (``spec.feedback_targets``), the symbol of its feedback product
            [previous values of the feedback gates] Q_k.
        sources: per gate with its own ``recurrent_source``, the symbol ``src_k`` of that source: its block
            of R is applied mid-step, so ``hR_k`` becomes available only after ``src_k`` is computed.
        prev, new: per state name, the symbols of the carried state at t−1 and t.
        unit_params: per unit-parameter name, its symbol.
        input_row: ("x", symbol) when the equations read the input row x_t itself, else empty.
        step_inputs: per declared per-step input (a mask...), its symbol: read, never differentiated.
        gate_params: (parameter, gate, symbol) for block ``gate`` of each (G·H,) gate parameter, and of the bias
            b when the spec places it itself (``input_bias = False``).
    """

    spec: CellSpec
    equations: AssignmentList
    xW: tuple[tuple[str, sympy.Symbol], ...]
    hR: tuple[tuple[str, sympy.Symbol], ...]
    gQ: tuple[tuple[str, sympy.Symbol], ...]
    sources: tuple[tuple[str, sympy.Symbol], ...]
    prev: tuple[tuple[str, sympy.Symbol], ...]
    new: tuple[tuple[str, sympy.Symbol], ...]
    unit_params: tuple[tuple[str, sympy.Symbol], ...]
    input_row: tuple[tuple[str, sympy.Symbol], ...] = ()
    step_inputs: tuple[tuple[str, sympy.Symbol], ...] = ()
    gate_params: tuple[tuple[str, str, sympy.Symbol], ...] = ()

    def inputs(self) -> tuple[sympy.Symbol, ...]:
        """Every symbol the step reads: projections, previous states, unit parameters, the input row x_t and
        the per-step inputs."""
        return (*self.differentiable_inputs(), *(s for _, s in self.step_inputs))

    def differentiable_inputs(self) -> tuple[sympy.Symbol, ...]:
        """The inputs that get a gradient: all but the per-step inputs."""
        groups = (self.xW, self.hR, self.gQ, self.prev, self.unit_params, self.input_row)
        return (*(s for group in groups for _, s in group), *(s for _, _, s in self.gate_params))

    @property
    def parameters(self) -> tuple[sympy.Symbol, ...]:
        """The symbols of the parameter vectors read in the step: unit parameters and gate-parameter blocks."""
        return (*(s for _, s in self.unit_params), *(s for _, _, s in self.gate_params))

    @property
    def scalars(self) -> frozenset[sympy.Symbol]:
        """The values of one batch row rather than of one unit: the reductions, and what is computed from them
        alone (states, gates and pre-activations are rows of H units even when their value is per-row)."""
        return per_row_values(self.equations)

    @property
    def late_projections(self) -> dict[sympy.Symbol, sympy.Symbol]:
        """hR_k -> src_k for the blocks of R applied mid-step."""
        hR = dict(self.hR)
        return {hR[gate]: src for gate, src in self.sources}


def build_forward_equations(spec: CellSpec) -> ForwardEquations:
    """Parse and order the spec's equations into the forward step of one unit."""
    xW = tuple((g.name, unit_symbol(f"xW_{g.name}")) for g in spec.gates)
    hR = tuple((name, unit_symbol(f"hR_{name}")) for name in spec.recurrent_gates)
    gQ = tuple((name, unit_symbol(f"gQ_{name}")) for name in spec.feedback_targets)
    sources = tuple((g.name, unit_symbol(f"src_{g.name}")) for g in spec.gates if g.recurrent_source)
    prev = tuple((s, unit_symbol(f"{s}_prev")) for s in spec.state)
    new = tuple((s, unit_symbol(s)) for s in spec.state)
    unit_params = tuple((p, unit_symbol(p)) for p in spec.unit_params)
    step_inputs = tuple((name, unit_symbol(name)) for name in spec.inputs)
    blocked = (*spec.gate_params, *(() if spec.input_bias else ("b",)))
    gate_params = tuple((p, g.name, unit_symbol(f"{p}_{g.name}")) for p in blocked for g in spec.gates)

    names: dict[str, sympy.Symbol] = {}
    for group in (xW, hR, gQ, prev, new, unit_params, step_inputs):
        names.update({str(sym): sym for _, sym in group})
    names.update({str(sym): sym for _, _, sym in gate_params})
    for gate in spec.gates:
        names[gate.name] = unit_symbol(gate.name)
        names[f"a_{gate.name}"] = unit_symbol(f"a_{gate.name}")
    for lhs, _ in spec.equations:
        names[lhs] = unit_symbol(lhs)
    # The input row x_t itself (unit j of x_t: the cell then needs I = H).
    x_row = names["x"] = unit_symbol("x")
    # The number of units, a constant of the step (mean(e) is sum_units(e)/H).
    names["H"] = UNITS

    declared: list[Assignment] = []
    for k, gate in enumerate(spec.gates):
        pre = unit_symbol(f"a_{gate.name}")
        rhs = parse_expression(gate.preactivation_text, names, f"gates[{k}].preactivation")
        declared.append(Assignment(pre, rhs, Role.PREACTIVATION))
        activation = parse_expression(f"{gate.activation}(a_{gate.name})", names, f"gates[{k}].activation")
        declared.append(Assignment(names[gate.name], activation, Role.GATE))
        if gate.recurrent_source:
            if gate.name not in spec.recurrent_gates:
                raise SpecError(
                    f"gates[{k}].recurrent_source: gate {gate.name} has no recurrent product "
                    f"(its pre-activation does not read hR_{gate.name})"
                )
            source = parse_expression(gate.recurrent_source, names, f"gates[{k}].recurrent_source")
            declared.append(Assignment(unit_symbol(f"src_{gate.name}"), source, Role.SOURCE))
    state_names = set(spec.state)
    for k, (lhs, text) in enumerate(spec.equations):
        rhs = parse_expression(text, names, f"equations[{k}] ({lhs})")
        declared.append(Assignment(names[lhs], rhs, Role.STATE if lhs in state_names else Role.INTERMEDIATE))

    late = {dict(hR)[gate]: src for gate, src in sources}
    input_row = (("x", x_row),) if any(x_row in a.rhs.free_symbols for a in declared) else ()
    inputs = _input_set(xW, hR, gQ, prev, unit_params, input_row, step_inputs) | {s for *_, s in gate_params}
    _check_reads(spec, declared, gate_params, dict(prev)[spec.output_state])
    ordered = _topological_order(declared, (inputs - set(late)) | {UNITS}, late)
    return ForwardEquations(
        spec=spec,
        equations=AssignmentList.of(_hoist_activations(ordered, set(names))),
        xW=xW,
        hR=hR,
        gQ=gQ,
        sources=sources,
        prev=prev,
        new=new,
        unit_params=unit_params,
        input_row=input_row,
        step_inputs=step_inputs,
        gate_params=gate_params,
    )


def _check_reads(
    spec: CellSpec,
    declared: list[Assignment],
    gate_params: tuple[tuple[str, str, sympy.Symbol], ...],
    h_prev: sympy.Symbol,
) -> None:
    """A bias the equations place is read; a projected output is read only through R."""
    if not spec.input_bias:
        read = set().union(*(a.rhs.free_symbols for a in declared))
        unread = [str(s) for p, _, s in gate_params if p == "b" and s not in read]
        if unread:
            raise SpecError(
                f"input_bias: false, but no equation reads {', '.join(unread)} (expected the bias placed in the "
                "equations, block by block)"
            )
    if spec.projection:
        reader = next((a for a in declared if h_prev in a.rhs.free_symbols), None)
        if reader is not None:
            raise SpecError(
                f"projection: {reader.lhs} reads {h_prev} unit by unit, but a projected {spec.output_state} has P "
                "units, not H (expected it read only through the recurrent products hR_k)"
            )


def _input_set(*groups: tuple[tuple[str, sympy.Symbol], ...]) -> set[sympy.Symbol]:
    return {sym for group in groups for _, sym in group}


def _topological_order(
    declared: list[Assignment], inputs: set[sympy.Symbol], late: dict[sympy.Symbol, sympy.Symbol]
) -> list[Assignment]:
    """Order assignments so that each reads only inputs and earlier targets; ties keep declaration order.

    ``late`` maps a mid-step projection hR_k to the source it is computed from: reading it depends on src_k.
    """
    index = {a.lhs: k for k, a in enumerate(declared)}
    deps = {}
    for a in declared:
        read = {late.get(s, s) for s in a.rhs.free_symbols}
        unknown = read - inputs - set(index)
        if unknown:  # pragma: no cover - the parser only admits vocabulary names
            raise SpecError(f"equation {a.lhs}: undefined {sorted(map(str, unknown))}")
        deps[a.lhs] = {s for s in read if s in index}
        if a.lhs in deps[a.lhs]:
            raise SpecError(
                f"equations ({a.lhs}): {a.lhs} is defined in terms of itself "
                f"(use {a.lhs}_prev for the previous step's value)"
                if a.role == Role.STATE
                else f"equations ({a.lhs}): {a.lhs} is defined in terms of itself"
            )
    users: dict[sympy.Symbol, list[sympy.Symbol]] = {a.lhs: [] for a in declared}
    for lhs, ds in deps.items():
        for d in ds:
            users[d].append(lhs)
    waiting = {lhs: len(ds) for lhs, ds in deps.items()}
    ready = [index[lhs] for lhs, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order: list[Assignment] = []
    while ready:
        a = declared[heapq.heappop(ready)]
        order.append(a)
        for user in users[a.lhs]:
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, index[user])
    if len(order) != len(declared):
        # Blocked names are on a cycle or downstream of one; peel off the downstream ones (no blocked reader).
        blocked = {lhs for lhs, n in waiting.items() if n > 0}
        while True:
            downstream = {s for s in blocked if not any(u in blocked for u in users[s])}
            if not downstream:
                break
            blocked -= downstream
        cyclic = sorted(str(lhs) for lhs in blocked)
        raise SpecError(f"equations: circular definitions among {', '.join(cyclic)}")
    return order


def _hoist_activations(ordered: list[Assignment], taken: set[str]) -> list[Assignment]:
    """Give every nested activation call its own assignment, named after the function and its argument, and
    every reduction one of role "reduction", named ``sum_<the value that reads it>``."""
    out: list[Assignment] = []
    hoisted: dict[sympy.Expr, sympy.Symbol] = {}
    for a in ordered:

        def name_for(call: sympy.Function, lhs: sympy.Symbol = a.lhs) -> sympy.Symbol:
            arg = call.args[0]
            if isinstance(call, sum_units):
                base = f"sum_{lhs}"
            else:
                base = f"{type(call).__name__}_{arg if isinstance(arg, sympy.Symbol) else lhs}"
            candidate, k = base, 2
            while candidate in taken:
                candidate, k = f"{base}{k}", k + 1
            taken.add(candidate)
            return unit_symbol(candidate)

        def hoist(expr: sympy.Expr, top: bool, role: str = a.role) -> sympy.Expr:
            if not expr.args:
                return expr
            rebuilt = expr.func(*(hoist(arg, False, role) for arg in expr.args))
            reduction = isinstance(rebuilt, sum_units)
            # A sum is its own value unless it is the whole rhs of an intermediate (then that value is the sum).
            kept = top and (role == Role.INTERMEDIATE or not reduction)
            if (isinstance(rebuilt, HOISTED) or reduction) and not kept:
                if rebuilt not in hoisted:
                    hoisted[rebuilt] = name_for(rebuilt)
                    out.append(Assignment(hoisted[rebuilt], rebuilt, Role.REDUCTION if reduction else Role.HOISTED))
                return hoisted[rebuilt]
            return rebuilt

        rhs = hoist(a.rhs, True)
        role = Role.REDUCTION if isinstance(rhs, sum_units) and a.role == Role.INTERMEDIATE else a.role
        out.append(Assignment(a.lhs, rhs, role))
    return out
