"""Stage 7 — the kernel IR, printed, → the text of a standalone Python module (numpy + numba only).

Lowers the expression lists (:mod:`lstmgen.codegen.lower_kernel`), prints both kernels
(:mod:`lstmgen.codegen.kernel_printer`), inlines the helpers the kernels call and the static half
(:mod:`lstmgen.codegen.module_runtime`), and hands the pieces to the Jinja template in ``templates/module.py.j2``,
which only lays them out. The same spec always renders the same bytes.
"""

from __future__ import annotations

import textwrap
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2

from lstmgen.codegen import module_runtime
from lstmgen.codegen.helper_sources import helper_closure, helper_source
from lstmgen.codegen.kernel_ir import Kernel, ModulePlan, width
from lstmgen.codegen.kernel_names import check_namespace
from lstmgen.codegen.kernel_printer import INDENT, LINE_WIDTH, PrintedKernels, wrap, wrapper_allocation
from lstmgen.codegen.lower_kernel import CellStorage, output_text, str_assignment
from lstmgen.codegen.numba_printer import print_text
from lstmgen.codegen.user_text import in_docstring, python_literal
from lstmgen.spec import CellSpec
from lstmgen.symbolic.derive_backward import adjoint_symbol
from lstmgen.symbolic.expression_lists import KernelExpressions
from lstmgen.variants import VARIANTS
from lstmgen.version import __version__

#: Bumped whenever the template's output changes; printed in every generated module's banner.
TEMPLATE_VERSION = 10
TEMPLATE_NAME = "module.py.j2"


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the repository root in a source checkout."""
    installed = resources.files("lstmgen") / "templates"
    if installed.is_dir():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parents[2] / "templates"
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError("lstmgen's templates are missing: reinstall lstmgen")  # pragma: no cover


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # renders Python source, not HTML
    )
    env.policies["json.dumps_kwargs"] = {"sort_keys": True}
    return env


def module_name(variant: str, gradient: str) -> str:
    """File stem of the generated module: the variant, with ``_truncated`` for the truncated gradient."""
    return variant if gradient == "full" else f"{variant}_{gradient}"


def _tuple_of(items: object) -> str:
    """Python source of a tuple of the given source fragments."""
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _tuple_literal(names: object) -> str:
    return _tuple_of(python_literal(str(n)) for n in names)


def _constant(name: str, text: str) -> str:
    """``name = "text"`` as Python source; a literal too long for one line is split at spaces into parts
    that Python joins back (implicit concatenation inside parentheses)."""
    line = f"{name} = {python_literal(text)}"
    if len(line) <= LINE_WIDTH:
        return line
    parts = textwrap.wrap(
        text, LINE_WIDTH - 20, drop_whitespace=False, replace_whitespace=False, expand_tabs=False, break_long_words=True
    )
    if "".join(parts) != text:  # pragma: no cover - textwrap keeps every character with these options
        return line
    return "\n".join([f"{name} = (", *(f"{INDENT}{python_literal(part)}" for part in parts), ")"])


def _docstring_lines(lines: object) -> list[str]:
    """Equations for the module docstring (printed 4 spaces in), a long one continued 8 spaces in."""
    out = []
    for line in lines:
        out += textwrap.wrap(in_docstring(line), LINE_WIDTH - 4, subsequent_indent=INDENT, break_long_words=False)
    return out


def _unpack(names: list[str]) -> str:
    return ", ".join(names) + ("," if len(names) == 1 else "")


def runtime_source() -> str:
    """The static half every module inlines: :mod:`lstmgen.codegen.module_runtime` below its marker."""
    text = Path(module_runtime.__file__).read_text(encoding="utf-8")
    marker = "\n" + module_runtime.INLINE_MARKER + "\n"
    return text[text.index(marker) + len(marker) :].strip("\n") + "\n"


def owners(kernel: KernelExpressions) -> set[str]:
    """Every name that may own a kernel identifier: the spec's names and the derivation's symbols."""
    forward, backward, spec = kernel.forward, kernel.backward, kernel.forward.spec
    names = {str(s) for a in forward.equations for s in (a.lhs, *a.rhs.free_symbols)}
    for assignments in (*kernel.forward_phases, *kernel.backward_phases):
        names |= {str(s) for a in assignments for s in (a.lhs, *a.rhs.free_symbols)}
    names |= {str(adjoint_symbol(s)) for s in forward.inputs()}
    names |= {str(s) for _, s in backward.seeds}
    names |= {g.name for g in spec.gates} | set(spec.state) | set(spec.unit_params) | set(spec.inputs)
    return names | set(spec.gate_params)


def _call(kernel: Kernel, result: str) -> list[str]:
    """The wrapper's call of a kernel through ``_run``, parameters read from ``params``, per-step inputs from
    ``step_inputs``."""
    source = {"param": "params", "step_input": "step_inputs"}
    args = ", ".join(
        f"{source[b.init]}[{python_literal(b.param)}]" if b.init in source else b.name for b in kernel.args
    )
    return wrap(f"{result}_run(", f"{kernel.name}, {args}", ")", INDENT)


def _gate_columns(spec: CellSpec, gates: list[str]) -> str:
    """The extent of the column blocks of ``gates`` in param_shapes: H each, H/S (``block``) for a block gate."""
    shared = sum(g in spec.block_gates for g in gates)
    terms = [width(len(gates) - shared, "hidden_size")] * (len(gates) > shared)
    terms += [width(shared, "block")] * bool(shared)
    return " + ".join(terms)


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
    shapes += [f"Q ({F}H, {F}H)"] * bool(F) + [f"{p} ({G}H,)" for p in spec.gate_params]
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
        blocks += (
            f"\nMemory blocks of S = block_size cells (param_shapes, init_params) share {', '.join(spec.block_gates)}:"
            "\nthe blocks of those gates are then H/S columns wide; each serves the S cells of its block."
        )
    return [f"Parameters: {', '.join(shapes)};", *blocks.split("\n")]


def _docstring_products(storage: CellStorage) -> tuple[list[str], list[str]]:
    """The recurrent products and the matrix adjoint rules, as the module docstring states them (lines)."""
    forward, backward = storage.forward, storage.backward
    early = ", ".join(storage.spec.gates[k].name for k in storage.early_gates)
    originals = {a.lhs: a.rhs for a in forward.equations}
    if storage.spec.heads is not None:  # heads exclude mid-step sources
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
    if storage.spec.projection:
        h = storage.spec.output_state
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


def render_module(
    kernel: KernelExpressions, plan: ModulePlan, kernels: PrintedKernels, regenerate: str | None = None
) -> str:
    """Render the generated module's source text.

    Args:
        kernel: the CSE'd expression lists of one cell and gradient mode.
        plan: their kernel IR (:func:`lstmgen.codegen.lower_kernel.lower`).
        kernels: the plan's printed kernels (:func:`lstmgen.codegen.kernel_printer.print_kernels`).
        regenerate: the command printed in the banner to regenerate this file.
    """
    backward = kernel.backward
    forward = backward.forward
    spec = forward.spec
    if regenerate is None:
        flag = "" if backward.gradient == "full" else f" --gradient {backward.gradient}"
        builtin = VARIANTS.get(spec.name) == spec
        what = spec.name if builtin else f"--spec <the spec file of {spec.name}>"
        regenerate = f"lstmgen generate {what}{flag} --out {'generated/' if builtin else 'DIR'}"
    storage = CellStorage(kernel)  # the docstring's products and outputs are read where the values live
    products, rules = _docstring_products(storage)
    G, F = len(spec.gates), len(spec.feedback)
    recurrent = [gate for gate, _ in forward.hR]
    wide, feedback = _gate_columns(spec, [g.name for g in spec.gates]), width(F, "hidden_size")
    shapes = [
        f'"W": (input_size, {wide})',
        *(
            [f'"R": (heads, head_size, {width(len(recurrent), "head_size")})']
            if recurrent and spec.heads is not None
            else [f'"R": ({"proj_size" if spec.projection else "hidden_size"}, {_gate_columns(spec, recurrent)})']
            if recurrent
            else []
        ),
        f'"b": ({wide},)',
        *(['"W_p": (hidden_size, proj_size)'] if spec.projection else []),
        *([f'"Q": ({feedback}, {feedback})'] if F else []),
        *(f"{python_literal(p)}: ({wide},)" for p in spec.gate_params),
        *(f"{python_literal(p)}: (hidden_size,)" for p in spec.unit_params),
    ]
    extra = [b.name for b in plan.tape_extra]
    grad_of = {"W": "dW", "R": "dR", "b": "db", "W_p": "dW_p", "Q": "dQ"} | {
        name: buffer.name for name, buffer in plan.unit_grads
    }
    grads = [f"{python_literal(name)}: {grad_of[name]}" for name in spec.params]
    context = {
        "variant": spec.name,
        "description": in_docstring(spec.description),
        "paper": "\n".join(textwrap.wrap(in_docstring(spec.paper) + ".", LINE_WIDTH, break_long_words=False)),
        "description_constant": _constant("DESCRIPTION", spec.description),
        "paper_constant": _constant("PAPER", spec.paper),
        "variant_literal": python_literal(spec.name),
        "version": __version__,
        "template_version": TEMPLATE_VERSION,
        "fingerprint": spec.fingerprint(),
        "gradient": backward.gradient,
        "regenerate": in_docstring(regenerate),
        "gates": _tuple_literal(g.name for g in spec.gates),
        "recurrent_gates": _tuple_literal(recurrent),
        "input_row": str(bool(forward.input_row)),
        "inputs": _tuple_literal(spec.inputs),
        "has_step_inputs": bool(spec.inputs),
        "heads_default": str(spec.heads),
        "init": "{" + ", ".join(f"{python_literal(n)}: {float(v)!r}" for n, v in spec.init) + "}",
        "block_diagonal": spec.heads is not None,
        "heads_doc": "; heads: of the block-diagonal R, default HEADS" if spec.heads is not None else "",
        "block_gates": _tuple_literal(spec.block_gates),
        "memory_blocks": bool(spec.block_gates),
        "block_doc": "; block_size: S, the cells per memory block, default 1" if spec.block_gates else "",
        "parameters_doc": "\n".join(in_docstring(line) for line in _parameters_doc(spec, recurrent)),
        "states": _tuple_literal(spec.state),
        "projected": str(spec.projection),
        "projection": spec.projection,
        "proj_doc": "; proj_size: P, the units of the projected output h, default H" if spec.projection else "",
        "out_units": "P" if spec.projection else "H",
        "shapes_doc": (
            f"y (T, B, P) holds h_1..h_T; h (B, P){', every other state (B, H)' if len(spec.state) > 1 else ''}"
            if spec.projection
            else "y (T, B, H) holds h_1..h_T; every state (B, H)"
        ),
        "state_arrays_doc": "arrays, h (B, P), others (B, H)" if spec.projection else "(B, H) arrays",
        "state_shapes_doc": "h (B, P), the others (B, H)" if spec.projection else "each (B, H)",
        "params": _tuple_literal(spec.params),
        "tape_extra": wrap(
            "TAPE_EXTRA = (", _tuple_of(_tuple_of(map(str, shape)) for shape in plan.tape_extra_shapes)[1:-1], ")", ""
        ),
        "n_gates": G,
        "unit_params": [{"shape_doc": in_docstring(p)} for p in spec.unit_params],
        "recurrent_products": [
            wrapped
            for line in products
            for wrapped in textwrap.wrap(in_docstring(line), LINE_WIDTH, break_long_words=False)
        ],
        "input_projection": "xW_k = x_t W_k + b_k" if spec.input_bias else "xW_k = x_t W_k (b_k enters the equations)",
        "forward_text": _docstring_lines(str_assignment(a.lhs, a.rhs) for a in forward.equations),
        "backward_text": _docstring_lines(
            [str_assignment(a.lhs, a.rhs) for a in backward.adjoints] + output_text(storage)
        ),
        "matrix_rules": [in_docstring(line) for line in rules],
        "helper_sources": [helper_source(name) for name in helper_closure(kernels.helpers)],
        "forward_kernel": kernels.forward,
        "backward_kernel": kernels.backward,
        "param_shapes": shapes,
        "forward_allocations": [line for b in plan.forward_buffers for line in wrapper_allocation(b)],
        "forward_call": _call(plan.forward, ""),
        "output_seq": plan.output_seq.name,
        "final_state": _tuple_of(f"{b.name}[steps].copy()" for b in plan.state_seqs),
        "tape_call": wrap(
            "tape = Tape(",
            f"x, step_inputs, params, {_tuple_of(b.name for b in plan.state_seqs)}, gate_seq, {_tuple_of(extra)}, "
            "lengths, order, block_size",
            ")",
            INDENT,
        ),
        "state_seqs_unpack": _unpack([b.name for b in plan.state_seqs]),
        "extra_seqs_unpack": wrap("(", _unpack(extra), ") = tape.extra", INDENT) if extra else [],
        "backward_allocations": [line for b in plan.backward_buffers for line in wrapper_allocation(b)],
        "backward_call": _call(plan.backward, f"{', '.join(plan.backward.returns)} = "),
        "grads": wrap("grads = {", ", ".join(grads), "}", INDENT),
        "grad_bufs_tuple": _tuple_of(b.name for b in plan.state_grads),
        "runtime": runtime_source(),
    }
    source = _environment().get_template(TEMPLATE_NAME).render(context)
    check_namespace(source, owners(kernel))
    return source
