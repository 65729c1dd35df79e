"""The step's equations as plain text, for the kernels' comments and the module docstring."""

from __future__ import annotations

import sympy

from lstmgen.codegen.numba_printer import print_text
from lstmgen.symbolic.derive_backward import adjoint_symbol
from lstmgen.symbolic.layout import Layout


def str_assignment(lhs: sympy.Symbol, rhs: sympy.Expr) -> str:
    return f"{lhs} = {print_text(rhs)}"


def output_text(layout: Layout) -> list[str]:
    """The step's output adjoints that are aliases; adjoints sharing one expression print on one line."""
    derived, spec = layout.derived, layout.spec
    defined = set(derived.adjoints.targets)
    groups: dict[sympy.Expr, list[str]] = {}
    text = []
    blocks = ", ".join(spec.gates[k].name for k in layout.early_gates)
    gemm = f"d_hR R^T  (one GEMM per step over the blocks {blocks} of R, after the loop)"
    for sym, expr in derived.outputs:
        if sym == layout.h_prev and layout.recurrent:
            if adjoint_symbol(sym) in defined:  # its elementwise part is printed above
                text.append(f"d_{sym} += {gemm}")
            else:
                text.append(f"d_{sym} = {'' if expr == 0 else f'{print_text(expr)} + '}{gemm}")
            continue
        if adjoint_symbol(sym) in defined:
            continue
        groups.setdefault(expr, []).append(str(adjoint_symbol(sym)))
    return text + [" = ".join([*names, print_text(expr)]) for expr, names in groups.items()]
