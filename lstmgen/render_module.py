"""Stage 5b — kernel expression lists → the text of a standalone Python module (numpy + numba only).

All logic lives here: this module prints every line (loads, computations, stores, comments) and the Jinja
template in ``templates/module.py.j2`` only lays them out. The same spec always renders the same bytes.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
import sympy

from lstmgen import __version__
from lstmgen.derive_backward import adjoint_symbol
from lstmgen.expression_lists import KernelExpressions
from lstmgen.forward_equations import unit_symbol
from lstmgen.numba_printer import NumbaPrinter, print_text

#: Bumped whenever the template's output changes; printed in every generated module's banner.
TEMPLATE_VERSION = 1
TEMPLATE_NAME = "module.py.j2"


def templates_dir() -> Path:
    """The templates: inside the installed package, or at the repository root in a source checkout."""
    installed = resources.files("lstmgen") / "templates"
    if installed.is_dir():
        return Path(str(installed))
    checkout = Path(__file__).resolve().parent.parent / "templates"
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


def render_module(kernel: KernelExpressions, regenerate: str | None = None) -> str:
    """Render the generated module's source text.

    Args:
        kernel: the CSE'd expression lists of one cell and gradient mode.
        regenerate: the command printed in the banner to regenerate this file.
    """
    backward = kernel.backward
    forward = backward.forward
    spec = forward.spec
    name = module_name(spec.name, backward.gradient)
    if regenerate is None:
        flag = "" if backward.gradient == "full" else f" --gradient {backward.gradient}"
        regenerate = f"lstmgen generate {spec.name}{flag} --out generated/"
    lines = _KernelLines(kernel)
    context = {
        "variant": spec.name,
        "module": name,
        "description": spec.description,
        "paper": spec.paper,
        "version": __version__,
        "template_version": TEMPLATE_VERSION,
        "fingerprint": spec.fingerprint(),
        "gradient": backward.gradient,
        "regenerate": regenerate,
        "gates": _tuple_literal(g.name for g in spec.gates),
        "states": _tuple_literal(spec.state),
        "params": _tuple_literal(spec.params),
        "n_gates": len(spec.gates),
        "unit_params": list(spec.unit_params),
        "states_list": list(spec.state),
        "output_state": spec.output_state,
        "saved": [str(s) for s in kernel.saved],
        "separate_rec": kernel.separate_recurrent_adjoint,
        "d_rec_seq": "d_rec_seq" if kernel.separate_recurrent_adjoint else "d_gate_seq",
        "recurrent_gemm": backward.recurrent_gemm,
        "elementwise_and_gemm_h": lines.elementwise_and_gemm_h,
        "forward_text": [str_assignment(a.lhs, a.rhs) for a in forward.equations],
        "backward_text": lines.backward_text(),
        "forward_args": lines.forward_args,
        "forward_call": [_call_arg(a) for a in lines.forward_args],
        "backward_args": lines.backward_args,
        "backward_call": [_call_arg(a) for a in lines.backward_args],
        "forward_rows": lines.forward_rows,
        "forward_body": lines.forward_body,
        "backward_rows": lines.backward_rows,
        "backward_body": lines.backward_body,
        "helpers": sorted(lines.printer.helpers_used),
        "state_seqs": ", ".join(f"{s}_seq" for s in spec.state) + ("," if len(spec.state) == 1 else ""),
        "state_seqs_tuple": _tuple_of(f"{s}_seq" for s in spec.state),
        "saved_seqs": ", ".join(f"{s}_seq" for s in kernel.saved) + ("," if len(kernel.saved) == 1 else ""),
        "saved_seqs_tuple": _tuple_of(f"{s}_seq" for s in kernel.saved),
        "final_state": _tuple_of(f"{s}_seq[steps].copy()" for s in spec.state),
        "grad_bufs_tuple": _tuple_of(f"grad_{s}_buf" for s in spec.state),
    }
    return _environment().get_template(TEMPLATE_NAME).render(context)


def str_assignment(lhs: sympy.Symbol, rhs: sympy.Expr) -> str:
    return f"{lhs} = {print_text(rhs)}"


def _tuple_of(items: object) -> str:
    """Python source of a tuple of the given source fragments."""
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _tuple_literal(names: object) -> str:
    return _tuple_of(json.dumps(str(n)) for n in names)


def _call_arg(kernel_arg: str) -> str:
    """What the Python wrapper passes for a kernel argument: unit parameters come from the params dict."""
    return f"params[{json.dumps(kernel_arg[: -len('_vec')])}]" if kernel_arg.endswith("_vec") else kernel_arg


def _column(k: int) -> str:
    return "j" if k == 0 else f"{k} * hidden + j"


class _KernelLines:
    """Prints the loads, computations and stores of both fused loops."""

    def __init__(self, kernel: KernelExpressions) -> None:
        self.kernel = kernel
        self.printer = NumbaPrinter()
        backward = kernel.backward
        forward = backward.forward
        spec = forward.spec
        self.gate_column = {unit_symbol(g.name): k for k, g in enumerate(spec.gates)}
        self.xW_column = {sym: k for k, (_, sym) in enumerate(forward.xW)}
        self.hR_column = {sym: k for k, (_, sym) in enumerate(forward.hR)}
        self.prev_state = {sym: name for name, sym in forward.prev}
        self.new_state = {sym: name for name, sym in forward.new}
        self.unit_param = {sym: name for name, sym in forward.unit_params}
        self.saved = {sym: str(sym) for sym in kernel.saved}
        h_prev = dict(forward.prev)[spec.output_state]
        self.h_prev_elementwise = backward.output(h_prev)
        self.elementwise_and_gemm_h = backward.recurrent_gemm and self.h_prev_elementwise != 0

        self.forward_args = [f"{p}_vec" for p in spec.unit_params] + [f"{s}_seq" for s in spec.state]
        self.forward_args += ["gate_seq"] + [f"{s}_seq" for s in self.saved.values()]
        self.backward_args = list(self.forward_args)
        self.backward_args += [f"grad_{s}_buf" for s in spec.state] + ["d_gate_seq"]
        if kernel.separate_recurrent_adjoint:
            self.backward_args.append("d_rec_seq")
        self.backward_args += [f"d_{p}_buf" for p in spec.unit_params]
        self._forward_lines()
        self._backward_lines()

    def code(self, expr: sympy.Expr) -> str:
        return self.printer.doprint(expr)

    def _in_storage_order(self, symbols: tuple[sympy.Symbol, ...]) -> list[sympy.Symbol]:
        """Loads grouped by where they come from, gates in column order, so the code reads like the math."""
        groups = (
            self.prev_state,
            self.xW_column,
            self.hR_column,
            self.gate_column,
            self.new_state,
            self.saved,
            self.unit_param,
        )

        def key(sym: sympy.Symbol) -> tuple[int, int]:
            for rank, group in enumerate(groups):
                if sym in group:
                    return rank, list(group).index(sym)
            return len(groups), 0

        return sorted(symbols, key=key)

    def _load(self, sym: sympy.Symbol, rows: list[str], backward: bool = False) -> str:
        """The line that loads input ``sym`` inside the j loop; registers the row view it needs.

        In the backward loop a saved value comes from its own buffer, even when it is a projection that the
        forward loop read from the step's GEMM output.
        """

        def row(line: str) -> None:
            if line not in rows:
                rows.append(line)

        if backward and sym in self.saved:
            row(f"{sym}_row = {sym}_seq[t, nb]")
            return f"{sym} = {sym}_row[j]"

        if sym in self.xW_column or sym in self.gate_column:
            row("gate_row = gate_seq[t, nb]")
            k = self.xW_column.get(sym, self.gate_column.get(sym))
            return f"{sym} = gate_row[{_column(k)}]"
        if sym in self.hR_column:
            row("rec_row = rec_buf[nb]")
            return f"{sym} = rec_row[{_column(self.hR_column[sym])}]"
        if sym in self.prev_state:
            s = self.prev_state[sym]
            row(f"{s}_prev_row = {s}_seq[t, nb]")
            return f"{sym} = {s}_prev_row[j]"
        if sym in self.new_state:
            s = self.new_state[sym]
            row(f"{s}_row = {s}_seq[t + 1, nb]")
            return f"{sym} = {s}_row[j]"
        if sym in self.unit_param:
            return f"{sym} = {sym}_vec[j]"
        if sym in self.saved:
            row(f"{sym}_row = {sym}_seq[t, nb]")
            return f"{sym} = {sym}_row[j]"
        raise ValueError(f"no storage for {sym}")  # pragma: no cover - every input is classified above

    def _forward_lines(self) -> None:
        kernel = self.kernel
        rows: list[str] = []
        body = [self._load(s, rows) for s in self._in_storage_order(kernel.forward_loop.free_inputs())]
        body += [f"{a.lhs} = {self.code(a.rhs)}" for a in kernel.forward_loop]
        for sym, k in self.gate_column.items():
            rows.append("gate_row = gate_seq[t, nb]") if "gate_row = gate_seq[t, nb]" not in rows else None
            body.append(f"gate_row[{_column(k)}] = {sym}")
        for sym, s in self.new_state.items():
            line = f"{s}_row = {s}_seq[t + 1, nb]"
            if line not in rows:
                rows.append(line)
            body.append(f"{s}_row[j] = {sym}")
        for sym in self.saved:
            line = f"{sym}_row = {sym}_seq[t, nb]"
            if line not in rows:
                rows.append(line)
            body.append(f"{sym}_row[j] = {sym}")
        self.forward_rows, self.forward_body = rows, body

    def _backward_lines(self) -> None:
        kernel = self.kernel
        backward = kernel.backward
        forward = backward.forward
        spec = forward.spec
        seeds = {sym: name for name, sym in backward.seeds}
        rows: list[str] = []
        body = []
        for sym in self._in_storage_order(kernel.backward_loop.free_inputs()):
            if sym in seeds:
                continue
            body.append(self._load(sym, rows, backward=True))
        for sym, s in seeds.items():
            if s == spec.output_state:
                rows += ["dy_row = dy[t, nb]"]
                body.append(f"{sym} = dy_row[j] + grad_{s}_row[j]")
            else:
                body.append(f"{sym} = grad_{s}_row[j]")
        rows += [f"grad_{s}_row = grad_{s}_buf[nb]" for s in spec.state]
        body += [f"{a.lhs} = {self.code(a.rhs)}" for a in kernel.backward_loop]
        rows.append("d_gate_row = d_gate_seq[t, nb]")
        for k, (_, xw) in enumerate(forward.xW):
            body.append(f"d_gate_row[{_column(k)}] = {self.code(backward.output(xw))}")
        if kernel.separate_recurrent_adjoint:
            rows.append("d_rec_row = d_rec_seq[t, nb]")
            for k, (_, hr) in enumerate(forward.hR):
                body.append(f"d_rec_row[{_column(k)}] = {self.code(backward.output(hr))}")
        for s, prev in forward.prev:
            adjoint = self.code(backward.output(prev))
            if s != spec.output_state:
                body.append(f"grad_{s}_row[j] = {adjoint}")
            elif self.elementwise_and_gemm_h:
                rows.append("d_h_prev_row = d_h_prev_buf[nb]")
                body.append(f"d_h_prev_row[j] = {adjoint}")
            elif not backward.recurrent_gemm:
                body.append(f"grad_{s}_row[j] = {adjoint}")
        for p, sym in forward.unit_params:
            body.append(f"d_{p}_buf[j] += {self.code(backward.output(sym))}")
        self.backward_rows, self.backward_body = rows, body

    def backward_text(self) -> list[str]:
        """The derived equations, as printed in the docstring and above the backward loop.

        Adjoints that share one expression print on one line (``d_xW_i = d_hR_i = d_a_i``); the adjoint of
        h_{t-1} also names the recurrent GEMM that the kernel adds after the loop.
        """
        backward = self.kernel.backward
        text = [str_assignment(a.lhs, a.rhs) for a in backward.adjoints]
        defined = set(backward.adjoints.targets)
        h_prev = dict(backward.forward.prev)[backward.forward.spec.output_state]
        groups: dict[sympy.Expr, list[str]] = {}
        for sym, expr in backward.outputs:
            if adjoint_symbol(sym) in defined:
                continue
            if sym == h_prev and backward.recurrent_gemm:
                elementwise = "" if expr == 0 else f"{print_text(expr)} + "
                text.append(f"d_{sym} = {elementwise}d_hR R^T  (one GEMM per step, after the loop)")
                continue
            groups.setdefault(expr, []).append(str(adjoint_symbol(sym)))
        text += [" = ".join([*names, print_text(expr)]) for expr, names in groups.items()]
        return text
