"""Weights of Keras's LSTM, GRU and SimpleRNN layers to and from the generated cells' parameters.

Keras keeps ``kernel (I, G*H)``, ``recurrent_kernel (H, G*H)`` and ``bias`` (``layer.get_weights()`` order) with
gate blocks i,f,c,o (LSTM) and z,r,h (GRU): the generated cells' layout, up to the gate order. The cells:
LSTM -> ``lstm``; GRU with ``reset_after=True`` (Keras's default; bias (2, 3H): input and recurrent) -> ``gru``,
whose ``b_rn`` is the recurrent bias of h; GRU with ``reset_after=False`` (bias (3H,)) -> ``gru_v3``;
SimpleRNN (tanh) -> ``rnn_tanh``. Keras itself is not needed: everything is numpy arrays.
"""

from __future__ import annotations

import numpy as np

from lstmgen.gate_blocks import cell_gates, gate_block, reorder_gates

#: Keras gate order per layer type, in the generated cells' gate names.
KERAS_GATES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("z", "r", "n"), "SimpleRNN": ("g",)}


def keras_variant(layer_type: str, *, reset_after: bool = True) -> str:
    """The lstmgen variant that computes Keras's ``layer_type`` (default activations)."""
    if layer_type == "LSTM":
        return "lstm"
    if layer_type == "GRU":
        return "gru" if reset_after else "gru_v3"
    if layer_type == "SimpleRNN":
        return "rnn_tanh"
    raise ValueError(f"layer_type: expected 'LSTM', 'GRU' or 'SimpleRNN', got {layer_type!r}")


def _array(name: str, value: object, shape: tuple[int, ...], dtype: np.dtype | None = None) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(value).__name__}")
    if value.dtype not in (np.float32, np.float64) or (dtype is not None and value.dtype != dtype):
        raise TypeError(f"{name}: expected dtype {dtype or 'float32 or float64'}, got {value.dtype}")
    if value.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {value.shape}")
    return value


def params_from_keras(
    layer_type: str,
    kernel: np.ndarray,
    recurrent_kernel: np.ndarray,
    bias: np.ndarray | None = None,
    *,
    reset_after: bool = True,
) -> tuple[str, dict[str, np.ndarray]]:
    """Keras weights (``layer.get_weights()``) -> (variant, params of the generated module)."""
    variant = keras_variant(layer_type, reset_after=reset_after)
    order = KERAS_GATES[layer_type]
    if not isinstance(kernel, np.ndarray) or kernel.ndim != 2 or kernel.shape[1] % len(order):
        raise ValueError(f"kernel: expected shape (I, {len(order)}*H), got {getattr(kernel, 'shape', kernel)!r}")
    hidden = kernel.shape[1] // len(order)
    dtype = _array("kernel", kernel, kernel.shape).dtype
    _array("recurrent_kernel", recurrent_kernel, (hidden, len(order) * hidden), dtype)
    two_biases = variant == "gru"
    bias_shape = (2, 3 * hidden) if two_biases else (len(order) * hidden,)
    bias = np.zeros(bias_shape, dtype) if bias is None else _array("bias", bias, bias_shape, dtype)

    gates = cell_gates(variant)
    if two_biases:  # the recurrent bias of h sits inside the reset product: it is b_rn
        b_rn, recurrent_bias = gate_block(bias[1], order, "n").copy(), bias[1].copy()
        gate_block(recurrent_bias, order, "n")[:] = 0
        bias = bias[0] + recurrent_bias
    params = {
        "W": np.ascontiguousarray(reorder_gates(kernel, order, gates)),
        "R": np.ascontiguousarray(reorder_gates(recurrent_kernel, order, gates)),
        "b": reorder_gates(bias, order, gates),
    }
    if two_biases:
        params["b_rn"] = b_rn
    return variant, params


def params_to_keras(variant: str, params: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray], dict[str, bool]]:
    """(variant, params) -> (Keras layer type, weights for ``layer.set_weights``, layer arguments)."""
    types = {"lstm": "LSTM", "gru": "GRU", "gru_v3": "GRU", "rnn_tanh": "SimpleRNN"}
    if variant not in types:
        raise ValueError(f"variant: Keras has no layer for {variant!r}; expected one of {sorted(types)}")
    layer_type = types[variant]
    order, gates = KERAS_GATES[layer_type], cell_gates(variant)
    keys = {"W", "R", "b", *({"b_rn"} if variant == "gru" else ())}
    if not isinstance(params, dict) or set(params) != keys:
        got = sorted(params) if isinstance(params, dict) else type(params).__name__
        raise ValueError(f"params: expected the {variant} parameters {sorted(keys)}, got {got}")
    for name in keys:
        if not isinstance(params[name], np.ndarray):
            raise TypeError(f"params[{name!r}]: expected a numpy array, got {type(params[name]).__name__}")
    kernel = reorder_gates(params["W"], gates, order)
    recurrent = reorder_gates(params["R"], gates, order)
    bias = reorder_gates(params["b"], gates, order)
    arguments: dict[str, bool] = {}
    if layer_type == "GRU":
        arguments["reset_after"] = variant == "gru"
        if variant == "gru":
            recurrent_bias = np.zeros_like(bias)
            gate_block(recurrent_bias, order, "n")[:] = params["b_rn"]
            bias = np.stack([bias, recurrent_bias])
    return layer_type, [kernel, recurrent, bias], arguments
