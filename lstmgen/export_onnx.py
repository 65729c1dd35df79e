"""Any cell's forward as an ONNX graph: the input projection for all steps, then a ``Scan`` whose body is the
cell's forward equations, one ONNX node (or a fixed few) per operation of the function table.

>>> model = export_onnx("lstm", input_size=16, hidden_size=32, lengths=True)   # onnx.ModelProto
>>> onnx.save(model, "lstm.onnx")

The graph's inputs: ``x`` (T, B, I), every parameter by its name in PARAMS (the generated module's shapes),
``<state>0`` (B, width) per state in STATE order, each per-step input (T, B, H) by its name, and with
``lengths=True`` a ``lengths`` (B,) int64 (past its length a sequence keeps its state and outputs zeros, as in
the generated kernels). Outputs: ``y`` (T, B, P) and ``<state>_final`` per state. T and B are dynamic; I, H (and
K, P, S) are fixed at export. ``reverse=True`` runs each sequence from its last valid step to its first, y in
input order (``ReverseSequence`` where there are lengths, a reversed ``Scan`` where there are none).

Needs ``pip install "lstmgen[onnx]"``. A function of the equations that ONNX has no operator for is refused,
naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

import numpy as np
import onnx
import sympy
from onnx import TensorProto, helper, numpy_helper

from lstmgen.functions import FUNCTIONS, UNITS
from lstmgen.generate import resolve_spec
from lstmgen.spec import CellSpec
from lstmgen.symbolic.forward_equations import ForwardEquations, build_forward_equations, unit_symbol

OPSET = 17
_DTYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}


@dataclass
class _Nodes:
    """The nodes of one graph under construction, with unique names and cached constants."""

    prefix: str
    dtype: np.dtype
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    constants: dict[tuple, str] = field(default_factory=dict)
    count: int = 0

    def add(self, op: str, inputs: list[str], n_out: int = 1, **attrs) -> str | list[str]:
        self.count += 1
        outputs = [f"{self.prefix}{op.lower()}_{self.count}_{k}" for k in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=f"{self.prefix}{op}_{self.count}", **attrs))
        return outputs[0] if n_out == 1 else outputs

    def const(self, value: float | list[int], integer: bool = False) -> str:
        key = (integer, tuple(value) if isinstance(value, list) else float(value))
        if key not in self.constants:
            array = np.asarray(value, dtype=np.int64 if integer else self.dtype)
            self.count += 1
            name = f"{self.prefix}const_{self.count}"
            self.nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name)))
            self.constants[key] = name
        return self.constants[key]

    def columns(self, tensor: str, start: int, stop: int, axis: int = -1) -> str:
        ints = [start], [stop], [axis]
        return self.add("Slice", [tensor, *(self.const(v, integer=True) for v in ints)])


# The function table's operations in ONNX: each builds from its arguments' tensor names. Functions that only
# derivatives produce (indicators, masked) never appear in a forward step.
_ONE_NODE = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "softsign": "Softsign",
    "exp": "Exp",
    "log": "Log",
    "sqrt": "Sqrt",
    "sqrt_bounded": "Sqrt",  # its bounded derivative is backward's concern
    "abs": "Abs",
    "max": "Max",
    "min": "Min",
    "sign": "Sign",
}


def _softplus(g: _Nodes, x: str) -> str:
    # log(1 + e^x) without overflow: max(x, 0) + log(1 + e^{-|x|}) (ONNX's Softplus overflows in float32).
    tail = g.add("Log", [g.add("Add", [g.const(1.0), g.add("Exp", [g.add("Neg", [g.add("Abs", [x])])])])])
    return g.add("Add", [g.add("Relu", [x]), tail])


_COMPOSED: dict[str, Callable[..., str]] = {
    "squash_g": lambda g, x: g.add("Sub", [g.add("Mul", [g.const(4.0), g.add("Sigmoid", [x])]), g.const(2.0)]),
    "squash_h": lambda g, x: g.add("Sub", [g.add("Mul", [g.const(2.0), g.add("Sigmoid", [x])]), g.const(1.0)]),
    "hard_sigmoid": lambda g, x: g.add("HardSigmoid", [x], alpha=1 / 6, beta=0.5),
    "softplus": _softplus,
    "logsigmoid": lambda g, x: g.add("Neg", [_softplus(g, g.add("Neg", [x]))]),
    "expm1": lambda g, x: g.add("Sub", [g.add("Exp", [x]), g.const(1.0)]),
    "select": lambda g, c, a, b: g.add("Where", [g.add("Greater", [c, g.const(0.0)]), a, b]),
    "sum_units": lambda g, x: g.add("ReduceSum", [x, g.const([-1], integer=True)], keepdims=1),
}


def onnx_operations() -> dict[str, str]:
    """Per function of the equation vocabulary, how the exporter writes it: an ONNX operator, or "composed"."""
    return {**_ONE_NODE, **dict.fromkeys(_COMPOSED, "composed")}


_BY_CLASS = {record.cls: record.name for record in FUNCTIONS if record.cls is not None}


class _Expressions:
    """SymPy expressions of one step as nodes: ``env`` maps each symbol to the tensor that holds it."""

    def __init__(self, g: _Nodes, env: dict[sympy.Symbol, str], hidden: int) -> None:
        self.g, self.env, self.hidden = g, env, hidden

    def __call__(self, expr: sympy.Expr) -> str:
        g = self.g
        if expr == UNITS:
            return g.const(float(self.hidden))
        if isinstance(expr, sympy.Symbol):
            return self.env[expr]
        if expr.is_Number:
            return g.const(float(expr))
        if isinstance(expr, sympy.Add):
            return self._fold("Add", [self(a) for a in expr.args])
        if isinstance(expr, sympy.Mul):
            return self._product(expr)
        if isinstance(expr, sympy.Pow):
            return self._power(expr)
        return self._function(expr)

    def _fold(self, op: str, names: list[str]) -> str:
        result = names[0]
        for name in names[1:]:
            result = self.g.add(op, [result, name])
        return result

    def _product(self, expr: sympy.Mul) -> str:
        coefficient, factors = expr.as_coeff_mul()
        numerator = [f for f in factors if not (isinstance(f, sympy.Pow) and f.exp.is_negative)]
        denominator = [1 / f for f in factors if isinstance(f, sympy.Pow) and f.exp.is_negative]
        names = [self(f) for f in numerator]
        if coefficient == -1 and names:
            names[0] = self.g.add("Neg", [names[0]])
        elif coefficient != 1 or not names:
            names.insert(0, self.g.const(float(coefficient)))
        result = self._fold("Mul", names)
        return self.g.add("Div", [result, self._fold("Mul", [self(d) for d in denominator])]) if denominator else result

    def _power(self, expr: sympy.Pow) -> str:
        base, exponent = self(expr.base), expr.exp
        if exponent == 2:
            return self.g.add("Mul", [base, base])
        if exponent == -1:
            return self.g.add("Reciprocal", [base])
        if exponent == sympy.Rational(1, 2):
            return self.g.add("Sqrt", [base])
        if exponent.is_negative:
            return self.g.add("Reciprocal", [self(1 / expr)])
        return self.g.add("Pow", [base, self(exponent)])

    def _function(self, expr: sympy.Expr) -> str:
        name = _BY_CLASS.get(type(expr))
        args = [self(a) for a in expr.args]
        if name in _ONE_NODE:
            return self._fold(_ONE_NODE[name], args) if len(args) > 1 else self.g.add(_ONE_NODE[name], args)
        if name in _COMPOSED:
            return _COMPOSED[name](self.g, *args)
        raise ValueError(f"{name or type(expr).__name__}: ONNX has no operator for it (in {expr})")


@dataclass(frozen=True)
class _Sizes:
    n_in: int
    hidden: int
    width: int  # P: the units of the output state h
    heads: int | None
    block_size: int


def export_onnx(
    cell: ModuleType | CellSpec | str | os.PathLike[str],
    *,
    input_size: int,
    hidden_size: int,
    heads: int | None = None,
    proj_size: int | None = None,
    block_size: int | None = None,
    lengths: bool = False,
    reverse: bool = False,
    dtype: type | np.dtype = np.float32,
) -> onnx.ModelProto:
    """The forward of one layer of ``cell`` as an ONNX model: a generated module of a built-in, or anything
    :func:`lstmgen.load` accepts (a built-in's name, a CellSpec, a TOML path).

    Sizes as the generated module's ``param_shapes`` takes them; ``lengths``: the model takes a ``lengths``
    (B,) input; ``reverse``: each sequence runs from its last valid step to its first. See the module docstring
    for the graph's inputs and outputs.
    """
    from lstmgen.loader import builtin_spec_of, load

    if isinstance(cell, ModuleType):
        module, spec = cell, builtin_spec_of(cell, "the ONNX export")
    else:
        spec = resolve_spec(cell)
        module = load(spec)  # its param_shapes: the shapes and their checks
    dtype = np.dtype(dtype)
    if dtype not in _DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    for name, flag in (("lengths", lengths), ("reverse", reverse)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    shapes = module.param_shapes(input_size, hidden_size, heads=heads, proj_size=proj_size, block_size=block_size)
    equations = build_forward_equations(spec)
    if equations.input_row and input_size != hidden_size:
        raise ValueError(
            f"input_size: {spec.name} reads the input row x_t itself, so I must equal H; got I = {input_size}, "
            f"H = {hidden_size}"
        )
    sizes = _Sizes(
        input_size,
        hidden_size,
        proj_size or hidden_size if spec.projection else hidden_size,
        (heads or spec.heads) if spec.heads else None,
        block_size or 1,
    )
    graph = _Graph(spec, equations, shapes, sizes, dtype, bool(lengths), bool(reverse)).build()
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lstmgen")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def save_model(model: onnx.ModelProto, path: str | os.PathLike[str]) -> None:
    """Write ``model`` to ``path`` whole or not at all (through a temporary file beside it)."""
    path = os.fspath(path)
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        onnx.save(model, temporary)
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


class _Graph:
    """The outer graph: inputs, the input projection, the reorderings, the Scan and its body."""

    def __init__(self, spec, equations: ForwardEquations, shapes, sizes: _Sizes, dtype, lengths, reverse) -> None:
        self.spec, self.eq, self.shapes, self.sizes, self.dtype = spec, equations, shapes, sizes, dtype
        self.lengths, self.reverse = lengths, reverse
        self.g = _Nodes("", dtype)
        self.widths = [sizes.width if k == 0 else sizes.hidden for k in range(len(spec.state))]

    def _input(self, name: str, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, _DTYPES[self.dtype], shape)

    def build(self) -> onnx.GraphProto:
        spec, g = self.spec, self.g
        inputs = [self._input("x", ["T", "B", self.sizes.n_in])]
        inputs += [self._input(name, list(shape)) for name, shape in self.shapes.items()]
        inputs += [self._input(f"{s}0", ["B", w]) for s, w in zip(spec.state, self.widths, strict=True)]
        inputs += [self._input(name, ["T", "B", self.sizes.hidden]) for name in spec.inputs]
        if self.lengths:
            inputs.append(helper.make_tensor_value_info("lengths", TensorProto.INT64, ["B"]))
        params = self._per_cell_params()
        sequences = {"x": "x", **{name: name for name in spec.inputs}}
        if self.reverse and self.lengths:  # each sequence's valid steps reversed; the padding stays
            sequences = {k: self._reverse_sequence(v) for k, v in sequences.items()}
        projected = g.add("MatMul", [sequences["x"], params["W"]])
        if spec.input_bias:
            projected = g.add("Add", [projected, params["b"]])
        scanned = [projected, *(sequences[name] for name in spec.inputs)]
        if self.eq.input_row:
            scanned.append(sequences["x"])
        if self.lengths:
            scanned.append(self._valid_steps())
        carried = [f"{s}0" for s in spec.state] + ([self._zero_feedback()] if spec.feedback else [])
        body = _Body(self, params).build(len(carried), len(scanned))
        direction = 1 if self.reverse and not self.lengths else 0
        outputs = g.add(
            "Scan",
            [*carried, *scanned],
            n_out=len(carried) + 1,
            body=body,
            num_scan_inputs=len(scanned),
            scan_input_directions=[direction] * len(scanned),
            scan_output_directions=[direction],
        )
        y = outputs[-1]
        if self.reverse and self.lengths:
            y = self._reverse_sequence(y)
        g.nodes.append(helper.make_node("Identity", [y], ["y"]))
        for k, s in enumerate(spec.state):
            g.nodes.append(helper.make_node("Identity", [outputs[k]], [f"{s}_final"]))
        outs = [self._input("y", ["T", "B", self.sizes.width])]
        outs += [self._input(f"{s}_final", ["B", w]) for s, w in zip(spec.state, self.widths, strict=True)]
        return helper.make_graph(g.nodes, self.spec.name, inputs, outs)

    def _per_cell_params(self) -> dict[str, str]:
        """The parameters as the body reads them, as the kernels do: a block gate's columns repeated for each cell
        of its block; a fed-back block gate's row of Q in the block's first cell, zero in the others."""
        params = {name: name for name in self.shapes}
        if not self.spec.block_gates or self.sizes.block_size == 1:
            return params
        g, spec = self.g, self.spec
        gates = {"W": spec.gates, "b": spec.gates, "R": spec.recurrent_gates}
        for name, owners in gates.items():
            if name in params:
                index = g.const(self._shared(owners)[0], integer=True)
                params[name] = g.add("Gather", [name, index], axis=0 if name == "b" else 1)
        if spec.feedback:
            columns = g.add("Gather", ["Q", g.const(self._shared(spec.feedback_targets)[0], integer=True)], axis=1)
            rows, first = self._shared(spec.feedback)
            expanded = g.add("Gather", [columns, g.const(rows, integer=True)], axis=0)
            mask = np.zeros((len(rows), 1), self.dtype)
            mask[first] = 1
            mask_name = g.add("Constant", [], value=numpy_helper.from_array(mask, "first_cells"))
            params["Q"] = g.add("Mul", [expanded, mask_name])
        return params

    def _shared(self, gates) -> tuple[list[int], list[int]]:
        """For each per-cell column of ``gates`` (names or Gates), the compact column it repeats; and the first
        per-cell column of each compact one."""
        hidden, size, columns, start = self.sizes.hidden, self.sizes.block_size, [], 0
        for gate in gates:
            name = getattr(gate, "name", gate)
            units = hidden // size if name in self.spec.block_gates else hidden
            columns += [start + j * units // hidden for j in range(hidden)]
            start += units
        first = [k for k, c in enumerate(columns) if k == 0 or columns[k - 1] != c]
        return columns, first

    def _reverse_sequence(self, tensor: str) -> str:
        return self.g.add("ReverseSequence", [tensor, "lengths"], batch_axis=1, time_axis=0)

    def _valid_steps(self) -> str:
        """(T, B, 1) booleans: step t of sequence b is within its length."""
        g = self.g
        steps = g.add("Gather", [g.add("Shape", ["x"]), g.const([0], integer=True)], axis=0)
        zero, one = g.const(0, integer=True), g.const(1, integer=True)
        t = g.add("Range", [zero, g.add("Squeeze", [steps, g.const([0], integer=True)]), one])
        column = g.add("Unsqueeze", [t, g.const([1], integer=True)])
        valid = g.add("Less", [column, g.add("Unsqueeze", ["lengths", g.const([0], integer=True)])])
        return g.add("Unsqueeze", [valid, g.const([2], integer=True)])

    def _zero_feedback(self) -> str:
        """(B, n_feedback * H) zeros: the feedback gates before the first step."""
        g = self.g
        batch = g.add("Gather", [g.add("Shape", ["x"]), g.const([1], integer=True)], axis=0)
        width = g.const([len(self.spec.feedback) * self.sizes.hidden], integer=True)
        zero = numpy_helper.from_array(np.zeros(1, self.dtype), "zero")
        return g.add("ConstantOfShape", [g.add("Concat", [batch, width], axis=0)], value=zero)


class _Body:
    """The Scan body: one step of the cell from its forward equations."""

    def __init__(self, outer: _Graph, params: dict[str, str]) -> None:
        self.outer, self.params = outer, params
        self.spec, self.eq, self.sizes = outer.spec, outer.eq, outer.sizes
        self.g = _Nodes("step_", outer.dtype)

    def build(self, n_carried: int, n_scanned: int) -> onnx.GraphProto:
        spec, eq, g, hidden = self.spec, self.eq, self.g, self.sizes.hidden
        dtype = _DTYPES[self.outer.dtype]
        carried = [f"{s}_prev" for s in spec.state] + (["feedback_prev"] if spec.feedback else [])
        scanned = ["xw_t", *(f"{name}_t" for name in spec.inputs)]
        scanned += ["x_t"] if eq.input_row else []
        scanned += ["valid_t"] if self.outer.lengths else []
        assert len(carried) == n_carried and len(scanned) == n_scanned
        inputs = [helper.make_tensor_value_info(n, dtype, None) for n in carried + scanned if n != "valid_t"]
        if self.outer.lengths:
            inputs.append(helper.make_tensor_value_info("valid_t", TensorProto.BOOL, None))
        env: dict[sympy.Symbol, str] = {}
        env.update({sym: f"{s}_prev" for s, sym in eq.prev})
        env.update({sym: f"{name}_t" for name, sym in eq.step_inputs})
        env.update({sym: "x_t" for _, sym in eq.input_row})
        env.update({sym: self.params[name] for name, sym in eq.unit_params})
        gate_index = {gate.name: k for k, gate in enumerate(spec.gates)}
        for name, gate, sym in eq.gate_params:
            k = gate_index[gate]
            env[sym] = self.g.columns(self.params[name], k * hidden, (k + 1) * hidden, axis=0)
        for gate, sym in eq.xW:
            k = gate_index[gate]
            env[sym] = g.columns("xw_t", k * hidden, (k + 1) * hidden)
        late = dict(eq.sources)
        self._recurrent_products(env, [(gate, sym) for gate, sym in eq.hR if gate not in late])
        if spec.feedback:
            self._feedback_products(env)
        translate = _Expressions(g, env, hidden)
        pending = {dict(eq.hR)[gate]: (gate, src) for gate, src in late.items()}
        for assignment in eq.equations:
            for sym in assignment.rhs.free_symbols & set(pending):
                gate, src = pending.pop(sym)
                env[sym] = g.add("MatMul", [env[src], self._r_columns(gate)])
            env[assignment.lhs] = translate(assignment.rhs)
        new = [env[sym] for _, sym in eq.new]
        if spec.projection:  # h = u W_p: the equations give u (H units), the state holds its projection (P)
            new[0] = g.add("MatMul", [new[0], self.params["W_p"]])
        if spec.feedback:
            new.append(g.add("Concat", [env[unit_symbol(name)] for name in spec.feedback], axis=1))
        y = new[0]
        if self.outer.lengths:
            new = [g.add("Where", ["valid_t", n, p]) for n, p in zip(new, carried, strict=True)]
            y = g.add("Where", ["valid_t", new[0], g.const(0.0)])
        outputs = []
        for k, name in enumerate(new):
            g.nodes.append(helper.make_node("Identity", [name], [f"{carried[k]}_next"]))
            outputs.append(helper.make_tensor_value_info(f"{carried[k]}_next", dtype, None))
        g.nodes.append(helper.make_node("Identity", [y], ["y_t"]))
        outputs.append(helper.make_tensor_value_info("y_t", dtype, None))
        return helper.make_graph(g.nodes, f"{spec.name}_step", inputs, outputs)

    def _r_columns(self, gate: str) -> str:
        k = list(self.spec.recurrent_gates).index(gate)
        hidden = self.sizes.hidden
        return self.g.columns(self.params["R"], k * hidden, (k + 1) * hidden)

    def _recurrent_products(self, env: dict, products: list[tuple[str, sympy.Symbol]]) -> None:
        """hR_k = h_{t-1} R_k for the gates whose product starts the step: one MatMul (K batched ones for heads)."""
        if not products:
            return
        g, hidden, source = self.g, self.sizes.hidden, f"{self.spec.output_state}_prev"
        heads = self.sizes.heads
        blocks = len(self.spec.recurrent_gates)
        if heads is None:
            product = g.add("MatMul", [source, self.params["R"]])
        else:  # R (K, H/K, G_r*H/K): head k's units times its block; columns g*H/K + j of gate g's unit j
            size = hidden // heads
            split = g.add("Reshape", [source, g.const([0, heads, size], integer=True)])
            per_head = g.add("Transpose", [split], perm=[1, 0, 2])
            out = g.add("MatMul", [per_head, self.params["R"]])  # (K, B, G_r*H/K)
            out = g.add("Reshape", [out, g.const([heads, -1, blocks, size], integer=True)])
            out = g.add("Transpose", [out], perm=[1, 2, 0, 3])  # (B, G_r, K, H/K)
            product = g.add("Reshape", [out, g.const([0, blocks * hidden], integer=True)])
        order = list(self.spec.recurrent_gates)
        for gate, sym in products:
            k = order.index(gate)
            env[sym] = g.columns(product, k * hidden, (k + 1) * hidden)

    def _feedback_products(self, env: dict) -> None:
        """gQ_k = [previous feedback gates] Q_k."""
        g, hidden = self.g, self.sizes.hidden
        product = g.add("MatMul", ["feedback_prev", self.params["Q"]])
        for k, (_, sym) in enumerate(self.eq.gQ):
            env[sym] = g.columns(product, k * hidden, (k + 1) * hidden)
