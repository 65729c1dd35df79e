"""Stage 5a — SymPy expressions → Python source for the Numba kernels.

A printer class for one target, in the manner of ``sympy.printing.numpy``: every numeric literal is wrapped
in the kernel's float type ``real`` (float32 kernels must not promote to float64 through a Python float),
integer powers become products, the activations become calls of the module's numerically stable helpers, and
anything the kernels cannot express raises instead of printing something approximate.
"""

from __future__ import annotations

import sympy
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.str import StrPrinter

from lstmgen import activations as act

#: Helper name in the generated module for each function class (the template defines each helper).
HELPERS: dict[type[sympy.Function], str] = {
    act.sigmoid: "_sigmoid",
    sympy.tanh: "_tanh",
    act.relu: "_relu",
    act.hard_sigmoid: "_hard_sigmoid",
    act.softsign: "_softsign",
    act.squash_g: "_squash_g",
    act.squash_h: "_squash_h",
    act.positive: "_positive",
    act.inside_unit: "_inside_unit",
}

#: Name of the kernel's float type constructor (x.dtype.type), used for every literal.
REAL = "real"


class NumbaPrinter(PythonCodePrinter):
    """Print cell expressions as dtype-generic Numba code.

    ``helpers_used`` collects the activation helpers a module needs, so the module defines only those.
    """

    printmethod = "_numbacode"

    def __init__(self) -> None:
        super().__init__({"strict": True, "fully_qualified_modules": False})
        self.helpers_used: set[str] = set()

    # The sign goes outside the cast so that sums print as "a - real(1)", not "a + real(-1)".
    def _print_Integer(self, expr: sympy.Integer) -> str:
        return f"-{REAL}({-int(expr)})" if expr < 0 else f"{REAL}({int(expr)})"

    def _print_Rational(self, expr: sympy.Rational) -> str:
        return f"-{REAL}({float(-expr)!r})" if expr < 0 else f"{REAL}({float(expr)!r})"

    _print_Float = _print_Rational

    _print_One = _print_Integer
    _print_NegativeOne = _print_Integer
    _print_Zero = _print_Integer
    _print_Half = _print_Rational

    def _print_Pow(self, expr: sympy.Pow, rational: bool = False) -> str:
        base, exp = expr.args
        if not (exp.is_Integer and exp != 0):
            raise ValueError(f"cannot print {expr}: only integer powers occur in cell equations")
        n = abs(int(exp))
        factor = self.parenthesize(base, sympy.printing.precedence.PRECEDENCE["Mul"])
        product = "*".join([factor] * n)
        if exp < 0:
            return f"{REAL}(1)/({product})" if n > 1 else f"{REAL}(1)/{factor}"
        return f"({product})" if n > 1 else product

    def _print_Function(self, expr: sympy.Function) -> str:
        helper = HELPERS.get(type(expr))
        if helper is None:
            raise ValueError(f"no Numba helper for function {type(expr).__name__}")
        self.helpers_used.add(helper)
        return f"{helper}({self._print(expr.args[0])}, {REAL})"

    _print_tanh = _print_Function  # PythonCodePrinter maps tanh to math.tanh: use the module's helper

    def _print_Abs(self, expr: sympy.Abs) -> str:
        return f"abs({self._print(expr.args[0])})"


class EquationTextPrinter(StrPrinter):
    """Plain-text equations for comments and docstrings: ``1 - tanh_c**2``, ``sigmoid(a_i)``."""

    def __init__(self) -> None:
        super().__init__({"order": "none"})


def print_text(expr: sympy.Expr) -> str:
    """An expression as readable text (used in the generated module's comments and docstring)."""
    return EquationTextPrinter().doprint(expr)
