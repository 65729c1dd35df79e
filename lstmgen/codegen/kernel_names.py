"""The generated kernels' namespace: how a value of the cell is named in the code that stores it.

Every identifier the generator derives from a spec name is ``<owner>__<role>``: the owner is a spec name or a
symbol of the derivation (``c``, ``c_prev``, ``xW_i``, ``hR_n``, ``d_hR_n``, ``tmp3``), the role a fixed word saying
what the buffer is (``seq``, ``row``, ``scratch``...). Owners never contain ``__`` nor start with ``_``
(:func:`lstmgen.spec.check_identifier` and the vocabulary guarantee it), so the split at the first ``__`` is
unique: two different (owner, role) pairs never give the same identifier. The generator's own identifiers
(``gate_seq``, ``hidden``, ``nb``, ``j``, helpers such as ``_sigmoid``) never contain ``__`` after their
first character. No spec name can therefore reach a generator identifier, whatever it is called; and
:func:`check_namespace` verifies a rendered module against this rule.
"""

from __future__ import annotations

import ast

import sympy

SEPARATOR = "__"

#: Role -> what an identifier ``<owner>__<role>`` holds.
ROLES: dict[str, str] = {
    "seq": "per-step buffer (T or T+1, B, H) of a state or a saved value ((T, B) for a per-row value)",
    "row": "its (H,) view at the current step and batch row (the block of gate_seq, rec_buf... that holds it)",
    "saved_row": "the (H,) view of a value forward saves for backward, at the current step and batch row",
    "fb_row": "the gate's block of fb_seq: its value, fed back at the next step",
    "fb_grad_row": "the gate's block of the gradient fed back from the next step",
    "R": "the gate's block of R, applied mid-step",
    "RT": "its transpose, for the backward GEMM",
    "buf": "(B, H) buffer of the current step",
    "grad_buf": "(B, H) gradient on a state, carried between steps",
    "grad_row": "its (H,) view at the current batch row",
    "carry_buf": "(B, H) adjoint computed in one backward phase and read in a later one",
    "carry_row": "its (H,) view at the current batch row",
    "scratch": "(H,) scratch row, reused for every batch row",
    "vec": "a unit parameter (H,) or a gate parameter (G·H,)",
    "grad": "the gradient of a unit or gate parameter, summed over steps and batch rows",
    "value": "a per-row value (a sum over the units, or computed from such values) of the current batch row",
    "saved": "a per-row value forward kept for backward, read back at the current step and batch row",
    "cell_seq": "(T, B, H) a projected output before its projection (h = u W_p), for the GEMM and dW_p",
    "proj_row": "(P,) view of the gradient on a projected output at the current step and batch row",
}


def kernel_name(owner: str | sympy.Symbol, role: str) -> str:
    """The identifier of ``owner``'s buffer with the given role, e.g. ``kernel_name("c", "seq") == "c__seq"``."""
    owner = str(owner)
    if role not in ROLES:
        raise ValueError(f"role: unknown kernel name role {role!r}")
    if SEPARATOR in owner or owner.startswith("_") or not owner.isidentifier():
        raise ValueError(f"owner: {owner!r} cannot own a kernel name (no '__', no leading '_')")
    return f"{owner}{SEPARATOR}{role}"


def split_kernel_name(identifier: str) -> tuple[str, str] | None:
    """``(owner, role)`` of an identifier made by :func:`kernel_name`, or None for a generator identifier."""
    if identifier.startswith("_") or SEPARATOR not in identifier:
        return None
    owner, role = identifier.split(SEPARATOR, 1)
    return owner, role


def check_namespace(source: str, owners: set[str]) -> None:
    """Raise ValueError unless every spec-derived identifier of ``source`` is a known (owner, role) pair that
    each function binds to one meaning only.

    ``owners`` are the names the module's spec and derivation define. Catches a renderer that builds an
    identifier by hand instead of through :func:`kernel_name`, or gives one name two buffers.
    """
    tree = ast.parse(source)
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        bound: dict[str, str] = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name, value = node.targets[0].id, ast.unparse(node.value)
                if split_kernel_name(name) is not None and bound.setdefault(name, value) != value:
                    raise ValueError(
                        f"generated module: {function.name} binds {name!r} twice, to {bound[name]} and to {value}"
                    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            identifier = node.id
        elif isinstance(node, ast.arg):
            identifier = node.arg
        elif isinstance(node, ast.FunctionDef | ast.ClassDef):
            identifier = node.name
        else:
            continue
        parts = split_kernel_name(identifier)
        if parts is None:
            continue
        owner, role = parts
        if owner not in owners or role not in ROLES:
            raise ValueError(f"generated module: identifier {identifier!r} is not <known owner>__<role>")
