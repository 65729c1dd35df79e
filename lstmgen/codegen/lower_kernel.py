"""Stage 5 — expression lists → the kernel IR (:mod:`lstmgen.codegen.kernel_ir`) of both kernels.

A short driver over small passes, each returning the nodes of one concern: the symbol table
(:func:`lstmgen.symbolic.layout.build_layout`) says what every symbol is; the buffers pass
(:mod:`lstmgen.codegen.lower_buffers`) lays out the arrays; the matrix passes
(:mod:`lstmgen.codegen.lower_products`) give the GEMMs of a step and the weight gradients; the elementwise passes
(:mod:`lstmgen.codegen.lower_step`) give the row loops of each phase. Nothing here prints text:
:mod:`lstmgen.codegen.kernel_printer` does.
"""

from __future__ import annotations

from lstmgen.codegen.kernel_ir import Buffer, InputProjection, Kernel, ModulePlan, TimeLoop
from lstmgen.codegen.kernel_names import kernel_name
from lstmgen.codegen.lower_buffers import BackwardBuffers, ForwardBuffers, backward_buffers, forward_buffers
from lstmgen.codegen.lower_products import (
    feedback_weight_gradient,
    hold_past_length,
    input_weight_gradients,
    matrix_blocks,
    output_projection,
    projection_seed,
    projection_weight_gradient,
    recurrent_adjoint_products,
    recurrent_products,
    recurrent_weight_gradient,
)
from lstmgen.codegen.lower_step import backward_phases, forward_phases, invariant_loops
from lstmgen.codegen.symbol_rows import ROW
from lstmgen.symbolic.derive_backward import adjoint_symbol, seed_symbol
from lstmgen.symbolic.expression_lists import KernelExpressions
from lstmgen.symbolic.layout import Layout, build_layout


def lower(kernel: KernelExpressions | Layout) -> ModulePlan:
    """Both kernels of one cell and gradient mode, and what the module's wrappers allocate for them.

    ``kernel``: the expression lists, or their symbol table when the caller has it already.
    """
    layout = kernel if isinstance(kernel, Layout) else build_layout(kernel)
    if layout.n_feedback and not layout.early_gates:
        raise ValueError(
            f"spec {layout.spec.name}: gate feedback needs a gate with a recurrent product hR_k at step start"
        )
    fwd = forward_buffers(layout)
    bwd = backward_buffers(layout, fwd)
    return ModulePlan(
        forward=forward_kernel(layout, fwd),
        backward=backward_kernel(layout, fwd, bwd),
        forward_buffers=(*fwd.state_seqs, fwd.gate_seq, *fwd.tape_extra),
        tape_extra=fwd.tape_extra,
        tape_extra_shapes=fwd.tape_extra_shapes,
        backward_buffers=(*bwd.state_grads, *bwd.grad_fb, *bwd.adjoint_seqs, *(g for _, g in bwd.unit_grads)),
        state_seqs=fwd.state_seqs,
        state_grads=bwd.state_grads,
        unit_grads=bwd.unit_grads,
        output_seq=fwd.output_seq,
    )


def forward_kernel(layout: Layout, fwd: ForwardBuffers) -> Kernel:
    """x W + b for all steps; per step: the recurrent products, the phases, the projection, the rows past
    their length."""
    blocks = matrix_blocks(layout, transposed=False)
    invariant_rows, invariants = invariant_loops(layout)
    products = recurrent_products(layout, fwd)
    step = [
        *products.nodes,
        *forward_phases(layout),
        *output_projection(layout, fwd),
        hold_past_length(layout, fwd),
    ]
    inputs = (fwd.x, fwd.lengths, *fwd.step_inputs, *fwd.matrices, *fwd.vectors)
    return Kernel(
        "_forward_kernel",
        (*inputs, *fwd.state_seqs, fwd.gate_seq, *fwd.tape_extra),
        (*invariants, InputProjection("gate_seq", layout.n_gates, layout.spec.input_bias), *blocks.nodes),
        TimeLoop(False, tuple(step)),
        allocated=(*blocks.allocated, *invariant_rows, *products.allocated),
        hidden=fwd.hidden,
        proj=fwd.proj,
        heads=layout.spec.heads is not None and bool(layout.early_gates),
    )


def backward_kernel(layout: Layout, fwd: ForwardBuffers, bwd: BackwardBuffers) -> Kernel:
    """Per step, last to first: the projected output's seed, the phases, the recurrent adjoints; then the weight
    gradients over all steps."""
    spec = layout.spec
    blocks = matrix_blocks(layout, transposed=True)
    invariant_rows, invariants = invariant_loops(layout)
    seed = projection_seed(layout, bwd)
    recurrent = recurrent_adjoint_products(layout)
    weights_R = recurrent_weight_gradient(layout, bwd)
    allocated = [*blocks.allocated, *invariant_rows, *_source_seeds(layout), *seed.allocated, *recurrent.allocated]
    if layout.elementwise_and_gemm_h:
        allocated.append(
            Buffer(kernel_name(adjoint_symbol(layout.h_prev), "buf"), ROW, "the elementwise part of d_h_prev")
        )
    allocated += [
        Buffer(kernel_name(s, "carry_buf"), ROW, f"{s}, carried between phases") for s in layout.kernel.carried
    ]
    after = [
        *input_weight_gradients(layout, fwd, bwd),
        *weights_R.nodes,
        *projection_weight_gradient(layout, bwd),
        *feedback_weight_gradient(layout),
    ]
    matrices = tuple(m for m in fwd.matrices if m.name != "b" or not spec.input_bias)
    inputs = (bwd.dy, fwd.x, fwd.lengths, *fwd.step_inputs, *matrices, *fwd.vectors)
    tape = (*fwd.state_seqs, fwd.gate_seq, *fwd.tape_extra)
    outputs = (*bwd.state_grads, *bwd.grad_fb, *bwd.adjoint_seqs, *(g for _, g in bwd.unit_grads))
    return Kernel(
        "_backward_kernel",
        (*inputs, *tape, *outputs),
        (*invariants, *blocks.nodes),
        TimeLoop(True, (*seed.nodes, *backward_phases(layout), *recurrent.nodes)),
        hidden=fwd.hidden,
        proj=fwd.proj,
        heads=spec.heads is not None and bool(layout.early_gates),
        after=tuple(after),
        returns=_returns(layout),
        allocated=(*allocated, *weights_R.allocated),
    )


def _source_seeds(layout: Layout) -> list[Buffer]:
    """The gradient on each mid-step source, d_hR_k R_k^T, of the step."""
    return [
        Buffer(kernel_name(seed_symbol(str(src)), "buf"), ROW, f"gradient on src_{gate}")
        for _, gate, src in layout.late
    ]


def _returns(layout: Layout) -> tuple[str, ...]:
    """The weight gradients the backward kernel returns, in the module's PARAMS order."""
    spec = layout.spec
    return (
        "dx",
        "dW",
        *(["dR"] if layout.equations.hR else []),
        *(["db"] if spec.input_bias else []),
        *(["dW_p"] if spec.projection else []),
        *(["dQ"] if layout.n_feedback else []),
    )
