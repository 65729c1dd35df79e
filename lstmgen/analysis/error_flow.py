"""Error flow through the carried state: the one-step Jacobian, the 1997 analysis, and measurements.

Symbolic results are derived with SymPy from the same forward equations the kernels come from: the Jacobian
of the new state with respect to the previous one is a vector–Jacobian product of the derived BPTT with a unit
gradient on one new state, so it is written through the saved forward values (f_t, i_t, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
import sympy

from lstmgen.functions import sigmoid, sum_units
from lstmgen.spec import CellSpec
from lstmgen.symbolic.derive_backward import BackwardEquations, GradientMode, derive_backward
from lstmgen.symbolic.forward_equations import ForwardEquations, build_forward_equations


@dataclass(frozen=True)
class JacobianBlock:
    """∂target_t/∂source_{t−1} = diag(diagonal) + Σ_k diag(coefficient_k) R_kᵀ (· J_src_k for mid-step sources).

    Attributes:
        target, source: state names.
        diagonal: the elementwise part, in saved forward values.
        recurrent: (gate, coefficient) pairs, the paths through h_{t−1} R_k (empty unless the source is the
            output state and the gradient is full).
        through_sources: (gate, coefficient, source Jacobian block) for gates whose R block multiplies a
            mid-step source: diag(coefficient) R_kᵀ J_src.
    """

    target: str
    source: str
    diagonal: sympy.Expr
    recurrent: tuple[tuple[str, sympy.Expr], ...]
    through_sources: tuple[tuple[str, sympy.Expr, JacobianBlock], ...] = ()
    feedback: tuple[tuple[str, sympy.Expr], ...] = ()


#: Name of the source block of the fed-back gate values γ_{t−1} (all of them, in ``spec.feedback`` order).
FEEDBACK = "gamma"


def state_jacobian(spec: CellSpec, gradient: GradientMode = "full") -> tuple[JacobianBlock, ...]:
    """Every block ∂s_t/∂s'_{t−1} of the one-step Jacobian of the carried state.

    For a cell with reductions over the units (layer norm), each block is its diagonal part, the per-row values
    held constant: the reductions add a coupling of every unit to every other (one outer product per sum) that
    is not shown.

    With gate feedback (``spec.feedback``) under the full gradient, the previous step's fed-back gate values
    γ_{t−1} are carried state too: each fed-back gate is also a target, and γ (source :data:`FEEDBACK`) a
    source whose blocks are Σ_k diag(coefficient_k) Q_kᵀ. The truncated gradient cuts that path as it cuts
    h_{t−1} R.
    """
    forward = build_forward_equations(spec)
    backward = derive_backward(forward, gradient)
    fed_back = list(spec.feedback) if backward.recurrent_gemm else []
    blocks = []
    for target in [*(name for name, _ in forward.new), *fed_back]:
        for source, _ in forward.prev:
            blocks.append(_block(backward, f"dnext_{target}", target, source))
        if fed_back:
            blocks.append(_feedback_block(backward, f"dnext_{target}", target))
    return tuple(blocks)


def _vjp(backward: BackwardEquations, seed: str) -> Callable[[sympy.Symbol], sympy.Expr]:
    """value -> ∂(the new value seeded by ``seed``)/∂value: the derived adjoint with a unit gradient on that seed.

    Simplified, unless simplify turns the table's own functions (sign, tie_step...) into a Piecewise of SymPy's.
    """
    unit = {sym: sympy.Integer(1 if str(sym) == seed else 0) for _, sym in backward.seeds}

    def vjp(value: sympy.Symbol) -> sympy.Expr:
        expr = backward.expanded(value).xreplace(unit)
        # Every path through a reduction over the units passes a sum of the backward step: without them, the
        # per-row values (means, variances) act as constants and what is left is the diagonal part.
        expr = expr.replace(lambda e: isinstance(e, sum_units), lambda e: sympy.Integer(0))
        simpler = sympy.simplify(expr)
        return sympy.factor_terms(expr if simpler.has(sympy.Piecewise) else simpler)

    return vjp


def _feedback_block(backward: BackwardEquations, seed: str, target: str) -> JacobianBlock:
    vjp = _vjp(backward, seed)
    feedback = []
    for gate, gq in backward.forward.gQ:
        coefficient = vjp(gq)
        if coefficient != 0:
            feedback.append((gate, coefficient))
    return JacobianBlock(target, FEEDBACK, sympy.Integer(0), (), (), tuple(feedback))


def _block(backward: BackwardEquations, seed: str, target: str, source: str) -> JacobianBlock:
    forward: ForwardEquations = backward.forward
    vjp = _vjp(backward, seed)
    prev = dict(forward.prev)[source]
    recurrent, through = [], []
    if source == forward.spec.output_state and backward.recurrent_gemm:
        late = {gate for gate, _ in forward.sources}
        for gate, hr in forward.hR:
            coefficient = vjp(hr)
            if coefficient == 0:
                continue
            if gate in late:
                src = dict(forward.sources)[gate]
                through.append((gate, coefficient, _block(backward, f"dnext_{src}", str(src), source)))
            else:
                recurrent.append((gate, coefficient))
    return JacobianBlock(target, source, vjp(prev), tuple(recurrent), tuple(through))


@dataclass(frozen=True)
class SingleUnitAnalysis:
    """Hochreiter & Schmidhuber's analysis of one self-connected unit y_t = f(w y_{t−1}), derived.

    Attributes:
        factor: the local error factor ∂y_t/∂y_{t−1} = f'(net)·w per activation, through the output y.
        max_derivative: max over net of f'(net) per activation (at the net where f'' = 0).
        vanishing_bound: |w| below this makes |f'(net) w| < 1 for every net: the error vanishes.
        constant_flow_activation: the f solving f'(net)·w = 1 for all net (a linear unit).
        cec_activation: that f with w = 1: the identity, the constant error carousel.
    """

    factor: dict[str, sympy.Expr]
    max_derivative: dict[str, sympy.Expr]
    vanishing_bound: dict[str, sympy.Expr]
    constant_flow_activation: sympy.Expr
    cec_activation: sympy.Expr


NET, W, Y = sympy.symbols("net w y", real=True)


def single_unit_analysis() -> SingleUnitAnalysis:
    """Derive the 1997 paper's error-flow conditions with SymPy (nothing here is typed in as a result)."""
    factor, maximum, bound = {}, {}, {}
    for name, f in (("sigmoid", sigmoid), ("tanh", sympy.tanh)):
        derivative = sympy.diff(f(NET), NET)
        factor[name] = (derivative * W).xreplace({f(NET): Y})
        # f' is maximal where f'' = 0; rewrite through exp so that solve sees an elementary function.
        critical = sympy.solve(sympy.diff(derivative.rewrite(sympy.exp), NET), NET)
        maximum[name] = sympy.simplify(max(derivative.subs(NET, c).rewrite(sympy.exp) for c in critical))
        bound[name] = sympy.simplify(1 / maximum[name])
    g = sympy.Function("f")
    solution = sympy.dsolve(sympy.Eq(g(NET).diff(NET) * W, 1), g(NET), ics={g(0): 0})
    return SingleUnitAnalysis(
        factor=factor,
        max_derivative=maximum,
        vanishing_bound=bound,
        constant_flow_activation=solution.rhs,
        cec_activation=solution.rhs.subs(W, 1),
    )


#: The measurement restarts the forward pass from every step back: its work grows as T², so T is bounded.
MAX_MEASURED_STEPS = 5000
#: H of the measurement's cells.
MEASURED_HIDDEN = 32


def state_gradients(
    module: ModuleType,
    steps: int,
    *,
    batch: int = 16,
    input_size: int = 8,
    hidden: int = MEASURED_HIDDEN,
    seed: int = 0,
    block_size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[tuple[np.ndarray, ...]], object]:
    """∂L/∂s_{T−q} for q = 0..T, for every state s, with the error injected at the last step only.

    The module runs on seeded random weights (its ``init_params``) and standard normal inputs, in float64
    (``input_size`` is the hidden size for a cell that reads x_t itself); per-step inputs (zoneout's masks) are
    held at 0.5; ``block_size``: the cells of a memory block of a cell with block gates (one gate per cell when
    None).
    Each ∂L/∂s_{T−q} is the gradient on the initial state of the last q steps, restarted from the recorded
    state s_{T−q}: the module's own forward and backward, nothing else. Returns the list indexed by q (each a
    tuple in STATE order of (B, H) arrays) and the tape of the full forward pass. ``progress(q, steps)`` is
    called after each q.
    """
    if "Q" in getattr(module, "PARAMS", ()):
        raise ValueError(
            f"variant: {module.VARIANT} feeds gate values back, so its carried state is more than "
            "STATE; measuring it is not supported"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_MEASURED_STEPS:
        raise ValueError(
            f"steps: expected an integer in [1, {MAX_MEASURED_STEPS}] (the work grows as T²), got {steps!r}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    rng = np.random.default_rng(seed)
    if getattr(module, "INPUT_ROW", False):
        input_size = hidden
    blocks = {} if block_size is None else {"block_size": block_size}
    params = module.init_params(input_size, hidden, dtype=np.float64, seed=seed, **blocks)
    x = rng.standard_normal((steps, batch, input_size))
    inputs = {name: np.full((steps, batch, hidden), 0.5) for name in getattr(module, "INPUTS", ())}
    _, _, tape = module.forward(x, params, inputs=inputs)
    dy_last = rng.standard_normal((batch, hidden))
    grads = [tuple(dy_last if k == 0 else np.zeros_like(dy_last) for k in range(len(module.STATE)))]
    for q in range(1, steps + 1):
        start = steps - q
        state = tuple(seq[start].copy() for seq in tape.states)
        _, _, sub_tape = module.forward(x[start:], params, state, inputs={k: v[start:] for k, v in inputs.items()})
        dy = np.zeros((q, batch, hidden))
        dy[-1] = dy_last
        grads.append(module.backward(dy, sub_tape)[2])
        if progress is not None:
            progress(q, steps)
    return grads, tape


def measure_error_flow(module: ModuleType, steps: int, **options: Any) -> np.ndarray:
    """‖∂L/∂s_{T−q}‖ (Frobenius norm over the batch) of the carried state s (c, else h), q = 0..T.

    ``options``: those of :func:`state_gradients` (sizes, seed, progress)."""
    grads, _ = state_gradients(module, steps, **options)
    k = module.STATE.index("c") if "c" in module.STATE else 0
    return np.array([np.linalg.norm(g[k]) for g in grads])
