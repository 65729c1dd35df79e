"""Where each kind of symbol lives: the row (of one step and batch row) that holds it, from its record alone.

The symbol table (:mod:`lstmgen.symbolic.layout`) says what a symbol is; this module maps each
:class:`~lstmgen.symbolic.layout.Kind` to a buffer and a view of it. Every buffer and view derived from a spec
name is named ``<value>__<role>`` (:func:`~lstmgen.codegen.kernel_names.kernel_name`); a view is named after the
value it holds, so the block of ``gate_seq`` that holds x_t W_i + b_i is read as ``xW_i__row`` and written, once
the gate is computed, as ``i__row`` (the printers then index ``gate_seq`` itself).
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

from lstmgen.codegen.kernel_ir import Block, Buffer, Row, Scalar, ScalarView, Slice, View, width
from lstmgen.codegen.kernel_names import kernel_name
from lstmgen.symbolic.layout import Kind, Layout, SymbolRecord

SEQ = ("steps", "batch", "hidden")
ROW = ("batch", "hidden")


def view(owner: object, role: str, buffer: str, *index: str | Block) -> View:
    return View(kernel_name(owner, role), Slice(buffer, index))


def seq_view(owner: object, seq_owner: object, step: str, role: str = "row") -> View:
    """Step ``step`` of ``<seq_owner>__seq`` for the current batch row."""
    return view(owner, role, kernel_name(seq_owner, "seq"), step, "nb")


def buf_view(owner: object, role: str = "row", buf_role: str = "buf") -> View:
    """The current batch row of ``<owner>__<buf_role>``, a (B, ·) buffer of the step."""
    return view(owner, role, kernel_name(owner, buf_role), "nb")


def gate_block(owner: object, k: int) -> View:
    return view(owner, "row", "gate_seq", "t", "nb", Block(k))


def scratch(sym: sympy.Symbol) -> Buffer:
    return Buffer(kernel_name(sym, "scratch"), ("hidden",), f"{sym} of the current batch row", "scratch")


def scalar(sym: sympy.Symbol) -> Scalar:
    return Scalar(kernel_name(sym, "value"))


def saved_row(sym: sympy.Symbol) -> View:
    return seq_view(sym, sym, "t", "saved_row")


def saved_scalar(sym: sympy.Symbol) -> Slice:
    return Slice(kernel_name(sym, "seq"), ("t", "nb"))


def invariant_row(sym: sympy.Symbol) -> Buffer:
    return Buffer(kernel_name(sym, "vec"), ("hidden",), f"{sym}, the same at every step")


def unit_vector(record: SymbolRecord) -> Buffer:
    """An (H,) unit parameter."""
    name = record.owner
    return Buffer(kernel_name(record.symbol, "vec"), ("hidden",), f"unit parameter {name}", "param", param=name)


def unit_gradient(record: SymbolRecord) -> Buffer:
    return Buffer(kernel_name(record.symbol, "grad"), ("hidden",), f"gradient of {record.owner}", "zeros")


def gate_vector(layout: Layout, param: str) -> Buffer:
    """A (G·H,) gate parameter (b itself when the cell places its bias in the equations)."""
    name = "b" if param == "b" else kernel_name(param, "vec")
    return Buffer(name, (width(layout.n_gates),), f"parameter {param}", "param", param=param)


def gate_gradient(layout: Layout, param: str) -> Buffer:
    name = "db" if param == "b" else kernel_name(param, "grad")
    return Buffer(name, (width(layout.n_gates),), f"gradient of {param}", "zeros")


def gate_param_row(layout: Layout, record: SymbolRecord, gradient: bool = False) -> View:
    """Block ``record.column`` of a gate parameter, or of its gradient."""
    vector = gate_gradient(layout, record.owner) if gradient else gate_vector(layout, record.owner)
    return view(record.symbol, "grad_row" if gradient else "row", vector.name, Block(record.column))


def cell_output(layout: Layout) -> Buffer:
    """(T, B, H): a projected output before its projection, at every step (kept for dW_p)."""
    name = layout.spec.output_state
    return Buffer(kernel_name(name, "cell_seq"), SEQ, f"{name} before its projection, for backward", "zeros_if_padded")


def new_state_row(layout: Layout, record: SymbolRecord) -> View:
    """The row of a state's new value: step t + 1 of its buffer (of <h>__cell_seq, step t, when projected)."""
    if layout.projection and record.symbol == layout.output:
        return view(record.symbol, "row", cell_output(layout).name, "t", "nb")
    return seq_view(record.symbol, record.owner, "t + 1")


def state_gradient_row(state: str) -> View:
    """The gradient on a state carried between steps, for the current batch row."""
    return buf_view(state, "grad_row", "grad_buf")


def carry_row(sym: sympy.Symbol) -> View:
    return buf_view(sym, "carry_row", "carry_buf")


def _unplaced(layout: Layout, record: SymbolRecord) -> Row:  # pragma: no cover - every symbol has a home
    raise ValueError(f"no storage for {record.symbol} ({record.kind})")


def _adjoint(layout: Layout, record: SymbolRecord) -> Row:
    return carry_row(record.symbol) if record.carried else _unplaced(layout, record)


_PLACE: dict[Kind, Callable[[Layout, SymbolRecord], Row]] = {
    Kind.GATE: lambda layout, r: gate_block(r.symbol, r.column),
    Kind.INPUT_PROJECTION: lambda layout, r: gate_block(r.symbol, r.column),
    Kind.RECURRENT_PRODUCT: lambda layout, r: view(r.symbol, "row", "rec_buf", "nb", Block(r.column)),
    Kind.MID_STEP_PRODUCT: lambda layout, r: buf_view(r.symbol),
    Kind.FEEDBACK_PRODUCT: lambda layout, r: view(r.symbol, "row", "fbq_buf", "nb", Block(r.column)),
    Kind.PREVIOUS_STATE: lambda layout, r: seq_view(r.symbol, r.owner, "t"),
    Kind.NEW_STATE: new_state_row,
    Kind.UNIT_PARAMETER: lambda layout, r: unit_vector(r),
    Kind.GATE_PARAMETER: gate_param_row,
    Kind.INPUT_ROW: lambda layout, r: view(r.symbol, "row", "x", "t", "nb"),
    Kind.STEP_INPUT: lambda layout, r: seq_view(r.symbol, r.symbol, "t"),
    Kind.STATE_SEED: lambda layout, r: state_gradient_row(r.owner),
    Kind.FEEDBACK_SEED: lambda layout, r: view(r.owner, "fb_grad_row", "grad_fb_buf", "nb", Block(r.column)),
    Kind.SOURCE_SEED: lambda layout, r: buf_view(r.symbol),  # its GEMM wrote <dnext_src_k>__buf
    Kind.VALUE: _unplaced,
    Kind.ADJOINT: _adjoint,
}


def read_row(layout: Layout, sym: sympy.Symbol, backward: bool) -> Row:
    """The row that holds input or saved value ``sym`` for the current step and batch row."""
    record = (layout.backward if backward else layout.forward)[sym]
    if record.invariant:
        return invariant_row(sym)
    if record.per_row:
        if backward and record.saved:
            return ScalarView(kernel_name(sym, "saved"), saved_scalar(sym))
        raise ValueError(f"the per-row value {sym} is read before it is computed")  # pragma: no cover
    if record.saved and (backward or not record.is_input):
        return saved_row(sym)
    return _PLACE[record.kind](layout, record)


def forward_home(layout: Layout, sym: sympy.Symbol) -> Row:
    """Where a forward value is written: its gate block, its state row, its saved row, a scratch row, or a local
    for a per-row value."""
    record = layout.forward[sym]
    if record.per_row:
        return scalar(sym)
    if record.kind in (Kind.GATE, Kind.NEW_STATE):
        return _PLACE[record.kind](layout, record)
    if record.saved:
        return saved_row(sym)
    return scratch(sym)
