"""The kernel IR: what a generated kernel is, as nodes, between the expression lists and the text.

:mod:`lstmgen.codegen.lower_kernel` builds it from the expression lists; :mod:`lstmgen.codegen.kernel_printer`
prints it. A kernel owns buffers (arguments and locals, with their shapes), runs statements before its time loop,
the loop itself (per step: GEMMs, then row loops over the batch, each running one short loop over the units per
assignment), and statements after it. Element reads and writes inside a unit loop are ``sympy.Indexed`` nodes on
the row they read (``c__row[j]``), so expressions keep their structure down to the printer, which replaces each
view's element by its buffer's (``c__seq[t + 1, nb, j]``); no index is ever part of a symbol's name.

Extents (``"hidden"``, ``"3 * hidden"``, ``"steps + 1"``) are the kernel's own size variables, computed from its
arguments; an index part is ``"t"``, ``"t + 1"``, ``"nb"``, ``":"`` or a :class:`Block`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

#: The unit index of every unit loop, and the batch row of every row loop.
UNIT = sympy.Idx("j")
BATCH_ROW = sympy.Idx("nb")


def width(n: int, unit: str = "hidden") -> str:
    """The extent of ``n`` blocks of ``unit`` (hidden units by default)."""
    return unit if n == 1 else f"{n} * {unit}"


@dataclass(frozen=True)
class Block:
    """Column block ``index`` of ``size`` hidden units each: the columns [index·size·H, (index+1)·size·H)."""

    index: int
    size: int = 1


IndexPart = str | Block


@dataclass(frozen=True)
class Buffer:
    """An array of the kernel: an argument, or a local allocated once before the time loop.

    ``init`` says how the module's wrapper (arguments) or the kernel (locals) makes it: ``"empty"``,
    ``"zeros"``, ``"zeros_if_padded"`` (rows past a length must read zero), ``"initial"`` (the initial state
    ``index``, at step 0), ``"final"`` (the gradient on the final state ``index``), ``"tape"`` (read back from
    the tape), ``"param"`` (the parameter ``param``), ``"input"`` (x, dy, lengths), ``"step_input"`` (the
    per-step input ``param``), ``"scratch"`` (a (H,) row the kernel reuses for every batch row).
    """

    name: str
    shape: tuple[str, ...]
    holds: str
    init: str = "empty"
    index: int = 0
    param: str = ""

    def element(self, *more: sympy.Expr) -> sympy.Indexed:
        """Its element at unit j (a scratch row, a unit parameter) or at ``(j, *more)``."""
        return sympy.IndexedBase(self.name)[(UNIT, *more)]


@dataclass(frozen=True)
class Slice:
    """``buffer[index]`` (the whole buffer for an empty index)."""

    buffer: str
    index: tuple[IndexPart, ...] = ()


@dataclass(frozen=True)
class Transposed:
    operand: Operand


@dataclass(frozen=True)
class Flat:
    """An operand of shape (steps, batch, n) seen as (steps·batch, n)."""

    operand: Operand
    columns: str


@dataclass(frozen=True)
class Contiguous:
    operand: Operand


@dataclass(frozen=True)
class Ones:
    """A vector of ``length`` ones (a sum over rows as a GEMV)."""

    length: str


@dataclass(frozen=True)
class Dot:
    """The matrix product ``a b``, optionally reshaped."""

    a: Operand
    b: Operand
    shape: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Plus:
    """``a + b`` (arrays of one shape)."""

    a: Operand
    b: Operand


Operand = Slice | Transposed | Flat | Contiguous | Ones | Dot | Plus


@dataclass(frozen=True)
class View:
    """A row of the batch row nb named after the value it holds: ``buffer[index]``, (H,) or (n·H,). The printers
    index its buffer directly (a row bound to a name cost numba a fifth of a tiny step)."""

    name: str
    source: Slice

    def element(self) -> sympy.Indexed:
        return sympy.IndexedBase(self.name)[UNIT]


@dataclass(frozen=True)
class ScalarView(View):
    """A per-row value read back in a row loop: ``name = buffer[t, nb]``, one number, not a row."""

    def element(self) -> sympy.Symbol:
        return sympy.Symbol(self.name, real=True)


@dataclass(frozen=True)
class Scalar:
    """A per-row value (a reduction over the units, or what is computed from such values alone) held in a
    local of the row loop."""

    name: str

    def element(self) -> sympy.Symbol:
        return sympy.Symbol(self.name, real=True)


Row = View | Buffer | Scalar


@dataclass(frozen=True)
class Store:
    """``target[j] op value`` in a unit loop; ``value`` reads ``reads`` (their elements are its Indexed nodes)."""

    target: Row
    value: sympy.Expr
    reads: tuple[Row, ...]
    op: str = "="


@dataclass(frozen=True)
class UnitLoop:
    """``for j in range(extent)``: the stores of one assignment (and its copies), under one comment."""

    comment: str
    stores: tuple[Store, ...]
    blocks: int = 1
    #: The extent of one block: the hidden units, or ``"proj"``, the P units of a projected output.
    unit: str = "hidden"

    def rows(self) -> tuple[Row, ...]:
        return tuple(row for store in self.stores for row in (*store.reads, store.target))


@dataclass(frozen=True)
class Reduction:
    """``target = Σ_j value`` over the units: one loop that accumulates into a per-row local."""

    comment: str
    target: Scalar
    value: sympy.Expr
    reads: tuple[Row, ...]

    def rows(self) -> tuple[Row, ...]:
        return (*self.reads, self.target)


@dataclass(frozen=True)
class ScalarStore:
    """``target = value`` for a per-row value: a local, or its slot ``buffer[t, nb]`` kept for backward."""

    comment: str
    target: Scalar | Slice
    value: sympy.Expr
    reads: tuple[Row, ...]

    def rows(self) -> tuple[Row, ...]:
        return self.reads + ((self.target,) if isinstance(self.target, Scalar) else ())


@dataclass(frozen=True)
class Assign:
    """``target = value`` outside the unit loops: a named local, a block copy, a whole-row copy."""

    target: Slice | str
    value: Operand
    comment: str = ""


@dataclass(frozen=True)
class Gemm:
    """``np.dot(a, b, out)``: a product written into an existing buffer (never accumulated)."""

    a: Operand
    b: Operand
    out: Slice
    comment: str


@dataclass(frozen=True)
class HeadProjection:
    """The block-diagonal recurrent product of one step, one GEMM (B, d) x (d, blocks·d) per head k:
    ``source[:, k·d:(k+1)·d] R[k]`` through the (heads, B, d) and (heads, B, blocks·d) buffers ``head_in`` and
    ``head_out``, its column block g spread to ``out``'s units k·d…(k+1)·d of gate block g."""

    source: Slice
    out: str
    blocks: int
    comment: str


@dataclass(frozen=True)
class HeadProjectionT:
    """Its adjoint in backward: per head k, the head's columns of every gate block of ``source`` gathered into
    ``head_grad[k]`` (B, blocks·d), then ``out[k·d:(k+1)·d] = R[k] head_grad[k]^T`` (``out`` is (H, B))."""

    source: Slice
    out: str
    blocks: int
    comment: str


@dataclass(frozen=True)
class HeadWeightGradient:
    """``dR[k] = left[:, k·d:(k+1)·d]^T right_k`` over all steps at once, ``right_k`` the head's columns of every
    gate block of ``right`` (steps·batch, blocks·H)."""

    left: str
    right: str
    blocks: int
    comment: str


@dataclass(frozen=True)
class InputProjection:
    """x W + b for every step at once into ``out`` (steps, batch, blocks·H): one GEMM, then the bias (not when
    the cell places the bias in its equations)."""

    out: str
    blocks: int
    bias: bool = True


@dataclass(frozen=True)
class RowLoop:
    """``for nb in range(batch)`` over the rows still within their length (``past=False``) or past it."""

    comments: tuple[str, ...]
    body: tuple[UnitLoop | Reduction | ScalarStore | Assign, ...]
    past: bool = False
    skip_note: str = ""

    @property
    def views(self) -> tuple[View, ...]:
        """The row views the body reads and writes, in first-use order."""
        seen: dict[View, None] = {}
        for item in self.body:
            if not isinstance(item, Assign):
                for row in item.rows():
                    if isinstance(row, View):
                        seen.setdefault(row, None)
        return tuple(seen)


@dataclass(frozen=True)
class Phase:
    """A phase of a step: the GEMMs that must finish first (the mid-step recurrent products), then the rows."""

    gemms: tuple[Gemm, ...]
    rows: RowLoop


Statement = Assign | Gemm | HeadProjection | HeadProjectionT | HeadWeightGradient | InputProjection | RowLoop | Phase


@dataclass(frozen=True)
class TimeLoop:
    reverse: bool
    body: tuple[Statement, ...]


@dataclass(frozen=True)
class Kernel:
    """One compiled function: arguments, locals, statements around the time loop, what it returns."""

    name: str
    args: tuple[Buffer, ...]
    before: tuple[Statement | UnitLoop, ...]
    loop: TimeLoop
    #: The expression of the hidden size in the kernel's arguments.
    hidden: str
    after: tuple[Statement, ...] = ()
    returns: tuple[str, ...] = ()
    allocated: tuple[Buffer, ...] = field(default=())
    #: Whether R is block-diagonal: the kernel reads ``heads`` and ``head_size`` from R's shape.
    heads: bool = False
    #: The expression of the projected output's size P (a cell with a projection), else "".
    proj: str = ""

    @property
    def locals(self) -> tuple[Buffer, ...]:
        """Buffers the kernel allocates: declared ones, then the scratch rows its unit loops use."""
        seen: dict[Buffer, None] = dict.fromkeys(self.allocated)
        names = {b.name for b in self.args}
        for loop in row_items(self):
            for row in loop.rows():
                if isinstance(row, Buffer) and row.name not in names and row.init == "scratch":
                    seen.setdefault(row, None)
        return tuple(seen)

    def gemms(self) -> tuple[Gemm | HeadProjection | HeadProjectionT, ...]:
        """Every per-step product of the time loop (a GEMM, or one GEMM per head), in execution order."""
        out: list[Gemm | HeadProjection | HeadProjectionT] = []
        for s in self.loop.body:
            if isinstance(s, (Gemm, HeadProjection, HeadProjectionT)):
                out.append(s)
            elif isinstance(s, Phase):
                out += s.gemms
        return tuple(out)


def row_items(kernel: Kernel) -> tuple[UnitLoop | Reduction | ScalarStore, ...]:
    """Every unit loop, reduction and per-row store of the kernel's time loop, in order."""
    out: list[UnitLoop | Reduction | ScalarStore] = []
    for s in kernel.loop.body:
        rows = s.rows if isinstance(s, Phase) else s if isinstance(s, RowLoop) else None
        if rows is not None:
            out += [item for item in rows.body if not isinstance(item, Assign)]
    return tuple(out)


def unit_loops(kernel: Kernel) -> tuple[UnitLoop, ...]:
    """Every unit loop of the kernel's time loop, in order."""
    return tuple(item for item in row_items(kernel) if isinstance(item, UnitLoop))


@dataclass(frozen=True)
class ModulePlan:
    """Both kernels and what the module's wrappers allocate and keep.

    Attributes:
        forward, backward: the kernels.
        forward_buffers: what ``forward()`` allocates and passes to the forward kernel (states, gate_seq...).
        tape_extra: the forward buffers the tape keeps besides states and gate_seq, in order.
        tape_extra_shapes: for each, (steps beyond T, width in blocks of H): what the module checks a tape by.
        backward_buffers: what ``backward()`` allocates or reads back from the tape for the backward kernel.
        state_grads: the buffers holding the gradient on each state (returned as dstate0).
        unit_grads: per unit parameter name, the buffer of its gradient.
    """

    forward: Kernel
    backward: Kernel
    forward_buffers: tuple[Buffer, ...]
    tape_extra: tuple[Buffer, ...]
    tape_extra_shapes: tuple[tuple[int, int], ...]
    backward_buffers: tuple[Buffer, ...]
    state_seqs: tuple[Buffer, ...]
    state_grads: tuple[Buffer, ...]
    unit_grads: tuple[tuple[str, Buffer], ...]
    output_seq: Buffer
