"""The derivation of a cell as data: forward equations, derived BPTT, weight gradients, error flow.

Every equation here is the SymPy object the generated kernel is built from (the same ``Assignment`` objects
of :mod:`lstmgen.symbolic.derive_backward`), so what ``lstmgen derive`` prints is what the kernel computes.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from lstmgen.analysis.derivation_printer import notebook_latex, notebook_markdown
from lstmgen.analysis.error_flow import JacobianBlock, SingleUnitAnalysis, single_unit_analysis, state_jacobian
from lstmgen.spec import CellSpec
from lstmgen.symbolic.assignment import Assignment, Role
from lstmgen.symbolic.derive_backward import BackwardEquations, GradientMode, adjoint_symbol, derive_backward
from lstmgen.symbolic.forward_equations import build_forward_equations


@dataclass(frozen=True)
class WeightGradient:
    """∂L/∂param as a sum over time (and batch): ``kind`` is "input", "recurrent", "feedback", "bias", "unit",
    "gate" (block ``gate`` of a gate parameter, or of b when the equations place the bias).

    ``adjoint`` is the per-unit expression summed: δxW_k for W_k and b_k, δhR_k for R_k, δgQ_k for Q_k, and
    the derived adjoint of a unit or gate parameter.
    """

    param: str
    gate: str
    kind: str
    adjoint: sympy.Expr


@dataclass(frozen=True)
class Derivation:
    """Everything ``lstmgen derive`` prints, as SymPy objects.

    Attributes:
        spec, gradient: what was derived.
        backward: the derived equations (``backward.forward.equations`` are the forward ones).
        forward: the forward assignments to show (hoisted activations folded back into their readers).
        adjoints: the derived BPTT assignments, exactly ``backward.adjoints``.
        outputs: for every input of the step, (d_input symbol, expression) — aliases included.
        weight_gradients: ∂L/∂W, R, b, Q and the unit parameters as sums over time.
        jacobian: the one-step Jacobian of the carried state.
        analysis: the 1997 single-unit analysis.
        display: substitutions that fold hoisted values back (tanh_c → tanh(c)) for printing.
    """

    spec: CellSpec
    gradient: GradientMode
    backward: BackwardEquations
    forward: tuple[Assignment, ...]
    adjoints: tuple[Assignment, ...]
    outputs: tuple[tuple[sympy.Symbol, sympy.Expr], ...]
    weight_gradients: tuple[WeightGradient, ...]
    jacobian: tuple[JacobianBlock, ...]
    analysis: SingleUnitAnalysis
    display: dict[sympy.Symbol, sympy.Expr]

    def backward_lines(self) -> tuple[BackwardLine, ...]:
        """What ``lstmgen derive`` prints under Backward, in order: every derived adjoint, then the adjoints of
        the step's inputs that are aliases (δxW_k = δa_k); δh_{t−1} carries the recurrent GEMM's terms."""
        backward = self.backward
        forward = backward.forward
        d_h_prev = adjoint_symbol(dict(forward.prev)[self.spec.output_state])
        late = {gate for gate, _ in forward.sources}
        recurrent = tuple(
            (gate, backward.output(hr))
            for gate, hr in forward.hR
            if backward.recurrent_gemm and gate not in late and backward.output(hr) != 0
        )
        lines = [BackwardLine(a.lhs, a.rhs, recurrent if a.lhs == d_h_prev else ()) for a in self.adjoints]
        defined = {a.lhs for a in self.adjoints}
        for d_sym, expr in self.outputs:
            if d_sym not in defined:
                lines.append(BackwardLine(d_sym, expr, recurrent if d_sym == d_h_prev else ()))
        return tuple(lines)

    # A notebook shows a Derivation as its equations (IPython's rich display protocol).
    def _repr_latex_(self) -> str:
        return notebook_latex(self)

    def _repr_markdown_(self) -> str:
        return notebook_markdown(self)


@dataclass(frozen=True)
class BackwardLine:
    """One printed line of the backward step: ``lhs = elementwise + Σ_k adjoint_k R_kᵀ``.

    ``recurrent`` holds ``(gate, δhR_k)`` for each block of R that multiplies h_{t−1} (not for a block applied
    mid-step, whose product arrives through the seed of its source): it is non-empty only on the line of
    δh_{t−1}, under the full gradient, where the kernel adds the per-step GEMM δhR Rᵀ.
    """

    lhs: sympy.Symbol
    elementwise: sympy.Expr
    recurrent: tuple[tuple[str, sympy.Expr], ...] = ()


def build_derivation(spec: CellSpec, gradient: GradientMode = "full") -> Derivation:
    """Derive everything about ``spec`` that the printers show."""
    forward = build_forward_equations(spec)
    backward = derive_backward(forward, gradient)
    display: dict[sympy.Symbol, sympy.Expr] = {}
    for a in forward.equations:  # in order, so a hoisted value inside another shows unfolded too
        if a.role in (Role.HOISTED, Role.SOURCE):
            display[a.lhs] = a.rhs.xreplace(display)
    shown = tuple(a for a in forward.equations if a.role != Role.HOISTED)
    grads = []
    for gate, xw in forward.xW:
        grads.append(WeightGradient("W", gate, "input", backward.output(xw)))
    for gate, hr in forward.hR:
        grads.append(WeightGradient("R", gate, "recurrent", backward.output(hr)))
    for gate, gq in forward.gQ:
        grads.append(WeightGradient("Q", gate, "feedback", backward.output(gq)))
    if spec.input_bias:
        for gate, xw in forward.xW:
            grads.append(WeightGradient("b", gate, "bias", backward.output(xw)))
    for name, gate, sym in forward.gate_params:
        grads.append(WeightGradient(name, gate, "gate", backward.output(sym)))
    for name, sym in forward.unit_params:
        grads.append(WeightGradient(name, "", "unit", backward.output(sym)))
    return Derivation(
        spec=spec,
        gradient=gradient,
        backward=backward,
        forward=shown,
        adjoints=tuple(backward.adjoints),
        outputs=tuple((adjoint_symbol(v), e) for v, e in backward.outputs),
        weight_gradients=tuple(grads),
        jacobian=state_jacobian(spec, gradient),
        analysis=single_unit_analysis(),
        display=display,
    )
