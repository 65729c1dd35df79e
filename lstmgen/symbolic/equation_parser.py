"""Safe parsing of equation text into SymPy, against an explicit vocabulary.

The text is parsed by Python's ``ast`` (parsing never executes anything) and then walked node by node:
only numbers, the four arithmetic operators, unary signs, names from the vocabulary and calls of the
functions and reductions (``mean``, ``var``, ``layer_norm`` over the units) of :mod:`lstmgen.functions` with their
number of arguments are accepted. Anything else (attribute
access, subscripts, keywords, strings, ``**``, lambdas, unknown names) is refused with a message naming the
field. No user text reaches ``eval``.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Mapping

import sympy

from lstmgen.functions import FLOAT32_MAX, REDUCTIONS, VOCABULARY
from lstmgen.spec import SpecError

MAX_EQUATION_LENGTH = 2000

_BINARY = {
    ast.Add: lambda a, b: a + b,
    ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b,
}


def parse_expression(text: object, names: Mapping[str, sympy.Symbol], where: str) -> sympy.Expr:
    """Parse ``text`` into a SymPy expression over the symbols in ``names``.

    Args:
        text: the right-hand side of one equation, e.g. ``"f*c_prev + i*g"``.
        names: the vocabulary visible to this equation: name -> symbol.
        where: the field being parsed, used in error messages (e.g. ``"equations[0] (c)"``).

    Raises:
        SpecError: the text is not a valid expression over the vocabulary.
    """
    if not isinstance(text, str):
        raise SpecError(f"{where}: expected an equation as text, got {type(text).__name__}")
    if len(text) > MAX_EQUATION_LENGTH:
        raise SpecError(f"{where}: equation longer than {MAX_EQUATION_LENGTH} characters")
    for position, ch in enumerate(text):
        # Python folds look-alike letters (fullwidth ｇ, bold 𝐡) into ASCII names: refuse them, never guess.
        if not ch.isascii():
            raise SpecError(
                f"{where}: non-ASCII character {ch!r} (U+{ord(ch):04X}) at position {position} "
                "(expected ASCII names, numbers and operators)"
            )
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else "too deeply nested"
        raise SpecError(f"{where}: cannot parse {text!r}: {reason}") from None
    try:
        expr = _Converter(names, where, text.strip()).convert(tree.body)
    except RecursionError:
        raise SpecError(f"{where}: equation too deeply nested") from None
    if expr.has(sympy.zoo, sympy.oo, -sympy.oo, sympy.nan):
        raise SpecError(f"{where}: {text.strip()!r} divides by zero (its value is not a finite number)")
    for number in expr.atoms(sympy.Number):
        _check_number(number, where)
    return expr


def _check_number(number: sympy.Number, where: str) -> None:
    """Constants the kernels can hold exactly enough in both dtypes: finite, in float32's range, and integers
    within int64 (numba cannot type a larger integer literal)."""
    if abs(number) > FLOAT32_MAX:
        raise SpecError(
            f"{where}: constant {float(number):g} is outside the float32 range (expected magnitude at most "
            f"{FLOAT32_MAX:g})"
        )
    if number.is_Integer and abs(int(number)) >= 2**63:
        raise SpecError(f"{where}: integer constant {number} is too large (expected magnitude below 2**63)")


class _Converter:
    def __init__(self, names: Mapping[str, sympy.Symbol], where: str, text: str) -> None:
        self.names = names
        self.where = where
        self.text = text

    def fail(self, message: str) -> SpecError:
        return SpecError(f"{self.where}: {message}")

    def convert(self, node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](self.convert(node.left), self.convert(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            operand = self.convert(node.operand)
            return -operand if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(f"unexpected constant {node.value!r} (expected a number)")
            if isinstance(node.value, float) and not math.isfinite(node.value):
                raise self.fail(f"constant {ast.get_source_segment(self.text, node) or node.value} is not finite")
            if isinstance(node.value, int):
                _check_number(sympy.Integer(node.value), self.where)
            # Exact rationals: 0.5 stays 1/2, so the derivation never sees rounded floats.
            return sympy.Rational(str(node.value))
        if isinstance(node, ast.Name):
            if node.id not in self.names:
                known = ", ".join(sorted(self.names))
                raise self.fail(f"unknown name {node.id!r} (expected one of: {known})")
            return self.names[node.id]
        if isinstance(node, ast.Call):
            known = {*VOCABULARY, *REDUCTIONS}
            if not isinstance(node.func, ast.Name) or node.func.id not in known:
                raise self.fail(
                    f"unknown function {ast.unparse(node.func)!r} (expected one of: {', '.join(sorted(known))})"
                )
            if node.func.id in REDUCTIONS:
                if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
                    raise self.fail(f"{node.func.id} takes exactly one argument")
                return REDUCTIONS[node.func.id](self.convert(node.args[0]))
            record = VOCABULARY[node.func.id]
            if node.keywords or len(node.args) != record.arity or any(isinstance(a, ast.Starred) for a in node.args):
                count = "one argument" if record.arity == 1 else f"{record.arity} arguments"
                raise self.fail(f"{node.func.id} takes exactly {count}")
            return record.make(*(self.convert(arg) for arg in node.args))
        if isinstance(node, ast.BinOp):
            raise self.fail(f"operator {type(node.op).__name__} is not allowed (expected + - * /)")
        raise self.fail(f"{ast.unparse(node)!r} is not allowed in an equation")
