"""Keras LSTM / GRU / SimpleRNN weights to and from the generated cells, against Keras 3 itself (torch backend)."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # Keras 3 runs on the CPU torch build the tests already need

import keras
import numpy as np
import pytest

from lstmgen.interop_keras import params_from_keras, params_to_keras


@pytest.mark.parametrize(
    ("layer_type", "reset_after"), [("LSTM", True), ("GRU", True), ("GRU", False), ("SimpleRNN", True)]
)
def test_keras_layer_and_generated_cell_agree(generated_module, layer_type, reset_after):
    keras.utils.set_random_seed(0)
    B, T, I, H = 3, 6, 4, 5
    kwargs = {"reset_after": reset_after} if layer_type == "GRU" else {}
    layer = getattr(keras.layers, layer_type)(H, return_sequences=True, return_state=True, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    layer(x)  # builds the weights
    layer.set_weights([rng.uniform(-0.6, 0.6, w.shape).astype(np.float32) for w in layer.get_weights()])
    n_states = 2 if layer_type == "LSTM" else 1
    initial = [0.5 * rng.standard_normal((B, H)).astype(np.float32) for _ in range(n_states)]
    out, *finals = (np.asarray(keras.ops.convert_to_numpy(o)) for o in layer(x, initial_state=initial))

    variant, params = params_from_keras(layer_type, *layer.get_weights(), reset_after=reset_after)
    m = generated_module(variant)
    y, final, _ = m.forward(np.ascontiguousarray(x.transpose(1, 0, 2)), params, tuple(initial))
    np.testing.assert_allclose(y.transpose(1, 0, 2), out, rtol=1e-5, atol=2e-6)
    # Keras returns LSTM states as (h, c), the cells' STATE order.
    for ours, theirs in zip(final, finals, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-6)

    back_type, weights, arguments = params_to_keras(variant, params)
    assert back_type == layer_type and arguments == kwargs
    for a, b in zip(weights[:2], layer.get_weights()[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    # The two GRU biases come back folded into one (except b_rn): Keras must compute the same with them.
    layer.set_weights(weights)
    again = [np.asarray(keras.ops.convert_to_numpy(o)) for o in layer(x, initial_state=initial)]
    for a, b in zip(again, [out, *finals], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_keras_import_errors():
    with pytest.raises(ValueError, match="layer_type: expected 'LSTM', 'GRU' or 'SimpleRNN', got 'Dense'"):
        params_from_keras("Dense", np.zeros((2, 4)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"recurrent_kernel: expected shape \(2, 8\), got \(3, 8\)"):
        params_from_keras("LSTM", np.zeros((2, 8)), np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r"bias: expected shape \(2, 6\), got \(6,\)"):
        params_from_keras("GRU", np.zeros((2, 6)), np.zeros((2, 6)), np.zeros(6))
    with pytest.raises(ValueError, match="Keras has no layer for 'lstm_peephole'"):
        params_to_keras("lstm_peephole", {})


def test_params_to_keras_names_a_missing_parameter():
    with pytest.raises(ValueError, match=r"params: expected the gru parameters \['R', 'W', 'b', 'b_rn'\]"):
        params_to_keras("gru", {"W": np.zeros((2, 9)), "R": np.zeros((3, 9)), "b": np.zeros(9)})
