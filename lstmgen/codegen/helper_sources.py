"""The source of the Numba helpers a generated module inlines, read from :mod:`lstmgen.codegen.kernel_helpers`.

The function table (:mod:`lstmgen.functions`) names each function's helper; this module, on the codegen side,
reads the helper's source and the helpers it calls, so that the table never imports code generation.
"""

from __future__ import annotations

import ast
import inspect
from functools import cache

from lstmgen.codegen import kernel_helpers


@cache
def helper_source(name: str) -> str:
    """The source of helper ``name`` of :mod:`lstmgen.codegen.kernel_helpers`, as the generated module prints it."""
    function = getattr(kernel_helpers, name, None)
    if function is None or not name.startswith("_"):
        raise ValueError(f"helper: {name!r} is not a helper of lstmgen.codegen.kernel_helpers")
    return inspect.getsource(function).rstrip() + "\n"


@cache
def helper_calls(name: str) -> tuple[str, ...]:
    """The other helpers that helper ``name`` calls, in the order of first call."""
    calls = []
    for node in ast.walk(ast.parse(helper_source(name))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee = node.func.id
            if callee != name and callee.startswith("_") and hasattr(kernel_helpers, callee) and callee not in calls:
                calls.append(callee)
    return tuple(calls)


def helper_closure(names: set[str] | list[str]) -> list[str]:
    """The helpers ``names`` need, dependencies first (each before its callers), in a stable order."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for callee in helper_calls(name):
            visit(callee)
        ordered.append(name)

    for name in sorted(names, key=_helper_order):
        visit(name)
    return ordered


def _helper_order(name: str) -> int:
    """Helpers in the order they are defined in kernel_helpers (a module reads like that file)."""
    return list(vars(kernel_helpers)).index(name)
