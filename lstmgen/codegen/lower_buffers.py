"""The lowering's buffers pass: every array the kernels take as arguments, and the tape forward leaves behind.

Built once per cell from its symbol table; the passes that build the kernels' statements read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lstmgen.codegen.kernel_ir import Buffer, width
from lstmgen.codegen.kernel_names import kernel_name
from lstmgen.codegen.symbol_rows import SEQ, cell_output, gate_gradient, gate_vector, unit_gradient, unit_vector
from lstmgen.spec import PROJECTION_MATRIX
from lstmgen.symbolic.derive_backward import adjoint_symbol, seed_symbol
from lstmgen.symbolic.layout import Kind, Layout

#: The extent of a projected output's units (P): h = u W_p.
PROJ = "proj"


@dataclass(frozen=True)
class ForwardBuffers:
    """The forward kernel's arrays: inputs, parameters, the states at every step, gate_seq and the tape.

    ``tape_extra``: what forward keeps for backward besides the states and gate_seq (the fed-back gates, the
    saved values, a projected output before its projection); ``tape_extra_shapes``: for each, (the state-like
    axis it was padded along, whether it has units)."""

    x: Buffer
    lengths: Buffer
    step_inputs: tuple[Buffer, ...]
    matrices: tuple[Buffer, ...]
    vectors: tuple[Buffer, ...]
    state_seqs: tuple[Buffer, ...]
    output_seq: Buffer
    gate_seq: Buffer
    tape_extra: tuple[Buffer, ...]
    tape_extra_shapes: tuple[tuple[int, int], ...]
    hidden: str
    proj: str


@dataclass(frozen=True)
class BackwardBuffers:
    """The backward kernel's own arrays: dy, the gradients carried between steps, the adjoints of every step
    (read by the weight GEMMs after the loop), and the unit parameters' gradients."""

    dy: Buffer
    state_grads: tuple[Buffer, ...]
    grad_fb: tuple[Buffer, ...]
    adjoint_seqs: tuple[Buffer, ...]
    d_hR_seqs: dict[str, Buffer]
    d_x_rows: tuple[Buffer, ...]
    d_output_seq: Buffer
    unit_grads: tuple[tuple[str, Buffer], ...]


def forward_buffers(layout: Layout) -> ForwardBuffers:
    spec, G, F = layout.spec, layout.n_gates, layout.n_feedback
    state_seqs = tuple(
        Buffer(kernel_name(s, "seq"), ("steps + 1", "batch", layout.units(s)), f"state {s} at steps 0..T", "initial", k)
        for k, s in enumerate(spec.state)
    )
    output_seq = state_seqs[spec.state.index(spec.output_state)]
    saved = tuple(layout.forward[s] for s in layout.kernel.saved)
    saved_seqs = tuple(
        Buffer(
            kernel_name(r.symbol, "seq"),
            ("steps", "batch") if r.per_row else SEQ,
            f"{r.symbol} at every step{' (one per batch row)' if r.per_row else ''}, for backward",
            "zeros_if_padded",
        )
        for r in saved
    )
    fb_seq = Buffer("fb_seq", ("steps + 1", "batch", width(F)), "the fed-back gates of steps 0..T", "zeros")
    projection = layout.projection
    tape_extra = ((fb_seq,) if F else ()) + saved_seqs + ((cell_output(layout),) if projection else ())
    matrices = tuple(Buffer(name, (), f"parameter {name}", "param", param=name) for name in _matrices(layout))
    vectors = tuple(gate_vector(layout, p) for p in layout.gate_parameters if p != "b")
    vectors += tuple(unit_vector(r) for r in layout.of_kind(Kind.UNIT_PARAMETER))
    return ForwardBuffers(
        x=Buffer("x", ("steps", "batch", "n_in"), "the input", "input"),
        lengths=Buffer("lengths", ("batch",), "the length of each sequence", "input"),
        step_inputs=tuple(
            Buffer(kernel_name(r.symbol, "seq"), SEQ, f"the per-step input {r.owner}", "step_input", param=r.owner)
            for r in layout.of_kind(Kind.STEP_INPUT)
        ),
        matrices=matrices,
        vectors=vectors,
        state_seqs=state_seqs,
        output_seq=output_seq,
        gate_seq=Buffer("gate_seq", ("steps", "batch", width(G)), "per gate block: x W + b, then the gate's value"),
        tape_extra=tape_extra,
        tape_extra_shapes=((1, F),) * bool(F)
        + tuple((0, 0 if r.per_row else 1) for r in saved)
        + ((0, 1),) * projection,
        # The kernels' sizes: H from gate_seq when the output is projected (its buffer then has P units).
        hidden=f"gate_seq.shape[2] // {G}" if projection else f"{output_seq.name}.shape[2]",
        proj=f"{output_seq.name}.shape[2]" if projection else "",
    )


def _matrices(layout: Layout) -> tuple[str, ...]:
    """The parameter matrices the forward kernel takes, in the module's PARAMS order."""
    return (
        "W",
        *(["R"] if layout.equations.hR else []),
        "b",
        *([PROJECTION_MATRIX] if layout.projection else []),
        *(["Q"] if layout.n_feedback else []),
    )


def backward_buffers(layout: Layout, fwd: ForwardBuffers) -> BackwardBuffers:
    spec, kernel, F = layout.spec, layout.kernel, layout.n_feedback
    state_grads = tuple(
        Buffer(kernel_name(s, "grad_buf"), ("batch", layout.units(s)), f"gradient on state {s}", "final", k)
        for k, s in enumerate(spec.state)
    )
    grad_fb = Buffer("grad_fb_buf", ("batch", width(F)), "gradient on the fed-back gates", "zeros")
    adjoint_seqs = [
        Buffer("d_gate_seq", fwd.gate_seq.shape, "per gate block: the adjoint of x W + b", "zeros_if_padded")
    ]
    if kernel.separate_recurrent_adjoint:
        n_early = len(layout.early_gates)
        adjoint_seqs.append(
            Buffer("d_rec_seq", ("steps", "batch", width(n_early)), "the adjoints of h_{t-1} R", "zeros_if_padded")
        )
    d_hR_seqs = {
        r.owner: Buffer(
            kernel_name(adjoint_symbol(r.symbol), "seq"), SEQ, f"the adjoint of hR_{r.owner}", "zeros_if_padded"
        )
        for r in layout.of_kind(Kind.MID_STEP_PRODUCT)
    }
    adjoint_seqs += d_hR_seqs.values()
    if F:
        adjoint_seqs.append(
            Buffer(
                "d_fbq_seq",
                ("steps", "batch", width(layout.n_feedback_targets)),
                "the adjoints of the feedback products",
                "zeros_if_padded",
            )
        )
    d_x_rows = tuple(
        Buffer(kernel_name(adjoint_symbol(r.symbol), "seq"), SEQ, "the elementwise adjoint of x_t", "zeros_if_padded")
        for r in layout.of_kind(Kind.INPUT_ROW)
        if layout.derived.output(r.symbol) != 0
    )
    adjoint_seqs += d_x_rows
    d_output_seq = Buffer(
        kernel_name(seed_symbol(spec.output_state), "seq"),
        ("steps", "batch", PROJ),
        f"the gradient on {spec.output_state} at every step (P units), for dW_p",
        "zeros_if_padded",
    )
    adjoint_seqs += [d_output_seq] if layout.projection else []
    unit_grads = tuple((p, gate_gradient(layout, p)) for p in layout.gate_parameters)
    unit_grads += tuple((r.owner, unit_gradient(r)) for r in layout.of_kind(Kind.UNIT_PARAMETER))
    return BackwardBuffers(
        dy=Buffer("dy", ("steps", "batch", layout.units(spec.output_state)), "the gradient on every output", "input"),
        state_grads=state_grads,
        grad_fb=(grad_fb,) if F and layout.recurrent else (),
        adjoint_seqs=tuple(adjoint_seqs),
        d_hR_seqs=d_hR_seqs,
        d_x_rows=d_x_rows,
        d_output_seq=d_output_seq,
        unit_grads=unit_grads,
    )
