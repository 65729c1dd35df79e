"""Any cell to ONNX: the exported Scan against the generated forward, with onnx.reference and ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
import sympy
from conftest import EXAMPLE_MODULES, REPO, STRUCTURE_SIZES
from onnx.reference import ReferenceEvaluator

import lstmgen
from lstmgen import functions as fn
from lstmgen.export_onnx import _Expressions, _Nodes, export_onnx, onnx_operations
from lstmgen.variants import VARIANTS

SIZES = STRUCTURE_SIZES
EXAMPLES = sorted(p.stem for p in (REPO / "examples").glob("*.toml"))
T, B, H = 5, 3, 4


def _feeds(cell, dtype, seed=0, **sizes):
    rng = np.random.default_rng(seed)
    n_in = H if cell.INPUT_ROW else 3
    params = {k: (1.5 * v).astype(dtype) for k, v in cell.init_params(n_in, H, dtype=dtype, seed=seed, **sizes).items()}
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    _, widths, _ = cell.forward_shapes(x.shape, params)
    # Positive states: the sLSTM's normaliser n is.
    state = tuple((0.5 + rng.random(w)).astype(dtype) for w in widths)
    inputs = {k: (rng.random((T, B, H)) > 0.5).astype(dtype) for k in cell.INPUTS}
    return x, params, state, inputs


def _check(cell, model, dtype, lengths, reverse, runners, seed=0, **sizes):
    x, params, state, inputs = _feeds(cell, dtype, seed, **sizes)
    y, final, _ = cell.forward(x, params, state, inputs=inputs or None, lengths=lengths, reverse=reverse)
    feeds = {"x": x, **params, **{f"{s}0": v for s, v in zip(cell.STATE, state, strict=True)}, **inputs}
    if lengths is not None:
        feeds["lengths"] = lengths.astype(np.int64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for runner in runners:
        got = runner(model).run(None, feeds)
        assert [o.name for o in model.graph.output] == ["y", *(f"{s}_final" for s in cell.STATE)]
        for name, a, b in zip(["y", *cell.STATE], got, [y, *final], strict=True):
            np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=f"{cell.VARIANT} {name}")


def _ort(model):
    return onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_built_in_matches_its_generated_forward(generated_module, name):
    """Padded batch (a full, a short and an empty sequence), reversed for every other cell, float32, through
    onnx.reference and ONNX Runtime; onnx.checker (full_check) ran inside export_onnx."""
    cell = generated_module(name)
    reverse = sorted(VARIANTS).index(name) % 2 == 1
    sizes = SIZES.get(name, {})
    n_in = H if cell.INPUT_ROW else 3
    model = export_onnx(cell, input_size=n_in, hidden_size=H, lengths=True, reverse=reverse, **sizes)
    _check(cell, model, np.float32, np.array([5, 2, 0]), reverse, (ReferenceEvaluator, _ort), **sizes)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", ["lstm_peephole", "gru_v3", "slstm", "lstm_fgr"])
def test_without_lengths_in_both_directions_and_float64(generated_module, name, reverse):
    cell = generated_module(name)
    sizes = SIZES.get(name, {})
    for dtype in (np.float32, np.float64):
        model = export_onnx(cell, input_size=3, hidden_size=H, reverse=reverse, dtype=dtype, **sizes)
        assert "lengths" not in [i.name for i in model.graph.input]
        _check(cell, model, dtype, None, reverse, (_ort,), **sizes)


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_cells(example):
    path = REPO / "examples" / f"{example}.toml"
    # Where test_spec_files and tests/compile_ahead.py write the examples: numba's cache of them is shared.
    EXAMPLE_MODULES.mkdir(parents=True, exist_ok=True)
    cell = lstmgen.load_module(lstmgen.write_module(path, EXAMPLE_MODULES, "full"))
    n_in = H if cell.INPUT_ROW else 3
    model = export_onnx(path, input_size=n_in, hidden_size=H, lengths=True, reverse=True)
    _check(cell, model, np.float32, np.array([3, 5, 1]), True, (ReferenceEvaluator, _ort))


def test_every_equation_function_has_an_onnx_form():
    vocabulary = {r.name for r in fn.FUNCTIONS if r.vocabulary} - {"identity"}  # identity builds its argument
    assert vocabulary <= set(onnx_operations())


def test_an_operation_onnx_cannot_express_is_refused_naming_it():
    x = sympy.Symbol("x")
    translate = _Expressions(_Nodes("", np.dtype(np.float32)), {x: "x"}, 4)
    with pytest.raises(ValueError, match=r"^positive: ONNX has no operator for it"):
        translate(fn.positive(x) + x)
    with pytest.raises(ValueError, match=r"^gamma: ONNX has no operator for it"):
        translate(sympy.gamma(x))


def test_a_user_module_without_its_spec_is_refused(tmp_path):
    cell = lstmgen.load_module(lstmgen.write_module(REPO / "examples" / "gru_layernorm.toml", tmp_path))
    with pytest.raises(ValueError, match="which the ONNX export needs: give the cell's spec"):
        export_onnx(cell, input_size=3, hidden_size=4)


def test_bad_sizes_are_named(generated_module):
    with pytest.raises(ValueError, match="input_size: rg_lru reads the input row x_t itself, so I must equal H"):
        export_onnx(generated_module("rg_lru"), input_size=3, hidden_size=4)
    with pytest.raises(ValueError, match="heads"):
        export_onnx(generated_module("slstm"), input_size=3, hidden_size=5, heads=2)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64"):
        export_onnx(generated_module("lstm"), input_size=3, hidden_size=4, dtype=np.float16)


def test_the_command_writes_a_model(tmp_path, capsys):
    from lstmgen.cli import main

    out = tmp_path / "lstm.onnx"
    args = ["export-onnx", "lstm", "--input-size", "3", "--hidden-size", "4", "--lengths", "--out", str(out)]
    assert main(args) == 0
    assert "lstm: wrote" in capsys.readouterr().out
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert [n.op_type for n in model.graph.node].count("Scan") == 1
    assert main(["export-onnx", "lstm", "--input-size", "0", "--hidden-size", "4", "--out", str(out)]) == 2
    assert "input_size" in capsys.readouterr().err
