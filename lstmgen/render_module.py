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
TEMPLATE_VERSION = 3
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


def _block(k: int) -> str:
    """Slice of column block k."""
    return f"{k} * hidden:{k + 1} * hidden" if k else "0:hidden"


class _Phase:
    """One phase of a step: GEMMs before it, the row views of one batch row, then short loops over units.

    Each loop computes one assignment (``for j: target[j] = expression``) and so touches only the few rows that
    assignment reads and writes: LLVM vectorizes such loops, where one loop over every array would need more
    runtime aliasing checks than it is willing to emit.
    """

    def __init__(self, comments: list[str]) -> None:
        self.gemms: list[str] = []
        self.rows: list[str] = []
        self.comments = comments
        self.loops: list[dict[str, object]] = []

    def row(self, line: str) -> None:
        if line not in self.rows:
            self.rows.append(line)

    def loop(self, comment: str, lines: list[str]) -> None:
        self.loops.append({"comment": comment, "lines": lines})

    def as_dict(self) -> dict[str, object]:
        return {"gemms": self.gemms, "rows": self.rows, "comments": self.comments, "loops": self.loops}


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
        self.elementwise_and_gemm_h = backward.recurrent_gemm and backward.output(h_prev) != 0
        self.n_gates = len(spec.gates)
        self.n_early = len(self.early_gates)
        self.rec_matrix = "R" if not self.late else "R_early"
        self.d_rec_seq = "d_rec_seq" if kernel.separate_recurrent_adjoint else "d_gate_seq"
        self.extra_seqs = (["fb_seq"] if spec.feedback else []) + [f"{s}_seq" for s in self.saved.values()]
        self.scratch: dict[str, None] = {}  # names of (H,) scratch rows, in first-use order

    def code(self, expr: sympy.Expr) -> str:
        return self.printer.doprint(expr)

    # ----------------------------------------------------------------------------------------- rows
    def _block_row(self, phase: _Phase, name: str, array: str, index: str, k: int) -> str:
        phase.row(f"{name} = {array}[{index}, {_block(k)}]")
        return name

    def _row(self, sym: sympy.Symbol, phase: _Phase, home: dict[sympy.Symbol, str], backward: bool) -> str:
        """The 1-D row (H,) that holds ``sym`` for the current step and batch row; registers its view."""
        if sym in home:
            return home[sym]
        spec = self.spec
        if sym in self.saved and (backward or sym not in self.forward.inputs()):
            phase.row(f"{sym}_row = {sym}_seq[t, nb]")
            return f"{sym}_row"
        if sym in self.gate_column or sym in self.xW_column:
            k = self.gate_column.get(sym, self.xW_column.get(sym))
            return self._block_row(phase, f"{spec.gates[k].name}_gate_row", "gate_seq", "t, nb", k)
        if sym in self.early_column:
            e = self.early_column[sym]
            return self._block_row(phase, f"{spec.gates[self.early_gates[e]].name}_rec_row", "rec_buf", "nb", e)
        if sym in self.late_projection:
            phase.row(f"{sym}_row = {sym}_buf[nb]")
            return f"{sym}_row"
        if sym in self.feedback_column:
            pos = self.feedback_column[sym]
            return self._block_row(phase, f"{spec.feedback[pos]}_fbq_row", "fbq_buf", "nb", pos)
        if sym in self.prev_state:
            s = self.prev_state[sym]
            phase.row(f"{s}_prev_row = {s}_seq[t, nb]")
            return f"{s}_prev_row"
        if sym in self.new_state:
            s = self.new_state[sym]
            phase.row(f"{s}_row = {s}_seq[t + 1, nb]")
            return f"{s}_row"
        if sym in self.unit_param:
            return f"{sym}_vec"
        if sym in self.seeds:
            return self._seed_row(sym, phase, home)
        if sym in self.carried:
            phase.row(f"{sym}_carry_row = {sym}_carry_buf[nb]")
            return f"{sym}_carry_row"
        raise ValueError(f"no storage for {sym}")  # pragma: no cover - every input is classified above

    def _seed_row(self, sym: sympy.Symbol, phase: _Phase, home: dict[sympy.Symbol, str]) -> str:
        name = self.seeds[sym]
        if name == self.spec.output_state:
            # dy_t plus the error carried from step t+1, summed once per phase into a scratch row.
            phase.row("dy_row = dy[t, nb]")
            phase.row(f"grad_{name}_row = grad_{name}_buf[nb]")
            home[sym] = self._scratch(sym)
            phase.loop(
                f"{sym} = dy_t + (error carried from step t+1)", [f"{home[sym]}[j] = dy_row[j] + grad_{name}_row[j]"]
            )
            return home[sym]
        if name in self.spec.state:
            phase.row(f"grad_{name}_row = grad_{name}_buf[nb]")
            return f"grad_{name}_row"
        if unit_symbol(name) in self.feedback_gate_column:
            pos = self.feedback_gate_column[unit_symbol(name)]
            return self._block_row(phase, f"{name}_grad_fb_row", "grad_fb_buf", "nb", pos)
        phase.row(f"{sym}_row = {sym}_buf[nb]")  # a mid-step source: its GEMM wrote dnext_src_k_buf
        return f"{sym}_row"

    def _scratch(self, sym: sympy.Symbol) -> str:
        self.scratch.setdefault(str(sym), None)
        return f"{sym}_tmp"

    def _code_at(self, expr: sympy.Expr, phase: _Phase, home: dict[sympy.Symbol, str], backward: bool) -> str:
        """``expr`` printed with every symbol read from its row at unit j."""
        # Sorted: the order of first use decides the order of the row views, and must not depend on hashing.
        rows = {
            s: sympy.Symbol(f"{self._row(s, phase, home, backward)}[j]") for s in sorted(expr.free_symbols, key=str)
        }
        return self.code(expr.xreplace(rows))

    def _comment(self, a_lhs: sympy.Symbol, rhs: sympy.Expr, original: dict[sympy.Symbol, sympy.Expr]) -> str:
        return str_assignment(a_lhs, original.get(a_lhs, rhs))

    # --------------------------------------------------------------------------------------- forward
    def forward_phases(self) -> list[dict[str, object]]:
        kernel, forward = self.kernel, self.forward
        original = {a.lhs: a.rhs for a in forward.equations}
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
            home: dict[sympy.Symbol, str] = {}
            inputs_read = set(assignments.free_inputs())
            for sym in self.saved:  # inputs that backward needs, copied from where the step found them
                if sym in self.forward.inputs() and sym in inputs_read:
                    source = self._row(sym, phase, home, False)
                    phase.row(f"{sym}_row = {sym}_seq[t, nb]")
                    phase.loop(f"keep {sym} for backward", [f"{sym}_row[j] = {source}[j]"])
            for a in assignments:
                rhs = self._code_at(a.rhs, phase, home, False)
                target = self._forward_home(a.lhs, phase)
                lines = [f"{target}[j] = {rhs}"]
                if a.lhs in self.feedback_gate_column:
                    pos = self.feedback_gate_column[a.lhs]
                    fb = self._block_row(phase, f"{a.lhs}_fb_row", "fb_seq", "t + 1, nb", pos)
                    lines.append(f"{fb}[j] = {target}[j]")
                home[a.lhs] = target
                phase.loop(self._comment(a.lhs, a.rhs, original), lines)
            phases.append(phase.as_dict())
        return phases

    def _forward_home(self, sym: sympy.Symbol, phase: _Phase) -> str:
        """Where a forward value is written: its gate block, its state row, its saved row, or a scratch row."""
        if sym in self.gate_column:
            k = self.gate_column[sym]
            return self._block_row(phase, f"{self.spec.gates[k].name}_gate_row", "gate_seq", "t, nb", k)
        if sym in self.new_state:
            s = self.new_state[sym]
            phase.row(f"{s}_row = {s}_seq[t + 1, nb]")
            return f"{s}_row"
        if sym in self.saved:
            phase.row(f"{sym}_row = {sym}_seq[t, nb]")
            return f"{sym}_row"
        return self._scratch(sym)

    # -------------------------------------------------------------------------------------- backward
    def backward_phases(self) -> list[dict[str, object]]:
        kernel, backward = self.kernel, self.backward
        original = {a.lhs: a.rhs for a in backward.adjoints}
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
            home: dict[sympy.Symbol, str] = {}
            outputs = self._backward_outputs(p, phase)
            direct = self._direct_homes(outputs, assignments)
            for a in assignments:
                rhs = self._code_at(a.rhs, phase, home, True)
                if a.lhs in self.carried:
                    phase.row(f"{a.lhs}_carry_row = {a.lhs}_carry_buf[nb]")
                    target = f"{a.lhs}_carry_row"
                else:
                    target = direct.get(a.lhs) or self._scratch(a.lhs)
                home[a.lhs] = target
                phase.loop(self._comment(a.lhs, a.rhs, original), [f"{target}[j] = {rhs}"])
            for target, (op, expr) in outputs.items():
                if op == "=" and isinstance(expr, sympy.Symbol) and home.get(expr) == target:
                    continue  # computed in place
                rhs = self._code_at(expr, phase, home, True)
                phase.loop(f"{target.split('_row')[0]} {op} {print_text(expr)}", [f"{target}[j] {op} {rhs}"])
            phases.append(phase.as_dict())
        return phases

    def _direct_homes(self, outputs: dict[str, tuple[str, sympy.Expr]], assignments) -> dict[sympy.Symbol, str]:
        """Adjoints computed straight into an output row (the first output that is exactly that adjoint)."""
        targets = set(assignments.targets)
        direct: dict[sympy.Symbol, str] = {}
        for target, (op, expr) in outputs.items():
            # Not the carries for step t-1: the seeds of this step are still read from those rows.
            if (
                op == "="
                and expr in targets
                and expr not in direct
                and expr not in self.carried
                and not target.startswith(("grad_", "d_h_prev"))
            ):
                direct[expr] = target
        return direct

    def _store_phase(self, expr: sympy.Expr) -> int:
        """Where an output adjoint is written: in the phase that computes it (phase 0 for seeds and zeros)."""
        return self.kernel.backward_phase.get(expr, 0)

    def _backward_outputs(self, p: int, phase: _Phase) -> dict[str, tuple[str, sympy.Expr]]:
        """Rows written by backward phase ``p`` -> (assignment operator, expression written)."""
        backward, forward, spec = self.backward, self.forward, self.spec
        outputs: dict[str, tuple[str, sympy.Expr]] = {}
        for k, (gate, xw) in enumerate(forward.xW):
            if self._store_phase(backward.output(xw)) == p:
                outputs[self._block_row(phase, f"{gate}_d_gate_row", "d_gate_seq", "t, nb", k)] = (
                    "=",
                    backward.output(xw),
                )
        for sym, e in self.early_column.items():
            if self.kernel.separate_recurrent_adjoint and self._store_phase(backward.output(sym)) == p:
                name = f"{spec.gates[self.early_gates[e]].name}_d_rec_row"
                outputs[self._block_row(phase, name, "d_rec_seq", "t, nb", e)] = ("=", backward.output(sym))
        for sym, gate in self.late_projection.items():
            if self._store_phase(backward.output(sym)) == p:
                phase.row(f"d_hR_{gate}_row = d_hR_{gate}_seq[t, nb]")
                outputs[f"d_hR_{gate}_row"] = ("=", backward.output(sym))
        for sym, pos in self.feedback_column.items():
            if self._store_phase(backward.output(sym)) == p:
                name = f"{spec.feedback[pos]}_d_fbq_row"
                outputs[self._block_row(phase, name, "d_fbq_seq", "t, nb", pos)] = ("=", backward.output(sym))
        for name, sym in forward.unit_params:
            if self._store_phase(backward.output(sym)) == p:
                outputs[f"d_{name}_buf"] = ("+=", backward.output(sym))
        if p == 0:  # the carries for step t-1 are written last: the seeds of step t are read from them first
            for s, prev in forward.prev:
                adjoint = backward.output(prev)
                if s != spec.output_state:
                    phase.row(f"grad_{s}_row = grad_{s}_buf[nb]")
                    outputs[f"grad_{s}_row"] = ("=", adjoint)
                elif self.elementwise_and_gemm_h:
                    phase.row("d_h_prev_row = d_h_prev_buf[nb]")
                    outputs["d_h_prev_row"] = ("=", adjoint)
                elif not backward.recurrent_gemm:
                    phase.row(f"grad_{s}_row = grad_{s}_buf[nb]")
                    outputs[f"grad_{s}_row"] = ("=", adjoint)
        return outputs

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
            "lengths",
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
        forward_scratch, self.scratch = list(self.scratch), {}
        backward_phases = self.backward_phases()
        backward_scratch = list(self.scratch)
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
            "forward_scratch": forward_scratch,
            "backward_scratch": backward_scratch,
            "helpers": sorted(self.printer.helpers_used),
            "state_seqs": ", ".join(f"{s}_seq" for s in spec.state) + ("," if len(spec.state) == 1 else ""),
            "state_seqs_tuple": _tuple_of(f"{s}_seq" for s in spec.state),
            "extra_seqs_unpack": ", ".join(self.extra_seqs) + ("," if len(self.extra_seqs) == 1 else ""),
            "extra_seqs_tuple": _tuple_of(self.extra_seqs),
            "final_state": _tuple_of(f"{s}_seq[steps].copy()" for s in spec.state),
            "grad_bufs_tuple": _tuple_of(f"grad_{s}_buf" for s in spec.state),
            "kernel_grads": ["dx", "dW", "dR", "db", *(["dQ"] if spec.feedback else [])],
        }
