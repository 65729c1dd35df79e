"""Stage 1 — the cell spec: a small immutable description of one recurrent cell.

A spec names the gates (each one block of H columns of W, R and b, with its activation and pre-activation),
the carried state, per-unit parameter vectors such as peepholes, and the equations of the new state. All
equations are text over a fixed vocabulary (see :mod:`lstmgen.symbolic.equation_parser`) and are checked before
anything is derived; built-in variants (:mod:`lstmgen.variants`) are specs like any user's.

Vocabulary of the equations, for gate ``k`` and state ``s``:
    ``xW_k``   x_t W_k + b_k, the input projection of the gate block (bias folded in)
    ``hR_k``   h_{t-1} R_k, the recurrent projection of the gate block (or source_k R_k when the gate
               declares another ``recurrent_source``, e.g. ``r*h_prev`` for the GRU as published)
    ``gQ_k``   for gates listed in ``feedback_into`` (``feedback`` when empty): [previous step's values of the
               ``feedback`` gates] Q_k
    ``a_k``    the gate's pre-activation (defined by ``Gate.preactivation``)
    ``k``      the gate's value, ``activation(a_k)``
    ``s_prev`` the carried state at t-1; ``s`` is its new value
    ``x``      the input row x_t itself, unit j (the cell then needs I = H)
    ``p_k``    block k of a gate parameter ``p`` (a (G·H,) vector, one block per gate, as b)
    ``b_k``    block k of the bias, in a cell with ``input_bias = False`` (then ``xW_k`` is x_t W_k alone)
    unit parameters (``p_i``...), per-step inputs (``inputs``) and intermediate names defined in ``equations``.

Reductions over the H units of a batch row: ``mean(e)``, ``var(e)`` (biased) and ``layer_norm(e)``
(``(e − mean(e)) / sqrt(var(e) + 1e−5)``, no gain or shift); ``H`` is the number of units. The mean over all G·H
pre-activations of a projection is ``mean(xW_i + xW_f + ...) / G``.
"""

from __future__ import annotations

import ast
import hashlib
import keyword
import re
from dataclasses import dataclass, field

from lstmgen.functions import FLOAT32_MAX, GATE_ACTIVATIONS, REDUCTIONS, VOCABULARY


class SpecError(ValueError):
    """A cell spec is malformed; the message names the field and what was expected."""


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*\Z")

#: Names of the equations' own vocabulary that a spec may not redefine: the math symbols of the layer (input
#: x, output y, the matrices W, R, Q, the bias b, the number of units H a reduction runs over), the functions
#: and the reductions. The generated kernels' identifiers
#: need no reservation: every name derived from a spec is ``<name>__<role>`` (see :mod:`lstmgen.codegen.kernel_names`).
RESERVED_NAMES = frozenset(("x", "y", "W", "R", "b", "Q", "H", *VOCABULARY, *REDUCTIONS))
#: Prefixes and suffixes of the vocabulary's derived names (``xW_i``, ``a_i``, ``d_c``, ``c_prev``...) and of
#: the names the derivation makes itself (``dnext_h``, ``src_n``, the reductions' sums ``sum_mu``, the CSE
#: temporaries ``tmp0``).
RESERVED_PREFIXES = ("xW_", "hR_", "gQ_", "a_", "d_", "dnext_", "src_", "sum_", "tmp")
RESERVED_SUFFIXES = ("_prev",)
MAX_NAME_LENGTH = 64
#: The parameter of a projected output: h = u W_p.
PROJECTION_MATRIX = "W_p"


def check_identifier(name: object, where: str) -> str:
    """Return ``name`` if it is a safe identifier for a spec symbol, else raise :class:`SpecError`."""
    if isinstance(name, str) and len(name) > MAX_NAME_LENGTH:
        raise SpecError(f"{where}: name of {len(name)} characters (expected at most {MAX_NAME_LENGTH})")
    if not isinstance(name, str) or not _NAME.match(name):
        raise SpecError(
            f"{where}: {name!r} is not a valid name (expected letters and digits, single underscores between "
            "them, starting with a letter)"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in RESERVED_NAMES:
        raise SpecError(f"{where}: {name!r} is reserved (a name of the equations' vocabulary)")
    if name.startswith(RESERVED_PREFIXES) or name.endswith(RESERVED_SUFFIXES):
        raise SpecError(
            f"{where}: {name!r} uses a reserved prefix or suffix ({', '.join(RESERVED_PREFIXES + RESERVED_SUFFIXES)})"
        )
    return name


@dataclass(frozen=True)
class Gate:
    """One gate block: ``name = activation(preactivation)``.

    ``preactivation`` defaults to ``xW_<name> + hR_<name>`` (that is x_t W_k + h_{t-1} R_k + b_k).
    ``recurrent_source`` is what the block of R multiplies, default ``h_prev``; another source (an expression
    of this step's values, such as ``r*h_prev``) makes the kernel do that block's GEMM mid-step.
    """

    name: str
    activation: str
    preactivation: str = ""
    recurrent_source: str = ""

    @property
    def preactivation_text(self) -> str:
        return self.preactivation or f"xW_{self.name} + hR_{self.name}"


class _NameClaims:
    """The names a spec defines so far, each with where it was defined: a second definition is refused."""

    def __init__(self) -> None:
        self.seen: dict[str, str] = {}

    def __call__(self, name: str, where: str) -> None:
        check_identifier(name, where)
        if name in self.seen:
            raise SpecError(f"{where}: {name!r} is already defined by {self.seen[name]}")
        self.seen[name] = where


@dataclass(frozen=True)
class CellSpec:
    """An immutable description of a recurrent cell.

    Attributes:
        name: identifier of the variant; also the generated module's name.
        description: one line for ``lstmgen list``.
        paper: the publication that defines the cell.
        gates: the gate blocks in column order of W (I, G·H), R (H, G·H) and b (G·H,).
        state: carried state names; the first is the hidden output h (fed to the recurrent GEMM).
        equations: ordered ``(name, expression)`` pairs defining intermediates and every new state value.
        unit_params: per-unit parameter vectors of shape (H,), e.g. the peepholes ``p_i``.
        feedback: gates whose previous-step values feed back, through the matrix ``Q`` (F·H, F_into·H) — row block
            = source gate, column block = target gate — into the pre-activations of the ``feedback_into`` gates,
            as ``gQ_<target>``; the fed-back values start at 0.
        feedback_into: the gates whose pre-activation reads ``gQ_<gate>``; empty: the ``feedback`` gates themselves
            (every fed-back gate feeds every one of them, as in Gers & Schmidhuber's LSTM with gate recurrence).
        inputs: per-step inputs (T, B, H) the caller passes to ``forward(..., inputs={...})``, such as zoneout
            or dropout masks: read at unit j of step t, saved on the tape, given no gradient.
        gate_params: parameter vectors of shape (G·H,), one block per gate like b (layer norm gains of the
            pre-activations): block k of ``p`` is ``p_<gate k>`` in the equations.
        input_bias: False when the equations place the bias themselves (``b_<gate>``), for instance after
            normalising x_t W: then ``xW_k`` is x_t W_k without b_k, and db is derived like any parameter's.
        init: ``(parameter, value)`` pairs: parameters that ``init_params`` fills with a constant instead of
            drawing them (a layer norm's gains 1 and shifts 0, as torch.nn.LayerNorm starts).
        projection: True when the output state is projected (the LSTMP of Sak et al. 2014): its equation gives
            the H-unit value u, and the carried output is h = u W_p with W_p (H, P), P the module's
            ``proj_size`` (H by default); R is then (P, G_r·H) and y, h are (·, P). The equations may read h_{t-1}
            only through the recurrent products hR_k.
        heads: None for a dense R; K for a block-diagonal one stored compactly as (K, H/K, G_r·H/K) (head k's
            units h[k·d:(k+1)·d] feed units k·d…(k+1)·d of every recurrent gate); K is the default number of heads,
            the module reads the actual one from R's shape.
        block_gates: the gates a memory block shares (the 1997 LSTM's input and output gates): with the module's
            run-time ``block_size`` S, one unit of such a gate serves the S consecutive cells of its block, so its
            columns of W, R and b are H/S wide (S = 1, the default, is a gate per cell). Each must have the
            default pre-activation ``xW_k + hR_k``, which is then the same for every cell of a block: the
            block's cells run the per-cell equations on its shared column, and the gradient of the shared
            column is the sum of the S cells' (the adjoint of the sharing).
    """

    name: str
    description: str
    paper: str
    gates: tuple[Gate, ...]
    state: tuple[str, ...]
    equations: tuple[tuple[str, str], ...]
    unit_params: tuple[str, ...] = field(default=())
    feedback: tuple[str, ...] = field(default=())
    feedback_into: tuple[str, ...] = field(default=())
    inputs: tuple[str, ...] = field(default=())
    gate_params: tuple[str, ...] = field(default=())
    input_bias: bool = True
    init: tuple[tuple[str, float], ...] = field(default=())
    projection: bool = False
    heads: int | None = None
    block_gates: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        check_identifier(self.name, "name")
        if not self.gates:
            raise SpecError("gates: expected at least one gate")
        if not self.state:
            raise SpecError("state: expected at least one state (the hidden output first)")
        claims = _NameClaims()
        defined = self._check_names(claims)
        self._check_init()
        self._check_structures(claims)
        self._check_block_gates([g.name for g in self.gates])
        missing = [s for s in self.state if s not in defined]
        if missing:
            raise SpecError(
                f"equations: state {missing[0]!r} is never updated (expected an equation '{missing[0]} = ...')"
            )

    def _check_names(self, claim: _NameClaims) -> set[str]:
        """Every name the spec defines is a distinct identifier; returns the states the equations update."""
        for k, gate in enumerate(self.gates):
            if not isinstance(gate, Gate):
                raise SpecError(f"gates[{k}]: expected a Gate, got {type(gate).__name__}")
            for field_name in ("name", "activation", "preactivation", "recurrent_source"):
                value = getattr(gate, field_name)
                if not isinstance(value, str):
                    raise SpecError(f"gates[{k}].{field_name}: expected a string, got {type(value).__name__} {value!r}")
            claim(gate.name, f"gates[{k}].name")
            if gate.activation not in GATE_ACTIVATIONS:
                raise SpecError(
                    f"gates[{k}].activation: unknown activation {gate.activation!r} "
                    f"(expected one of {', '.join(sorted(GATE_ACTIVATIONS))})"
                )
        gate_names = [g.name for g in self.gates]
        for field_name in ("feedback", "feedback_into"):
            names = getattr(self, field_name)
            for k, name in enumerate(names):
                if name not in gate_names or name in names[:k]:
                    raise SpecError(
                        f"{field_name}[{k}]: expected a distinct gate name (one of {', '.join(gate_names)}), got "
                        f"{name!r}"
                    )
        if self.feedback_into and not self.feedback:
            raise SpecError("feedback_into: gates fed back into, but no feedback gates (expected feedback = [...])")
        for field_name in ("state", "unit_params", "inputs"):
            for k, name in enumerate(getattr(self, field_name)):
                claim(name, f"{field_name}[{k}]")
        if not isinstance(self.input_bias, bool):
            raise SpecError(f"input_bias: expected true or false, got {self.input_bias!r}")
        for k, p in enumerate(self.gate_params):
            claim(p, f"gate_params[{k}]")
        blocked = [(p, f"gate_params[{k}]") for k, p in enumerate(self.gate_params)]
        blocked += [] if self.input_bias else [("b", "input_bias")]
        for p, where in blocked:
            for gate in gate_names:
                claim(f"{p}_{gate}", f"{where} (block {gate} of {p})")
        defined = set()
        for k, (lhs, _rhs) in enumerate(self.equations):
            where = f"equations[{k}] ({lhs})"
            if lhs in self.state:
                if lhs in defined:
                    raise SpecError(f"{where}: state {lhs!r} is updated twice")
                defined.add(lhs)
                continue
            claim(lhs, where)
        return defined

    def _check_init(self) -> None:
        for k, item in enumerate(self.init):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise SpecError(f"init[{k}]: expected a (parameter, value) pair, got {item!r}")
            name, value = item
            if name not in self.params or name in [n for n, _ in self.init[:k]]:
                raise SpecError(f"init[{k}]: expected a distinct parameter of {self.params}, got {name!r}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise SpecError(f"init[{k}] ({name}): expected a finite number, got {value!r}")
            # float32 parameters hold it too: its magnitude within float32's range (an int of any size included).
            if not abs(value) <= FLOAT32_MAX:
                shown = f"{value:g}" if isinstance(value, float) else f"an integer of {len(str(abs(value)))} digits"
                raise SpecError(
                    f"init[{k}] ({name}): expected a finite number of magnitude at most {FLOAT32_MAX:g} (float32's "
                    f"range), got {shown}"
                )

    def _check_structures(self, claim: _NameClaims) -> None:
        """A projection and heads: their own fields, and the structures each excludes."""
        if not isinstance(self.projection, bool):
            raise SpecError(f"projection: expected true or false, got {self.projection!r}")
        if self.projection:
            claim(PROJECTION_MATRIX, "projection (its matrix)")
            if not self.recurrent_gates:
                raise SpecError("projection: a projected output needs a gate whose pre-activation reads hR_k")
            if self.heads is not None or self.feedback or any(g.recurrent_source for g in self.gates):
                raise SpecError("projection: not supported together with heads, feedback or a gate's recurrent_source")
        if self.heads is not None:
            if isinstance(self.heads, bool) or not isinstance(self.heads, int) or self.heads < 1:
                raise SpecError(f"heads: expected a positive integer (the default number of heads), got {self.heads!r}")
            if not self.recurrent_gates:
                raise SpecError("heads: a block-diagonal R needs a gate whose pre-activation reads hR_k")
            if self.feedback or any(g.recurrent_source for g in self.gates):
                raise SpecError("heads: not supported together with feedback or a gate's recurrent_source")

    def _check_block_gates(self, gate_names: list[str]) -> None:
        gates = {g.name: g for g in self.gates}
        for k, name in enumerate(self.block_gates):
            where = f"block_gates[{k}]"
            if name not in gates or name in self.block_gates[:k]:
                raise SpecError(
                    f"{where}: expected a distinct gate name (one of {', '.join(gate_names)}), got {name!r}"
                )
            gate = gates[name]
            # The sum of the gate's products and nothing per cell: the same for every cell of the block.
            products = {f"xW_{name}", f"hR_{name}"} | ({f"gQ_{name}"} if name in self.feedback_targets else set())
            expected = " + ".join(p for p in (f"xW_{name}", f"hR_{name}", f"gQ_{name}") if p in products)
            if not _is_sum_of_names(gate.preactivation_text, products) or gate.recurrent_source:
                raise SpecError(
                    f"{where} ({name}): a gate a memory block shares needs the pre-activation '{expected}' (the "
                    "same for every cell of the block) and no recurrent_source"
                )
        if self.block_gates and (self.heads is not None or self.projection or self.gate_params or not self.input_bias):
            raise SpecError(
                "block_gates: memory blocks are not supported together with heads, a projection, gate parameters "
                "or input_bias = false"
            )

    @property
    def feedback_targets(self) -> tuple[str, ...]:
        """The gates whose pre-activation reads the feedback product gQ_k, in the column order of Q."""
        return self.feedback_into or self.feedback

    @property
    def output_state(self) -> str:
        """The state that is the layer's output and the recurrent GEMM's input (h)."""
        return self.state[0]

    @property
    def params(self) -> tuple[str, ...]:
        """Parameter names of the generated module: W, R, b, W_p (with a projection), Q (with feedback), the gate
        parameters, then the unit parameters."""
        return (
            "W",
            *(("R",) if self.recurrent_gates else ()),
            "b",
            *((PROJECTION_MATRIX,) if self.projection else ()),
            *(("Q",) if self.feedback else ()),
            *self.gate_params,
            *self.unit_params,
        )

    @property
    def recurrent_gates(self) -> tuple[str, ...]:
        """The gates whose pre-activation takes a recurrent product ``hR_<gate>``, in gate order: the column
        blocks of R. A cell with none has no R."""
        texts = [g.preactivation_text for g in self.gates] + [text for _, text in self.equations]
        return tuple(g.name for g in self.gates if any(re.search(rf"\bhR_{g.name}\b", t) for t in texts))

    def fingerprint(self) -> str:
        """A stable hash of everything that defines the cell (printed in the generated module's banner)."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def _is_sum_of_names(text: str, names: set[str]) -> bool:
    """Whether ``text`` is the sum of exactly ``names`` (each once), however spaced, ordered or bracketed."""
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return False
    terms: list[ast.expr] = []
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, ast.BinOp) and isinstance(item.op, ast.Add):
            pending += [item.left, item.right]
        else:
            terms.append(item)
    read = [t.id for t in terms if isinstance(t, ast.Name)]
    return len(read) == len(terms) == len(names) and set(read) == names
