"""Stage 7 — the kernel IR, printed, → the text of a standalone Python module (numpy + numba only).

Takes the printed kernels (:mod:`lstmgen.codegen.kernel_printer`), the plan's buffers (for the wrappers'
allocations and calls) and the module's prose and structure lines (:mod:`lstmgen.codegen.module_text`), inlines
the helpers the kernels call and the static half (:mod:`lstmgen.codegen.module_runtime`), and hands the pieces
to the Jinja template in ``templates/module.py.j2``, which only lays them out. The same spec always renders the
same bytes.
"""

from __future__ import annotations

import dataclasses
import textwrap
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2

from lstmgen.codegen.helper_sources import helper_closure, helper_decorator, helper_source
from lstmgen.codegen.kernel_ir import Kernel, ModulePlan
from lstmgen.codegen.kernel_names import check_namespace
from lstmgen.codegen.kernel_printer import INDENT, LINE_WIDTH, PrintedKernels, wrap, wrapper_allocation
from lstmgen.codegen.module_text import ModuleText
from lstmgen.codegen.targets import CPU, Target
from lstmgen.codegen.user_text import in_docstring, python_literal
from lstmgen.symbolic.derive_backward import adjoint_symbol
from lstmgen.symbolic.expression_lists import KernelExpressions
from lstmgen.symbolic.layout import Layout
from lstmgen.variants import VARIANTS
from lstmgen.version import __version__

#: Bumped whenever the template's output changes; printed in every generated module's banner.
TEMPLATE_VERSION = 14
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


def module_name(variant: str, gradient: str, target: str = "cpu") -> str:
    """File stem of the generated module: the variant, with ``_truncated`` for the truncated gradient and ``_cuda``
    for the CUDA target."""
    stem = variant if gradient == "full" else f"{variant}_{gradient}"
    return stem if target == "cpu" else f"{stem}_{target}"


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


def _unpack(names: list[str]) -> str:
    return ", ".join(names) + ("," if len(names) == 1 else "")


def runtime_source() -> str:
    """The static half every CPU module inlines: :mod:`lstmgen.codegen.module_runtime` below its marker."""
    return CPU.runtime_source()


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


def render_module(
    layout: Layout,
    plan: ModulePlan,
    kernels: PrintedKernels,
    text: ModuleText,
    regenerate: str | None = None,
    target: Target = CPU,
) -> str:
    """Render the generated module's source text.

    Args:
        layout: the symbol table of one cell and gradient mode (:func:`lstmgen.symbolic.layout.build_layout`).
        plan: its kernel IR (:func:`lstmgen.codegen.lower_kernel.lower`).
        kernels: the plan's printed kernels (:func:`lstmgen.codegen.kernel_printer.print_kernels`).
        text: the module's prose and structure lines (:func:`lstmgen.codegen.module_text.build_module_text`).
        regenerate: the command printed in the banner to regenerate this file.
        target: the target the kernels were printed for (:mod:`lstmgen.codegen.targets`).
    """
    context = {
        **_banner(layout, regenerate, target),
        **_target_lines(target),
        **_constants(layout, plan),
        **{field.name: getattr(text, field.name) for field in dataclasses.fields(text)},
        **_wrappers(layout, plan),
        "helpers": [
            (helper_decorator(name, target), helper_source(name, target.name))
            for name in helper_closure(kernels.helpers, target.name)
        ],
        "forward_kernel": kernels.forward,
        "backward_kernel": kernels.backward,
        "runtime": target.runtime_source(),
    }
    source = _environment().get_template(TEMPLATE_NAME).render(context)
    check_namespace(source, owners(layout.kernel))
    return source


def _target_lines(target: Target) -> dict[str, object]:
    """The lines that differ between targets: imports, the compile policy, the decorators."""
    return {
        "imports": list(target.imports),
        "compile_policy": list(target.compile_policy),
        "kernel_decorator": target.kernel_decorator,
        "target_note": target.note,
        "target_name": target.name,
    }


def _banner(layout: Layout, regenerate: str | None, target: Target) -> dict[str, object]:
    """The module docstring's first lines: what the cell is, where it came from, how to regenerate it."""
    spec, gradient = layout.spec, layout.derived.gradient
    if regenerate is None:
        flag = "" if gradient == "full" else f" --gradient {gradient}"
        flag += "" if target is CPU else f" --target {target.name}"
        builtin = VARIANTS.get(spec.name) == spec
        what = spec.name if builtin else f"--spec <the spec file of {spec.name}>"
        regenerate = f"lstmgen generate {what}{flag} --out {'generated/' if builtin else 'DIR'}"
    return {
        "variant": spec.name,
        "description": in_docstring(spec.description),
        "paper": "\n".join(textwrap.wrap(in_docstring(spec.paper) + ".", LINE_WIDTH, break_long_words=False)),
        "version": __version__,
        "template_version": TEMPLATE_VERSION,
        "fingerprint": spec.fingerprint(),
        "gradient": gradient,
        "regenerate": in_docstring(regenerate),
    }


def _constants(layout: Layout, plan: ModulePlan) -> dict[str, object]:
    """The module's constants (VARIANT, GATES, STATE, PARAMS...), as Python source."""
    spec = layout.spec
    return {
        "description_constant": _constant("DESCRIPTION", spec.description),
        "paper_constant": _constant("PAPER", spec.paper),
        "variant_literal": python_literal(spec.name),
        "gates": _tuple_literal(g.name for g in spec.gates),
        "recurrent_gates": _tuple_literal(gate for gate, _ in layout.equations.hR),
        "input_row": str(bool(layout.equations.input_row)),
        "inputs": _tuple_literal(spec.inputs),
        "heads_default": str(spec.heads),
        "init": "{" + ", ".join(f"{python_literal(n)}: {float(v)!r}" for n, v in spec.init) + "}",
        "block_gates": _tuple_literal(spec.block_gates),
        "feedback": _tuple_literal(spec.feedback),
        "feedback_into": _tuple_literal(spec.feedback_targets),
        "states": _tuple_literal(spec.state),
        "projected": str(spec.projection),
        "params": _tuple_literal(spec.params),
        "tape_extra": wrap(
            "TAPE_EXTRA = (", _tuple_of(_tuple_of(map(str, shape)) for shape in plan.tape_extra_shapes)[1:-1], ")", ""
        ),
    }


def _wrappers(layout: Layout, plan: ModulePlan) -> dict[str, object]:
    """The lines of forward() and backward() that allocate the kernels' buffers, call them and unpack the tape."""
    extra = [b.name for b in plan.tape_extra]
    grad_of = {"W": "dW", "R": "dR", "b": "db", "W_p": "dW_p", "Q": "dQ"} | {
        name: buffer.name for name, buffer in plan.unit_grads
    }
    grads = [f"{python_literal(name)}: {grad_of[name]}" for name in layout.spec.params]
    return {
        "forward_allocations": [line for b in plan.forward_buffers for line in wrapper_allocation(b)],
        "forward_call": _call(plan.forward, ""),
        "output_seq": plan.output_seq.name,
        "final_state": _tuple_of(f"_copy_of({b.name}[steps])" for b in plan.state_seqs),
        "tape_call": wrap(
            "tape = Tape(",
            f"x, step_inputs, params, {_tuple_of(b.name for b in plan.state_seqs)}, gate_seq, {_tuple_of(extra)}, "
            "lengths, order, block_size, checked=True",
            ")",
            INDENT,
        ),
        "state_seqs_unpack": _unpack([b.name for b in plan.state_seqs]),
        "extra_seqs_unpack": wrap("(", _unpack(extra), ") = tape.extra", INDENT) if extra else [],
        "backward_allocations": [line for b in plan.backward_buffers for line in wrapper_allocation(b)],
        "backward_call": _call(plan.backward, f"{', '.join(plan.backward.returns)} = "),
        "grads": wrap("grads = {", ", ".join(grads), "}", INDENT),
        "grad_bufs_tuple": _tuple_of(b.name for b in plan.state_grads),
    }
