"""ONNX LSTM / GRU / RNN tensors to and from the generated cells, checked against onnx.reference's evaluator.

onnx.reference ignores sequence_lens (its LSTM/GRU take the argument and do not use it), so padded batches
are checked the way ONNX defines them: each sequence alone, cut to its length, through the evaluator.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from lstmgen.interop_onnx import from_onnx_node, layer_from_onnx, params_from_onnx, params_to_onnx

G = {"LSTM": 4, "GRU": 3, "RNN": 1}


def onnx_run(op_type, tensors, attributes, x, initial):
    """Y (T, D, B, H) and Y_h (and Y_c) from the reference evaluator."""
    names = ["X", "W", "R", "B", "", "initial_h"]
    feeds = {"X": x, **{k: tensors[k] for k in ("W", "R", "B")}, "initial_h": initial[0]}
    if op_type == "LSTM":
        names += ["initial_c", "P" if "P" in tensors else ""]
        feeds["initial_c"] = initial[1]
        if "P" in tensors:
            feeds["P"] = tensors["P"]
    outputs = ["Y", "Y_h"] + (["Y_c"] if op_type == "LSTM" else [])
    node = helper.make_node(op_type, names, outputs, **attributes)
    elem = TensorProto.DOUBLE if x.dtype == np.float64 else TensorProto.FLOAT
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(k, elem, None) for k in feeds],
        [helper.make_tensor_value_info(k, elem, None) for k in outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(model).run(None, feeds), node


def random_tensors(op_type, directions, hidden, n_in, peepholes, rng, dtype=np.float64):
    g = G[op_type]
    t = {
        "W": rng.uniform(-0.7, 0.7, (directions, g * hidden, n_in)),
        "R": rng.uniform(-0.7, 0.7, (directions, g * hidden, hidden)),
        "B": rng.uniform(-0.5, 0.5, (directions, 2 * g * hidden)),
    }
    if peepholes:
        t["P"] = rng.uniform(-0.5, 0.5, (directions, 3 * hidden))
    return {k: v.astype(dtype) for k, v in t.items()}


CASES = [
    ("LSTM", "forward", False, 0),
    ("LSTM", "bidirectional", True, 0),
    ("LSTM", "reverse", True, 0),
    ("GRU", "bidirectional", False, 0),
    ("GRU", "forward", False, 1),
    ("GRU", "reverse", False, 1),
    ("RNN", "bidirectional", False, 0),
]


@pytest.mark.parametrize(("op_type", "direction", "peepholes", "lbr"), CASES)
def test_onnx_node_runs_the_same_as_the_reference_evaluator(generated_module, op_type, direction, peepholes, lbr):
    rng = np.random.default_rng(3)
    D, T, B, I, H = 2 if direction == "bidirectional" else 1, 5, 3, 4, 3
    tensors = random_tensors(op_type, D, H, I, peepholes, rng)
    attributes = {"hidden_size": H, "direction": direction}
    if op_type == "GRU":
        attributes["linear_before_reset"] = lbr
    x = rng.standard_normal((T, B, I))
    initial = [0.5 * rng.standard_normal((D, B, H)) for _ in range(2 if op_type == "LSTM" else 1)]
    results, node = onnx_run(op_type, tensors, attributes, x, initial)
    variant, node_direction, params = from_onnx_node(node, tensors)
    assert node_direction == direction
    m = generated_module(variant)
    for d, p in enumerate(params):
        state = tuple(s[d] for s in initial)
        y, final, _ = m.forward(x, p, state, reverse=direction == "reverse" or d == 1)
        np.testing.assert_allclose(y, results[0][:, d], rtol=1e-12, atol=1e-14)
        for k, f in enumerate(final):
            np.testing.assert_allclose(f, results[1 + k][d], rtol=1e-12, atol=1e-14)

    # Export: the tensors come back in ONNX's layout and the evaluator gives the same outputs again.
    op_back, exported = params_to_onnx(variant, params)
    assert op_back == op_type and exported["attributes"]["hidden_size"] == H
    if direction != "reverse":
        assert exported["attributes"]["direction"] == direction
    for k in ("W", "R"):
        np.testing.assert_array_equal(exported[k], tensors[k])
    again, _ = onnx_run(op_type, exported, {**attributes, **exported["attributes"], "direction": direction}, x, initial)
    for a, b in zip(again, results, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("op_type", "peepholes", "lbr"), [("LSTM", True, 0), ("GRU", False, 1), ("GRU", False, 0)])
def test_sequence_lens_follow_onnx_semantics(generated_module, op_type, peepholes, lbr):
    rng = np.random.default_rng(4)
    T, B, I, H = 6, 4, 3, 2
    tensors = random_tensors(op_type, 2, H, I, peepholes, rng)
    attributes = {"hidden_size": H, "direction": "bidirectional"}
    if op_type == "GRU":
        attributes["linear_before_reset"] = lbr
    layer = layer_from_onnx(
        op_type,
        tensors["W"],
        tensors["R"],
        tensors["B"],
        tensors.get("P"),
        linear_before_reset=lbr,
        cell=generated_module(
            params_from_onnx(op_type, tensors["W"], tensors["R"], linear_before_reset=lbr, P=tensors.get("P"))[0]
        ),
    )
    x = rng.standard_normal((T, B, I))
    lengths = np.array([6, 1, 4, 3])
    out, final, _ = layer.forward(x, lengths=lengths)
    n_states = 2 if op_type == "LSTM" else 1
    zeros = [np.zeros((2, 1, H)) for _ in range(n_states)]
    for b, n in enumerate(lengths):
        results, _ = onnx_run(op_type, tensors, attributes, x[:n, b : b + 1], zeros)
        y = results[0][:, :, 0]  # (n, D, H)
        np.testing.assert_allclose(out[:n, b], y.reshape(n, 2 * H), rtol=1e-12, atol=1e-14)
        assert np.all(out[n:, b] == 0)
        for k in range(n_states):
            np.testing.assert_allclose(final[k][:, b], results[1 + k][:, 0], rtol=1e-12, atol=1e-14)


def test_onnx_import_refuses_what_it_cannot_map():
    rng = np.random.default_rng(0)
    t = random_tensors("LSTM", 1, 2, 3, False, rng)
    with pytest.raises(ValueError, match=r"R: expected shape \(1, 8, 2\), got \(1, 8, 3\)"):
        params_from_onnx("LSTM", t["W"], t["W"])
    with pytest.raises(ValueError, match="P: peepholes exist only for the LSTM operator"):
        params_from_onnx("GRU", t["W"][:, :6], t["R"][:, :6], P=np.zeros((1, 6)))
    with pytest.raises(ValueError, match="op_type: expected 'LSTM', 'GRU' or 'RNN', got 'Conv'"):
        params_from_onnx("Conv", t["W"], t["R"])
    with pytest.raises(TypeError, match=r"R: expected dtype float64 \(the dtype of W\), got float32"):
        params_from_onnx("LSTM", t["W"], t["R"].astype(np.float32))
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, input_forget=1)
    with pytest.raises(ValueError, match="attribute input_forget=1 is not supported"):
        from_onnx_node(node, t)
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, activations=["Relu", "Tanh", "Tanh"])
    with pytest.raises(ValueError, match="activations: only ONNX's defaults are mapped"):
        from_onnx_node(node, t)
    with pytest.raises(ValueError, match="ONNX has no operator for 'lstm_fgr'"):
        params_to_onnx("lstm_fgr", [{}])


@pytest.mark.parametrize(
    ("op_type", "direction", "layout"),
    [("LSTM", "reverse", 0), ("GRU", "reverse", 1), ("LSTM", "bidirectional", 1), ("RNN", "forward", 1)],
)
def test_layer_from_an_onnx_node_honours_direction_and_layout(generated_module, op_type, direction, layout):
    """The node's direction and layout decide the layer (a reverse node once gave a forward layer)."""
    from lstmgen.interop_onnx import layer_from_onnx_node, onnx_variant

    rng = np.random.default_rng(7)
    D, T, B, I, H = 2 if direction == "bidirectional" else 1, 4, 3, 2, 3
    tensors = random_tensors(op_type, D, H, I, False, rng)
    attributes = {"hidden_size": H, "direction": direction, "layout": layout}
    if op_type == "GRU":
        attributes["linear_before_reset"] = 1
    x = rng.standard_normal((B, T, I) if layout else (T, B, I))
    n_states = 2 if op_type == "LSTM" else 1
    initial = [0.5 * rng.standard_normal((B, D, H) if layout else (D, B, H)) for _ in range(n_states)]
    results, node = onnx_run(op_type, tensors, attributes, x, initial)
    cell = generated_module(onnx_variant(op_type, linear_before_reset=1))
    layer = layer_from_onnx_node(node, tensors, cell=cell)
    state = tuple(s.transpose(1, 0, 2) if layout else s for s in initial)  # the layer's states are (D, B, H)
    out, final, _ = layer.forward(x, state)
    y = results[0]  # layout 0: (T, D, B, H); layout 1: (B, T, D, H)
    expected = y.reshape(B, T, D * H) if layout else y.transpose(0, 2, 1, 3).reshape(T, B, D * H)
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-14)
    for k in range(n_states):
        onnx_final = results[1 + k].transpose(1, 0, 2) if layout else results[1 + k]
        np.testing.assert_allclose(final[k], onnx_final, rtol=1e-12, atol=1e-14)
    if layout:
        with pytest.raises(ValueError, match=r"layout=1 .* is run by layer_from_onnx_node"):
            from_onnx_node(node, tensors)


def test_layer_from_onnx_tensors_takes_the_direction(generated_module):
    rng = np.random.default_rng(8)
    tensors = random_tensors("LSTM", 1, 3, 2, False, rng)
    x = rng.standard_normal((4, 2, 2))
    zeros = [np.zeros((1, 2, 3)) for _ in range(2)]
    results, _ = onnx_run("LSTM", tensors, {"hidden_size": 3, "direction": "reverse"}, x, zeros)
    layer = layer_from_onnx(
        "LSTM", tensors["W"], tensors["R"], tensors["B"], direction="reverse", cell=generated_module("lstm")
    )
    out, _, _ = layer.forward(x)
    np.testing.assert_allclose(out, results[0][:, 0], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="direction: 'bidirectional' needs 2 direction"):
        layer_from_onnx("LSTM", tensors["W"], tensors["R"], direction="bidirectional", cell=generated_module("lstm"))


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"hidden_size": 3}, r"hidden_size=3 disagrees with R, whose shape gives H = 2"),
        ({"clip": 0.0}, r"attribute clip=0\.0 is not supported"),
        ({"clip": 5.0}, r"attribute clip=5\.0 is not supported"),
        ({"activation_alpha": [1.0]}, r"attribute activation_alpha=\[1\.0\] is not supported"),
        ({"activation_beta": [0.5]}, r"attribute activation_beta=\[0\.5\] is not supported"),
        ({"direction": "bidirectional"}, r"direction='bidirectional' needs 2 direction\(s\) in W, got 1"),
        ({"layout": 2}, r"layout: expected 0 or 1, got 2"),
    ],
)
def test_onnx_attributes_are_honoured_or_refused(attributes, message):
    t = random_tensors("LSTM", 1, 2, 3, False, np.random.default_rng(0))
    node = helper.make_node("LSTM", ["X", "W", "R"], ["Y"], **attributes)
    with pytest.raises(ValueError, match=message):
        from_onnx_node(node, t)


def test_params_to_onnx_names_a_missing_parameter():
    with pytest.raises(ValueError, match=r"per_direction\[0\]: expected the gru parameters \['R', 'W', 'b', 'b_rn'\]"):
        params_to_onnx("gru", [{"W": np.zeros((2, 9)), "R": np.zeros((3, 9)), "b": np.zeros(9)}])
