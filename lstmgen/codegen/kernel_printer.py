"""Stage 6 — the kernel IR → Python source: one method per node, in the manner of SymPy's code printers.

Each ``_print_<Node>`` returns the node's lines at indentation 0; the caller indents them. Expressions inside
unit loops go through :class:`~lstmgen.codegen.numba_printer.NumbaPrinter` (an element ``c__row[j]`` is a
``sympy.Indexed``). Lines longer than :data:`LINE_WIDTH` break between terms or arguments, inside brackets.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import sympy

from lstmgen.codegen.kernel_helpers import LOOP_DOT_LIMIT
from lstmgen.codegen.kernel_ir import (
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
    IndexPart,
    InputProjection,
    Kernel,
    ModulePlan,
    Ones,
    Operand,
    Phase,
    Plus,
    Reduction,
    RowLoop,
    Scalar,
    ScalarStore,
    ScalarView,
    Slice,
    Statement,
    TimeLoop,
    Transposed,
    UnitLoop,
    View,
    width,
)
from lstmgen.codegen.numba_printer import REAL, NumbaPrinter
from lstmgen.codegen.user_text import in_comment

LINE_WIDTH = 120
INDENT = "    "


def wrap(head: str, body: str, tail: str, indent: str) -> list[str]:
    """``head + body + tail`` on one line of ``indent`` when it fits; else ``body`` broken at its spaces, one
    level deeper, between ``head`` (which must open a bracket) and ``tail``."""
    line = indent + head + body + tail
    if len(line) <= LINE_WIDTH:
        return [line]
    inner = indent + INDENT
    pieces = textwrap.wrap(body, LINE_WIDTH - len(inner), break_long_words=False, break_on_hyphens=False)
    return [indent + head.rstrip(), *(inner + p for p in pieces), indent + tail.lstrip()]


def comment_lines(text: str, indent: str) -> list[str]:
    """A comment, on as many ``#`` lines as it needs."""
    out = []
    for paragraph in text.split("\n"):
        out += textwrap.wrap(
            paragraph,
            LINE_WIDTH - len(indent) - 2,
            break_long_words=False,
            break_on_hyphens=False,
            drop_whitespace=False,
            replace_whitespace=False,
        ) or [""]
    return [f"{indent}# {line.rstrip()}".rstrip() for line in out]


@dataclass(frozen=True)
class PrintedKernels:
    """The text of both kernels of a plan, and the helpers their loops call (which the module defines)."""

    forward: str
    backward: str
    helpers: frozenset[str]


def print_kernels(plan: ModulePlan) -> PrintedKernels:
    """Stage 5a: the plan's kernels as Python source for Numba."""
    printer = KernelPrinter()
    forward, backward = printer.kernel(plan.forward), printer.kernel(plan.backward)
    return PrintedKernels(forward, backward, frozenset(printer.expressions.helpers_used))


class KernelPrinter:
    """Prints kernels; ``expressions`` collects the helpers their unit loops call."""

    def __init__(self) -> None:
        self.expressions = NumbaPrinter()
        #: Element of a row (a row view, on the GPU a per-row scratch row too) -> the element of the buffer that
        #: holds it: the loops index the buffers directly. A bound view cost numba a fifth of a tiny step (the
        #: 1997 network's forward kernel: 36 -> 29 us without them).
        self.direct: dict[sympy.Expr, sympy.Expr] = {}

    def _direct_element(self, view: View) -> sympy.Expr:
        """``buffer[t, nb, k * hidden + j]`` for a row view of block k (``buffer[t, nb]`` for a per-row value)."""
        index = [sympy.Symbol(p) for p in view.source.index if not isinstance(p, Block)]
        starts = [self.block_start(p) for p in view.source.index if isinstance(p, Block)]
        if not isinstance(view, ScalarView):
            offset = starts[0] if starts and starts[0] != "0" else ""
            index.append(sympy.Symbol(f"{offset} + j" if offset else "j"))
        return sympy.IndexedBase(view.source.buffer)[tuple(index)]

    def unit_range(self, node: UnitLoop) -> str:
        """The range of a unit loop's j."""
        return f"range({width(node.blocks, node.unit)})"

    # -------------------------------------------------------------------------------- operands
    @staticmethod
    def block_start(block: Block) -> str:
        """The first column of a block: ``k * hidden``, ``hidden`` or 0."""
        lo = block.index * block.size
        return width(lo) if lo else "0"

    def index(self, part: IndexPart) -> str:
        if isinstance(part, Block):
            return f"{self.block_start(part)}:{width((part.index + 1) * part.size)}"
        return part

    def operand(self, node: Operand) -> str:
        if isinstance(node, Slice):
            return f"{node.buffer}[{', '.join(self.index(p) for p in node.index)}]" if node.index else node.buffer
        if isinstance(node, Transposed):
            return f"{self.operand(node.operand)}.T"
        if isinstance(node, Flat):
            return f"{self.operand(node.operand)}.reshape(steps * batch, {node.columns})"
        if isinstance(node, Contiguous):
            return f"np.ascontiguousarray({self.operand(node.operand)})"
        if isinstance(node, Ones):
            return f"np.ones({node.length}, dtype=x.dtype)"
        if isinstance(node, Plus):
            return f"{self.operand(node.a)} + {self.operand(node.b)}"
        if isinstance(node, Dot):
            product = f"np.dot({self.operand(node.a)}, {self.operand(node.b)})"
            return f"{product}.reshape({', '.join(node.shape)})" if node.shape else product
        raise TypeError(f"not an operand: {node!r}")  # pragma: no cover

    # ------------------------------------------------------------------------------ statements
    def statement(self, node: Statement | UnitLoop, indent: str) -> list[str]:
        return getattr(self, f"_print_{type(node).__name__}")(node, indent)

    def _print_Assign(self, node: Assign, indent: str) -> list[str]:
        target = node.target if isinstance(node.target, str) else self.operand(node.target)
        lines = comment_lines(node.comment, indent) if node.comment else []
        value = self.operand(node.value)
        if len(f"{indent}{target} = {value}") <= LINE_WIDTH:
            return [*lines, f"{indent}{target} = {value}"]
        return lines + wrap(f"{target} = (", value, ")", indent)

    def _print_Gemm(self, node: Gemm, indent: str) -> list[str]:
        # The size test sits in the kernel, not in a helper: np.dot called through an inlined helper cost 15-20 ns
        # more per call than np.dot itself, a few percent at B = 1 and H = 32.
        call = f"{self.operand(node.a)}, {self.operand(node.b)}, {self.operand(node.out)}"
        (rows, inner), (_, columns) = self.matrix_shape(node.a), self.matrix_shape(node.b)
        self.expressions.helpers_used.add("_loop_dot")
        inner_indent = indent + INDENT
        return [
            *comment_lines(node.comment, indent),
            f"{indent}if {rows} * {inner} * {columns} <= {LOOP_DOT_LIMIT}:",
            *wrap("_loop_dot(", call, ")", inner_indent),
            f"{indent}else:",
            *wrap("np.dot(", call, ")", inner_indent),
        ]

    @staticmethod
    def matrix_shape(node: Operand) -> tuple[str, str]:
        """(rows, columns) of a product's operand, as text: a slice's leading indices drop dimensions."""
        if isinstance(node, Transposed):
            rows, columns = KernelPrinter.matrix_shape(node.operand)
            return columns, rows
        if isinstance(node, Slice) and all(isinstance(part, str) for part in node.index):
            k = len(node.index)
            return f"{node.buffer}.shape[{k}]", f"{node.buffer}.shape[{k + 1}]"
        raise TypeError(f"not a matrix of a per-step product: {node!r}")  # pragma: no cover

    @staticmethod
    def _head_blocks(indent: str, blocks: int, assignment: str) -> list[str]:
        """``for g``: column block g of a gate-major (…, blocks·H) array (from ``gate_lo``) against the same
        block of a head-major (…, blocks·d) one (from ``head_lo``), for head k (its units from ``lo``)."""
        inner = indent + INDENT
        return [
            f"{indent}for g in range({blocks}):",
            f"{inner}gate_lo, head_lo = g * hidden + lo, g * head_size",
            f"{inner}{assignment}",
        ]

    def _print_HeadProjection(self, node: HeadProjection, indent: str) -> list[str]:
        # Element loops for the copies: 15-20% faster here than numba's 2-D slice assignments.
        k_, b_, g_ = (indent + INDENT * n for n in (1, 2, 3))
        return [
            *comment_lines(node.comment, indent),
            f"{indent}head_source = {self.operand(node.source)}",
            f"{indent}for k in range(heads):",
            f"{k_}lo = k * head_size",
            f"{k_}for nb in range(batch):",
            f"{b_}for i in range(head_size):",
            f"{b_}{INDENT}head_in[k, nb, i] = head_source[nb, lo + i]",
            f"{k_}np.dot(head_in[k], R[k], head_out[k])",
            f"{k_}for nb in range(batch):",
            f"{b_}for g in range({node.blocks}):",
            f"{g_}for i in range(head_size):",
            f"{g_}{INDENT}{node.out}[nb, g * hidden + lo + i] = head_out[k, nb, g * head_size + i]",
        ]

    def _print_HeadProjectionT(self, node: HeadProjectionT, indent: str) -> list[str]:
        k_, b_, g_ = (indent + INDENT * n for n in (1, 2, 3))
        return [
            *comment_lines(node.comment, indent),
            f"{indent}head_source = {self.operand(node.source)}",
            f"{indent}for k in range(heads):",
            f"{k_}lo = k * head_size",
            f"{k_}for nb in range(batch):",
            f"{b_}for g in range({node.blocks}):",
            f"{g_}for i in range(head_size):",
            f"{g_}{INDENT}head_grad[k, nb, g * head_size + i] = head_source[nb, g * hidden + lo + i]",
            f"{k_}np.dot(R[k], head_grad[k].T, {node.out}[lo:lo + head_size])",
        ]

    def _print_HeadWeightGradient(self, node: HeadWeightGradient, indent: str) -> list[str]:
        inner = indent + INDENT
        columns = width(node.blocks, "head_size")
        gather = f"right_k[:, head_lo:head_lo + head_size] = {node.right}[:, gate_lo:gate_lo + head_size]"
        return [
            *comment_lines(node.comment, indent),
            f"{indent}dR = np.empty((heads, head_size, {columns}), dtype=x.dtype)",
            f"{indent}right_k = np.empty((steps * batch, {columns}), dtype=x.dtype)",
            f"{indent}for k in range(heads):",
            f"{inner}lo = k * head_size",
            *self._head_blocks(inner, node.blocks, gather),
            f"{inner}dR[k] = np.dot(np.ascontiguousarray({node.left}[:, lo:lo + head_size]).T, right_k)",
        ]

    def _print_InputProjection(self, node: InputProjection, indent: str) -> list[str]:
        columns = width(node.blocks)
        if not node.bias:
            return [
                *comment_lines(
                    "Input projection of every step at once: one GEMM (T*B, I) x (I, G*H); the bias enters the"
                    " step's equations.",
                    indent,
                ),
                f"{indent}np.dot(x.reshape(steps * batch, n_in), W, {node.out}.reshape(steps * batch, {columns}))",
            ]
        return [
            *comment_lines(
                "Input projection of every step at once: one GEMM (T*B, I) x (I, G*H), plus the bias.", indent
            ),
            f"{indent}gates_2d = {node.out}.reshape(steps * batch, {columns})",
            f"{indent}np.dot(x.reshape(steps * batch, n_in), W, gates_2d)",
            f"{indent}for row in range(steps * batch):",
            f"{indent}{INDENT}for col in range({columns}):",
            f"{indent}{INDENT * 2}gates_2d[row, col] += b[col]",
        ]

    def _value_lines(self, head: str, value: sympy.Expr, indent: str) -> list[str]:
        text = self.expressions.doprint(value)
        if len(indent + head + text) <= LINE_WIDTH:
            return [indent + head + text]
        return wrap(f"{head}(", text, ")", indent)

    def _print_Reduction(self, node: Reduction, indent: str) -> list[str]:
        # The sum runs in a local: numba keeps it in a register (a store per unit into an array would not).
        return [
            *comment_lines(in_comment(node.comment), indent),
            f"{indent}{node.target.name} = {REAL}(0)",
            f"{indent}for j in range(hidden):",
            *self._value_lines(f"{node.target.name} += ", node.value.xreplace(self.direct), indent + INDENT),
        ]

    def _print_ScalarStore(self, node: ScalarStore, indent: str) -> list[str]:
        target = node.target.name if isinstance(node.target, Scalar) else self.operand(node.target)
        lines = comment_lines(in_comment(node.comment), indent) if node.comment else []
        return lines + self._value_lines(f"{target} = ", node.value.xreplace(self.direct), indent)

    def _print_UnitLoop(self, node: UnitLoop, indent: str) -> list[str]:
        lines = comment_lines(in_comment(node.comment), indent)
        lines.append(f"{indent}for j in {self.unit_range(node)}:")
        for store in node.stores:
            target = self.expressions.doprint(store.target.element().xreplace(self.direct))
            lines += self._value_lines(f"{target} {store.op} ", store.value.xreplace(self.direct), indent + INDENT)
        return lines

    def _print_RowLoop(self, node: RowLoop, indent: str) -> list[str]:
        lines = [line for c in node.comments for line in comment_lines(c, indent)]
        lines.append(f"{indent}for nb in range(batch):")
        inner = indent + INDENT
        lines.append(f"{inner}if t >= lengths[nb]:")
        if node.past:
            for item in node.body:
                lines += self.statement(item, inner + INDENT)
            return lines
        lines.append(f"{inner}{INDENT}continue" + (f"  # {node.skip_note}" if node.skip_note else ""))
        return lines + self.row_body(node, inner)

    def row_body(self, node: RowLoop, indent: str) -> list[str]:
        """The statements of a row loop, its views' elements read from and written to their buffers."""
        outer = self.direct
        self.direct = outer | {view.element(): self._direct_element(view) for view in node.views}
        lines = [line for item in node.body for line in self.statement(item, indent)]
        self.direct = outer
        return lines

    def _print_Phase(self, node: Phase, indent: str) -> list[str]:
        lines = [line for gemm in node.gemms for line in self._print_Gemm(gemm, indent)]
        return lines + self._print_RowLoop(node.rows, indent)

    def _print_TimeLoop(self, node: TimeLoop, indent: str) -> list[str]:
        steps = "range(steps - 1, -1, -1)" if node.reverse else "range(steps)"
        lines = [f"{indent}for t in {steps}:"]
        for item in node.body:
            lines += self.statement(item, indent + INDENT)
        return lines

    # -------------------------------------------------------------------------------- kernels
    @staticmethod
    def _sizes(node: Kernel) -> list[str]:
        """The kernel's sizes, read from its arguments' shapes, and its float type."""
        return [
            f"{INDENT}steps, batch, n_in = x.shape",
            f"{INDENT}hidden = {node.hidden}",
            *([f"{INDENT}proj = {node.proj}"] if node.proj else []),
            f"{INDENT}real = x.dtype.type",
            *([f"{INDENT}heads, head_size = R.shape[0], R.shape[1]"] if node.heads else []),
        ]

    def kernel(self, node: Kernel) -> str:
        """The source of one compiled function (without its decorator)."""
        lines = wrap(f"def {node.name}(", ", ".join(b.name for b in node.args), "):", "")
        lines += self._sizes(node)
        lines += [f"{INDENT}{buffer.name} = {allocation(buffer)}" for buffer in node.locals]
        for item in node.before:
            lines += self.statement(item, INDENT)
        lines += self._print_TimeLoop(node.loop, INDENT)
        for item in node.after:
            lines += self.statement(item, INDENT)
        if node.returns:
            lines.append(f"{INDENT}return {', '.join(node.returns)}")
        return "\n".join(lines)


def allocation(buffer: Buffer) -> str:
    """The expression that allocates ``buffer`` with the kernel's dtype."""
    fill = {"zeros": "np.zeros", "zeros_if_padded": "alloc"}.get(buffer.init, "np.empty")
    shape = buffer.shape[0] if len(buffer.shape) == 1 else f"({', '.join(buffer.shape)})"
    return f"{fill}({shape}, dtype=x.dtype)"


def wrapper_allocation(buffer: Buffer) -> list[str]:
    """The lines of ``forward()`` or ``backward()`` that make an argument buffer of a kernel: arrays beside x
    (``alloc``, ``_empty``, ``_zeros``: numpy arrays, or device arrays in a CUDA module given device arrays)."""
    if buffer.init == "final":
        return [f"{buffer.name} = _copy_of(final[{buffer.index}])"]
    shape = buffer.shape[0] if len(buffer.shape) == 1 else f"({', '.join(buffer.shape)})"
    if buffer.init == "zeros_if_padded":
        line = f"{buffer.name} = alloc({shape}, dtype=x.dtype)"
    else:
        line = f"{buffer.name} = {'_zeros' if buffer.init == 'zeros' else '_empty'}({shape}, x)"
    return [line, f"{buffer.name}[0] = initial[{buffer.index}]"] if buffer.init == "initial" else [line]
