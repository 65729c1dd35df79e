"""The source of the helpers a generated module inlines, read from :mod:`lstmgen.codegen.kernel_helpers` (the
CPU's) and, for the CUDA target, :mod:`lstmgen.codegen.cuda_helpers` first.

The function table (:mod:`lstmgen.functions`) names each function's helper; this module, on the codegen side,
reads the helper's source and the helpers it calls, so that the table never imports code generation.
"""

from __future__ import annotations

import ast
import inspect
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING

from lstmgen.codegen import cuda_helpers, kernel_helpers

if TYPE_CHECKING:
    from lstmgen.codegen.targets import Target

#: Where each target's helpers are looked up, in order.
SOURCES: dict[str, tuple[ModuleType, ...]] = {
    "cpu": (kernel_helpers,),
    "cuda": (cuda_helpers, kernel_helpers),
}


@cache
def helper_source(name: str, target: str = "cpu") -> str:
    """The source of helper ``name`` for ``target``, as the generated module prints it."""
    for module in SOURCES[target]:
        function = getattr(module, name, None)
        if function is not None and name.startswith("_"):
            source = inspect.getsource(function).rstrip() + "\n"
            if target == "cuda" and "np." in source:
                raise ValueError(f"helper {name}: the CUDA target has no form of it (its CPU form uses numpy)")
            return source
    raise ValueError(f"helper: {name!r} is not a helper of lstmgen.codegen.kernel_helpers")


def helper_decorator(name: str, target: Target) -> str:
    """The line a module prints above helper ``name``: the target's decorator, or the one that makes numba inline
    the helper into its callers."""
    if name in kernel_helpers.NUMBA_INLINED:
        return target.inlined_helper_decorator
    return target.helper_decorator


@cache
def helper_calls(name: str, target: str = "cpu") -> tuple[str, ...]:
    """The other helpers that helper ``name`` calls, in the order of first call."""
    calls = []
    for node in ast.walk(ast.parse(helper_source(name, target))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            callee = node.func.id
            if callee != name and callee.startswith("_") and _defined(callee, target) and callee not in calls:
                calls.append(callee)
    return tuple(calls)


def _defined(name: str, target: str) -> bool:
    return any(hasattr(module, name) for module in SOURCES[target])


def helper_closure(names: set[str] | list[str], target: str = "cpu") -> list[str]:
    """The helpers ``names`` need, dependencies first (each before its callers), in a stable order."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for callee in helper_calls(name, target):
            visit(callee)
        ordered.append(name)

    for name in sorted(names, key=_helper_order):
        visit(name)
    return ordered


def _helper_order(name: str) -> int:
    """Helpers in the order they are defined in kernel_helpers (a module reads like that file)."""
    return list(vars(kernel_helpers)).index(name)
