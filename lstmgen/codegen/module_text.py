"""What a generated module says about its cell, and the lines each structure adds to its wrappers.

Built from the symbol table (:mod:`lstmgen.symbolic.layout`) before anything is printed: the docstring's prose
(the products, the equations, the matrix adjoint rules, the parameters' shapes), the body of ``param_shapes``, and
for each optional structure (a projection, a block-diagonal R, memory blocks, per-step inputs) the wrapper lines
it needs. The template only lays these out: it has no branch of its own.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from lstmgen.codegen.equation_text import output_text, str_assignment
from lstmgen.codegen.kernel_ir import width
from lstmgen.codegen.kernel_printer import INDENT, LINE_WIDTH
from lstmgen.codegen.numba_printer import print_text
from lstmgen.codegen.user_text import in_docstring, python_literal
from lstmgen.spec import CellSpec
from lstmgen.symbolic.layout import Layout


@dataclass(frozen=True)
class ModuleText:
    """The module's prose and its structure-dependent wrapper lines (each a list of lines, already indented
    where the template places them verbatim)."""

    shapes_doc: str
    parameters_doc: str
    input_projection: str
    recurrent_products: list[str]
    forward_text: list[str]
    backward_text: list[str]
    matrix_rules: list[str]
    sizes_doc: str
    state_arrays_doc: str
    state_shapes_doc: str
    out_units: str
    param_shapes: list[str]
    size_checks: list[str]
    forward_sizes: list[str]
    backward_reads: list[str]
    grads_fixup: list[str]


def build_module_text(layout: Layout) -> ModuleText:
    spec, forward, backward = layout.spec, layout.equations, layout.derived
    products, rules = _products_and_rules(layout)
    projected = spec.projection
    sizes = ["hidden = _hidden(params)", *(["proj = _output_width(params)"] if projected else [])]
    return ModuleText(
        shapes_doc=(
            f"y (T, B, P) holds h_1..h_T; h (B, P){', every other state (B, H)' if len(spec.state) > 1 else ''}"
            if projected
            else "y (T, B, H) holds h_1..h_T; every state (B, H)"
        ),
        parameters_doc="\n".join(in_docstring(line) for line in _parameters_doc(spec, _recurrent(layout))),
        input_projection="xW_k = x_t W_k + b_k" if spec.input_bias else "xW_k = x_t W_k (b_k enters the equations)",
        recurrent_products=[
            wrapped
            for line in products
            for wrapped in textwrap.wrap(in_docstring(line), LINE_WIDTH, break_long_words=False)
        ],
        forward_text=_docstring_lines(str_assignment(a.lhs, a.rhs) for a in forward.equations),
        backward_text=_docstring_lines([str_assignment(a.lhs, a.rhs) for a in backward.adjoints] + output_text(layout)),
        matrix_rules=[in_docstring(line) for line in rules],
        sizes_doc="".join(
            [
                "; heads: of the block-diagonal R, default HEADS" if spec.heads is not None else "",
                "; proj_size: P, the units of the projected output h, default H" if projected else "",
                "; block_size: S, the cells per memory block, default 1" if spec.block_gates else "",
            ]
        ),
        state_arrays_doc="arrays, h (B, P), others (B, H)" if projected else "(B, H) arrays",
        state_shapes_doc="h (B, P), the others (B, H)" if projected else "each (B, H)",
        out_units="P" if projected else "H",
        param_shapes=_param_shapes(spec, _recurrent(layout)),
        size_checks=_size_checks(spec),
        forward_sizes=sizes,
        backward_reads=["step_inputs = tape.inputs"] * bool(spec.inputs) + ["steps, batch, _ = x.shape", *sizes],
        grads_fixup=["grads = _per_block(grads, hidden, tape.block_size)"] * bool(spec.block_gates),
    )


def _recurrent(layout: Layout) -> list[str]:
    return [gate for gate, _ in layout.equations.hR]


def _docstring_lines(lines: object) -> list[str]:
    """Equations for the module docstring (printed 4 spaces in), a long one continued 8 spaces in."""
    out = []
    for line in lines:
        out += textwrap.wrap(in_docstring(line), LINE_WIDTH - 4, subsequent_indent=INDENT, break_long_words=False)
    return out


def _size_checks(spec: CellSpec) -> list[str]:
    """param_shapes' checks of its optional sizes: each structure reads its size, the others refuse theirs."""
    return [
        "proj_size = _check_proj(proj_size, hidden_size)" if spec.projection else "_check_proj(proj_size, hidden_size)",
        *(
            ["heads = _check_heads(heads, hidden_size)", "head_size = hidden_size // heads"]
            if spec.heads is not None
            else ["_check_heads(heads, hidden_size)"]
        ),
        "block = hidden_size // _check_block_size(block_size, hidden_size)"
        if spec.block_gates
        else "_check_block_size(block_size, hidden_size)",
    ]


def _gate_columns(spec: CellSpec, gates: list[str]) -> str:
    """The extent of the column blocks of ``gates`` in param_shapes: H each, H/S (``block``) for a block gate."""
    shared = sum(g in spec.block_gates for g in gates)
    terms = [width(len(gates) - shared, "hidden_size")] * (len(gates) > shared)
    terms += [width(shared, "block")] * bool(shared)
    return " + ".join(terms)


def _param_shapes(spec: CellSpec, recurrent: list[str]) -> list[str]:
    """The entries of the dict param_shapes returns, as source."""
    wide = _gate_columns(spec, [g.name for g in spec.gates])
    feedback = f"{_gate_columns(spec, list(spec.feedback))}, {_gate_columns(spec, list(spec.feedback_targets))}"
    if recurrent and spec.heads is not None:
        R = [f'"R": (heads, head_size, {width(len(recurrent), "head_size")})']
    elif recurrent:
        R = [f'"R": ({"proj_size" if spec.projection else "hidden_size"}, {_gate_columns(spec, recurrent)})']
    else:
        R = []
    return [
        f'"W": (input_size, {wide})',
        *R,
        f'"b": ({wide},)',
        *(['"W_p": (hidden_size, proj_size)'] if spec.projection else []),
        *([f'"Q": ({feedback})'] if spec.feedback else []),
        *(f"{python_literal(p)}: ({wide},)" for p in spec.gate_params),
        *(f"{python_literal(p)}: (hidden_size,)" for p in spec.unit_params),
    ]


def _parameters_doc(spec: CellSpec, recurrent: list[str]) -> list[str]:
    """The docstring's parameter shapes and which gate owns each column block."""
    G, F = len(spec.gates), len(spec.feedback)
    R = (
        f"R (heads, H/heads, {len(recurrent)}H/heads), block-diagonal"
        if spec.heads is not None
        else f"R (H, {len(recurrent)}H)"
    )
    if spec.projection:
        R = f"R (P, {len(recurrent)}H)"
    shapes = [f"W (I, {G}H)", *([R] if recurrent else []), f"b ({G}H,)", *(["W_p (H, P)"] if spec.projection else [])]
    shapes += [f"Q ({F}H, {len(spec.feedback_targets)}H)"] * bool(F) + [f"{p} ({G}H,)" for p in spec.gate_params]
    shapes += [f"{p} (H,)" for p in spec.unit_params]
    if recurrent and spec.heads is not None:
        blocks = "column block k of W and b belongs to GATES[k];\ncolumn block k (d = H/heads columns) of every R[j]"
        blocks += " to RECURRENT_GATES[k], for head j's units."
    elif len(recurrent) == G:
        blocks = "column block k of W, R and b belongs to GATES[k]."
    elif recurrent:
        blocks = "column block k of W and b belongs to GATES[k], of R to RECURRENT_GATES[k]."
    else:
        blocks = "column block k of W and b belongs to GATES[k]; no gate has a recurrent matrix."
    if spec.block_gates:
        fed_back = set(spec.block_gates) & set(spec.feedback)
        blocks += (
            f"\nMemory blocks of S = block_size cells (param_shapes, init_params) share {', '.join(spec.block_gates)}:"
            "\nthe blocks of those gates are then H/S columns wide"
            + (f" (and H/S rows of Q for {', '.join(sorted(fed_back))})" if fed_back else "")
            + "; each serves the S cells of its block."
        )
    return [f"Parameters: {', '.join(shapes)};", *blocks.split("\n")]


def _products_and_rules(layout: Layout) -> tuple[list[str], list[str]]:
    """The recurrent products and the matrix adjoint rules, as the module docstring states them (lines)."""
    spec, forward, backward = layout.spec, layout.equations, layout.derived
    early = ", ".join(spec.gates[k].name for k in layout.early_gates)
    originals = {a.lhs: a.rhs for a in forward.equations}
    if spec.heads is not None:  # heads exclude mid-step sources
        products = ["hR_k = h_{t-1} R_k with R block-diagonal: head j's units h[j*d:(j+1)*d] times R[j] (d = H/heads)."]
        dR = ["dR[j] = sum_t h_{t-1}[head j]^T d_hR[head j]"]
    elif not forward.sources:
        products = ["hR_k = h_{t-1} R_k."]
        dR = ["dR = sum_t h_{t-1}^T d_hR"]
    else:
        products = [f"hR_k = h_{{t-1}} R_k for k in {early}, and mid-step:"]
        products += [
            f"    hR_{g} = src_{g} R_{g} with src_{g} = {print_text(originals[s])}" for g, s in forward.sources
        ]
        dR = [f"dR_k = sum_t h_{{t-1}}^T d_hR_k for k in {early}"]
        dR += [f"dR_{g} = sum_t src_{g}^T d_hR_{g}" for g, _ in forward.sources]
    truncated = "(truncated gradient: no error flows through h_{t-1} where it enters the pre-activations)"
    rules = [] if backward.recurrent_gemm else [truncated]
    rules += ["dx_t = d_xW W^T;  dW = sum_t x_t^T d_xW;  db = sum_t,batch d_xW", *dR]
    if spec.projection:
        h = spec.output_state
        products.append(
            f"Projected output: the equation of {h} gives its H units u; the carried output is {h} = u W_p (P units),"
            " one GEMM per step after the equations."
        )
        rules = [
            f"dnext_{h} (H units) = (dy_t + the error carried from step t+1) W_p^T, one GEMM per step before the"
            " equations",
            *rules,
            "dW_p = sum_t u_t^T (dy_t + the error carried from step t+1)",
        ]
    return products, rules
