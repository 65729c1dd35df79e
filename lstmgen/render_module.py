"""Stage 5b — kernel expression lists → the text of a standalone Python module (numpy + numba only).

All logic lives here: this module prints every line (loads, computations, stores, comments) and the Jinja
template in ``templates/module.py.j2`` only lays them out. The same spec always renders the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

import jinja2
import sympy

from lstmgen import __version__
from lstmgen.assignment import AssignmentList
from lstmgen.derive_backward import adjoint_symbol, seed_symbol
from lstmgen.expression_lists import KernelExpressions
from lstmgen.forward_equations import unit_symbol
from lstmgen.functions import helper_closure, helper_source
from lstmgen.kernel_names import check_namespace, kernel_name
from lstmgen.numba_printer import NumbaPrinter, print_text
from lstmgen.user_text import in_comment, in_docstring, python_literal
from lstmgen.variants import VARIANTS

#: Bumped whenever the template's output changes; printed in every generated module's banner.
TEMPLATE_VERSION = 4
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
        "description": in_docstring(spec.description),
        "paper": in_docstring(spec.paper),
        "description_literal": python_literal(spec.description),
        "paper_literal": python_literal(spec.paper),
        "variant_literal": python_literal(spec.name),
        "version": __version__,
        "template_version": TEMPLATE_VERSION,
        "fingerprint": spec.fingerprint(),
        "gradient": backward.gradient,
        "regenerate": in_docstring(regenerate),
        "gates": _tuple_literal(g.name for g in spec.gates),
        "states": _tuple_literal(spec.state),
        "params": _tuple_literal(spec.params),
        **layout.context(),
    }
    source = _environment().get_template(TEMPLATE_NAME).render(context)
    check_namespace(source, layout.owners())
    return source


def str_assignment(lhs: sympy.Symbol, rhs: sympy.Expr) -> str:
    return f"{lhs} = {print_text(rhs)}"


def _tuple_of(items: object) -> str:
    """Python source of a tuple of the given source fragments."""
    items = list(items)
    return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"


def _tuple_literal(names: object) -> str:
    return _tuple_of(python_literal(str(n)) for n in names)


def _block(k: int) -> str:
    """Slice of column block k."""
    return f"{k} * hidden:{k + 1} * hidden" if k else "0:hidden"


@dataclass(frozen=True)
class _Output:
    """What a backward phase writes to one output row: ``row op expr``; ``carry`` for the carries to step t-1."""

    op: str
    expr: sympy.Expr
    label: str
    carry: bool = False


class _Phase:
    """One phase of a step: GEMMs before it, the row views of one batch row, then short loops over units.

    Each loop computes one assignment (``for j: target[j] = expression``) and so touches only the few rows that
    assignment reads and writes: LLVM vectorizes such loops, where one loop over every array would need more
    runtime aliasing checks than it is willing to emit.
    """

    def __init__(self, comments: list[str]) -> None:
        self.gemms: list[str] = []
        self.rows: list[str] = []
        self.comments = [in_comment(c) for c in comments]
        self.loops: list[dict[str, object]] = []

    def row(self, line: str) -> None:
        if line not in self.rows:  # a name bound twice to different views fails check_namespace after rendering
            self.rows.append(line)

    def loop(self, comment: str, lines: list[str]) -> None:
        self.loops.append({"comment": in_comment(comment), "lines": lines})

    def as_dict(self) -> dict[str, object]:
        return {"gemms": self.gemms, "rows": self.rows, "comments": self.comments, "loops": self.loops}


class _Layout:
    """Where every value lives in the kernels' buffers, and the printed lines of both kernels.

    Every identifier derived from a spec name comes from :func:`~lstmgen.kernel_names.kernel_name`.
    """

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
        hR = self.hR = dict(forward.hR)
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
        self.h_prev = dict(forward.prev)[spec.output_state]
        self.elementwise_and_gemm_h = backward.recurrent_gemm and backward.output(self.h_prev) != 0
        self.n_gates = len(spec.gates)
        self.n_early = len(self.early_gates)
        self.rec_matrix = "R" if not self.late else "R_early"
        self.d_rec_seq = "d_rec_seq" if kernel.separate_recurrent_adjoint else "d_gate_seq"
        self.extra_seqs = (["fb_seq"] if spec.feedback else []) + [kernel_name(s, "seq") for s in self.saved.values()]
        self.scratch: dict[str, None] = {}  # names of (H,) scratch rows, in first-use order

    def code(self, expr: sympy.Expr) -> str:
        return self.printer.doprint(expr)

    def owners(self) -> set[str]:
        """Every name that may own a kernel identifier: the spec's names and the derivation's symbols."""
        names = {str(s) for a in self.forward.equations for s in (a.lhs, *a.rhs.free_symbols)}
        for assignments in (*self.kernel.forward_phases, *self.kernel.backward_phases):
            names |= {str(s) for a in assignments for s in (a.lhs, *a.rhs.free_symbols)}
        names |= {str(adjoint_symbol(s)) for s in self.forward.inputs()}
        names |= {str(s) for _, s in self.backward.seeds}
        names |= {g.name for g in self.spec.gates} | set(self.spec.state) | set(self.spec.unit_params)
        return names

    # ----------------------------------------------------------------------------------------- rows
    def _block_row(self, phase: _Phase, owner: str, role: str, array: str, index: str, k: int) -> str:
        name = kernel_name(owner, role)
        phase.row(f"{name} = {array}[{index}, {_block(k)}]")
        return name

    def _seq_row(self, phase: _Phase, owner: object, seq_owner: object, index: str, role: str = "row") -> str:
        name = kernel_name(owner, role)
        phase.row(f"{name} = {kernel_name(seq_owner, 'seq')}[{index}]")
        return name

    def _buf_row(self, phase: _Phase, owner: object, role: str = "row", buf_role: str = "buf") -> str:
        name = kernel_name(owner, role)
        phase.row(f"{name} = {kernel_name(owner, buf_role)}[nb]")
        return name

    def _row(self, sym: sympy.Symbol, phase: _Phase, home: dict[sympy.Symbol, str], backward: bool) -> str:
        """The 1-D row (H,) that holds ``sym`` for the current step and batch row; registers its view."""
        if sym in home:
            return home[sym]
        spec = self.spec
        if sym in self.saved and (backward or sym not in self.forward.inputs()):
            return self._seq_row(phase, sym, sym, "t, nb", "saved_row")
        if sym in self.gate_column or sym in self.xW_column:
            k = self.gate_column.get(sym, self.xW_column.get(sym))
            return self._block_row(phase, spec.gates[k].name, "gate_row", "gate_seq", "t, nb", k)
        if sym in self.early_column:
            e = self.early_column[sym]
            return self._block_row(phase, spec.gates[self.early_gates[e]].name, "rec_row", "rec_buf", "nb", e)
        if sym in self.late_projection:
            return self._buf_row(phase, sym)
        if sym in self.feedback_column:
            pos = self.feedback_column[sym]
            return self._block_row(phase, spec.feedback[pos], "fbq_row", "fbq_buf", "nb", pos)
        if sym in self.prev_state:
            return self._seq_row(phase, sym, self.prev_state[sym], "t, nb")
        if sym in self.new_state:
            return self._seq_row(phase, sym, self.new_state[sym], "t + 1, nb")
        if sym in self.unit_param:
            return kernel_name(sym, "vec")
        if sym in self.seeds:
            return self._seed_row(sym, phase, home)
        if sym in self.carried:
            return self._buf_row(phase, sym, "carry_row", "carry_buf")
        raise ValueError(f"no storage for {sym}")  # pragma: no cover - every input is classified above

    def _seed_row(self, sym: sympy.Symbol, phase: _Phase, home: dict[sympy.Symbol, str]) -> str:
        name = self.seeds[sym]
        if name == self.spec.output_state:
            # dy_t plus the error carried from step t+1, summed once per phase into a scratch row.
            phase.row("dy_row = dy[t, nb]")
            carried = self._buf_row(phase, name, "grad_row", "grad_buf")
            home[sym] = self._scratch(sym)
            phase.loop(f"{sym} = dy_t + (error carried from step t+1)", [f"{home[sym]}[j] = dy_row[j] + {carried}[j]"])
            return home[sym]
        if name in self.spec.state:
            return self._buf_row(phase, name, "grad_row", "grad_buf")
        if unit_symbol(name) in self.feedback_gate_column:
            pos = self.feedback_gate_column[unit_symbol(name)]
            return self._block_row(phase, name, "fb_grad_row", "grad_fb_buf", "nb", pos)
        return self._buf_row(phase, sym)  # a mid-step source: its GEMM wrote <dnext_src_k>__buf

    def _scratch(self, sym: sympy.Symbol) -> str:
        name = kernel_name(sym, "tmp")
        self.scratch.setdefault(name, None)
        return name

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
                        f"np.dot({kernel_name(src, 'seq')}[t], {kernel_name(gate, 'R')}, "
                        f"{kernel_name(self.hR[gate], 'buf')})",
                    ]
            home: dict[sympy.Symbol, str] = {}
            inputs_read = set(assignments.free_inputs())
            for sym in self.saved:  # inputs that backward needs, copied from where the step found them
                if sym in self.forward.inputs() and sym in inputs_read:
                    source = self._row(sym, phase, home, False)
                    kept = self._seq_row(phase, sym, sym, "t, nb", "saved_row")
                    phase.loop(f"keep {sym} for backward", [f"{kept}[j] = {source}[j]"])
            for a in assignments:
                rhs = self._code_at(a.rhs, phase, home, False)
                target = self._forward_home(a.lhs, phase)
                lines = [f"{target}[j] = {rhs}"]
                if a.lhs in self.feedback_gate_column:
                    pos = self.feedback_gate_column[a.lhs]
                    fb = self._block_row(phase, str(a.lhs), "fb_row", "fb_seq", "t + 1, nb", pos)
                    lines.append(f"{fb}[j] = {target}[j]")
                home[a.lhs] = target
                phase.loop(self._comment(a.lhs, a.rhs, original), lines)
            phases.append(phase.as_dict())
        return phases

    def _forward_home(self, sym: sympy.Symbol, phase: _Phase) -> str:
        """Where a forward value is written: its gate block, its state row, its saved row, or a scratch row."""
        if sym in self.gate_column:
            k = self.gate_column[sym]
            return self._block_row(phase, self.spec.gates[k].name, "gate_row", "gate_seq", "t, nb", k)
        if sym in self.new_state:
            return self._seq_row(phase, sym, self.new_state[sym], "t + 1, nb")
        if sym in self.saved:
            return self._seq_row(phase, sym, sym, "t, nb", "saved_row")
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
                        f"np.dot({kernel_name(adjoint_symbol(self.hR[gate]), 'seq')}[t], {kernel_name(gate, 'RT')}, "
                        f"{kernel_name(seed_symbol(str(src)), 'buf')})",
                    ]
            home: dict[sympy.Symbol, str] = {}
            outputs = self._backward_outputs(p, phase)
            direct = self._direct_homes(outputs, assignments)
            for a in assignments:
                rhs = self._code_at(a.rhs, phase, home, True)
                if a.lhs in self.carried:
                    target = self._buf_row(phase, a.lhs, "carry_row", "carry_buf")
                else:
                    target = direct.get(a.lhs) or self._scratch(a.lhs)
                home[a.lhs] = target
                phase.loop(self._comment(a.lhs, a.rhs, original), [f"{target}[j] = {rhs}"])
            for target, out in outputs.items():
                if out.op == "=" and isinstance(out.expr, sympy.Symbol) and home.get(out.expr) == target:
                    continue  # computed in place
                rhs = self._code_at(out.expr, phase, home, True)
                phase.loop(f"{out.label} {out.op} {print_text(out.expr)}", [f"{target}[j] {out.op} {rhs}"])
            phases.append(phase.as_dict())
        return phases

    def _direct_homes(self, outputs: dict[str, _Output], assignments: AssignmentList) -> dict[sympy.Symbol, str]:
        """Adjoints computed straight into an output row (the first output that is exactly that adjoint)."""
        targets = set(assignments.targets)
        direct: dict[sympy.Symbol, str] = {}
        for target, out in outputs.items():
            # Not the carries for step t-1: the seeds of this step are still read from those rows.
            if (
                out.op == "="
                and out.expr in targets
                and out.expr not in direct
                and out.expr not in self.carried
                and not out.carry
            ):
                direct[out.expr] = target
        return direct

    def _store_phase(self, expr: sympy.Expr) -> int:
        """Where an output adjoint is written: in the phase that computes it (phase 0 for seeds and zeros)."""
        return self.kernel.backward_phase.get(expr, 0)

    def _backward_outputs(self, p: int, phase: _Phase) -> dict[str, _Output]:
        """Rows written by backward phase ``p`` -> what is written there."""
        backward, forward, spec = self.backward, self.forward, self.spec
        outputs: dict[str, _Output] = {}
        for k, (gate, xw) in enumerate(forward.xW):
            if self._store_phase(backward.output(xw)) == p:
                row = self._block_row(phase, gate, "adjoint_row", "d_gate_seq", "t, nb", k)
                outputs[row] = _Output("=", backward.output(xw), f"d_{xw}")
        for sym, e in self.early_column.items():
            if self.kernel.separate_recurrent_adjoint and self._store_phase(backward.output(sym)) == p:
                gate = spec.gates[self.early_gates[e]].name
                row = self._block_row(phase, gate, "rec_adjoint_row", "d_rec_seq", "t, nb", e)
                outputs[row] = _Output("=", backward.output(sym), f"d_{sym}")
        for sym in self.late_projection:
            if self._store_phase(backward.output(sym)) == p:
                row = self._seq_row(phase, adjoint_symbol(sym), adjoint_symbol(sym), "t, nb")
                outputs[row] = _Output("=", backward.output(sym), f"d_{sym}")
        for sym, pos in self.feedback_column.items():
            if self._store_phase(backward.output(sym)) == p:
                row = self._block_row(phase, spec.feedback[pos], "fbq_adjoint_row", "d_fbq_seq", "t, nb", pos)
                outputs[row] = _Output("=", backward.output(sym), f"d_{sym}")
        for _name, sym in forward.unit_params:
            if self._store_phase(backward.output(sym)) == p:
                outputs[kernel_name(sym, "grad")] = _Output("+=", backward.output(sym), f"sum of d_{sym}")
        if p == 0:  # the carries for step t-1 are written last: the seeds of step t are read from them first
            for s, prev in forward.prev:
                adjoint = backward.output(prev)
                if s != spec.output_state or not backward.recurrent_gemm:
                    row = self._buf_row(phase, s, "grad_row", "grad_buf")
                    outputs[row] = _Output("=", adjoint, f"d_{prev}", carry=True)
                elif self.elementwise_and_gemm_h:
                    row = self._buf_row(phase, adjoint_symbol(prev))
                    outputs[row] = _Output("=", adjoint, f"d_{prev}", carry=True)
        return outputs

    def output_text(self) -> list[str]:
        """The step's output adjoints that are aliases; adjoints sharing one expression print on one line."""
        backward = self.backward
        defined = set(backward.adjoints.targets)
        groups: dict[sympy.Expr, list[str]] = {}
        text = []
        blocks = ", ".join(self.spec.gates[k].name for k in self.early_gates)
        gemm = f"d_hR R^T  (one GEMM per step over the blocks {blocks} of R, after the loop)"
        for sym, expr in backward.outputs:
            if sym == self.h_prev and backward.recurrent_gemm:
                if adjoint_symbol(sym) in defined:  # its elementwise part is printed above
                    text.append(f"d_{sym} += {gemm}")
                else:
                    text.append(f"d_{sym} = {'' if expr == 0 else f'{print_text(expr)} + '}{gemm}")
                continue
            if adjoint_symbol(sym) in defined:
                continue
            groups.setdefault(expr, []).append(str(adjoint_symbol(sym)))
        return text + [" = ".join([*names, print_text(expr)]) for expr, names in groups.items()]

    # --------------------------------------------------------------------------------------- context
    def context(self) -> dict[str, object]:
        spec, kernel, backward, forward = self.spec, self.kernel, self.backward, self.forward
        state_seq = {s: kernel_name(s, "seq") for s in spec.state}
        grad_buf = {s: kernel_name(s, "grad_buf") for s in spec.state}
        unit_vec = {p: kernel_name(sym, "vec") for p, sym in forward.unit_params}
        unit_grad = {p: kernel_name(sym, "grad") for p, sym in forward.unit_params}
        matrices = ["W", "R", "b", *(["Q"] if spec.feedback else [])]
        forward_args = [*matrices, *unit_vec.values(), *state_seq.values(), "gate_seq", *self.extra_seqs]
        grad_bufs = list(grad_buf.values())
        if spec.feedback and backward.recurrent_gemm:
            grad_bufs.append("grad_fb_buf")
        late = [
            {
                "gate": gate,
                "block": _block(k),
                "R": kernel_name(gate, "R"),
                "RT": kernel_name(gate, "RT"),
                "hR_buf": kernel_name(self.hR[gate], "buf"),
                "d_hR_seq": kernel_name(adjoint_symbol(self.hR[gate]), "seq"),
                "src_seq": kernel_name(src, "seq"),
                "dnext_src_buf": kernel_name(seed_symbol(str(src)), "buf"),
            }
            for k, gate, src in self.late
        ]
        adjoint_seqs = ["d_gate_seq"] + (["d_rec_seq"] if kernel.separate_recurrent_adjoint else [])
        adjoint_seqs += [entry["d_hR_seq"] for entry in late]
        adjoint_seqs += ["d_fbq_seq"] if spec.feedback else []
        backward_args = [
            "dy",
            "x",
            "lengths",
            *(m for m in matrices if m != "b"),
            *unit_vec.values(),
            *state_seq.values(),
            "gate_seq",
            *self.extra_seqs,
            *grad_bufs,
            *adjoint_seqs,
            *unit_grad.values(),
        ]
        from_params = {m: m for m in matrices} | {vec: p for p, vec in unit_vec.items()}

        def call(arg: str) -> str:
            return f"params[{python_literal(from_params[arg])}]" if arg in from_params else arg

        early_blocks = [(e, k) for e, k in enumerate(self.early_gates)]
        forward_phases = self.forward_phases()
        forward_scratch, self.scratch = list(self.scratch), {}
        backward_phases = self.backward_phases()
        backward_scratch = list(self.scratch)
        out = spec.output_state
        return {
            "n_gates": self.n_gates,
            "n_early": self.n_early,
            "n_feedback": len(spec.feedback),
            "feedback": bool(spec.feedback),
            "unit_params": [
                {"literal": python_literal(p), "grad": unit_grad[p], "shape_doc": in_docstring(p)}
                for p in spec.unit_params
            ],
            "state_bufs": [
                {"seq": state_seq[s], "grad_buf": grad_buf[s], "index": k} for k, s in enumerate(spec.state)
            ],
            "output_seq": state_seq[out],
            "output_grad_buf": grad_buf[out],
            "output_grad_row": kernel_name(out, "grad_row"),
            "d_h_prev_buf": kernel_name(adjoint_symbol(self.h_prev), "buf"),
            "d_h_prev_row": kernel_name(adjoint_symbol(self.h_prev), "row"),
            "saved_seqs": [kernel_name(s, "seq") for s in self.saved.values()],
            "extra_seqs": self.extra_seqs,
            "separate_rec": kernel.separate_recurrent_adjoint,
            "d_rec_seq": self.d_rec_seq,
            "rec_matrix": self.rec_matrix,
            "early_blocks": [{"e": _block(e), "k": _block(k)} for e, k in early_blocks],
            "late": late,
            "carry_bufs": [kernel_name(s, "carry_buf") for s in kernel.carried],
            "recurrent_gemm": backward.recurrent_gemm,
            "elementwise_and_gemm_h": self.elementwise_and_gemm_h,
            "forward_text": [in_docstring(str_assignment(a.lhs, a.rhs)) for a in forward.equations],
            "backward_text": [
                in_docstring(line)
                for line in [str_assignment(a.lhs, a.rhs) for a in backward.adjoints] + self.output_text()
            ],
            "forward_args": forward_args,
            "forward_call": [call(a) for a in forward_args],
            "backward_args": backward_args,
            "backward_call": [call(a) for a in backward_args],
            "forward_phases": forward_phases,
            "backward_phases": backward_phases,
            "forward_scratch": forward_scratch,
            "backward_scratch": backward_scratch,
            "helper_sources": [helper_source(name) for name in helper_closure(self.printer.helpers_used)],
            "state_seqs": ", ".join(state_seq.values()) + ("," if len(spec.state) == 1 else ""),
            "state_seqs_tuple": _tuple_of(state_seq.values()),
            "extra_seqs_unpack": ", ".join(self.extra_seqs) + ("," if len(self.extra_seqs) == 1 else ""),
            "extra_seqs_tuple": _tuple_of(self.extra_seqs),
            "final_state": _tuple_of(f"{seq}[steps].copy()" for seq in state_seq.values()),
            "grad_bufs_tuple": _tuple_of(grad_buf.values()),
            "kernel_grads": ["dx", "dW", "dR", "db", *(["dQ"] if spec.feedback else [])],
        }
