"""Activation functions as SymPy functions whose derivatives are written through their own outputs.

Each is a real `sympy.Function` subclass (an undefined ``Function('sigmoid')`` would not dispatch to printer
methods) whose ``fdiff`` is a function of the activation's *output*: σ' = σ(1−σ), tanh' = 1 − tanh²,
relu' = [relu > 0]. Because of this, the derived backward equations read only values that the forward pass
saved, never the pre-activations.
"""

from __future__ import annotations

import sympy


def _output_derivative(cls: type[sympy.Function], derivative: object) -> None:
    """Give ``cls`` an fdiff that is ``derivative(output)``."""

    def fdiff(self: sympy.Function, argindex: int = 1) -> sympy.Expr:
        if argindex != 1:
            raise sympy.ArgumentIndexError(self, argindex)
        return derivative(self)

    cls.fdiff = fdiff


class sigmoid(sympy.Function):  # noqa: N801 - lower case, like sympy.tanh
    """The logistic function σ(x) = 1 / (1 + e^{−x}); σ' = σ(1 − σ)."""

    nargs = 1

    def _eval_rewrite_as_exp(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 1 / (1 + sympy.exp(-arg))


class squash_g(sympy.Function):  # noqa: N801
    """Hochreiter & Schmidhuber's input squashing g(x) = 4σ(x) − 2 = 2 tanh(x/2) ∈ [−2, 2]; g' = 1 − g²/4."""

    nargs = 1

    def _eval_rewrite_as_tanh(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return 2 * sympy.tanh(arg / 2)


class squash_h(sympy.Function):  # noqa: N801
    """Hochreiter & Schmidhuber's output squashing h(x) = 2σ(x) − 1 = tanh(x/2) ∈ [−1, 1]; h' = (1 − h²)/2."""

    nargs = 1

    def _eval_rewrite_as_tanh(self, arg: sympy.Expr, **kwargs: object) -> sympy.Expr:
        return sympy.tanh(arg / 2)


class relu(sympy.Function):  # noqa: N801
    """max(x, 0); relu' = [relu(x) > 0] (0 at x = 0, as PyTorch)."""

    nargs = 1


class hard_sigmoid(sympy.Function):  # noqa: N801
    """PyTorch's hardsigmoid: clip(x/6 + 1/2, 0, 1); derivative 1/6 where 0 < output < 1."""

    nargs = 1


class softsign(sympy.Function):  # noqa: N801
    """x / (1 + |x|); softsign' = (1 − |softsign|)²."""

    nargs = 1


class positive(sympy.Function):  # noqa: N801
    """The indicator [y > 0] (used by relu's derivative)."""

    nargs = 1


class inside_unit(sympy.Function):  # noqa: N801
    """The indicator [0 < y < 1] (used by hard_sigmoid's derivative)."""

    nargs = 1


def _latex_as(template: str) -> object:
    """A ``_latex`` method printing the function as ``template`` with ARG standing for the argument."""

    def _latex(self: sympy.Function, printer: sympy.printing.latex.LatexPrinter, exp: str | None = None) -> str:
        tex = template.replace("ARG", printer._print(self.args[0]))
        return rf"\left({tex}\right)^{{{exp}}}" if exp else tex

    return _latex


sigmoid._latex = _latex_as(r"\sigma\left(ARG\right)")
squash_g._latex = _latex_as(r"g_{1997}\left(ARG\right)")
squash_h._latex = _latex_as(r"h_{1997}\left(ARG\right)")
relu._latex = _latex_as(r"\operatorname{relu}\left(ARG\right)")
hard_sigmoid._latex = _latex_as(r"\operatorname{hardsigmoid}\left(ARG\right)")
softsign._latex = _latex_as(r"\operatorname{softsign}\left(ARG\right)")
positive._latex = _latex_as(r"\left[ARG > 0\right]")
inside_unit._latex = _latex_as(r"\left[0 < ARG < 1\right]")

_output_derivative(sigmoid, lambda s: s * (1 - s))
_output_derivative(squash_g, lambda g: 1 - g**2 / 4)
_output_derivative(squash_h, lambda h: (1 - h**2) / 2)
_output_derivative(relu, lambda r: positive(r))
_output_derivative(hard_sigmoid, lambda s: inside_unit(s) / 6)
_output_derivative(softsign, lambda s: (1 - sympy.Abs(s)) ** 2)

#: Functions allowed in cell equations: name in the equation text -> callable building the SymPy node.
#: ``identity`` maps to the argument itself so it never appears in the derived expressions.
ACTIVATIONS: dict[str, object] = {
    "sigmoid": sigmoid,
    "tanh": sympy.tanh,
    "relu": relu,
    "hard_sigmoid": hard_sigmoid,
    "softsign": softsign,
    "squash_g": squash_g,
    "squash_h": squash_h,
    "identity": lambda arg: arg,
}

#: The activation classes that forward equations hoist into their own saved values.
ACTIVATION_CLASSES: tuple[type[sympy.Function], ...] = (
    sigmoid,
    sympy.tanh,
    relu,
    hard_sigmoid,
    softsign,
    squash_g,
    squash_h,
)
