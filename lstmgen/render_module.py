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
from lstmgen.variants import VARIANTS

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
    spec = backward.forward.spec
    if regenerate is None:
        flag = "" if backward.gradient == "full" else f" --gradient {backward.gradient}"
        builtin = VARIANTS.get(spec.name) == spec
        what = spec.name if builtin else f"--spec <the spec file of {spec.name}>"
        regenerate = f"lstmgen generate {what}{flag} --out {'generated/' if builtin else 'DIR'}"
    layout = _Layout(kernel)
    context = {
        "variant": spec.name,
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
        **layout.context(),
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


def _column(k: int) -> str:
    """Index of unit j in column block k of a row."""
    return "j" if k == 0 else f"{k} * hidden + j"


def _block(k: int) -> str:
    """Slice of column block k."""
    return f"{k} * hidden:{k + 1} * hidden" if k else "0:hidden"


class _Phase:
    """The lines of one fused loop: GEMMs before it, row views, equation comments, loop body."""

    def __init__(self, comments: list[str]) -> None:
        self.gemms: list[str] = []
        self.rows: list[str] = []
        self.comments = comments
        self.loads: list[str] = []
        self.body: list[str] = []
        self.stores: list[str] = []

    def row(self, line: str) -> None:
        if line not in self.rows:
            self.rows.append(line)

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "gemms": self.gemms,
            "rows": self.rows,
            "comments": self.comments,
            "body": self.loads + self.body + self.stores,
        }


class _Layout:
    """Where every value lives in the kernels' buffers, and the printed lines of both kernels."""

    def __init__(self, kernel: KernelExpressions) -> None:
        self.kernel = kernel
        self.printer = NumbaPrinter()
        backward = self.backward = kernel.backward
        forward = self.forward = backward.forward
        spec = self.spec = forward.spec
        self.gate_column = {unit_symbol(g.name): k for k, g in enumerate(spec.gates)}
        self.xW_column = {sym: k for k, (_, sym) in enumerate(forward.xW)}
        late_gates = {gate for gate, _ in forward.sources}
        self.early_gates = [k for k, g in enumerate(spec.gates) if g.name not in late_gates]
        hR = dict(forward.hR)
        self.early_column = {hR[spec.gates[k].name]: e for e, k in enumerate(self.early_gates)}
        self.late = [
            (spec.gates.index(next(g for g in spec.gates if g.name == gate)), gate, src)
            for gate, src in forward.sources
        ]
        self.late_projection = {hR[gate]: gate for _, gate, _ in self.late}
        self.feedback_column = {sym: pos for pos, (_, sym) in enumerate(forward.gQ)}
        self.feedback_gate_column = {unit_symbol(g): pos for pos, g in enumerate(spec.feedback)}
        self.prev_state = {sym: name for name, sym in forward.prev}
        self.new_state = {sym: name for name, sym in forward.new}
        self.unit_param = {sym: name for name, sym in forward.unit_params}
        self.saved = {sym: str(sym) for sym in kernel.saved}
        self.seeds = {sym: name for name, sym in backward.seeds}
        self.carried = set(kernel.carried)
        h_prev = dict(forward.prev)[spec.output_state]
        self.h_prev_elementwise = backward.output(h_prev)
        self.elementwise_and_gemm_h = backward.recurrent_gemm and self.h_prev_elementwise != 0
        self.n_gates = len(spec.gates)
        self.n_early = len(self.early_gates)
        self.rec_matrix = "R" if not self.late else "R_early"
        self.d_rec_seq = "d_rec_seq" if kernel.separate_recurrent_adjoint else "d_gate_seq"
        self.extra_seqs = (["fb_seq"] if spec.feedback else []) + [f"{s}_seq" for s in self.saved.values()]

    def code(self, expr: sympy.Expr) -> str:
        return self.printer.doprint(expr)

    # ----------------------------------------------------------------------------------------- loads
    def _in_storage_order(self, symbols: tuple[sympy.Symbol, ...]) -> list[sympy.Symbol]:
        """Loads grouped by where they come from, gates in column order, so the code reads like the math."""
        groups = (
            self.prev_state,
            self.xW_column,
            self.early_column,
            self.late_projection,
            self.feedback_column,
            self.gate_column,
            self.new_state,
            self.saved,
            self.unit_param,
            self.seeds,
        )

        def key(sym: sympy.Symbol) -> tuple[int, int, str]:
            for rank, group in enumerate(groups):
                if sym in group:
                    return rank, list(group).index(sym), ""
            return len(groups), 0, str(sym)

        return sorted(symbols, key=key)

    def _load(self, sym: sympy.Symbol, phase: _Phase, backward: bool) -> str:
        """The line that reads ``sym`` inside the j loop; registers the row view it needs.

        In the backward loop a saved value comes from its own buffer, even when it is a projection that the
        forward loop read from a GEMM's output.
        """
        if sym in self.saved and (backward or sym not in self.forward.inputs()):
            phase.row(f"{sym}_row = {sym}_seq[t, nb]")
            return f"{sym} = {sym}_row[j]"
        if sym in self.gate_column or sym in self.xW_column:
            phase.row("gate_row = gate_seq[t, nb]")
            return f"{sym} = gate_row[{_column(self.gate_column.get(sym, self.xW_column.get(sym)))}]"
        if sym in self.early_column:
            phase.row("rec_row = rec_buf[nb]")
            return f"{sym} = rec_row[{_column(self.early_column[sym])}]"
        if sym in self.late_projection:
            phase.row(f"{sym}_row = {sym}_buf[nb]")
            return f"{sym} = {sym}_row[j]"
        if sym in self.feedback_column:
            phase.row("fbq_row = fbq_buf[nb]")
            return f"{sym} = fbq_row[{_column(self.feedback_column[sym])}]"
        if sym in self.prev_state:
            s = self.prev_state[sym]
            phase.row(f"{s}_prev_row = {s}_seq[t, nb]")
            return f"{sym} = {s}_prev_row[j]"
        if sym in self.new_state:
            s = self.new_state[sym]
            phase.row(f"{s}_row = {s}_seq[t + 1, nb]")
            return f"{sym} = {s}_row[j]"
        if sym in self.unit_param:
            return f"{sym} = {sym}_vec[j]"
        if sym in self.seeds:
            return self._load_seed(sym, phase)
        if sym in self.carried:
            phase.row(f"{sym}_carry_row = {sym}_carry_buf[nb]")
            return f"{sym} = {sym}_carry_row[j]"
        raise ValueError(f"no storage for {sym}")  # pragma: no cover - every input is classified above

    def _load_seed(self, sym: sympy.Symbol, phase: _Phase) -> str:
        name = self.seeds[sym]
        if name == self.spec.output_state:
            phase.row("dy_row = dy[t, nb]")
            phase.row(f"grad_{name}_row = grad_{name}_buf[nb]")
            return f"{sym} = dy_row[j] + grad_{name}_row[j]"
        if name in self.spec.state:
            phase.row(f"grad_{name}_row = grad_{name}_buf[nb]")
            return f"{sym} = grad_{name}_row[j]"
        if unit_symbol(name) in self.feedback_gate_column:
            phase.row("grad_fb_row = grad_fb_buf[nb]")
            return f"{sym} = grad_fb_row[{_column(self.feedback_gate_column[unit_symbol(name)])}]"
        phase.row(f"{sym}_row = {sym}_buf[nb]")  # a mid-step source: its GEMM wrote dnext_src_k_buf
        return f"{sym} = {sym}_row[j]"

    # --------------------------------------------------------------------------------------- forward
    def forward_phases(self) -> list[dict[str, list[str]]]:
        kernel, forward = self.kernel, self.forward
        phases = []
        for p, assignments in enumerate(kernel.forward_phases):
            comments = [str_assignment(a.lhs, a.rhs) for a in forward.equations if kernel.forward_phase[a.lhs] == p]
            phase = _Phase(comments)
            for _k, gate, src in self.late:
                if kernel.forward_phase[src] == p - 1:
                    phase.gemms += [
                        f"# Mid-step recurrent projection of gate {gate}: ({src}) R_{gate}, one GEMM (B, H) x (H, H).",
                        f"np.dot({src}_seq[t], R_{gate}, hR_{gate}_buf)",
                    ]
            phase.loads = [self._load(s, phase, False) for s in self._in_storage_order(assignments.free_inputs())]
            phase.body = [f"{a.lhs} = {self.code(a.rhs)}" for a in assignments]
            self._forward_stores(p, phase)
            phases.append(phase.as_dict())
        return phases

    def _forward_stores(self, p: int, phase: _Phase) -> None:
        kernel = self.kernel
        defined = set(kernel.forward_phases[p].targets)
        for sym, k in self.gate_column.items():
            if sym in defined:
                phase.row("gate_row = gate_seq[t, nb]")
                phase.stores.append(f"gate_row[{_column(k)}] = {sym}")
                if sym in self.feedback_gate_column:
                    phase.row("fb_row = fb_seq[t + 1, nb]")
                    phase.stores.append(f"fb_row[{_column(self.feedback_gate_column[sym])}] = {sym}")
        for sym, s in self.new_state.items():
            if sym in defined:
                phase.row(f"{s}_row = {s}_seq[t + 1, nb]")
                phase.stores.append(f"{s}_row[j] = {sym}")
        inputs_read = set(kernel.forward_phases[p].free_inputs())
        for sym in self.saved:
            is_input = sym in self.forward.inputs()
            if (sym in defined and not is_input) or (is_input and sym in inputs_read):
                phase.row(f"{sym}_row = {sym}_seq[t, nb]")
                phase.stores.append(f"{sym}_row[j] = {sym}")

    # -------------------------------------------------------------------------------------- backward
    def backward_phases(self) -> list[dict[str, list[str]]]:
        kernel, backward = self.kernel, self.backward
        phases = []
        for p in reversed(range(kernel.n_phases)):
            assignments = kernel.backward_phases[p]
            comments = [str_assignment(a.lhs, a.rhs) for a in backward.adjoints if kernel.backward_phase[a.lhs] == p]
            if p == 0:
                comments += self.output_text()
            phase = _Phase(comments)
            for _k, gate, src in self.late:
                if kernel.forward_phase[src] == p:
                    phase.gemms += [
                        f"# Gradient on the source of gate {gate}'s mid-step projection: d_hR_{gate} R_{gate}^T.",
                        f"np.dot(d_hR_{gate}_seq[t], R_{gate}T, dnext_{src}_buf)",
                    ]
            stores = self._backward_stores(p, phase)
            needed = set(assignments.free_inputs()) | {s for _, expr in stores.values() for s in expr.free_symbols}
            needed -= set(assignments.targets)
            phase.loads = [self._load(s, phase, True) for s in self._in_storage_order(tuple(needed))]
            phase.body = [f"{a.lhs} = {self.code(a.rhs)}" for a in assignments]
            phase.body += [f"{a.lhs}_carry_row[j] = {a.lhs}" for a in assignments if a.lhs in self.carried]
            for a in assignments:
                if a.lhs in self.carried:
                    phase.row(f"{a.lhs}_carry_row = {a.lhs}_carry_buf[nb]")
            phase.stores = [f"{target} {op} {self.code(expr)}" for target, (op, expr) in stores.items()]
            phases.append(phase.as_dict())
        return phases

    def _store_phase(self, expr: sympy.Expr) -> int:
        """Where an output adjoint is written: in the phase that computes it (phase 0 for seeds and zeros)."""
        return self.kernel.backward_phase.get(expr, 0)

    def _backward_stores(self, p: int, phase: _Phase) -> dict[str, tuple[str, sympy.Expr]]:
        """Targets written by backward phase ``p`` -> (assignment operator, expression written)."""
        backward, forward, spec = self.backward, self.forward, self.spec
        stores: dict[str, tuple[str, sympy.Expr]] = {}
        for k, (_, xw) in enumerate(forward.xW):
            if self._store_phase(backward.output(xw)) == p:
                phase.row("d_gate_row = d_gate_seq[t, nb]")
                stores[f"d_gate_row[{_column(k)}]"] = ("=", backward.output(xw))
        for sym, e in self.early_column.items():
            if self.kernel.separate_recurrent_adjoint and self._store_phase(backward.output(sym)) == p:
                phase.row("d_rec_row = d_rec_seq[t, nb]")
                stores[f"d_rec_row[{_column(e)}]"] = ("=", backward.output(sym))
        for sym, gate in self.late_projection.items():
            if self._store_phase(backward.output(sym)) == p:
                phase.row(f"d_hR_{gate}_row = d_hR_{gate}_seq[t, nb]")
                stores[f"d_hR_{gate}_row[j]"] = ("=", backward.output(sym))
        for sym, pos in self.feedback_column.items():
            if self._store_phase(backward.output(sym)) == p:
                phase.row("d_fbq_row = d_fbq_seq[t, nb]")
                stores[f"d_fbq_row[{_column(pos)}]"] = ("=", backward.output(sym))
        if p == 0:
            for s, prev in forward.prev:
                adjoint = backward.output(prev)
                if s != spec.output_state:
                    phase.row(f"grad_{s}_row = grad_{s}_buf[nb]")
                    stores[f"grad_{s}_row[j]"] = ("=", adjoint)
                elif self.elementwise_and_gemm_h:
                    phase.row("d_h_prev_row = d_h_prev_buf[nb]")
                    stores["d_h_prev_row[j]"] = ("=", adjoint)
                elif not backward.recurrent_gemm:
                    phase.row(f"grad_{s}_row = grad_{s}_buf[nb]")
                    stores[f"grad_{s}_row[j]"] = ("=", adjoint)
        for name, sym in forward.unit_params:
            if self._store_phase(backward.output(sym)) == p:
                stores[f"d_{name}_buf[j]"] = ("+=", backward.output(sym))
        return stores

    def output_text(self) -> list[str]:
        """The step's output adjoints that are aliases; adjoints sharing one expression print on one line."""
        backward = self.backward
        defined = set(backward.adjoints.targets)
        h_prev = dict(backward.forward.prev)[self.spec.output_state]
        groups: dict[sympy.Expr, list[str]] = {}
        text = []
        for sym, expr in backward.outputs:
            if adjoint_symbol(sym) in defined:
                continue
            if sym == h_prev and backward.recurrent_gemm:
                elementwise = "" if expr == 0 else f"{print_text(expr)} + "
                text.append(f"d_{sym} = {elementwise}d_hR R^T  (one GEMM per step, after the loop)")
                continue
            groups.setdefault(expr, []).append(str(adjoint_symbol(sym)))
        return text + [" = ".join([*names, print_text(expr)]) for expr, names in groups.items()]

    # --------------------------------------------------------------------------------------- context
    def context(self) -> dict[str, object]:
        spec, kernel, backward = self.spec, self.kernel, self.backward
        unit_vecs = [f"{p}_vec" for p in spec.unit_params]
        matrices = ["W", "R", "b", *(["Q"] if spec.feedback else [])]
        forward_args = [*matrices, *unit_vecs, *(f"{s}_seq" for s in spec.state), "gate_seq", *self.extra_seqs]
        grad_bufs = [f"grad_{s}_buf" for s in spec.state]
        if spec.feedback and backward.recurrent_gemm:
            grad_bufs.append("grad_fb_buf")
        adjoint_seqs = ["d_gate_seq"] + (["d_rec_seq"] if kernel.separate_recurrent_adjoint else [])
        adjoint_seqs += [f"d_hR_{gate}_seq" for _, gate, _ in self.late]
        adjoint_seqs += ["d_fbq_seq"] if spec.feedback else []
        backward_args = [
            "dy",
            "x",
            *(m for m in matrices if m != "b"),
            *unit_vecs,
            *(f"{s}_seq" for s in spec.state),
            "gate_seq",
            *self.extra_seqs,
            *grad_bufs,
            *adjoint_seqs,
            *(f"d_{p}_buf" for p in spec.unit_params),
        ]

        def call(arg: str) -> str:
            if arg in matrices:
                return f"params[{json.dumps(arg)}]"
            if arg.endswith("_vec"):
                return f"params[{json.dumps(arg[: -len('_vec')])}]"
            return arg

        early_blocks = [(e, k) for e, k in enumerate(self.early_gates)]
        forward_phases = self.forward_phases()
        backward_phases = self.backward_phases()
        return {
            "n_gates": self.n_gates,
            "n_early": self.n_early,
            "n_feedback": len(spec.feedback),
            "feedback": bool(spec.feedback),
            "unit_params": list(spec.unit_params),
            "states_list": list(spec.state),
            "output_state": spec.output_state,
            "saved": list(self.saved.values()),
            "extra_seqs": self.extra_seqs,
            "separate_rec": kernel.separate_recurrent_adjoint,
            "d_rec_seq": self.d_rec_seq,
            "rec_matrix": self.rec_matrix,
            "early_blocks": [{"e": _block(e), "k": _block(k)} for e, k in early_blocks],
            "late": [{"gate": gate, "src": str(src), "block": _block(k)} for k, gate, src in self.late],
            "carried": [str(s) for s in kernel.carried],
            "recurrent_gemm": backward.recurrent_gemm,
            "elementwise_and_gemm_h": self.elementwise_and_gemm_h,
            "forward_text": [str_assignment(a.lhs, a.rhs) for a in self.forward.equations],
            "backward_text": [str_assignment(a.lhs, a.rhs) for a in backward.adjoints] + self.output_text(),
            "forward_args": forward_args,
            "forward_call": [call(a) for a in forward_args],
            "backward_args": backward_args,
            "backward_call": [call(a) for a in backward_args],
            "forward_phases": forward_phases,
            "backward_phases": backward_phases,
            "helpers": sorted(self.printer.helpers_used),
            "state_seqs": ", ".join(f"{s}_seq" for s in spec.state) + ("," if len(spec.state) == 1 else ""),
            "state_seqs_tuple": _tuple_of(f"{s}_seq" for s in spec.state),
            "extra_seqs_unpack": ", ".join(self.extra_seqs) + ("," if len(self.extra_seqs) == 1 else ""),
            "extra_seqs_tuple": _tuple_of(self.extra_seqs),
            "final_state": _tuple_of(f"{s}_seq[steps].copy()" for s in spec.state),
            "grad_bufs_tuple": _tuple_of(f"grad_{s}_buf" for s in spec.state),
            "kernel_grads": ["dx", "dW", "dR", "db", *(["dQ"] if spec.feedback else [])],
        }
