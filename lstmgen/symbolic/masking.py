"""Products with an indicator, written as masked products: a branch not taken passes no gradient.

The derivatives of relu, select, max/min and abs are step functions ([y > 0], [c ≤ 0], the tie step, sign),
and the chain rule multiplies them with the derivatives of everything the branch computed. Where the
indicator is 0 the branch is not taken, but a factor of it may still be infinite there: select(r, log(r), 0)
at r = 0 gives [r > 0] · 1/r = 0 · ∞. Autograd never forms that product (torch's relu and where backward
select), and neither do lstmgen's kernels: every product with an indicator factor becomes
``masked(indicator, rest)`` (:class:`lstmgen.functions.masked`), 0 where the indicator is 0, computed as a
select. It is a node of its own so that common-subexpression elimination cannot split the indicator from the
factors it guards.
"""

from __future__ import annotations

import sympy

from lstmgen.functions import is_indicator, masked


def mask_indicators(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with every product that has indicator factors written as ``masked(indicator, rest)`` (nested,
    in a fixed order, where a product has several)."""
    if expr.is_Atom or isinstance(expr, masked):
        return expr
    args = tuple(mask_indicators(a) for a in expr.args)
    if isinstance(expr, sympy.Mul):
        indicators = sorted((a for a in args if is_indicator(a)), key=sympy.default_sort_key)
        if indicators:  # (masked itself keeps a product of constants and indicators as it is: all finite)
            masked_product = sympy.Mul(*(a for a in args if not is_indicator(a)))
            for indicator in reversed(indicators):
                masked_product = masked(indicator, masked_product)
            return masked_product
    return expr.func(*args) if args != expr.args else expr
