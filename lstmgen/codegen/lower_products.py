"""The lowering's matrix passes: the GEMMs of a step and the weight gradients after the time loop.

One function per structure, each returning the nodes (and the buffers) it adds: the recurrent product (dense,
block-diagonal heads, mid-step sources), the gate feedback, the output projection, their adjoints in backward,
and the weight gradients. The elementwise rows between them come from :mod:`lstmgen.codegen.lower_step`.
"""

from __future__ import annotations

from typing import NamedTuple

import sympy

from lstmgen.codegen.kernel_ir import (
    BATCH_ROW,
    Assign,
    Block,
    Buffer,
    Contiguous,
    Dot,
    Flat,
    Gemm,
    HeadProjection,
    HeadProjectionT,
    HeadWeightGradient,
    Ones,
    Plus,
    Row,
    RowLoop,
    Slice,
    Statement,
    Store,
    Transposed,
    UnitLoop,
    View,
    width,
)
from lstmgen.codegen.kernel_names import kernel_name
from lstmgen.codegen.lower_buffers import PROJ, BackwardBuffers, ForwardBuffers
from lstmgen.codegen.symbol_rows import ROW, buf_view, cell_output, state_gradient_row, view
from lstmgen.spec import PROJECTION_MATRIX
from lstmgen.symbolic.derive_backward import adjoint_symbol, seed_symbol
from lstmgen.symbolic.layout import Layout


class Part(NamedTuple):
    """What a pass adds to a kernel: the buffers it allocates and its statements, in order."""

    allocated: list[Buffer]
    nodes: list[Statement]


def _recurrent_matrix(layout: Layout) -> str:
    """The matrix of the step-start products: R, or R_early (its step-start blocks) when some are mid-step."""
    return "R_early" if layout.late else "R"


def recurrent_adjoint_source(layout: Layout) -> str:
    """The buffer of the adjoints of the step-start products: d_gate_seq when each equals its gate's δxW."""
    return "d_rec_seq" if layout.kernel.separate_recurrent_adjoint else "d_gate_seq"


def matrix_blocks(layout: Layout, transposed: bool) -> Part:
    """R_early (the blocks of R applied to h_{t-1}) and each mid-step block of R, for a cell with late blocks."""
    if not layout.late:
        return Part([], [])
    allocated = [Buffer("R_early", ("hidden", width(len(layout.early_gates))), "the blocks of R applied to h_{t-1}")]
    setup: list[Statement] = [
        Assign(Slice("R_early", (":", Block(e))), Slice("R", (":", Block(r))))
        for e, r in enumerate(layout.early_R_blocks)
    ]
    for _k, gate, _src in layout.late:
        block: Slice | Transposed = Slice("R", (":", Block(layout.rec_block[gate])))
        block = Transposed(block) if transposed else block
        setup.append(Assign(kernel_name(gate, "RT" if transposed else "R"), Contiguous(block)))
    return Part(allocated, setup)


# ---------------------------------------------------------------------------------------------------- forward


def recurrent_products(layout: Layout, fwd: ForwardBuffers) -> Part:
    """The step-start products h_{t-1} R (dense or block-diagonal) and the gate feedback, once per step."""
    n_early, F, F_into = len(layout.early_gates), layout.n_feedback, layout.n_feedback_targets
    rec_buf = Buffer("rec_buf", ("batch", width(n_early)), "h_{t-1} R of the step")
    fbq_buf = Buffer("fbq_buf", ("batch", width(F_into)), "the fed-back gates times Q")
    allocated = [
        Buffer(kernel_name(layout.hR[gate], "buf"), ROW, f"hR_{gate} of the step") for _, gate, _ in layout.late
    ]
    allocated += ([rec_buf] if n_early else []) + ([fbq_buf] if F else [])
    nodes: list[Statement] = []
    h_prev = Slice(fwd.output_seq.name, ("t",))
    if n_early and layout.spec.heads is not None:
        allocated += [
            Buffer("head_in", ("heads", "batch", "head_size"), "each head's units of h_{t-1}"),
            Buffer("head_out", ("heads", "batch", width(n_early, "head_size")), "each head's h_{t-1} R[k]"),
        ]
        comment = (
            f"Recurrent projection, block-diagonal: one GEMM (B, d) x (d, {n_early}d) per head and step (d = H/heads)."
        )
        nodes.append(HeadProjection(h_prev, "rec_buf", n_early, comment))
    elif n_early:
        columns = width(n_early, "H").replace(" * ", "")
        comment = f"Recurrent projection: one GEMM (B, H) x (H, {columns}) per step."
        nodes.append(Gemm(h_prev, Slice(_recurrent_matrix(layout)), Slice("rec_buf"), comment))
    if F:
        comment = f"Gate feedback from step t-1: one GEMM (B, {F}H) x ({F}H, {F_into}H) per step."
        nodes.append(Gemm(Slice("fb_seq", ("t",)), Slice("Q"), Slice("fbq_buf"), comment))
    return Part(allocated, nodes)


def mid_step_products(layout: Layout, p: int) -> tuple[Gemm, ...]:
    """The GEMMs forward phase ``p`` waits for: src_k R_k of the sources phase p − 1 computed."""
    kernel = layout.kernel
    return tuple(
        Gemm(
            Slice(kernel_name(src, "seq"), ("t",)),
            Slice(kernel_name(gate, "R")),
            Slice(kernel_name(layout.hR[gate], "buf")),
            f"Mid-step recurrent projection of gate {gate}: ({src}) R_{gate}, one GEMM (B, H) x (H, H).",
        )
        for _k, gate, src in layout.late
        if kernel.forward_phase[src] == p - 1
    )


def output_projection(layout: Layout, fwd: ForwardBuffers) -> list[Statement]:
    """h = u W_p for a projected output, once the equations gave u."""
    if not layout.projection:
        return []
    h = layout.spec.output_state
    return [
        Gemm(
            Slice(cell_output(layout).name, ("t",)),
            Slice(PROJECTION_MATRIX),
            Slice(fwd.output_seq.name, ("t + 1",)),
            f"Output projection: {h} = ({h} of the equations) W_p, one GEMM (B, H) x (H, P) per step (rows past a"
            " length are restored below).",
        )
    ]


def hold_past_length(layout: Layout, fwd: ForwardBuffers) -> RowLoop:
    """A sequence past its length keeps its state (and its fed-back gates)."""
    hold = [Assign(Slice(s.name, ("t + 1", "nb")), Slice(s.name, ("t", "nb"))) for s in fwd.state_seqs]
    F = layout.n_feedback
    hold += [Assign(Slice("fb_seq", ("t + 1", "nb")), Slice("fb_seq", ("t", "nb")))] if F else []
    kept = " and its fed-back gates" if F else ""
    return RowLoop((f"A sequence past its length keeps its state{kept} (ONNX semantics).",), tuple(hold), past=True)


# ---------------------------------------------------------------------------------------------------- backward


def projection_seed(layout: Layout, bwd: BackwardBuffers) -> Part:
    """The first statements of a backward step of a projected output: the gradient on h (P units) for every row,
    kept for dW_p, then its GEMM with W_p^T, the seed of the cell's H units."""
    if not layout.projection:
        return Part([], [])
    h = layout.spec.output_state
    seed = seed_symbol(h)
    allocated = [Buffer(kernel_name(seed, "buf"), ROW, f"the gradient on {h} W_p^T")]
    dy = View("dy_row", Slice("dy", ("t", "nb")))
    carried = state_gradient_row(h)
    kept = view(seed, "proj_row", bwd.d_output_seq.name, "t", "nb")
    loops = [
        UnitLoop(
            f"{seed} = dy_t + (error carried from step t+1), P units",
            (Store(kept, sympy.Add(dy.element(), carried.element(), evaluate=False), (dy, carried)),),
            unit=PROJ,
        )
    ]
    if not layout.recurrent:  # no error flows back through h_{t-1}: nothing is carried to step t-1
        loops.append(UnitLoop(f"d_{layout.h_prev} = 0", (Store(carried, sympy.Integer(0), ()),), unit=PROJ))
    note = "past its length: the gradient passes through"
    nodes: list[Statement] = [
        RowLoop((f"The gradient on the projected output {h} (P units) of the step.",), tuple(loops), skip_note=note),
        Gemm(
            Slice(bwd.d_output_seq.name, ("t",)),
            Transposed(Slice(PROJECTION_MATRIX)),
            Slice(kernel_name(seed, "buf")),
            f"Its gradient on the cell's H units, {seed} W_p^T: one GEMM (B, P) x (P, H) per step.",
        ),
    ]
    return Part(allocated, nodes)


def mid_step_adjoint_products(layout: Layout, p: int) -> tuple[Gemm, ...]:
    """The GEMMs backward phase ``p`` waits for: the gradient on the sources phase p computed, d_hR_k R_k^T."""
    return tuple(
        Gemm(
            Slice(kernel_name(adjoint_symbol(layout.hR[gate]), "seq"), ("t",)),
            Slice(kernel_name(gate, "RT")),
            Slice(kernel_name(seed_symbol(str(src)), "buf")),
            f"Gradient on the source of gate {gate}'s mid-step projection: d_hR_{gate} R_{gate}^T.",
        )
        for _k, gate, src in layout.late
        if layout.kernel.forward_phase[src] == p
    )


def recurrent_adjoint_products(layout: Layout) -> Part:
    """d_h_prev = d_hR R^T (dense or per head) and the fed-back gates' d_gQ Q^T, computed transposed, then read
    into the gradients carried to step t-1."""
    if not layout.recurrent:
        return Part([], [])
    n_early, F, heads = len(layout.early_gates), layout.n_feedback, layout.spec.heads is not None
    h_units = layout.units(layout.spec.output_state)
    gemm_h = Buffer("gemm_h_buf", (h_units, "batch"), "d_hR R^T of the step, feature-major")
    gemm_fb = Buffer("gemm_fb_buf", (width(F), "batch"), "d_gQ Q^T of the step, feature-major")
    allocated = [gemm_h]
    allocated += [
        Buffer("head_grad", ("heads", "batch", width(n_early, "head_size")), "each head's columns of d_hR")
    ] * heads
    allocated += [gemm_fb] * bool(F)
    elementwise = "(its elementwise part) + " if layout.elementwise_and_gemm_h else ""
    source = Slice(recurrent_adjoint_source(layout), ("t",))
    nodes: list[Statement] = []
    if heads:
        comment = (
            f"d_h_prev = {elementwise}d_hR R^T, block-diagonal: one GEMM per head and step, computed transposed: "
            f"(d, {n_early}d) x ({n_early}d, B)."
        )
        nodes.append(HeadProjectionT(source, "gemm_h_buf", n_early, comment))
    else:
        comment = (
            f"d_h_prev = {elementwise}d_hR R^T: one GEMM per step, computed transposed: (H, {n_early}H) x "
            f"({n_early}H, B)."
        )
        nodes.append(Gemm(Slice(_recurrent_matrix(layout)), Transposed(source), Slice("gemm_h_buf"), comment))
    if F:
        comment = (
            "Gradient on the fed-back gates of step t-1: one GEMM per step, computed transposed like the one above."
        )
        nodes.append(Gemm(Slice("Q"), Transposed(Slice("d_fbq_seq", ("t",))), Slice("gemm_fb_buf"), comment))
    nodes.append(_carry_recurrent_gradients(layout, gemm_h, gemm_fb))
    return Part(allocated, nodes)


def _carry_recurrent_gradients(layout: Layout, gemm_h: Buffer, gemm_fb: Buffer) -> RowLoop:
    h_units = layout.units(layout.spec.output_state)
    gemm_h = Buffer(gemm_h.name, gemm_h.shape, "")
    value: sympy.Expr = gemm_h.element(BATCH_ROW)
    reads: tuple[Row, ...] = (gemm_h,)
    if layout.elementwise_and_gemm_h:
        d_h_prev = buf_view(adjoint_symbol(layout.h_prev))
        value, reads = sympy.Add(value, d_h_prev.element(), evaluate=False), (gemm_h, d_h_prev)
    out_grad = state_gradient_row(layout.spec.output_state)
    merge = [
        UnitLoop(
            f"d_{layout.h_prev}: into the gradient carried to step t-1", (Store(out_grad, value, reads),), unit=h_units
        )
    ]
    if layout.n_feedback:
        gemm_fb = Buffer(gemm_fb.name, gemm_fb.shape, "")
        grad_fb_row = View("grad_fb_row", Slice("grad_fb_buf", ("nb",)))
        merge.append(
            UnitLoop(
                "the fed-back gates' gradient, carried to step t-1",
                (Store(grad_fb_row, gemm_fb.element(BATCH_ROW), (gemm_fb,)),),
                layout.n_feedback,
            )
        )
    comment = "The recurrent GEMMs' results, read transposed, into the gradients carried to step t-1."
    return RowLoop((comment,), tuple(merge))


# ---------------------------------------------------------------------------------------------------- weights


def input_weight_gradients(layout: Layout, fwd: ForwardBuffers, bwd: BackwardBuffers) -> list[Statement]:
    """dx, dW and db over all steps at once: single large GEMMs."""
    flat_d_gates = Slice("d_gates_2d")
    dx = Dot(flat_d_gates, Transposed(Slice("W")), ("steps", "batch", "n_in"))
    after: list[Statement] = [
        Assign(
            "d_gates_2d",
            Flat(Slice("d_gate_seq"), width(layout.n_gates)),
            "Weight gradients over all steps at once: single large GEMMs.",
        ),
        Assign("dx", Plus(dx, Slice(bwd.d_x_rows[0].name)) if bwd.d_x_rows else dx),
        Assign("dW", Dot(Transposed(Flat(Slice("x"), "n_in")), flat_d_gates)),
    ]
    if layout.spec.input_bias:
        after.append(
            Assign(
                "db",
                Dot(Ones("steps * batch"), flat_d_gates),
                "db sums d_xW over steps and batch rows, as a GEMV: 4-7x faster here than numba's column sum, and"
                " BLAS's\nblocked summation is more accurate than its sequential one.",
            )
        )
    if layout.early_gates:
        h_units = layout.units(layout.spec.output_state)
        after.append(Assign("h_prev_2d", Flat(Contiguous(Slice(fwd.output_seq.name, (":steps",))), h_units)))
    return after


def recurrent_weight_gradient(layout: Layout, bwd: BackwardBuffers) -> Part:
    """dR: one GEMM over all steps (per head for a block-diagonal R), assembled block by block when some blocks
    multiply mid-step sources."""
    n_blocks, n_early = len(layout.equations.hR), len(layout.early_gates)
    if layout.late:
        after: list[Statement] = []
        if n_early:
            d_rec = Flat(Slice("d_rec_seq"), width(n_early))
            after.append(Assign("dR_early", Dot(Transposed(Slice("h_prev_2d")), d_rec)))
        after += [
            Assign(Slice("dR", (":", Block(r))), Slice("dR_early", (":", Block(e))))
            for e, r in enumerate(layout.early_R_blocks)
        ]
        for _k, gate, src in layout.late:
            sources = Transposed(Flat(Slice(kernel_name(src, "seq")), "hidden"))
            after.append(
                Assign(
                    Slice("dR", (":", Block(layout.rec_block[gate]))),
                    Dot(sources, Flat(Slice(bwd.d_hR_seqs[gate].name), "hidden")),
                )
            )
        return Part([Buffer("dR", ("hidden", width(n_blocks)), "the gradient of R")], after)
    source = recurrent_adjoint_source(layout)
    if n_blocks and layout.spec.heads is not None:
        after = []
        right = "d_gates_2d"
        if source != "d_gate_seq":
            right = "d_rec_2d"
            after.append(Assign(right, Flat(Slice(source), width(n_blocks))))
        after.append(HeadWeightGradient("h_prev_2d", right, n_blocks, "dR[k] = sum_t h_{t-1}[head k]^T d_hR[head k]"))
        return Part([], after)
    if n_blocks:
        return Part([], [Assign("dR", Dot(Transposed(Slice("h_prev_2d")), Flat(Slice(source), width(n_blocks))))])
    return Part([], [])


def projection_weight_gradient(layout: Layout, bwd: BackwardBuffers) -> list[Statement]:
    if not layout.projection:
        return []
    h = layout.spec.output_state
    units = Transposed(Flat(Slice(cell_output(layout).name), "hidden"))
    return [
        Assign(
            "dW_p",
            Dot(units, Flat(Slice(bwd.d_output_seq.name), PROJ)),
            f"dW_p = sum_t ({h} of the equations)_t^T dnext_{h}_t",
        )
    ]


def feedback_weight_gradient(layout: Layout) -> list[Statement]:
    F = layout.n_feedback
    if not F:
        return []
    return [
        Assign("fb_prev_2d", Flat(Contiguous(Slice("fb_seq", (":steps",))), width(F))),
        Assign("dQ", Dot(Transposed(Slice("fb_prev_2d")), Flat(Slice("d_fbq_seq"), width(layout.n_feedback_targets)))),
    ]
