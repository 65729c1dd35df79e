"""Tensors of ONNX's LSTM, GRU and RNN operators to and from the generated cells' parameters.

ONNX keeps, per direction d, ``W[d] (G*H, I)``, ``R[d] (G*H, H)``, ``B[d] (2*G*H,)`` (input biases, then
recurrent biases) and, for the LSTM, peepholes ``P[d] (3H,)``; gate blocks in the orders i,o,f,c (LSTM) and
z,r,h (GRU). The cells: LSTM -> ``lstm`` (``lstm_peephole`` when P is given), GRU with
``linear_before_reset=1`` -> ``gru`` (the recurrent bias of h sits inside the reset product: ``b_rn``),
GRU with ``linear_before_reset=0`` -> ``gru_v3``, RNN -> ``rnn_tanh``. Only the default activations are mapped;
``clip``, ``input_forget`` and other activations are refused.

onnx itself is not needed here: everything is numpy arrays. :func:`from_onnx_node` reads an ``onnx.NodeProto``.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

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

    def block(a: np.ndarray, gate: str) -> np.ndarray:
        k = order.index(gate)
        return a[k * hidden : (k + 1) * hidden]

    cell_gates = {"lstm": "ifgo", "lstm_peephole": "ifgo", "gru": "rzn", "gru_v3": "rzn", "rnn_tanh": "g"}[variant]
    per_direction = []
    for d in range(directions):
        w_bias, r_bias = B[d, : gates * hidden], B[d, gates * hidden :]
        bias = []
        for g in cell_gates:
            inside_reset = variant == "gru" and g == "n"  # ONNX's Rbh multiplies by r: it is b_rn
            bias.append(block(w_bias, g) + (0 if inside_reset else block(r_bias, g)))
        p = {
            "W": np.ascontiguousarray(np.concatenate([block(W[d], g) for g in cell_gates]).T),
            "R": np.ascontiguousarray(np.concatenate([block(R[d], g) for g in cell_gates]).T),
            "b": np.concatenate(bias),
        }
        if variant == "gru":
            p["b_rn"] = block(r_bias, "n").copy()
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
    cell_gates = "ifgo" if op_type == "LSTM" else ("rzn" if op_type == "GRU" else "g")
    hidden = per_direction[0]["R"].shape[0]

    def block(a: np.ndarray, gate: str) -> np.ndarray:
        k = cell_gates.index(gate)
        return a[..., k * hidden : (k + 1) * hidden]

    W, R, B, P = [], [], [], []
    for p in per_direction:
        W.append(np.concatenate([block(p["W"], g) for g in order], axis=1).T)
        R.append(np.concatenate([block(p["R"], g) for g in order], axis=1).T)
        recurrent = np.zeros(len(order) * hidden, dtype=p["b"].dtype)
        if variant == "gru":
            k = order.index("n")
            recurrent[k * hidden : (k + 1) * hidden] = p["b_rn"]
        B.append(np.concatenate([*(block(p["b"], g) for g in order), recurrent]))
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


def from_onnx_node(node: Any, tensors: dict[str, np.ndarray]) -> tuple[str, str, list[dict[str, np.ndarray]]]:
    """Read an ``onnx.NodeProto`` of LSTM/GRU/RNN whose W, R, B, P inputs are in ``tensors`` (by input name).

    Returns (variant, direction, one params dict per direction); direction is "forward", "reverse" or
    "bidirectional" (run "reverse" with the generated ``forward(..., reverse=True)``).
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
        else:
            attrs[a.name] = a  # anything else is unsupported and refused below if it matters
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"node: direction: expected forward, reverse or bidirectional, got {direction!r}")
    directions = 2 if direction == "bidirectional" else 1
    activations = attrs.get("activations", DEFAULT_ACTIVATIONS[op_type] * directions)
    if activations != DEFAULT_ACTIVATIONS[op_type] * directions:
        raise ValueError(f"node: activations: only ONNX's defaults are mapped, got {activations}")
    for name in ("clip", "input_forget", "layout"):
        if attrs.get(name):
            raise ValueError(f"node: attribute {name}={attrs[name]!r} is not supported (expected it absent or 0)")
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
    return variant, direction, params


def layer_from_onnx(
    op_type: str,
    W: np.ndarray,
    R: np.ndarray,
    B: np.ndarray | None = None,
    P: np.ndarray | None = None,
    *,
    linear_before_reset: int = 0,
    cell: ModuleType | None = None,
) -> RecurrentLayer:
    """A one-layer :class:`RecurrentLayer` (bidirectional when W holds two directions) from ONNX tensors."""
    variant, params = params_from_onnx(op_type, W, R, B, P, linear_before_reset=linear_before_reset)
    if cell is None:
        from lstmgen.loader import load

        cell = load(variant)
    if getattr(cell, "VARIANT", None) != variant:
        raise ValueError(f"cell: expected the generated {variant!r} module, got {cell.__name__}")
    return RecurrentLayer(
        cell,
        W.shape[2],
        R.shape[2],
        bidirectional=len(params) == 2,
        dtype=W.dtype,
        params=[params],
    )
