"""Print a :class:`~lstmgen.derivation.Derivation` as LaTeX, GitHub markdown or Unicode text.

Two notations: ``modern`` (i, f, g, o, c, h, W, R, p) and ``graves`` (the notation of Graves' thesis used by
the LSTM literature's BPTT derivations: ι, φ, ω for the gates, s_c for the cell state, ε_c and ε_s for the
output and state errors, δ for the gate deltas, w_cι, w_cφ, w_cω for the peepholes). Names a notation does
not cover (a GRU's r, z, n) print in the modern form.
"""

from __future__ import annotations

import re

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.str import StrPrinter

from lstmgen.derivation import Derivation, WeightGradient
from lstmgen.error_flow import FEEDBACK, JacobianBlock
from lstmgen.forward_equations import unit_symbol
from lstmgen.functions import record_of

FORMATS = ("latex", "markdown", "text")
NOTATIONS = ("modern", "graves")

_GREEK_GATE = {"i": r"\iota", "f": r"\phi", "o": r"\omega", "g": "c"}
_GREEK_TEXT = {"i": "ι", "f": "φ", "o": "ω", "g": "c"}
_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\^{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\~{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
}


def latex_escape(text: str) -> str:
    """User text (a description, a paper title) made safe for LaTeX."""
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def _sub(name: str) -> str:
    """``b_rn`` -> ``b_{rn}``; a multi-letter base is set upright."""
    base, _, rest = name.partition("_")
    base = base if len(base) == 1 else rf"\mathrm{{{base}}}"
    return f"{base}_{{{rest}}}" if rest else base


class _Names:
    """The LaTeX and text name of every symbol of one derivation, in one notation."""

    def __init__(self, derivation: Derivation, notation: str) -> None:
        forward = derivation.backward.forward
        spec = forward.spec
        self.latex: dict[sympy.Symbol, str] = {}
        self.text: dict[sympy.Symbol, str] = {}
        graves = self.graves = notation == "graves" and {"c", "h"} <= set(spec.state)
        gates = [g.name for g in spec.gates]
        #: LaTeX and text subscript of each gate's matrix blocks and bias: Greek in Graves' notation.
        self.gate_latex = {k: _GREEK_GATE[k] if graves and k in _GREEK_GATE else k for k in gates}
        self.gate_text = {k: _GREEK_TEXT[k] if graves and k in _GREEK_TEXT else k for k in gates}
        late = dict(forward.sources)

        def name(sym: sympy.Symbol, latex: str, text: str) -> None:
            self.latex[sym], self.text[sym] = latex, text

        def value(n: str, when: str = "t") -> tuple[str, str]:
            """LaTeX and text of value n at time t (or t-1)."""
            if graves and n in ("c", "h"):
                base, text = ("s_c", "s_c") if n == "c" else ("b_c", "b_c")
                return f"{base}^{{{when}}}", f"{text}({when})"
            if graves and n in _GREEK_GATE and n in gates and n != "g":
                return f"b_{{{_GREEK_GATE[n]}}}^{{{when}}}", f"b_{_GREEK_TEXT[n]}({when})"
            if graves and n == "g" and n in gates:
                return rf"g\left(a_c^{{{when}}}\right)", f"g(a_c({when}))"
            base = n if len(n) == 1 else rf"\mathrm{{{n}}}"
            return f"{base}_{{{when}}}", f"{n}[{when}]"

        def preactivation(k: str) -> tuple[str, str]:
            if graves and k in _GREEK_GATE:
                return f"a_{{{_GREEK_GATE[k]}}}^{{t}}", f"a_{_GREEK_TEXT[k]}(t)"
            return f"a_{{{k},t}}", f"a_{k}[t]"

        for k in gates:
            name(unit_symbol(k), *value(k))
            name(unit_symbol(f"a_{k}"), *preactivation(k))
            gk = _GREEK_GATE[k] if graves and k in _GREEK_GATE else k
            gt = self.gate_text[k]
            x_t = ("x^{t}", "x(t)") if graves else ("x_t", "x[t]")
            name(unit_symbol(f"X_{k}"), f"{x_t[0]} W_{{{gk}}}", f"{x_t[1]}·W_{gt}")
            # Graves writes b for activations, so his notation's biases are β (weights from a bias unit there).
            bias = (rf"\beta_{{{gk}}}", f"β_{gt}") if graves else (f"b_{{{gk}}}", f"b_{k}")
            name(unit_symbol(f"B_{k}"), *bias)
            if k not in late:
                h_prev = value(spec.output_state, "t-1")
                name(unit_symbol(f"hR_{k}"), f"{h_prev[0]} R_{{{gk}}}", f"{h_prev[1]}·R_{gt}")
            name(unit_symbol(f"gQ_{k}"), rf"\gamma_{{t-1}} Q_{{{gk}}}", f"γ[t-1]·Q_{gt}")
        for s in spec.state:
            name(unit_symbol(s), *value(s))
            name(unit_symbol(f"{s}_prev"), *value(s, "t-1"))
        for a in forward.equations:
            if a.role == "intermediate":
                name(a.lhs, *value(str(a.lhs)))
        for p in spec.unit_params:
            gate = p.removeprefix("p_")
            if graves and p.startswith("p_") and gate in _GREEK_GATE:
                name(unit_symbol(p), f"w_{{c{_GREEK_GATE[gate]}}}", f"w_c{_GREEK_TEXT[gate]}")
            else:
                name(unit_symbol(p), _sub(p), p)
        # Mid-step projections show their source: (r_t h_{t-1}) R_n.
        for k, src in late.items():
            gk = _GREEK_GATE[k] if graves and k in _GREEK_GATE else k
            src_latex = sympy.latex(derivation.display[src], symbol_names=self.latex)
            src_text = self.expression_text(derivation.display[src])
            name(unit_symbol(f"hR_{k}"), rf"\left({src_latex}\right) R_{{{gk}}}", f"({src_text})·R_{self.gate_text[k]}")
        # Adjoints: δ of the value's name (ε for Graves' output and state errors).
        for sym in list(self.latex):
            latex, text = self.latex[sym], self.text[sym]
            if str(sym).startswith(("X_", "B_")):
                continue
            delta = unit_symbol(f"d_{sym}")
            if str(sym).startswith(("hR_", "gQ_")):
                k = str(sym).split("_", 1)[1]
                kind = "h R" if str(sym).startswith("hR_") else r"\gamma Q"
                gk = _GREEK_GATE[k] if graves and k in _GREEK_GATE else k
                kind_text = kind.replace(chr(92) + "gamma", "γ")
                when = f"_{self.gate_text[k]}(t)" if graves else f"_{k}[t]"
                latex_when = f"_{{{gk}}}^{{t}}" if graves else f"_{{{gk},t}}"
                name(delta, rf"\delta\left({kind}\right){latex_when}", f"δ({kind_text}){when}")
                continue
            name(delta, rf"\delta {latex}", f"δ{text}")
        for k in gates:
            gk = _GREEK_GATE[k] if graves and k in _GREEK_GATE else k
            if graves:
                delta_xw = rf"\delta\left(x W\right)_{{{gk}}}^{{t}}", f"δ(xW)_{self.gate_text[k]}(t)"
                name(unit_symbol(f"d_xW_{k}"), *delta_xw)
            else:
                name(unit_symbol(f"d_xW_{k}"), rf"\delta\left(x W\right)_{{{gk},t}}", f"δ(xW)_{k}[t]")
            if graves and k in _GREEK_GATE:
                name(unit_symbol(f"d_a_{k}"), f"\\delta_{{{_GREEK_GATE[k]}}}^{{t}}", f"δ_{_GREEK_TEXT[k]}(t)")
        out = spec.output_state
        for s, seed in derivation.backward.seeds:
            if s == out:
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
            name(seed, latex, text)
        if graves:
            name(unit_symbol("d_c"), r"\epsilon_s^{t}", "ε_s(t)")
            name(unit_symbol("d_c_prev"), r"\epsilon_s^{t-1}", "ε_s(t-1)")
            name(unit_symbol("d_h_prev"), r"\epsilon_c^{t-1}", "ε_c(t-1)")

    def expression_text(self, expr: sympy.Expr) -> str:
        return _TextPrinter(self.text).doprint(expr)


class _TextPrinter(StrPrinter):
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
        if exp == 2:
            return self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Pow"]) + "²"
        return super()._print_Pow(expr, rational)

    def _print_Function(self, expr: sympy.Function) -> str:
        return record_of(expr).text_of([self._print(arg) for arg in expr.args])

    _print_Abs = _print_Function
    _print_exp = _print_Function
    _print_log = _print_Function
    _print_sign = _print_Function


def render_derivation(
    derivation: Derivation, fmt: str = "latex", notation: str = "modern", standalone: bool = False
) -> str:
    """The derivation as text.

    Args:
        derivation: from :func:`lstmgen.derivation.build_derivation`.
        fmt: "latex" (``align*`` environments), "markdown" (``math`` blocks that render on GitHub) or "text".
        notation: "modern" or "graves".
        standalone: LaTeX only: a complete document (title, paper, sections Forward, Backward, Error flow).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    if notation not in NOTATIONS:
        raise ValueError(f"notation: expected one of {NOTATIONS}, got {notation!r}")
    if standalone and fmt != "latex":
        raise ValueError("standalone: only the latex format makes a standalone document")
    return _Renderer(derivation, fmt, _Names(derivation, notation)).render(standalone)


class _Renderer:
    def __init__(self, derivation: Derivation, fmt: str, names: _Names) -> None:
        self.d = derivation
        self.fmt = fmt
        self.names = names
        forward = derivation.backward.forward
        # xW_k prints as x_t W_k + b_k: a real sum, so precedence stays right.
        self.expand_xw = {xw: unit_symbol(f"X_{k}") + unit_symbol(f"B_{k}") for k, xw in forward.xW}
        self.show = {**{k: v for k, v in derivation.display.items() if not str(k).startswith("src_")}, **self.expand_xw}
        self._defined = set(derivation.backward.adjoints.targets)

    def expr(self, e: sympy.Expr, breakable: bool = False) -> str:
        """``e`` printed; ``breakable``: LaTeX with a possible line break before each top-level term."""
        e = e.xreplace(self.show)
        if self.fmt == "text":
            return self.names.expression_text(e)
        if not (breakable and isinstance(e, sympy.Add)):
            return sympy.latex(e, symbol_names=self.names.latex)
        printer = LatexPrinter({"symbol_names": self.names.latex})
        pieces = []
        for k, term in enumerate(printer._as_ordered_terms(e)):
            negative = term.could_extract_minus_sign()
            body = printer._print(-term if negative else term)
            pieces.append(("- " if negative else "" if k == 0 else "+ ") + body)
        return _BREAK.join(pieces)

    def diag(self, e: sympy.Expr) -> str:
        """diag(e); in LaTeX a long product opens its largest sum as \\Bigl( \\Bigr), which may break."""
        if self.fmt == "text":
            return f"diag({self.expr(e)})"
        plain = self.expr(e)
        shown = e.xreplace(self.show)
        sums = [f for f in sympy.Mul.make_args(shown) if isinstance(f, sympy.Add)]
        if _glyphs(plain) <= _ROW_GLYPHS // 2 or not sums:
            return rf"\operatorname{{diag}}\left({plain}\right)"
        printer = LatexPrinter({"symbol_names": self.names.latex})
        widest = max(sums, key=lambda f: len(printer._print(f)))
        rest = sympy.Mul(*(f for f in sympy.Mul.make_args(shown) if f is not widest), evaluate=False)
        head = "" if rest == 1 else ("-" if rest == -1 else printer.parenthesize(rest, PRECEDENCE["Mul"]))
        return rf"\operatorname{{diag}}\Bigl({head} \Bigl({self.expr(widest, breakable=True)}\Bigr)\Bigr)"

    @property
    def plus(self) -> str:
        """The top-level + between terms built here: a possible line break in LaTeX."""
        return " + " if self.fmt == "text" else f"{_BREAK}+ "

    def sym(self, s: sympy.Symbol) -> str:
        return self.names.text[s] if self.fmt == "text" else self.names.latex.get(s, sympy.latex(s))

    # ------------------------------------------------------------------------------------------- sections
    def forward_lines(self) -> list[tuple[str, str]]:
        return [(self.sym(a.lhs), self.expr(a.rhs, breakable=True)) for a in self.d.forward if a.role != "source"]

    def backward_lines(self) -> list[tuple[str, str]]:
        lines = []
        for line in self.d.backward_lines():
            terms = [] if line.elementwise == 0 and line.recurrent else [self.expr(line.elementwise, breakable=True)]
            terms += [self._recurrent_product(gate, adjoint) for gate, adjoint in line.recurrent]
            lines.append((self.sym(line.lhs), self.plus.join(terms)))
        return lines

    def _recurrent_product(self, gate: str, adjoint: sympy.Expr) -> str:
        if self.fmt == "text":
            return f"{self.expr(adjoint)}·R_{self.names.gate_text[gate]}ᵀ"
        return rf"{self.expr(adjoint)}\, R_{{{self.names.gate_latex[gate]}}}^{{\top}}"

    def gradient_lines(self) -> list[tuple[str, str]]:
        lines = []
        text = self.fmt == "text"
        x_t = ("x(t)", "x^{t}") if self.names.graves else ("x_t", "x_t")
        lines.append(
            (
                f"dL/d{x_t[0]}" if text else rf"\frac{{\partial L}}{{\partial {x_t[1]}}}",
                self.plus.join(self._matrix_product(g, "W") for g in self._grads("input")),
            )
        )
        for g in self.d.weight_gradients:
            if g.adjoint == 0:
                continue
            if g.kind == "unit":
                per_step = self.d.backward.adjoints.rhs_of(g.adjoint) if g.adjoint in self._defined else g.adjoint
                lhs = f"dL/d{g.param}" if text else rf"\frac{{\partial L}}{{\partial {_sub(g.param)}}}"
                rhs = (
                    f"Σ_t,batch {self.expr(per_step)}"
                    if text
                    else rf"\sum_{{t,\,\mathrm{{batch}}}} {self.expr(per_step)}"
                )
            else:
                h_prev = unit_symbol(f"{self.d.spec.output_state}_prev")
                source = {
                    "input": ("x^{t}", "x(t)") if self.names.graves else ("x_t", "x[t]"),
                    "recurrent": (self.names.latex[h_prev], self.names.text[h_prev]),
                    "feedback": (r"\gamma_{t-1}", "γ[t-1]"),
                    "bias": (None, None),
                }[g.kind]
                param = g.param
                if g.kind == "bias" and self.names.graves:
                    param = "β" if text else r"\beta"
                gate = self.names.gate_text[g.gate] if text else self.names.gate_latex[g.gate]
                lhs = f"dL/d{param}_{gate}" if text else rf"\frac{{\partial L}}{{\partial {param}_{{{gate}}}}}"
                if g.kind == "bias":
                    rhs = (
                        f"Σ_t,batch {self.expr(g.adjoint)}"
                        if text
                        else rf"\sum_{{t,\,\mathrm{{batch}}}} {self.expr(g.adjoint)}"
                    )
                else:
                    src = source[1] if text else source[0]
                    if g.kind == "recurrent" and g.gate in dict(self.d.backward.forward.sources):
                        src = "src_" + g.gate if text else rf"u_{{{g.gate},t}}"
                    rhs = (
                        f"Σ_t {src}ᵀ·{self.expr(g.adjoint)}"
                        if text
                        else rf"\sum_t {{{src}}}^{{\top}} {self.expr(g.adjoint)}"
                    )
            lines.append((lhs, rhs))
        return lines

    def _grads(self, kind: str) -> list[WeightGradient]:
        return [g for g in self.d.weight_gradients if g.kind == kind and g.adjoint != 0]

    def _matrix_product(self, g: WeightGradient, matrix: str) -> str:
        if self.fmt == "text":
            return f"{self.expr(g.adjoint)}·{matrix}_{self.names.gate_text[g.gate]}ᵀ"
        return rf"{self.expr(g.adjoint)}\, {matrix}_{{{self.names.gate_latex[g.gate]}}}^{{\top}}"

    def jacobian_lines(self) -> list[tuple[str, str]]:
        return [(self._jacobian_lhs(b), self._jacobian_rhs(b)) for b in self.d.jacobian]

    def _jacobian_lhs(self, b: JacobianBlock) -> str:
        target = self.sym(unit_symbol(b.target))
        if b.source == FEEDBACK:
            source = "γ[t-1]" if self.fmt == "text" else r"\gamma_{t-1}"
        else:
            source = self.sym(unit_symbol(f"{b.source}_prev"))
        return f"∂{target}/∂{source}" if self.fmt == "text" else rf"\frac{{\partial {target}}}{{\partial {source}}}"

    def _jacobian_rhs(self, b: JacobianBlock) -> str:
        text = self.fmt == "text"
        terms = []
        if b.diagonal != 0:
            terms.append(self.diag(b.diagonal))
        for gate, coefficient in b.recurrent:
            terms.append(self._times_transposed(coefficient, "R", gate))
        for gate, coefficient, inner in b.through_sources:
            inner_rhs = self._jacobian_rhs(inner).replace(_BREAK, " ")  # no break inside \left( \right)
            terms.append(
                f"{self.diag(coefficient)}·R_{self.names.gate_text[gate]}ᵀ·({inner_rhs})"
                if text
                else rf"{self.diag(coefficient)} R_{{{self.names.gate_latex[gate]}}}^{{\top}}\left({inner_rhs}\right)"
            )
        for gate, coefficient in b.feedback:
            terms.append(self._times_transposed(coefficient, "Q", gate))
        return self.plus.join(terms) or "0"

    def _times_transposed(self, coefficient: sympy.Expr, matrix: str, gate: str) -> str:
        """diag(coefficient) M_gateᵀ."""
        if self.fmt == "text":
            return f"{self.diag(coefficient)}·{matrix}_{self.names.gate_text[gate]}ᵀ"
        return rf"{self.diag(coefficient)} {matrix}_{{{self.names.gate_latex[gate]}}}^{{\top}}"

    def analysis_lines(self) -> list[str]:
        """The 1997 single-unit analysis and what it says of this cell, as prose with inline math."""
        a = self.d.analysis
        text = self.fmt == "text"

        def m(x: sympy.Expr | str) -> str:
            """Inline math: an expression (or a math string) in the output format."""
            if isinstance(x, str):
                return x if text else f"${x}$"
            return str(x).replace("**", "^").replace("*", "·") if text else f"${sympy.latex(x)}$"

        def prose(words: str) -> str:
            return words if text else latex_escape(words) if self.fmt == "latex" else words

        def each(values: dict[str, sympy.Expr]) -> str:
            return ", ".join(f"{m(v)} ({n})" for n, v in values.items())

        factor = "f'(net) w" if not text else "f'(net)·w"
        lines = [
            prose("One self-connected unit y(t) = f(w y(t-1)): the local error factor ")
            + m(factor)
            + prose(" is ")
            + each(a.factor)
            + prose(", written through the output y."),
            prose("The largest f' is ")
            + each(a.max_derivative)
            + prose(", so the error vanishes exponentially when |w| < ")
            + each(a.vanishing_bound)
            + prose(" and explodes when |f'(net) w| > 1 on every step."),
            prose("Constant error flow, f'(net) w = 1 for every net, forces the linear unit f(net) = ")
            + m(a.constant_flow_activation)
            + prose("; with w = 1 it is f(net) = ")
            + m(a.cec_activation)
            + prose(": the constant error carousel."),
        ]
        carried = self.d.spec.state[-1]
        for b in self.d.jacobian:
            if b.target == carried and b.source == carried and not b.recurrent and not b.through_sources:
                value = sympy.simplify(b.diagonal)
                jac = m(self._jacobian_lhs(b)) if not text else self._jacobian_lhs(b)
                head = prose(f"{self.d.spec.name}, {self.d.gradient} gradient: ") + jac + " = "
                if value == 1:
                    lines.append(
                        head
                        + m(sympy.Integer(1))
                        + prose(" exactly: the cell meets the constant-error-carousel condition.")
                    )
                elif any(other.source == FEEDBACK for other in self.d.jacobian):
                    lines.append(
                        head
                        + (self.expr(value) if text else f"${self.expr(value)}$")
                        + prose(
                            ": the factor of the direct path only. The fed-back gates carry the error on other "
                            "paths too (the blocks of the previous step's gate values above, through Q), so the "
                            "carried error is not this factor alone on every step."
                        )
                    )
                else:
                    lines.append(
                        head
                        + (self.expr(value) if text else f"${self.expr(value)}$")
                        + prose(": the carried error is scaled by this factor on every step.")
                    )
        return lines

    # ------------------------------------------------------------------------------------------- layout
    def render(self, standalone: bool) -> str:
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
        sections = [
            ("Forward", forward_note, self.forward_lines()),
            ("Backward", backward_note, self.backward_lines()),
            (
                "Weight gradients",
                "The fixed adjoint rules of the matrix products, summed over time and batch.",
                self.gradient_lines(),
            ),
            (
                "Error flow",
                f"One-step Jacobian of the carried state ({self.d.gradient} gradient).",
                self.jacobian_lines(),
            ),
        ]
        spec = self.d.spec
        if self.fmt == "text":
            out = [f"{spec.name}: {spec.description}", spec.paper, ""]
            for title, note, lines in sections:
                out += [title, "-" * len(title), note] + [f"  {lhs} = {rhs}" for lhs, rhs in lines] + [""]
            out += self.analysis_lines()
            return "\n".join(out) + "\n"
        if self.fmt == "markdown":
            out = [f"# {spec.name}", "", f"{spec.description}. {spec.paper}.", ""]
            for title, note, lines in sections:
                out += [f"## {title}", "", note, ""]
                out += _markdown_math(lines)
            out += [_markdown_prose(line) for line in self.analysis_lines()]
            return "\n".join(out) + "\n"
        body = []
        for title, note, lines in sections:
            heading = rf"\section*{{{title}}}" if standalone else f"% {title}"
            body += [heading, _latex_prose(note), *_latex_align(lines), ""]
        body += [line + "\n" for line in self.analysis_lines()]
        if not standalone:
            return "\n".join(body) + "\n"
        return (
            "\n".join(
                [
                    r"\documentclass[10pt]{article}",
                    r"\usepackage[margin=2cm]{geometry}",
                    r"\usepackage{amsmath,amssymb}",
                    r"\allowdisplaybreaks",
                    rf"\title{{{latex_escape(spec.name)}: {latex_escape(spec.description)}}}",
                    rf"\author{{\parbox{{0.9\textwidth}}{{\centering {latex_escape(spec.paper)}}}}}",  # wraps
                    r"\date{Derived by lstmgen}",
                    r"\begin{document}",
                    r"\maketitle",
                    *body,
                    r"\end{document}",
                ]
            )
            + "\n"
        )


#: Marks a possible line break before a top-level term of a LaTeX right-hand side (never printed).
_BREAK = "\x1f"
#: Width of one row of an align* in the standalone document (2 cm margins, 10 pt), in estimated glyphs.
_ROW_GLYPHS = 80


def _glyphs(latex: str) -> int:
    """A rough width of LaTeX math in glyphs: a command is one glyph, braces, scripts and spacing none."""
    latex = re.sub(r"\\(?:left|right)\b", "", latex)
    latex = re.sub(r"\\operatorname\{(\w+)\}", r"\1", latex)
    latex = re.sub(r"\\[A-Za-z]+", "x", latex)
    return len(re.sub(r"[{}^_\s\\,]", "", latex))


def _latex_rows(lhs: str, rhs: str) -> list[str]:
    """One equation as rows of an align*: the terms of ``rhs`` packed into rows that fit the page."""
    rows: list[list[str]] = [[]]
    budget, used = _ROW_GLYPHS - _glyphs(lhs), 0
    for piece in rhs.split(_BREAK):
        width = _glyphs(piece)
        if rows[-1] and used + width > budget:
            rows.append([])
            budget, used = _ROW_GLYPHS - 4, 0  # continuation rows start after a \quad
        rows[-1].append(piece)
        used += width
    first, *rest = (" ".join(row) for row in rows)
    return [f"  {lhs} &= {first}", *(rf"  &\quad {row}" for row in rest)]


def _latex_align(lines: list[tuple[str, str]]) -> list[str]:
    """Equations as one align* environment, long ones broken between terms."""
    rows = [row for lhs, rhs in lines for row in _latex_rows(lhs, rhs)]
    return [r"\begin{align*}", *(rf"{row} \\" for row in rows[:-1]), *rows[-1:], r"\end{align*}"]


def _markdown_math(lines: list[tuple[str, str]]) -> list[str]:
    """Equations as GitHub math blocks (no line breaks: the page scrolls)."""
    out = []
    for lhs, rhs in lines:
        out += ["```math", f"{lhs} = {rhs.replace(_BREAK, ' ')}", "```", ""]
    return out


def _latex_prose(line: str) -> str:
    """A note with a few math symbols, made valid LaTeX text."""
    line = latex_escape(line)
    for plain, latex in _PROSE_SYMBOLS:
        line = line.replace(plain, latex)
    return line


#: Math symbols that notes use in prose, as LaTeX (pdflatex has no Greek text glyphs).
_PROSE_SYMBOLS = (
    ("∂", r"$\partial$"),
    ("δ", r"$\delta$"),
    ("ε", r"$\epsilon$"),
    ("ι", r"$\iota$"),
    ("φ", r"$\phi$"),
    ("ω", r"$\omega$"),
    ("β", r"$\beta$"),
    ("γ", r"$\gamma$"),
    ("§", r"\S{}"),
)


def _markdown_prose(line: str) -> str:
    return line + "\n"


def render_error_flow(derivation: Derivation, fmt: str = "text", notation: str = "modern") -> str:
    """Only the error-flow part: the one-step Jacobian of the carried state and the 1997 analysis."""
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    renderer = _Renderer(derivation, fmt, _Names(derivation, notation))
    title = f"Error flow of {derivation.spec.name} ({derivation.gradient} gradient)"
    lines = renderer.jacobian_lines()
    if fmt == "text":
        return (
            "\n".join([title, "", *(f"  {lhs} = {rhs}" for lhs, rhs in lines), "", *renderer.analysis_lines()]) + "\n"
        )
    if fmt == "markdown":
        return "\n".join([f"## {title}", "", *_markdown_math(lines), *renderer.analysis_lines()]) + "\n"
    return "\n".join([f"% {title}", *_latex_align(lines), "", *renderer.analysis_lines()]) + "\n"
