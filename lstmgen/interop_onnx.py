"""Tensors of ONNX's LSTM, GRU and RNN operators to and from the generated cells' parameters.

ONNX keeps, per direction d, ``W[d] (G*H, I)``, ``R[d] (G*H, H)``, ``B[d] (2*G*H,)`` (input biases, then
recurrent biases) and, for the LSTM, peepholes ``P[d] (3H,)``; gate blocks in the orders i,o,f,c (LSTM) and
z,r,h (GRU). The cells: LSTM -> ``lstm`` (``lstm_peephole`` when P is given), GRU with
``linear_before_reset=1`` -> ``gru`` (the recurrent bias of h sits inside the reset product: ``b_rn``),
GRU with ``linear_before_reset=0`` -> ``gru_v3``, RNN -> ``rnn_tanh``. Only the default activations are mapped;
``clip``, ``input_forget=1``, ``activation_alpha``/``activation_beta`` and other activations are refused, and so is
a ``hidden_size`` or ``direction`` that disagrees with the tensors. ``layout=1`` (batch-first X and Y) is run by
:func:`layer_from_onnx_node` as a ``batch_first`` layer.

Zero-length sequences (``sequence_lens`` 0) with an initial state: ONNX's specification leaves Y_h undefined
and ONNX Runtime returns zeros; lstmgen returns the initial state (a sequence of length 0 keeps its state, as
every sequence does past its length). Y is zero at every step of such a sequence in both.

onnx itself is not needed here: everything is numpy arrays. :func:`from_onnx_node` reads an ``onnx.NodeProto``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from lstmgen.gate_blocks import cell_gates, gate_block, reorder_gates
from lstmgen.layers import RecurrentLayer

#: ONNX gate order per operator, in the generated cells' gate names.
ONNX_GATES = {"LSTM": ("i", "o", "f", "g"), "GRU": ("z", "r", "n"), "RNN": ("g",)}
DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
PEEPHOLES = ("p_i", "p_o", "p_f")


def onnx_variant(op_type: str, *, peepholes: bool = False, linear_before_reset: int = 0) -> str:
    """The lstmgen variant that computes ONNX's ``op_type`` with these attributes."""
    if op_type == "LSTM":
        return "lstm_peephole" if peepholes else "lstm"
    if op_type == "GRU":
        if linear_before_reset not in (0, 1):
            raise ValueError(f"linear_before_reset: expected 0 or 1, got {linear_before_reset!r}")
        return "gru" if linear_before_reset else "gru_v3"
    if op_type == "RNN":
        return "rnn_tanh"
    raise ValueError(f"op_type: expected 'LSTM', 'GRU' or 'RNN', got {op_type!r}")


def _check(name: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {value.dtype}")
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
    return value


def params_from_onnx(
    op_type: str,
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None = None,
    P: np.ndarray | None = None,
    *,
    linear_before_reset: int = 0,
) -> tuple[str, list[dict[str, np.ndarray]]]:
    """ONNX tensors -> (variant, one params dict per direction).

    Args:
        op_type: "LSTM", "GRU" or "RNN".
        W: (D, G*H, I); R: (D, G*H, H); B: (D, 2*G*H) or None (zeros); P: (D, 3H) or None (LSTM only).
        linear_before_reset: the GRU attribute.
    """
    variant = onnx_variant(op_type, peepholes=P is not None, linear_before_reset=linear_before_reset)
    order = ONNX_GATES[op_type]
    gates = len(order)
    if not isinstance(W, np.ndarray) or W.ndim != 3 or W.shape[0] not in (1, 2) or W.shape[1] % gates:
        raise ValueError(f"W: expected shape (D, {gates}*H, I) with D 1 or 2, got {getattr(W, 'shape', W)!r}")
    directions, hidden, n_in = W.shape[0], W.shape[1] // gates, W.shape[2]
    _check("W", W, (directions, gates * hidden, n_in))
    _check("R", R, (directions, gates * hidden, hidden))
    dtype = W.dtype
    bias_shape = (directions, 2 * gates * hidden)
    B = np.zeros(bias_shape, dtype) if B is None else _check("B", B, bias_shape)
    if P is not None:
        if op_type != "LSTM":
            raise ValueError(f"P: peepholes exist only for the LSTM operator, got P for {op_type}")
        _check("P", P, (directions, 3 * hidden))
    for name, value in (("R", R), ("B", B), ("P", P)):
        if value is not None and value.dtype != dtype:
            raise TypeError(f"{name}: expected dtype {dtype} (the dtype of W), got {value.dtype}")

    gates_of_cell = cell_gates(variant)
    per_direction = []
    for d in range(directions):
        w_bias, r_bias = B[d, : gates * hidden], B[d, gates * hidden :].copy()
        if variant == "gru":  # ONNX's Rbh multiplies by r: it is b_rn
            b_rn = gate_block(r_bias, order, "n").copy()
            gate_block(r_bias, order, "n")[:] = 0
        p = {
            "W": np.ascontiguousarray(reorder_gates(W[d], order, gates_of_cell, axis=0).T),
            "R": np.ascontiguousarray(reorder_gates(R[d], order, gates_of_cell, axis=0).T),
            "b": reorder_gates(w_bias + r_bias, order, gates_of_cell),
        }
        if variant == "gru":
            p["b_rn"] = b_rn
        if P is not None:
            for k, name in enumerate(PEEPHOLES):
                p[name] = P[d, k * hidden : (k + 1) * hidden].copy()
        per_direction.append(p)
    return variant, per_direction


def params_to_onnx(variant: str, per_direction: list[dict[str, np.ndarray]]) -> tuple[str, dict[str, Any]]:
    """(variant, one params dict per direction) -> (op_type, {"W", "R", "B"[, "P"], "attributes"}).

    The folded bias goes to the input half of B; the recurrent half is zero except the GRU's Rbh (``b_rn``).
    """
    ops = {"lstm": "LSTM", "lstm_peephole": "LSTM", "gru": "GRU", "gru_v3": "GRU", "rnn_tanh": "RNN"}
    if variant not in ops:
        raise ValueError(f"variant: ONNX has no operator for {variant!r}; expected one of {sorted(ops)}")
    if not isinstance(per_direction, (list, tuple)) or len(per_direction) not in (1, 2):
        raise ValueError("per_direction: expected a list of 1 or 2 params dicts (forward, then reverse)")
    op_type = ops[variant]
    order = ONNX_GATES[op_type]
    gates_of_cell = cell_gates(variant)
    keys = {"W", "R", "b", *({"b_rn"} if variant == "gru" else ()), *(PEEPHOLES if variant == "lstm_peephole" else ())}
    for d, p in enumerate(per_direction):
        if not isinstance(p, dict) or set(p) != keys:
            got = sorted(p) if isinstance(p, dict) else type(p).__name__
            raise ValueError(f"per_direction[{d}]: expected the {variant} parameters {sorted(keys)}, got {got}")
        for name in keys:
            if not isinstance(p[name], np.ndarray):
                raise TypeError(f"per_direction[{d}][{name!r}]: expected a numpy array, got {type(p[name]).__name__}")
    hidden = per_direction[0]["R"].shape[0]

    W, R, B, P = [], [], [], []
    for p in per_direction:
        W.append(reorder_gates(p["W"], gates_of_cell, order).T)
        R.append(reorder_gates(p["R"], gates_of_cell, order).T)
        recurrent = np.zeros(len(order) * hidden, dtype=p["b"].dtype)
        if variant == "gru":
            gate_block(recurrent, order, "n")[:] = p["b_rn"]
        B.append(np.concatenate([reorder_gates(p["b"], gates_of_cell, order), recurrent]))
        if variant == "lstm_peephole":
            P.append(np.concatenate([p[name] for name in PEEPHOLES]))
    tensors: dict[str, Any] = {"W": np.stack(W), "R": np.stack(R), "B": np.stack(B)}
    if P:
        tensors["P"] = np.stack(P)
    attributes: dict[str, Any] = {
        "hidden_size": hidden,
        "direction": "bidirectional" if len(per_direction) == 2 else "forward",
    }
    if op_type == "GRU":
        attributes["linear_before_reset"] = int(variant == "gru")
    tensors["attributes"] = attributes
    return op_type, tensors


@dataclass(frozen=True)
class OnnxRecurrence:
    """What an ONNX LSTM/GRU/RNN node computes, in lstmgen's terms."""

    variant: str
    direction: str  # "forward", "reverse" or "bidirectional"
    params: list[dict[str, np.ndarray]]
    layout: int  # 0: X (T, B, I) as lstmgen; 1: batch-first X (B, T, I)


def read_onnx_node(node: Any, tensors: dict[str, np.ndarray]) -> OnnxRecurrence:
    """Read an ``onnx.NodeProto`` of LSTM/GRU/RNN whose W, R, B, P inputs are in ``tensors`` (by input name).

    Every attribute is honoured or refused with the reason: nothing is silently ignored.
    """
    op_type = node.op_type
    if op_type not in ONNX_GATES:
        raise ValueError(f"node: expected an LSTM, GRU or RNN node, got {op_type!r}")
    attrs: dict[str, Any] = {}
    for a in node.attribute:
        if a.type == a.STRING:
            attrs[a.name] = a.s.decode()
        elif a.type == a.STRINGS:
            attrs[a.name] = [v.decode() for v in a.strings]
        elif a.type == a.INT:
            attrs[a.name] = a.i
        elif a.type == a.FLOAT:
            attrs[a.name] = a.f
        elif a.type == a.FLOATS:
            attrs[a.name] = list(a.floats)
        else:
            attrs[a.name] = a  # anything else is unsupported and refused below
    known = {"direction", "activations", "hidden_size", "linear_before_reset", "layout", "input_forget"}
    for name in attrs:
        if name == "clip":
            raise ValueError(f"node: attribute clip={attrs[name]!r} is not supported (the cells do not clip)")
        if name in ("activation_alpha", "activation_beta"):
            raise ValueError(
                f"node: attribute {name}={attrs[name]!r} is not supported (the default activations take none)"
            )
        if name not in known:
            raise ValueError(f"node: attribute {name!r} is not supported by {op_type}")
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"node: direction: expected forward, reverse or bidirectional, got {direction!r}")
    directions = 2 if direction == "bidirectional" else 1
    activations = attrs.get("activations", DEFAULT_ACTIVATIONS[op_type] * directions)
    if activations != DEFAULT_ACTIVATIONS[op_type] * directions:
        raise ValueError(f"node: activations: only ONNX's defaults are mapped, got {activations}")
    if attrs.get("input_forget", 0) != 0:
        raise ValueError(f"node: attribute input_forget={attrs['input_forget']!r} is not supported (expected 0)")
    layout = attrs.get("layout", 0)
    if layout not in (0, 1):
        raise ValueError(f"node: layout: expected 0 or 1, got {layout!r}")
    inputs = list(node.input) + [""] * 8

    def tensor(position: int) -> np.ndarray | None:
        name = inputs[position]
        if not name:
            return None
        if name not in tensors:
            raise ValueError(f"tensors: node input {name!r} is missing")
        return tensors[name]

    variant, params = params_from_onnx(
        op_type,
        tensor(1),
        tensor(2),
        tensor(3),
        tensor(7) if op_type == "LSTM" else None,
        linear_before_reset=int(attrs.get("linear_before_reset", 0)),
    )
    if len(params) != directions:
        raise ValueError(f"node: direction={direction!r} needs {directions} direction(s) in W, got {len(params)}")
    hidden = params[0]["R"].shape[0]
    if "hidden_size" in attrs and attrs["hidden_size"] != hidden:
        raise ValueError(f"node: hidden_size={attrs['hidden_size']} disagrees with R, whose shape gives H = {hidden}")
    return OnnxRecurrence(variant, direction, params, layout)


def from_onnx_node(node: Any, tensors: dict[str, np.ndarray]) -> tuple[str, str, list[dict[str, np.ndarray]]]:
    """Read an ``onnx.NodeProto`` of LSTM/GRU/RNN whose W, R, B, P inputs are in ``tensors`` (by input name).

    Returns (variant, direction, one params dict per direction); direction is "forward", "reverse" or
    "bidirectional" (run "reverse" with the generated ``forward(..., reverse=True)``). A node with
    ``layout=1`` is refused here (these parameters alone cannot say the data is batch-first): use
    :func:`layer_from_onnx_node`, which runs it.
    """
    read = read_onnx_node(node, tensors)
    if read.layout:
        raise ValueError("node: layout=1 (batch-first) is run by layer_from_onnx_node, not from_onnx_node")
    return read.variant, read.direction, read.params


def layer_from_onnx_node(
    node: Any, tensors: dict[str, np.ndarray], *, cell: ModuleType | None = None
) -> RecurrentLayer:
    """The :class:`RecurrentLayer` that computes an ONNX LSTM/GRU/RNN node: its direction (forward, reverse,
    bidirectional) and its layout (``layout=1``: batch-first x and output) included.

    The layer's output is (T, B, D*H) (or (B, T, D*H) batch-first): ONNX's Y (T, D, B, H) is
    ``out.reshape(T, B, D, H).transpose(0, 2, 1, 3)``; states are (D, B, H) as ONNX's Y_h (layout 0).
    """
    read = read_onnx_node(node, tensors)
    return _layer(read.variant, read.params, read.direction, cell, batch_first=read.layout == 1)


def layer_from_onnx(
    op_type: str,
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None = None,
    P: np.ndarray | None = None,
    *,
    linear_before_reset: int = 0,
    direction: str | None = None,
    cell: ModuleType | None = None,
) -> RecurrentLayer:
    """A one-layer :class:`RecurrentLayer` from ONNX tensors.

    ``direction`` is the node's: "forward" (the default for one direction in W, as in ONNX), "reverse", or
    "bidirectional" (the default, and the only choice, for two). The tensors alone cannot tell forward from
    reverse: pass the node's direction, or use :func:`layer_from_onnx_node`.
    """
    variant, params = params_from_onnx(op_type, W, R, B, P, linear_before_reset=linear_before_reset)
    if direction is None:
        direction = "bidirectional" if len(params) == 2 else "forward"
    return _layer(variant, params, direction, cell)


def _layer(
    variant: str,
    params: list[dict[str, np.ndarray]],
    direction: str,
    cell: ModuleType | None,
    *,
    batch_first: bool = False,
) -> RecurrentLayer:
    expected = {"forward": 1, "reverse": 1, "bidirectional": 2}
    if direction not in expected:
        raise ValueError(f"direction: expected forward, reverse or bidirectional, got {direction!r}")
    if expected[direction] != len(params):
        raise ValueError(f"direction: {direction!r} needs {expected[direction]} direction(s) in W, got {len(params)}")
    if cell is None:
        from lstmgen.loader import load

        cell = load(variant)
    if getattr(cell, "VARIANT", None) != variant:
        raise ValueError(f"cell: expected the generated {variant!r} module, got {cell.__name__}")
    W = params[0]["W"]
    return RecurrentLayer(
        cell,
        W.shape[0],
        params[0]["R"].shape[0],
        bidirectional=direction == "bidirectional",
        reverse=direction == "reverse",
        batch_first=batch_first,
        dtype=W.dtype,
        params=[params],
    )
