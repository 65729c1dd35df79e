"""The derivation as a document: sections of equations and prose, built once, printed by every format.

:func:`build_document` (and :func:`build_error_flow`) turn a :class:`~lstmgen.analysis.derivation.Derivation` into
nodes: a :class:`Section` holds :class:`Equation` rows whose sides are math nodes (:class:`Expr`,
:class:`Diag`, :class:`TimesTransposed`, :class:`Sum`...), and prose is words with inline math. Nothing here
knows a format: :mod:`lstmgen.analysis.derivation_printer` has one printer per format.

Two notations: ``modern`` (i, f, g, o, c, h, W, R, p) and ``graves`` (the notation of Graves' thesis used by
the LSTM literature's BPTT derivations: ι, φ, ω for the gates, s_c for the cell state, ε_c and ε_s for the
output and state errors, δ for the gate deltas, w_cι, w_cφ, w_cω for the peepholes). Names a notation does
not cover (a GRU's r, z, n) print in the modern form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import sympy
from sympy.printing.str import StrPrinter

from lstmgen.analysis.error_flow import FEEDBACK, JacobianBlock
from lstmgen.functions import masked, record_of
from lstmgen.symbolic.assignment import Role
from lstmgen.symbolic.forward_equations import unit_symbol

if TYPE_CHECKING:  # the derivation imports its printers (notebook display): types only, no import back
    from lstmgen.analysis.derivation import Derivation, WeightGradient

NOTATIONS = ("modern", "graves")

_GREEK_GATE = {"i": r"\iota", "f": r"\phi", "o": r"\omega", "g": "c"}
_GREEK_TEXT = {"i": "ι", "f": "φ", "o": "ω", "g": "c"}


def _upright(name: str) -> str:
    """A one-letter name as is; a longer one set upright as one name (its underscores are not subscripts)."""
    return name if len(name) == 1 else rf"\mathrm{{{name.replace('_', chr(92) + '_')}}}"


def _sub(name: str) -> str:
    """``b_rn`` -> ``b_{rn}``; a multi-letter base is set upright."""
    base, _, rest = name.partition("_")
    base = base if len(base) == 1 else rf"\mathrm{{{base}}}"
    return f"{base}_{{{rest}}}" if rest else base


class Names:
    """The LaTeX and text name of every symbol of one derivation, in one notation."""

    def __init__(self, derivation: Derivation, notation: str) -> None:
        forward = derivation.backward.forward
        spec = forward.spec
        self.latex: dict[sympy.Symbol, str] = {}
        self.text: dict[sympy.Symbol, str] = {}
        # Graves' notation has no name for a projected output: a projected cell keeps the modern one.
        graves = self.graves = notation == "graves" and {"c", "h"} <= set(spec.state) and not spec.projection
        self.gates = [g.name for g in spec.gates]
        #: LaTeX and text subscript of each gate's matrix blocks and bias: Greek in Graves' notation.
        self.gate_latex = {k: _GREEK_GATE[k] if graves and k in _GREEK_GATE else k for k in self.gates}
        self.gate_text = {k: _GREEK_TEXT[k] if graves and k in _GREEK_TEXT else k for k in self.gates}
        self._name_gates(derivation)
        self._name_values(derivation)
        self._name_adjoints()
        self._name_seeds(derivation)

    def name(self, sym: sympy.Symbol, latex: str, text: str) -> None:
        self.latex[sym], self.text[sym] = latex, text

    def value(self, n: str, when: str = "t") -> tuple[str, str]:
        """LaTeX and text of value n at time t (or t-1)."""
        graves, gates = self.graves, self.gates
        if graves and n in ("c", "h"):
            base, text = ("s_c", "s_c") if n == "c" else ("b_c", "b_c")
            return f"{base}^{{{when}}}", f"{text}({when})"
        if graves and n in _GREEK_GATE and n in gates and n != "g":
            return f"b_{{{_GREEK_GATE[n]}}}^{{{when}}}", f"b_{_GREEK_TEXT[n]}({when})"
        if graves and n == "g" and n in gates:
            return rf"g\left(a_c^{{{when}}}\right)", f"g(a_c({when}))"
        base = _upright(n)  # log_f_exp is one name: its underscores are not subscripts
        return f"{base}_{{{when}}}", f"{n}[{when}]"

    def _preactivation(self, k: str) -> tuple[str, str]:
        if self.graves and k in _GREEK_GATE:
            return f"a_{{{_GREEK_GATE[k]}}}^{{t}}", f"a_{_GREEK_TEXT[k]}(t)"
        return f"a_{{{k},t}}", f"a_{k}[t]"

    def _greek(self, k: str) -> str:
        return _GREEK_GATE[k] if self.graves and k in _GREEK_GATE else k

    def _name_gates(self, derivation: Derivation) -> None:
        """Each gate's value, pre-activation, input and recurrent products, bias, feedback product."""
        spec, graves, name = derivation.spec, self.graves, self.name
        late = dict(derivation.backward.forward.sources)
        for k in self.gates:
            name(unit_symbol(k), *self.value(k))
            name(unit_symbol(f"a_{k}"), *self._preactivation(k))
            gk, gt = self._greek(k), self.gate_text[k]
            x_t = ("x^{t}", "x(t)") if graves else ("x_t", "x[t]")
            name(unit_symbol(f"X_{k}"), f"{x_t[0]} W_{{{gk}}}", f"{x_t[1]}·W_{gt}")
            # Graves writes b for activations, so his notation's biases are β (weights from a bias unit there).
            bias = (rf"\beta_{{{gk}}}", f"β_{gt}") if graves else (f"b_{{{gk}}}", f"b_{k}")
            name(unit_symbol(f"B_{k}"), *bias)
            if k not in late:
                h_prev = self.value(spec.output_state, "t-1")
                name(unit_symbol(f"hR_{k}"), f"{h_prev[0]} R_{{{gk}}}", f"{h_prev[1]}·R_{gt}")
            name(unit_symbol(f"gQ_{k}"), rf"\gamma_{{t-1}} Q_{{{gk}}}", f"γ[t-1]·Q_{gt}")

    def _name_values(self, derivation: Derivation) -> None:
        """The input, the states, the named values, the parameters, the mid-step products."""
        forward, spec, graves, name = derivation.backward.forward, derivation.spec, self.graves, self.name
        name(unit_symbol("x"), *(("x^{t}", "x(t)") if graves else ("x_t", "x[t]")))
        for s in spec.state:
            name(unit_symbol(s), *self.value(s))
            name(unit_symbol(f"{s}_prev"), *self.value(s, "t-1"))
        if spec.projection:  # the equations' value of a projected output, before W_p: h̃
            out = spec.output_state
            self.projected = self.value(out)
            name(unit_symbol(out), rf"\tilde{{{_upright(out)}}}_{{t}}", f"{out}̃[t]")
        for a in forward.equations:
            if a.role in (Role.INTERMEDIATE, Role.REDUCTION):
                name(a.lhs, *self.value(str(a.lhs)))
        for a in derivation.backward.adjoints:  # the sums over the units the derivation named (sum_d_mu)
            if a.role == Role.REDUCTION and str(a.lhs).startswith("sum_"):
                name(a.lhs, *self.value(str(a.lhs)))
        for p, k, sym in forward.gate_params:
            name(sym, f"{_upright(p)}_{{{self._greek(k)}}}", f"{p}_{self.gate_text[k]}")
        for p in spec.unit_params:
            gate = p.removeprefix("p_")
            if graves and p.startswith("p_") and gate in _GREEK_GATE:
                name(unit_symbol(p), f"w_{{c{_GREEK_GATE[gate]}}}", f"w_c{_GREEK_TEXT[gate]}")
            else:
                name(unit_symbol(p), _sub(p), p)
        # Mid-step projections show their source: (r_t h_{t-1}) R_n.
        for k, src in forward.sources:
            src_latex = sympy.latex(derivation.display[src], symbol_names=self.latex)
            src_text = self.expression_text(derivation.display[src])
            latex = rf"\left({src_latex}\right) R_{{{self._greek(k)}}}"
            name(unit_symbol(f"hR_{k}"), latex, f"({src_text})·R_{self.gate_text[k]}")

    def _name_adjoints(self) -> None:
        """δ of each value's name (ε for Graves' output and state errors)."""
        graves, name = self.graves, self.name
        for sym in list(self.latex):
            latex, text = self.latex[sym], self.text[sym]
            if str(sym).startswith(("X_", "B_")):
                continue
            delta = unit_symbol(f"d_{sym}")
            if str(sym).startswith(("hR_", "gQ_")):
                k = str(sym).split("_", 1)[1]
                kind = "h R" if str(sym).startswith("hR_") else r"\gamma Q"
                gk = self._greek(k)
                kind_text = kind.replace(chr(92) + "gamma", "γ")
                when = f"_{self.gate_text[k]}(t)" if graves else f"_{k}[t]"
                latex_when = f"_{{{gk}}}^{{t}}" if graves else f"_{{{gk},t}}"
                name(delta, rf"\delta\left({kind}\right){latex_when}", f"δ({kind_text}){when}")
                continue
            name(delta, rf"\delta {latex}", f"δ{text}")
        for k in self.gates:
            gk = self._greek(k)
            if graves:
                delta_xw = rf"\delta\left(x W\right)_{{{gk}}}^{{t}}", f"δ(xW)_{self.gate_text[k]}(t)"
                name(unit_symbol(f"d_xW_{k}"), *delta_xw)
            else:
                name(unit_symbol(f"d_xW_{k}"), rf"\delta\left(x W\right)_{{{gk},t}}", f"δ(xW)_{k}[t]")
            if graves and k in _GREEK_GATE:
                name(unit_symbol(f"d_a_{k}"), f"\\delta_{{{_GREEK_GATE[k]}}}^{{t}}", f"δ_{_GREEK_TEXT[k]}(t)")
        if graves:
            name(unit_symbol("d_c"), r"\epsilon_s^{t}", "ε_s(t)")
            name(unit_symbol("d_c_prev"), r"\epsilon_s^{t-1}", "ε_s(t-1)")
            name(unit_symbol("d_h_prev"), r"\epsilon_c^{t-1}", "ε_c(t-1)")

    def _name_seeds(self, derivation: Derivation) -> None:
        """The gradients arriving from outside the step."""
        spec, graves, value = derivation.spec, self.graves, self.value
        late = dict(derivation.backward.forward.sources)
        out = spec.output_state
        for s, seed in derivation.backward.seeds:
            if s == out and spec.projection:  # the gradient on h̃: δh_t W_pᵀ
                latex, text = self.latex[unit_symbol(f"d_{out}")], self.text[unit_symbol(f"d_{out}")]
            elif s == out:
                latex, text = (r"\epsilon_c^{t}", "ε_c(t)") if graves else (rf"\delta {value(s)[0]}", f"δ{value(s)[1]}")
            elif s in spec.state:
                latex, text = (
                    (r"\epsilon_s^{t}\big|_{t+1}", "ε_s(t)|t+1")
                    if graves and s == "c"
                    else (rf"\delta {{{value(s)[0]}}}^{{+}}", f"δ{value(s)[1]}⁺")
                )
            elif s in late.values() or s.startswith("src_"):
                k = s.removeprefix("src_")
                gk, gt = self.gate_latex[k], self.gate_text[k]
                latex, text = rf"\delta\left(h R\right)_{{{gk},t}} R_{{{gk}}}^{{\top}}", f"δ(hR)_{gt}[t]·R_{gt}ᵀ"
            else:
                latex, text = rf"\delta {{{value(s)[0]}}}^{{+}}", f"δ{value(s)[1]}⁺"
            self.name(seed, latex, text)

    def expression_text(self, expr: sympy.Expr) -> str:
        return TextExpressionPrinter(self.text).doprint(expr)


class TextExpressionPrinter(StrPrinter):
    """Unicode one-line equations: σ, tanh, ·, ², names from the notation."""

    def __init__(self, names: dict[sympy.Symbol, str]) -> None:
        super().__init__({"order": "none"})
        self.names = names

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        return self.names.get(expr, str(expr))

    def _print_Mul(self, expr: sympy.Mul) -> str:
        return super()._print_Mul(expr).replace("*", "·")

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if exp.is_Integer and exp > 1:
            superscript = str(exp).translate(str.maketrans("0123456789", "⁰¹²³⁴⁵⁶⁷⁸⁹"))
            return self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Pow"]) + superscript
        return super()._print_Pow(expr, rational)

    def _print_Function(self, expr: sympy.Function) -> str:
        return record_of(expr).text_of([self._print(arg) for arg in expr.args])

    _print_Abs = _print_Function
    _print_exp = _print_Function
    _print_log = _print_Function
    _print_sign = _print_Function


# ------------------------------------------------------------------------------------------------- nodes
@dataclass(frozen=True)
class Name:
    """A symbol's name in both forms."""

    latex: str
    text: str


@dataclass(frozen=True)
class Expr:
    """A SymPy expression over the derivation's symbols; ``breakable``: a row may break between its terms."""

    value: sympy.Expr
    breakable: bool = False


@dataclass(frozen=True)
class Plain:
    """An expression printed without the notation's names (the analysis' f(net), w, y)."""

    value: sympy.Expr


@dataclass(frozen=True)
class Diag:
    """diag(value): a diagonal matrix of per-unit values."""

    value: sympy.Expr


@dataclass(frozen=True)
class TimesTransposed:
    """coefficient · M_gateᵀ."""

    coefficient: Math
    matrix: str
    gate: Name


@dataclass(frozen=True)
class Through:
    """diag(coefficient) · R_gateᵀ · (inner): a path through a mid-step source."""

    coefficient: Diag
    gate: Name
    inner: Terms


@dataclass(frozen=True)
class Terms:
    """A sum of terms (0 when empty); rows may break before each +."""

    terms: tuple[Math, ...]


@dataclass(frozen=True)
class Partial:
    """∂target/∂source."""

    target: Name
    source: Name


@dataclass(frozen=True)
class GradientOf:
    """∂L/∂name."""

    name: Name


@dataclass(frozen=True)
class Sum:
    """Σ over steps (and batch rows) of body, or of sourceᵀ · body."""

    body: Math
    source: Name | None = None


Math = Name | Expr | Plain | Diag | TimesTransposed | Through | Terms | Partial | GradientOf | Sum


@dataclass(frozen=True)
class Equation:
    lhs: Math
    rhs: Math


@dataclass(frozen=True)
class Section:
    title: str
    note: str
    equations: tuple[Equation, ...]


@dataclass(frozen=True)
class Prose:
    """A paragraph: words (str) and inline math."""

    pieces: tuple[str | Math, ...]


@dataclass(frozen=True)
class Document:
    """What ``lstmgen derive`` prints: a title block, the sections, the 1997 analysis."""

    name: str
    description: str
    paper: str
    names: Names
    sections: tuple[Section, ...]
    analysis: tuple[Prose, ...]


@dataclass(frozen=True)
class ErrorFlowReport:
    """What ``lstmgen cec`` prints: the carried state's one-step Jacobian and the 1997 analysis."""

    title: str
    names: Names
    equations: tuple[Equation, ...]
    analysis: tuple[Prose, ...]


# ----------------------------------------------------------------------------------------------- builder
class DocumentBuilder:
    """Builds the sections of one derivation in one notation."""

    def __init__(self, derivation: Derivation, notation: str) -> None:
        self.d = derivation
        self.names = Names(derivation, notation)
        forward = derivation.backward.forward
        # xW_k prints as x_t W_k + b_k: a real sum, so precedence stays right (x_t W_k alone when the equations
        # place the bias themselves).
        bias = forward.spec.input_bias
        self.expand_xw = {xw: unit_symbol(f"X_{k}") + (unit_symbol(f"B_{k}") if bias else 0) for k, xw in forward.xW}
        self.show = {**{k: v for k, v in derivation.display.items() if not str(k).startswith("src_")}, **self.expand_xw}
        self._defined = set(derivation.backward.adjoints.targets)

    def expr(self, e: sympy.Expr, breakable: bool = False) -> Expr:
        return Expr(e.xreplace(self.show), breakable)

    def diag(self, e: sympy.Expr) -> Diag:
        return Diag(e.xreplace(self.show))

    def sym(self, s: sympy.Symbol) -> Name:
        return Name(self.names.latex.get(s, sympy.latex(s)), self.names.text.get(s, str(s)))

    def gate(self, gate: str) -> Name:
        return Name(self.names.gate_latex[gate], self.names.gate_text[gate])

    def projected(self) -> tuple[Name, Name]:
        """A projected output h_t and its gradient δh_t (P units; dy_t plus the error from step t+1)."""
        latex, text = self.names.projected
        return Name(latex, text), Name(rf"\delta {latex}", f"δ{text}")

    def forward(self) -> tuple[Equation, ...]:
        lines = [Equation(self.sym(a.lhs), self.expr(a.rhs, True)) for a in self.d.forward if a.role != Role.SOURCE]
        if self.d.spec.projection:
            h, _ = self.projected()
            h_cell = self.sym(unit_symbol(self.d.spec.output_state))
            lines.append(Equation(h, Name(f"{h_cell.latex} W_{{p}}", f"{h_cell.text}·W_p")))
        return tuple(lines)

    def backward(self) -> tuple[Equation, ...]:
        lines = []
        if self.d.spec.projection:
            _, dh = self.projected()
            d_cell = self.sym(unit_symbol(f"d_{self.d.spec.output_state}"))
            lines.append(Equation(d_cell, TimesTransposed(dh, "W", Name("p", "p"))))
        for line in self.d.backward_lines():
            terms: list[Math] = []
            if not (line.elementwise == 0 and line.recurrent):
                terms.append(self.expr(line.elementwise, True))
            terms += [TimesTransposed(self.expr(adj), "R", self.gate(gate)) for gate, adj in line.recurrent]
            lines.append(Equation(self.sym(line.lhs), Terms(tuple(terms))))
        return tuple(lines)

    def gradients(self) -> tuple[Equation, ...]:
        graves = self.names.graves
        x_t = Name("x^{t}", "x(t)") if graves else Name("x_t", "x_t")
        inputs = [g for g in self.d.weight_gradients if g.kind == "input" and g.adjoint != 0]
        terms: list[Math] = [TimesTransposed(self.expr(g.adjoint), "W", self.gate(g.gate)) for g in inputs]
        elementwise = dict(self.d.outputs).get(unit_symbol("d_x"), 0)
        if elementwise != 0:  # the input row x_t read by the equations themselves
            terms.append(self.expr(elementwise))
        lines = [Equation(GradientOf(x_t), Terms(tuple(terms)))]
        for g in self.d.weight_gradients:
            if g.adjoint != 0:
                lines.append(self._gradient(g))
        if self.d.spec.projection:
            _, dh = self.projected()
            h_cell = self.sym(unit_symbol(self.d.spec.output_state))
            lines.append(Equation(GradientOf(Name("W_{p}", "W_p")), Sum(dh, h_cell)))
        lines += [self._block_gradient(self.gate(gate)) for gate in self.d.spec.block_gates]
        return tuple(lines)

    @staticmethod
    def _block_gradient(gate: Name) -> Equation:
        """Column k of θ ∈ {W, R, b} of a gate a memory block shares: the sum of its cells' per-cell gradients."""
        lhs = GradientOf(Name(rf"\theta_{{{gate.latex},k}}", f"θ_{gate.text}[k]"))
        cell = rf"\frac{{\partial L}}{{\partial \theta_{{{gate.latex},j}}}}"
        return Equation(lhs, Name(rf"\sum_{{j \in \mathcal{{B}}_k}} {cell}", f"Σ_(j in B_k) dL/dθ_{gate.text}[j]"))

    def _gradient(self, g: WeightGradient) -> Equation:
        if g.kind == "gate":  # block g.gate of a gate parameter (or of a bias the equations place)
            per_step = self.d.backward.adjoints.rhs_of(g.adjoint) if g.adjoint in self._defined else g.adjoint
            gate = self.gate(g.gate)
            param = Name(_upright(g.param), g.param)
            lhs = GradientOf(Name(f"{param.latex}_{{{gate.latex}}}", f"{param.text}_{gate.text}"))
            return Equation(lhs, Sum(self.expr(per_step)))
        if g.kind == "unit":
            per_step = self.d.backward.adjoints.rhs_of(g.adjoint) if g.adjoint in self._defined else g.adjoint
            return Equation(GradientOf(Name(_sub(g.param), g.param)), Sum(self.expr(per_step)))
        gate = self.gate(g.gate)
        param = Name(r"\beta", "β") if g.kind == "bias" and self.names.graves else Name(g.param, g.param)
        lhs = GradientOf(Name(f"{param.latex}_{{{gate.latex}}}", f"{param.text}_{gate.text}"))
        if g.kind == "bias":
            return Equation(lhs, Sum(self.expr(g.adjoint)))
        h_prev = unit_symbol(f"{self.d.spec.output_state}_prev")
        source = {
            "input": Name("x^{t}", "x(t)") if self.names.graves else Name("x_t", "x[t]"),
            "recurrent": Name(self.names.latex[h_prev], self.names.text[h_prev]),
            "feedback": Name(r"\gamma_{t-1}", "γ[t-1]"),
        }[g.kind]
        if g.kind == "recurrent" and g.gate in dict(self.d.backward.forward.sources):
            source = Name(rf"u_{{{g.gate},t}}", "src_" + g.gate)
        return Equation(lhs, Sum(self.expr(g.adjoint), source))

    def jacobian(self) -> tuple[Equation, ...]:
        return tuple(Equation(self._jacobian_lhs(b), self._jacobian_rhs(b)) for b in self.d.jacobian)

    def _jacobian_lhs(self, b: JacobianBlock) -> Partial:
        target = self.sym(unit_symbol(b.target))
        if b.source == FEEDBACK:
            return Partial(target, Name(r"\gamma_{t-1}", "γ[t-1]"))
        return Partial(target, self.sym(unit_symbol(f"{b.source}_prev")))

    def _jacobian_rhs(self, b: JacobianBlock) -> Terms:
        terms: list[Math] = []
        if b.diagonal != 0:
            terms.append(self.diag(b.diagonal))
        terms += [TimesTransposed(self.diag(c), "R", self.gate(gate)) for gate, c in b.recurrent]
        terms += [
            Through(self.diag(c), self.gate(gate), self._jacobian_rhs(inner)) for gate, c, inner in b.through_sources
        ]
        terms += [TimesTransposed(self.diag(c), "Q", self.gate(gate)) for gate, c in b.feedback]
        return Terms(tuple(terms))

    def analysis(self) -> tuple[Prose, ...]:
        """The 1997 single-unit analysis and what it says of this cell, as prose with inline math."""
        a = self.d.analysis

        def each(values: dict[str, sympy.Expr]) -> list[str | Math]:
            pieces: list[str | Math] = []
            for k, (n, v) in enumerate(values.items()):
                pieces += [", "] * bool(k) + [Plain(v), f" ({n})"]
            return pieces

        factor = Name("f'(net) w", "f'(net)·w")
        paragraphs = [
            [
                "One self-connected unit y(t) = f(w y(t-1)): the local error factor ",
                factor,
                " is ",
                *each(a.factor),
                ", written through the output y.",
            ],
            [
                "The largest f' is ",
                *each(a.max_derivative),
                ", so the error vanishes exponentially when |w| < ",
                *each(a.vanishing_bound),
                " and explodes when |f'(net) w| > 1 on every step.",
            ],
            [
                "Constant error flow, f'(net) w = 1 for every net, forces the linear unit f(net) = ",
                Plain(a.constant_flow_activation),
                "; with w = 1 it is f(net) = ",
                Plain(a.cec_activation),
                ": the constant error carousel.",
            ],
        ]
        carried = self.d.spec.state[-1]
        for b in self.d.jacobian:
            if b.target == carried and b.source == carried and not b.recurrent and not b.through_sources:
                value = sympy.simplify(b.diagonal)
                head: list[str | Math] = [f"{self.d.spec.name}, {self.d.gradient} gradient: ", self._jacobian_lhs(b)]
                if value == 1:
                    paragraphs.append(
                        [
                            *head,
                            " = ",
                            Plain(sympy.Integer(1)),
                            " exactly: the cell meets the constant-error-carousel condition.",
                        ]
                    )
                elif any(other.source == FEEDBACK for other in self.d.jacobian):
                    paragraphs.append(
                        [
                            *head,
                            " = ",
                            self.expr(value),
                            ": the factor of the direct path only. The fed-back gates carry the error on other "
                            "paths too (the blocks of the previous step's gate values above, through Q), so the "
                            "carried error is not this factor alone on every step.",
                        ]
                    )
                else:
                    paragraphs.append(
                        [*head, " = ", self.expr(value), ": the carried error is scaled by this factor on every step."]
                    )
        return tuple(Prose(tuple(p)) for p in paragraphs)

    def notes(self) -> tuple[str, str]:
        forward_note = "Per step t and unit (every product is elementwise)."
        backward_note = "Derived by SymPy; δv is ∂L/∂v, the gradient arriving from step t+1 carries a +."
        if self.names.graves:
            forward_note += (
                " Notation of Graves (2012), §4.5: gate activations b_ι, b_φ, b_ω and their inputs a_ι, a_φ, a_ω;"
                " cell input g(a_c), state s_c, output b_c; peepholes w_cι, w_cφ, w_cω. Kept from lstmgen, which"
                " Graves writes as weights from the input, the cell outputs and a bias unit: the matrices W (input),"
                " R (recurrent, applied to b_c at t-1) and Q (gate feedback) with Graves' gate subscripts, and the"
                " biases β."
            )
            backward_note = (
                "Derived by SymPy; δv is ∂L/∂v: ε_c is the output error ∂L/∂b_c, ε_s the state error ∂L/∂s_c, "
                "δ_ι, δ_φ, δ_ω the gate deltas; ε_s(t)|t+1 is the part of the state error arriving from step t+1."
            )
        if any(a.rhs.has(masked) for a in self.d.backward.adjoints):
            backward_note += (
                " A product with an indicator [·] is 0 where the indicator is 0 (the branch not taken), even where"
                " its other factor is not finite; the kernel computes it as a select."
            )
        return forward_note, backward_note


def build_document(derivation: Derivation, notation: str = "modern") -> Document:
    """The whole derivation as a document: Forward, Backward, Weight gradients, Error flow, the analysis."""
    b = DocumentBuilder(derivation, notation)
    forward_note, backward_note = b.notes()
    weights_note = "The fixed adjoint rules of the matrix products, summed over time and batch."
    if derivation.spec.heads is not None:
        weights_note += (
            " R is block-diagonal (heads of d = H/heads units): each dL/dR_k keeps only its diagonal blocks, head"
            " j's units of h[t-1] against head j's units of the adjoint."
        )
    if derivation.spec.block_gates:
        weights_note += (
            f" Memory blocks (block_size = S): {', '.join(derivation.spec.block_gates)} are shared by the S cells"
            " j of each block B_k = {kS, ..., kS + S - 1}, so column k of each of their matrices W, R and bias b"
            " (theta below) gets the sum over its cells of the per-cell gradients above (the adjoint of one gate"
            " value read by S cell equations); with S = 1 they are the per-cell gradients."
        )
    sections = (
        Section("Forward", forward_note, b.forward()),
        Section("Backward", backward_note, b.backward()),
        Section("Weight gradients", weights_note, b.gradients()),
        Section("Error flow", _jacobian_note(derivation), b.jacobian()),
    )
    spec = derivation.spec
    return Document(spec.name, spec.description, spec.paper, b.names, sections, b.analysis())


def _jacobian_note(derivation: Derivation) -> str:
    note = f"One-step Jacobian of the carried state ({derivation.gradient} gradient)."
    if derivation.spec.projection:
        h = derivation.spec.output_state
        note += (
            f" {h} is projected after its equation ({h}_t is the tilde value times W_p): the blocks below hold for"
            f" the tilde value; those of {h}_t are W_p transposed times them."
        )
    if derivation.backward.forward.scalars:
        note += (
            " Its diagonal part, with the per-row values of the reductions over the units (means, variances) held"
            " constant; the reductions add a coupling between all units of a row (an outer product per sum), not"
            " shown."
        )
    return note


def build_error_flow(derivation: Derivation, notation: str = "modern") -> ErrorFlowReport:
    """Only the error flow: the one-step Jacobian of the carried state and the 1997 analysis."""
    b = DocumentBuilder(derivation, notation)
    title = f"Error flow of {derivation.spec.name} ({derivation.gradient} gradient)"
    note = _jacobian_note(derivation).partition(". ")[2]
    return ErrorFlowReport(title, b.names, b.jacobian(), ((Prose((note,)),) if note else ()) + b.analysis())
