"""Print a derivation document (:mod:`lstmgen.analysis.derivation_document`) as LaTeX, GitHub markdown or Unicode text.

One printer per format, each a method per node of the document. LaTeX and Markdown share the math (Markdown
is LaTeX math in GitHub ``math`` blocks); the text printer writes one-line Unicode equations.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import sympy
from sympy.printing.latex import LatexPrinter as SympyLatexPrinter
from sympy.printing.precedence import PRECEDENCE

from lstmgen.analysis.derivation_document import (
    NOTATIONS,
    Diag,
    Document,
    Equation,
    ErrorFlowReport,
    Expr,
    GradientOf,
    Math,
    Name,
    Names,
    Partial,
    Plain,
    Prose,
    Sum,
    Terms,
    Through,
    TimesTransposed,
    build_document,
    build_error_flow,
)
from lstmgen.functions import masked, sum_units

if TYPE_CHECKING:  # the derivation imports this printer (notebook display): types only, no import back
    from lstmgen.analysis.derivation import Derivation

FORMATS = ("latex", "markdown", "text")
__all__ = ["FORMATS", "NOTATIONS", "latex_escape", "printer_for", "render_derivation", "render_error_flow"]

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


class TextPrinter:
    """Unicode text: one line per equation."""

    def __init__(self, names: Names) -> None:
        self.names = names

    def math(self, node: Math) -> str:
        return getattr(self, f"_print_{type(node).__name__}")(node)

    def _print_Name(self, node: Name) -> str:
        return node.text

    def _print_Expr(self, node: Expr) -> str:
        return self.names.expression_text(node.value)

    def _print_Plain(self, node: Plain) -> str:
        return str(node.value).replace("**", "^").replace("*", "·")

    def _print_Diag(self, node: Diag) -> str:
        return f"diag({self.names.expression_text(node.value)})"

    def _print_TimesTransposed(self, node: TimesTransposed) -> str:
        return f"{self.math(node.coefficient)}·{node.matrix}_{node.gate.text}ᵀ"

    def _print_Through(self, node: Through) -> str:
        return f"{self.math(node.coefficient)}·R_{node.gate.text}ᵀ·({self.math(node.inner)})"

    def _print_Terms(self, node: Terms) -> str:
        return " + ".join(self.math(t) for t in node.terms) or "0"

    def _print_Partial(self, node: Partial) -> str:
        return f"∂{node.target.text}/∂{node.source.text}"

    def _print_GradientOf(self, node: GradientOf) -> str:
        return f"dL/d{node.name.text}"

    def _print_Sum(self, node: Sum) -> str:
        if node.source is None:
            return f"Σ_t,batch {self.math(node.body)}"
        return f"Σ_t {node.source.text}ᵀ·{self.math(node.body)}"

    def inline(self, node: Math) -> str:
        return self.math(node)

    def words(self, text: str) -> str:
        return text

    def prose(self, paragraph: Prose) -> str:
        return "".join(self.words(p) if isinstance(p, str) else self.inline(p) for p in paragraph.pieces)

    def equations(self, equations: tuple[Equation, ...]) -> list[str]:
        return [f"  {self.math(e.lhs)} = {self.math(e.rhs)}" for e in equations]

    def document(self, doc: Document, standalone: bool = False) -> str:
        out = [f"{doc.name}: {doc.description}", doc.paper, ""]
        for section in doc.sections:
            title = section.title
            out += [title, "-" * len(title), section.note, *self.equations(section.equations), ""]
        out += [self.prose(p) for p in doc.analysis]
        return "\n".join(out) + "\n"

    def error_flow(self, report: ErrorFlowReport) -> str:
        lines = [report.title, "", *self.equations(report.equations), "", *(self.prose(p) for p in report.analysis)]
        return "\n".join(lines) + "\n"


class LatexPrinter(TextPrinter):
    """LaTeX: ``align*`` environments whose long rows break between terms; a standalone document."""

    def _print_Name(self, node: Name) -> str:
        return node.latex

    def _print_Expr(self, node: Expr) -> str:
        e = node.value
        if node.breakable and isinstance(e, sum_units) and isinstance(e.args[0], sympy.Add):
            # A long sum over the units breaks between the terms it sums (\Bigl( \Bigr) need no pairing).
            inner = self._print_Expr(Expr(e.args[0], breakable=True))
            return rf"\sum_{{j}} \Bigl({inner}\Bigr)_{{j}}"
        if node.breakable and isinstance(e, masked):
            return self._masked(e)
        if not (node.breakable and isinstance(e, sympy.Add)):
            return sympy.latex(e, symbol_names=self.names.latex)
        return self._breakable_terms(e)

    def _breakable_terms(self, e: sympy.Expr) -> str:
        """The terms of ``e`` (one, where it is not a sum) with a possible break before each; a product too long
        for a row also breaks between its factors."""
        printer = SympyLatexPrinter({"symbol_names": self.names.latex})
        pieces = []
        terms = printer._as_ordered_terms(e) if isinstance(e, sympy.Add) else [e]
        for k, term in enumerate(terms):
            negative = term.could_extract_minus_sign()
            term = -term if negative else term
            body = printer._print(term)
            factors = sympy.Mul.make_args(term)
            if isinstance(term, masked):
                body = self._masked(term)
            elif _glyphs(body) > _ROW_GLYPHS - 8 and any(isinstance(f, sympy.Add) for f in factors):
                # A product too long for a row breaks between its factors (each in its own parentheses).
                simple = sympy.Mul(*(f for f in factors if not isinstance(f, sympy.Add)))
                printed = [] if simple == 1 else [printer.parenthesize(simple, PRECEDENCE["Mul"])]
                printed += [self._factor(printer, f) for f in factors if isinstance(f, sympy.Add)]
                body = f"{_BREAK}\\cdot ".join(printed)
            pieces.append(("- " if negative else "" if k == 0 else "+ ") + body)
        return _BREAK.join(pieces)

    def _factor(self, printer: SympyLatexPrinter, factor: sympy.Add) -> str:
        r"""A sum that is a factor of a long product: in parentheses, and itself broken between its terms where it
        is too long for a row (\Bigl( \Bigr) need no pairing on one row)."""
        plain = printer.parenthesize(factor, PRECEDENCE["Mul"])
        return plain if _glyphs(plain) <= _ROW_GLYPHS - 8 else rf"\Bigl({self._breakable_terms(factor)}\Bigr)"

    def _masked(self, e: masked) -> str:
        r"""masked(m, rest): the indicator, then the rest; where it is too long for a row, the rest in \Bigl( \Bigr)
        broken between its terms (or factors), like a sum over the units."""
        plain = sympy.latex(e, symbol_names=self.names.latex)
        if _glyphs(plain) <= _ROW_GLYPHS - 8:
            return plain
        mask = sympy.latex(e.args[0], symbol_names=self.names.latex)
        return rf"{mask}{_BREAK}\cdot \Bigl({self._breakable_terms(e.args[1])}\Bigr)"

    def _print_Plain(self, node: Plain) -> str:
        return sympy.latex(node.value)

    def _print_Diag(self, node: Diag) -> str:
        """diag(e); a long product opens its largest sum as \\Bigl( \\Bigr), which may break."""
        shown = node.value
        plain = sympy.latex(shown, symbol_names=self.names.latex)
        sums = [f for f in sympy.Mul.make_args(shown) if isinstance(f, sympy.Add)]
        if _glyphs(plain) > _ROW_GLYPHS // 2 and isinstance(shown, masked):
            return rf"\operatorname{{diag}}\Bigl({self._masked(shown)}\Bigr)"
        if _glyphs(plain) <= _ROW_GLYPHS // 2 or not sums:
            return rf"\operatorname{{diag}}\left({plain}\right)"
        printer = SympyLatexPrinter({"symbol_names": self.names.latex})
        widest = max(sums, key=lambda f: len(printer._print(f)))
        rest = sympy.Mul(*(f for f in sympy.Mul.make_args(shown) if f is not widest), evaluate=False)
        head = "" if rest == 1 else ("-" if rest == -1 else printer.parenthesize(rest, PRECEDENCE["Mul"]))
        inner = self._print_Expr(Expr(widest, breakable=True))
        return rf"\operatorname{{diag}}\Bigl({head} \Bigl({inner}\Bigr)\Bigr)"

    def _print_TimesTransposed(self, node: TimesTransposed) -> str:
        space = " " if isinstance(node.coefficient, Diag) else r"\, "
        return rf"{self.math(node.coefficient)}{space}{node.matrix}_{{{node.gate.latex}}}^{{\top}}"

    def _print_Through(self, node: Through) -> str:
        inner = self.math(node.inner).replace(_BREAK, " ")  # no break inside \left( \right)
        return rf"{self.math(node.coefficient)} R_{{{node.gate.latex}}}^{{\top}}\left({inner}\right)"

    def _print_Terms(self, node: Terms) -> str:
        return f"{_BREAK}+ ".join(self.math(t) for t in node.terms) or "0"

    def _print_Partial(self, node: Partial) -> str:
        return rf"\frac{{\partial {node.target.latex}}}{{\partial {node.source.latex}}}"

    def _print_GradientOf(self, node: GradientOf) -> str:
        return rf"\frac{{\partial L}}{{\partial {node.name.latex}}}"

    def _print_Sum(self, node: Sum) -> str:
        if node.source is None:
            return rf"\sum_{{t,\,\mathrm{{batch}}}} {self.math(node.body)}"
        return rf"\sum_t {{{node.source.latex}}}^{{\top}} {self.math(node.body)}"

    def inline(self, node: Math) -> str:
        return f"${self.math(node)}$"

    def words(self, text: str) -> str:
        return latex_escape(text)

    def equations(self, equations: tuple[Equation, ...]) -> list[str]:
        return _latex_align([(self.math(e.lhs), self.math(e.rhs)) for e in equations])

    def document(self, doc: Document, standalone: bool = False) -> str:
        body = []
        for section in doc.sections:
            heading = rf"\section*{{{section.title}}}" if standalone else f"% {section.title}"
            body += [heading, _latex_prose(section.note), *self.equations(section.equations), ""]
        body += [self.prose(p) + "\n" for p in doc.analysis]
        if not standalone:
            return "\n".join(body) + "\n"
        preamble = [
            r"\documentclass[10pt]{article}",
            r"\usepackage[margin=2cm]{geometry}",
            r"\usepackage{amsmath,amssymb}",
            r"\allowdisplaybreaks",
            rf"\title{{{latex_escape(doc.name)}: {latex_escape(doc.description)}}}",
            rf"\author{{\parbox{{0.9\textwidth}}{{\centering {latex_escape(doc.paper)}}}}}",  # wraps
            r"\date{Derived by lstmgen}",
            r"\begin{document}",
            r"\maketitle",
        ]
        return "\n".join([*preamble, *body, r"\end{document}"]) + "\n"

    def error_flow(self, report: ErrorFlowReport) -> str:
        lines = [f"% {report.title}", *self.equations(report.equations), "", *(self.prose(p) for p in report.analysis)]
        return "\n".join(lines) + "\n"


class MarkdownPrinter(LatexPrinter):
    """GitHub markdown: LaTeX math in ``math`` blocks (no line breaks: the page scrolls), prose as is."""

    def words(self, text: str) -> str:
        return text

    def equations(self, equations: tuple[Equation, ...]) -> list[str]:
        out = []
        for e in equations:
            out += ["```math", f"{self.math(e.lhs)} = {self.math(e.rhs).replace(_BREAK, ' ')}", "```", ""]
        return out

    def document(self, doc: Document, standalone: bool = False) -> str:
        out = [f"# {doc.name}", "", f"{doc.description}. {doc.paper}.", ""]
        for section in doc.sections:
            out += [f"## {section.title}", "", section.note, "", *self.equations(section.equations)]
        out += [self.prose(p) + "\n" for p in doc.analysis]
        return "\n".join(out) + "\n"

    def error_flow(self, report: ErrorFlowReport) -> str:
        lines = [f"## {report.title}", "", *self.equations(report.equations), *(self.prose(p) for p in report.analysis)]
        return "\n".join(lines) + "\n"


class NotebookMarkdownPrinter(MarkdownPrinter):
    """Markdown for Jupyter: display math between ``$$`` (notebooks do not render GitHub's math fences)."""

    def equations(self, equations: tuple[Equation, ...]) -> list[str]:
        out = []
        for e in equations:
            out += [f"$${self.math(e.lhs)} = {self.math(e.rhs).replace(_BREAK, ' ')}$$", ""]
        return out


_PRINTERS = {"latex": LatexPrinter, "markdown": MarkdownPrinter, "text": TextPrinter}


def printer_for(fmt: str, names: Names) -> TextPrinter:
    """The printer of one format for a document's names."""
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    return _PRINTERS[fmt](names)


def render_derivation(
    derivation: Derivation, fmt: str = "latex", notation: str = "modern", standalone: bool = False
) -> str:
    """The derivation as text.

    Args:
        derivation: from :func:`lstmgen.analysis.derivation.build_derivation`.
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
    doc = build_document(derivation, notation)
    return printer_for(fmt, doc.names).document(doc, standalone)


def render_error_flow(derivation: Derivation, fmt: str = "text", notation: str = "modern") -> str:
    """Only the error-flow part: the one-step Jacobian of the carried state and the 1997 analysis."""
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {FORMATS}, got {fmt!r}")
    report = build_error_flow(derivation, notation)
    return printer_for(fmt, report.names).error_flow(report)


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


def notebook_latex(derivation: Derivation, notation: str = "modern") -> str:
    """The equations of every section as ``align*`` environments, each headed by its title (for MathJax)."""
    doc = build_document(derivation, notation)
    printer = LatexPrinter(doc.names)
    out = []
    for section in doc.sections:
        align = _latex_align([(printer.math(e.lhs), printer.math(e.rhs)) for e in section.equations])
        out += [align[0], rf"  &\text{{{section.title}}} \\", *align[1:]]
    return "\n".join(out) + "\n"


def notebook_markdown(derivation: Derivation, notation: str = "modern") -> str:
    """The whole document as notebook markdown."""
    doc = build_document(derivation, notation)
    return NotebookMarkdownPrinter(doc.names).document(doc)
