"""The kernel IR → numba.cuda source: the GPU's printer of the same plan the CPU kernels are printed from.

The thread mapping: one block per batch row ``nb``, its threads sharing the row's units (thread ``tid`` computes
units tid, tid + threads, ...). A block runs the whole time loop (a persistent kernel): no block waits for
another, so the simulator tests the kernels completely. Per step, a recurrent product is a matrix-vector product
of the row (``c`` over the output columns, one per thread), followed by a block barrier; a unit loop needs none
(a thread reads back only its own units); a sum over the units is a block reduction through a (batch, threads)
buffer. The input projection and the weight gradients run over all steps at once as GEMM kernels launched by the
host function that keeps the CPU kernel's name and arguments, so the module's wrappers are the CPU module's.

Limits: every value of a row lives in global memory (the recurrent matrix is read from L2 at every step);
per-row scratch rows are (batch, ·) device arrays. This is the design of correctness first, measured only when
a GPU is lent.
"""

from __future__ import annotations

import sympy

from lstmgen.codegen.kernel_ir import (
    UNIT,
    Assign,
    Buffer,
    Contiguous,
    Dot,
    Flat,
    Gemm,
    HeadProjection,
    HeadProjectionT,
    HeadWeightGradient,
    InputProjection,
    Kernel,
    ModulePlan,
    Ones,
    Operand,
    Plus,
    Reduction,
    RowLoop,
    Slice,
    Transposed,
    UnitLoop,
    width,
)
from lstmgen.codegen.kernel_printer import INDENT, KernelPrinter, PrintedKernels, comment_lines, wrap
from lstmgen.codegen.numba_printer import REAL
from lstmgen.codegen.user_text import in_comment

#: Locals of the CPU kernels that stage the per-head GEMMs: the GPU reads R head by head instead.
_HEAD_STAGING = frozenset({"head_in", "head_out", "head_grad"})


def print_cuda_kernels(plan: ModulePlan) -> PrintedKernels:
    """Both kernels for numba.cuda: each a persistent step kernel and the host function that launches it."""
    printer = CudaKernelPrinter()
    forward, backward = printer.module_kernel(plan.forward), printer.module_kernel(plan.backward)
    return PrintedKernels(forward, backward, frozenset(printer.expressions.helpers_used))


class CudaKernelPrinter(KernelPrinter):
    """Prints a kernel as a ``@cuda.jit`` step kernel (grid: the batch rows) and its host launcher."""

    def __init__(self) -> None:
        super().__init__()
        self.buffers: dict[str, Buffer] = {}

    # ------------------------------------------------------------------------------ the step kernel
    def _row_element(self, operand: Slice, column: str) -> str:
        """Element ``column`` of the current batch row of a per-step or (batch, ·) operand."""
        return f"{operand.buffer}[{', '.join([*operand.index, 'nb', column])}]"

    def _per_row(self, operand: Operand) -> bool:
        return isinstance(operand, Slice) and "batch" in self.buffers.get(operand.buffer, Buffer("", (), "")).shape

    @staticmethod
    def _matrix(operand: Operand) -> tuple[str, str, str]:
        """A matrix operand's name, its (row, column) element pattern's order and its row count expression."""
        if isinstance(operand, Transposed):
            name = operand.operand.buffer
            return name, "transposed", f"{name}.shape[1]"
        return operand.buffer, "plain", f"{operand.buffer}.shape[0]"

    def _print_Gemm(self, node: Gemm, indent: str) -> list[str]:
        inner, deeper = indent + INDENT, indent + INDENT * 2
        lines = [*comment_lines(node.comment, indent), f"{indent}cuda.syncthreads()  # every thread wrote its units"]
        if self._per_row(node.a):  # out[nb] = a[nb] b: one output column per thread
            name, order, rows = self._matrix(node.b)
            columns = f"{name}.shape[0]" if order == "transposed" else f"{name}.shape[1]"
            element = f"{name}[c, i]" if order == "transposed" else f"{name}[i, c]"
            return [
                *lines,
                f"{indent}for c in range(tid, {columns}, threads):",
                f"{inner}acc = {REAL}(0)",
                f"{inner}for i in range({rows}):",
                f"{deeper}acc += {self._row_element(node.a, 'i')} * {element}",
                f"{inner}{self._row_element(node.out, 'c')} = acc",
                f"{indent}cuda.syncthreads()",
            ]
        # out[:, nb] = a b[nb]^T, the product computed transposed on the CPU: one output row per thread.
        rows_of = node.b.operand if isinstance(node.b, Transposed) else node.b
        name = node.a.buffer
        return [
            *lines,
            f"{indent}for i in range(tid, {name}.shape[0], threads):",
            f"{inner}acc = {REAL}(0)",
            f"{inner}for c in range({name}.shape[1]):",
            f"{deeper}acc += {name}[i, c] * {self._row_element(rows_of, 'c')}",
            f"{inner}{node.out.buffer}[i, nb] = acc",
            f"{indent}cuda.syncthreads()",
        ]

    def _print_HeadProjection(self, node: HeadProjection, indent: str) -> list[str]:
        inner, deeper = indent + INDENT, indent + INDENT * 2
        return [
            *comment_lines(node.comment, indent),
            f"{indent}cuda.syncthreads()",
            f"{indent}for c in range(tid, {width(node.blocks)}, threads):",
            f"{inner}g = c // hidden",
            f"{inner}k = (c - g * hidden) // head_size",
            f"{inner}i = c - g * hidden - k * head_size",
            f"{inner}acc = {REAL}(0)",
            f"{inner}for m in range(head_size):",
            f"{deeper}acc += {self._row_element(node.source, 'k * head_size + m')} * R[k, m, g * head_size + i]",
            f"{inner}{node.out}[nb, c] = acc",
            f"{indent}cuda.syncthreads()",
        ]

    def _print_HeadProjectionT(self, node: HeadProjectionT, indent: str) -> list[str]:
        inner, deeper, deepest = (indent + INDENT * n for n in (1, 2, 3))
        source = self._row_element(node.source, "g * hidden + k * head_size + m")
        return [
            *comment_lines(node.comment, indent),
            f"{indent}cuda.syncthreads()",
            f"{indent}for u in range(tid, hidden, threads):",
            f"{inner}k = u // head_size",
            f"{inner}i = u - k * head_size",
            f"{inner}acc = {REAL}(0)",
            f"{inner}for g in range({node.blocks}):",
            f"{deeper}for m in range(head_size):",
            f"{deepest}acc += R[k, i, g * head_size + m] * {source}",
            f"{inner}{node.out}[u, nb] = acc",
            f"{indent}cuda.syncthreads()",
        ]

    def unit_range(self, node: UnitLoop) -> str:
        """Thread tid computes units tid, tid + threads, ..."""
        return f"range(tid, {width(node.blocks, node.unit)}, threads)"

    def _print_Reduction(self, node: Reduction, indent: str) -> list[str]:
        # Each thread sums its units; the partial sums meet in reduce_buf; every thread adds them up in the same
        # order, so every thread holds the same total.
        total, inner = node.target.name, indent + INDENT
        return [
            *comment_lines(in_comment(node.comment), indent),
            f"{indent}partial = {REAL}(0)",
            f"{indent}for j in range(tid, hidden, threads):",
            *self._value_lines("partial += ", node.value.xreplace(self.direct), inner),
            f"{indent}reduce_buf[nb, tid] = partial",
            f"{indent}cuda.syncthreads()",
            f"{indent}{total} = {REAL}(0)",
            f"{indent}for k in range(threads):",
            f"{inner}{total} += reduce_buf[nb, k]",
            f"{indent}cuda.syncthreads()",
        ]

    def _print_RowLoop(self, node: RowLoop, indent: str) -> list[str]:
        lines = [line for c in node.comments for line in comment_lines(c, indent)]
        inner = indent + INDENT
        if node.past:
            lines.append(f"{indent}if t >= lengths[nb]:")
            for item in node.body:  # whole-row copies (buffer[t + 1, nb] = buffer[t, nb]): element by element
                target, source = (f"{a.buffer}[{', '.join([*a.index, 'j'])}]" for a in (item.target, item.value))
                lines.append(f"{inner}for j in range(tid, {item.target.buffer}.shape[2], threads):")
                lines.append(f"{inner}{INDENT}{target} = {source}")
            return lines
        note = f"  # else: {node.skip_note}" if node.skip_note else ""
        lines.append(f"{indent}if t < lengths[nb]:{note}")
        return lines + self.row_body(node, inner)

    def _step_kernel(self, node: Kernel, name: str, row_locals: tuple[Buffer, ...], matrices: list[str]) -> list[str]:
        args = [*(b.name for b in node.args), *matrices, *(b.name for b in self._device_locals(node)), "reduce_buf"]
        lines = ["@cuda.jit", *wrap(f"def {name}(", ", ".join(args), "):", "")]
        lines += [
            f"{INDENT}nb = cuda.blockIdx.x  # the batch row of this block",
            f"{INDENT}tid = cuda.threadIdx.x",
            f"{INDENT}threads = cuda.blockDim.x",
            *self._sizes(node),
        ]
        self.direct = {b.element(): sympy.IndexedBase(b.name)[sympy.Symbol("nb"), UNIT] for b in row_locals}
        for item in node.before:
            if isinstance(item, UnitLoop):
                lines += self.statement(item, INDENT)
        lines += self._print_TimeLoop(node.loop, INDENT)
        lines.append(f"{INDENT * 2}cuda.syncthreads()  # step t is written before step t+1 reads it")
        return lines

    # ------------------------------------------------------------------------------ the host side
    def _device_locals(self, node: Kernel) -> tuple[Buffer, ...]:
        return tuple(b for b in node.locals if b.name not in _HEAD_STAGING)

    def operand(self, node: Operand) -> str:
        """Operands of the host side's device arrays: products through the module's GEMM kernel."""
        if isinstance(node, Contiguous):
            return f"_contiguous({self.operand(node.operand)})"
        if isinstance(node, Plus):
            return f"_add({self.operand(node.a)}, {self.operand(node.b)})"
        if isinstance(node, Dot) and isinstance(node.a, Ones):
            return f"_column_sums({self.operand(node.b)})"
        if isinstance(node, Dot):
            product = f"_dot({self.operand(node.a)}, {self.operand(node.b)})"
            return f"{product}.reshape({', '.join(node.shape)})" if node.shape else product
        if isinstance(node, Flat):
            return f"{self.operand(node.operand)}.reshape(steps * batch, {node.columns})"
        if isinstance(node, Transposed):
            return f"_t({self.operand(node.operand)})"
        return super().operand(node)

    def _host_statement(self, node, indent: str) -> list[str]:
        if isinstance(node, InputProjection):
            bias = "b" if node.bias else "None"
            return [
                *comment_lines("The input projection of every step at once: one GEMM (T*B, I) x (I, G*H).", indent),
                f"{indent}_input_projection(x, W, {bias}, {node.out})",
            ]
        if isinstance(node, HeadWeightGradient):
            return [
                *comment_lines(node.comment, indent),
                f"{indent}dR = _head_weight_gradient({node.left}, {node.right}, {node.blocks}, heads, head_size)",
            ]
        if isinstance(node, Assign) and not isinstance(node.target, str):
            return [f"{indent}_copy({self.operand(node.target)}, {self.operand(node.value)})"]
        return self.statement(node, indent)

    def module_kernel(self, node: Kernel) -> str:
        """The step kernel and the host function of the CPU kernel's name and arguments that launches it."""
        self.buffers = {b.name: b for b in (*node.args, *node.locals)}
        row_locals = tuple(b for b in self._device_locals(node) if "batch" not in b.shape and len(b.shape) == 1)
        setup = [item for item in node.before if isinstance(item, Assign)]
        matrices = [item.target for item in setup if isinstance(item.target, str)]
        host_built = {item.target.buffer for item in setup if isinstance(item.target, Slice)}
        steps_name = node.name.replace("_kernel", "_steps")
        lines = self._step_kernel(node, steps_name, row_locals, matrices)
        lines += ["", "", *self._launcher(node, steps_name, row_locals, matrices, setup, host_built)]
        return "\n".join(lines)

    def _launcher(self, node: Kernel, steps_name, row_locals, matrices, setup, host_built) -> list[str]:
        args = [b.name for b in node.args]
        outputs = [b.name for b in node.args if b.init not in ("input", "param", "step_input")]
        lines = wrap(f"def {node.name}(", ", ".join(args), "):", "")
        lines += [line for line in self._sizes(node) if "real =" not in line]
        for buffer in self._device_locals(node):
            if buffer.name in host_built:  # blocks of R gathered on the host, then copied like R itself
                lines.append(f"{INDENT}{buffer.name} = np.empty(({', '.join(buffer.shape)}), dtype=x.dtype)")
        lines += [line for item in setup for line in KernelPrinter().statement(item, INDENT)]  # numpy, on the host
        lines += wrap("outputs = (", ", ".join(outputs), ")", INDENT)
        if node.returns:
            lines.append(f"{INDENT}on_host = isinstance(x, np.ndarray)  # results go where x came from")
        moved = [*args, *matrices, *sorted(host_built)]
        lines += wrap(f"{', '.join(moved)} = _to_device(", ", ".join(moved), ")", INDENT)
        for item in node.before:
            if isinstance(item, InputProjection):
                lines += self._host_statement(item, INDENT)
        for buffer in self._device_locals(node):
            if buffer.name in host_built:
                continue
            shape = ("batch", *buffer.shape) if buffer in row_locals else buffer.shape
            fill = "zeros" if buffer.init == "zeros" else "empty"
            lines.append(f"{INDENT}{buffer.name} = _device_{fill}(({', '.join(shape)},), x.dtype)")
        launch = [*args, *matrices, *(b.name for b in self._device_locals(node)), "reduce_buf"]
        lines += [
            f"{INDENT}threads = _threads(hidden)",
            f"{INDENT}reduce_buf = _device_empty((batch, threads), x.dtype)",
            f"{INDENT}if batch:",
            *wrap(f"{steps_name}[batch, threads, _stream()](", ", ".join(launch), ")", INDENT * 2),
        ]
        for item in node.after:
            lines += self._host_statement(item, INDENT)
        lines += wrap("_to_host((", ", ".join(outputs) + ("," if len(outputs) == 1 else ""), "), outputs)", INDENT)
        if node.returns:
            lines.append(f"{INDENT}return {', '.join(f'_result({name}, on_host)' for name in node.returns)}")
        return lines
