"""Activation functions as SymPy functions whose derivatives are written through their own outputs.

`sigmoid` is a real `sympy.Function` subclass (an undefined ``Function('sigmoid')`` would not dispatch to
printer methods), with ``fdiff`` = σ(1−σ). SymPy's own ``tanh`` already differentiates to 1 − tanh².
Because every derivative is a function of the activation's output, the derived backward equations need only
the values that the forward pass saved, never the pre-activations.
"""

from __future__ import annotations

import sympy


class sigmoid(sympy.Function):  # noqa: N801 - lower case, like sympy.tanh
    """The logistic function σ(x) = 1 / (1 + e^{−x})."""

    nargs = 1

    def fdiff(self, argindex: int = 1) -> sympy.Expr:
        if argindex != 1:
            raise sympy.ArgumentIndexError(self, argindex)
        return self * (1 - self)

    def _eval_rewrite_as_exp(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 1 / (1 + sympy.exp(-arg))

    def _latex(self, printer: sympy.printing.latex.LatexPrinter) -> str:
        return r"\sigma\left(" + printer._print(self.args[0]) + r"\right)"


#: Functions allowed in cell equations: name in the equation text -> callable building the SymPy node.
#: ``identity`` maps to the argument itself so it never appears in the derived expressions.
ACTIVATIONS: dict[str, object] = {
    "sigmoid": sigmoid,
    "tanh": sympy.tanh,
    "identity": lambda arg: arg,
}

#: The SymPy function classes that the code printer must know how to emit.
ACTIVATION_CLASSES: tuple[type[sympy.Function], ...] = (sigmoid, sympy.tanh)
