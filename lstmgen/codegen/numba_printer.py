"""Stage 5a — SymPy expressions → Python source for the Numba kernels.

A printer class for one target, in the manner of ``sympy.printing.numpy``: every numeric literal is wrapped
in the kernel's float type ``real`` (float32 kernels must not promote to float64 through a Python float),
integer powers become products, every function becomes a call of the helper its record in
:mod:`lstmgen.functions` names (the table becomes printer methods, as ``sympy.printing.numpy`` does), and
anything the kernels cannot express raises, naming it, instead of printing something approximate.
"""

from __future__ import annotations

import sympy
from sympy.printing.pycode import PythonCodePrinter
from sympy.printing.str import StrPrinter

from lstmgen.functions import FUNCTIONS, UNITS, record_of

#: Name of the kernel's float type constructor (x.dtype.type), used for every literal.
REAL = "real"


class NumbaPrinter(PythonCodePrinter):
    """Print cell expressions as dtype-generic Numba code.

    ``helpers_used`` collects the helpers a module calls, so the module defines only those (and what they call).
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

    def _print_Symbol(self, expr: sympy.Symbol) -> str:
        # The number of units a reduction runs over is the kernel's hidden size, as a float of its dtype.
        return f"{REAL}(hidden)" if expr == UNITS else super()._print_Symbol(expr)

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
        record = record_of(expr)
        args = ", ".join(self._print(arg) for arg in expr.args)
        if record.builtin:
            return f"{record.builtin}({args})"
        if not record.helper:
            raise ValueError(f"function {record.name}: the Numba target has no helper for it")
        self.helpers_used.add(record.helper)
        return f"{record.helper}({args}, {REAL})"


# PythonCodePrinter prints many functions by name (math.tanh, math.exp, a sign expression...): every function of
# the table goes through _print_Function instead, so every call is the helper its record names.
for _record in FUNCTIONS:
    if _record.cls is not None:
        setattr(NumbaPrinter, f"_print_{_record.cls.__name__}", NumbaPrinter._print_Function)


class EquationTextPrinter(StrPrinter):
    """Plain-text equations for comments and docstrings: ``1 - tanh_c**2``, ``sigmoid(a_i)``."""

    def __init__(self) -> None:
        super().__init__({"order": "none"})

    def _print_Function(self, expr: sympy.Function) -> str:
        """Every function of the table by its name in the equations: ``max(a, b)``, not ``maximum(a, b)``."""
        return f"{record_of(expr).name}({', '.join(self._print(arg) for arg in expr.args)})"


for _record in FUNCTIONS:
    if _record.cls is not None:
        setattr(EquationTextPrinter, f"_print_{_record.cls.__name__}", EquationTextPrinter._print_Function)


def print_text(expr: sympy.Expr) -> str:
    """An expression as readable text (used in the generated module's comments and docstring)."""
    return EquationTextPrinter().doprint(expr)
