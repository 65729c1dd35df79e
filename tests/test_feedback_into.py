"""Gate feedback into other gates (``feedback_into``): the previous step's values of the ``feedback`` gates feed
the pre-activations of the ``feedback_into`` gates through Q (F·H, F_into·H). Checked against torch autograd
and finite differences, both gradient modes, and on the other targets (CUDA simulator, ONNX)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from test_functions import _against_autograd, _plain_module

import lstmgen
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.symbolic.forward_equations import build_forward_equations

#: A peephole LSTM whose input and output gates of step t-1 feed every gate and the cell input of step t.
SPEC = CellSpec(
    "lstm_feedback_into",
    "peephole LSTM; i and o of t-1 feed i, f, g and o",
    "",
    (
        Gate("i", "sigmoid", "xW_i + hR_i + gQ_i + c_prev*p_i"),
        Gate("f", "sigmoid", "xW_f + hR_f + gQ_f + c_prev*p_f"),
        Gate("g", "tanh", "xW_g + hR_g + gQ_g"),
        Gate("o", "sigmoid", "xW_o + hR_o + gQ_o + c*p_o"),
    ),
    ("h", "c"),
    (("c", "f*c_prev + i*g"), ("h", "o*tanh(c)")),
    unit_params=("p_i", "p_f", "p_o"),
    feedback=("i", "o"),
    feedback_into=("i", "f", "g", "o"),
)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """gradient -> the generated module of SPEC run as plain Python, generated once per gradient mode."""
    directory, modules = tmp_path_factory.mktemp("feedback_into"), {}

    def get(gradient):
        if gradient not in modules:
            modules[gradient] = _plain_module(SPEC, gradient, directory)
        return modules[gradient]

    return get


def _reference():
    """The step written from the definition, carrying the previous (i, o) itself (zero before the first step)."""
    memory = {}

    def step(p, x, state, truncated):
        h, c = state
        hidden = h.shape[-1]
        previous = memory.get("gates", torch.zeros(h.shape[0], 2 * hidden, dtype=h.dtype))
        previous = previous.detach() if truncated else previous
        h_in = h.detach() if truncated else h
        a_i, a_f, a_g, a_o = (x @ p["W"] + h_in @ p["R"] + p["b"] + previous @ p["Q"]).chunk(4, dim=-1)
        i, f = torch.sigmoid(a_i + c * p["p_i"]), torch.sigmoid(a_f + c * p["p_f"])
        c = f * c + i * torch.tanh(a_g)
        o = torch.sigmoid(a_o + c * p["p_o"])
        memory["gates"] = torch.cat([i, o], dim=-1)
        return o * torch.tanh(c), c

    return step


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_matches_autograd(plain, gradient, dtype):
    module = plain(gradient)
    assert module.param_shapes(2, 3)["Q"] == (6, 12)
    _against_autograd(module, _reference(), dtype, gradient == "truncated")


def _check_finite_differences(module, params, steps, stride=1):
    """Central differences in float64 of L = Σ y·dy + Σ c_T (a padded, reversed batch of 2) against backward, for
    every ``stride``-th entry of every parameter."""
    rng = np.random.default_rng(5)
    n_in, hidden = params["W"].shape[0], params["R"].shape[0]
    x = rng.standard_normal((steps, 2, n_in))
    lengths = np.array([steps, steps - 2])
    dy = rng.standard_normal((steps, 2, hidden))

    def loss(p):
        y, final, _ = module.forward(x, p, lengths=lengths, reverse=True)
        return float(np.sum(y * dy) + np.sum(final[1]))

    _, _, tape = module.forward(x, params, lengths=lengths, reverse=True)
    _, grads, _ = module.backward(dy, tape, (np.zeros((2, hidden)), np.ones((2, hidden))))
    eps = 1e-6
    for name, value in params.items():
        for index in list(np.ndindex(value.shape))[::stride]:
            plus, minus = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
            plus[name][index] += eps
            minus[name][index] -= eps
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
            assert abs(grads[name][index] - numeric) <= 1e-7 * max(1.0, abs(numeric)), (name, index)


def test_matches_finite_differences(plain):
    module = plain("full")
    params = {k: 1.5 * v for k, v in module.init_params(2, 3, seed=2).items()}
    _check_finite_differences(module, params, steps=5, stride=3)


def test_spec_checks():
    with pytest.raises(SpecError, match=r"feedback_into\[1\]: expected a distinct gate name .* got 'z'"):
        dataclasses.replace(SPEC, feedback_into=("i", "z"))
    with pytest.raises(SpecError, match="feedback_into: gates fed back into, but no feedback gates"):
        dataclasses.replace(SPEC, feedback=(), feedback_into=("i",))
    # The default: the feedback gates feed themselves, and no other gate's pre-activation can read a gQ.
    with pytest.raises(SpecError, match="unknown name 'gQ_f'"):
        build_forward_equations(dataclasses.replace(SPEC, feedback_into=()))


TOML = """
name = "lstm_feedback_into"
description = "peephole LSTM; i and o of t-1 feed i, f, g and o"
state = ["h", "c"]
unit_params = ["p_i", "p_f", "p_o"]
feedback = ["i", "o"]
feedback_into = ["i", "f", "g", "o"]
gates = [
    { name = "i", activation = "sigmoid", preactivation = "xW_i + hR_i + gQ_i + c_prev*p_i" },
    { name = "f", activation = "sigmoid", preactivation = "xW_f + hR_f + gQ_f + c_prev*p_f" },
    { name = "g", activation = "tanh", preactivation = "xW_g + hR_g + gQ_g" },
    { name = "o", activation = "sigmoid", preactivation = "xW_o + hR_o + gQ_o + c*p_o" },
]
[equations]
c = "f*c_prev + i*g"
h = "o*tanh(c)"
"""


def test_spec_file_reads_feedback_into(tmp_path):
    from lstmgen.spec_file import load_spec_file

    path = tmp_path / "cell.toml"
    path.write_text(TOML)
    assert load_spec_file(path) == SPEC


@pytest.mark.parametrize("command", [["derive", "--format", "text"], ["derive"], ["cec"]])
def test_derive_and_cec_show_it(tmp_path, capsys, command):
    from lstmgen.cli import main

    path = tmp_path / "cell.toml"
    path.write_text(TOML)
    assert main([command[0], "--spec", str(path), *command[1:]]) == 0
    out = capsys.readouterr().out
    assert "Q" in out


def test_cuda_module_matches_the_cpu_module(plain, tmp_path):
    from test_cuda import _compare

    cpu = plain("full")
    gpu = lstmgen.load_module(lstmgen.write_module(SPEC, tmp_path, "full", target="cuda"))
    gpu.THREADS, gpu.GEMM_TILE = 3, 2
    for dtype in (np.float64, np.float32):
        _compare(cpu, gpu, dtype, reverse=dtype == np.float32)


def test_onnx_export_matches_the_module(plain):
    from test_export_onnx import _check, _ort

    from lstmgen.export_onnx import export_onnx

    cell = plain("full")
    model = export_onnx(SPEC, input_size=3, hidden_size=4, lengths=True, reverse=True)
    _check(cell, model, np.float32, np.array([5, 2, 0]), True, (_ort,))


# ---------------------------------------------------------------------------------------------- the 1997 network


@pytest.mark.parametrize("block_size", [1, 2])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_the_1997_network_matches_autograd(generated_module, gradient, block_size):
    """lstm_1997_net with and without memory blocks: its fed-back i and o are one value per block, with one row of
    Q each, and feed the block gates (one column per block) and the cell inputs (one per cell)."""
    from reference_cells import lstm_1997_net_unroll

    name = "lstm_1997_net" + ("_truncated" if gradient == "truncated" else "")
    module = generated_module(name)
    T, B, I, H = 5, 3, 2, 4
    shapes = module.param_shapes(I, H, block_size=block_size)
    assert shapes["Q"] == (2 * H // block_size, H + 2 * H // block_size)
    rng = np.random.default_rng(block_size)
    params = {k: 1.5 * v for k, v in module.init_params(I, H, block_size=block_size, seed=4).items()}
    x = rng.standard_normal((T, B, I))
    state = tuple(0.5 * rng.standard_normal((B, H)) for _ in module.STATE)
    dy = rng.standard_normal((T, B, H))
    dstate = tuple(rng.standard_normal((B, H)) for _ in module.STATE)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, requires_grad=True)
    ts = tuple(torch.tensor(s, requires_grad=True) for s in state)
    ys, final = lstm_1997_net_unroll(tp, tx, ts, gradient == "truncated")
    loss = (ys * torch.tensor(dy)).sum() + sum((f * torch.tensor(d)).sum() for f, d in zip(final, dstate, strict=True))
    loss.backward()
    y, _, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    np.testing.assert_allclose(y, ys.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for k in module.PARAMS:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)
    for got, start in zip(dstate0, ts, strict=True):  # h_0 reaches no loss under the truncated rule
        expected = np.zeros_like(got) if start.grad is None else start.grad.numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_the_1997_network_matches_finite_differences(generated_module):
    module = generated_module("lstm_1997_net")
    params = {k: 1.5 * v for k, v in module.init_params(2, 4, block_size=2, seed=1).items()}
    _check_finite_differences(module, params, steps=6)


def test_a_fed_back_block_gate_needs_its_feedback_product():
    from lstmgen.variants import LSTM_1997_NET

    gates = tuple(
        Gate(g.name, g.activation, "xW_i + hR_i" if g.name == "i" else g.preactivation) for g in LSTM_1997_NET.gates
    )
    with pytest.raises(SpecError, match=r"block_gates\[0\] \(i\): .* needs the pre-activation 'xW_i \+ hR_i \+ gQ_i'"):
        dataclasses.replace(LSTM_1997_NET, name="other", gates=gates)
