"""A projected output (``projection = true``; the LSTMP of Sak et al. 2014): h = u W_p with P units, the cell's
equations on H units. lstmp itself is checked against torch.nn.LSTM(proj_size) in test_layers_torch and
test_torch_adapter, and against its reference in test_kernels_vs_autograd; here: the mechanism on another cell,
the spec's refusals, the plan's GEMMs and the size arguments."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import import_without_jit

from lstmgen.codegen.kernel_ir import Gemm
from lstmgen.codegen.lower_kernel import lower
from lstmgen.generate import write_module
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.spec_file import load_spec_file
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations
from lstmgen.variants import VARIANTS

PROJECTED_RNN = """
name = "rnn_projected"
description = "Elman RNN whose output is projected: h = tanh(x W + h_prev R + b) W_p"
state = ["h"]
projection = true

[[gates]]
name = "g"
activation = "tanh"

[equations]
h = "g"
"""


def plan(spec, gradient="full"):
    return lower(build_kernel_expressions(derive_backward(build_forward_equations(spec), gradient)))


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("proj", [2, 5])  # fewer and more units than H = 3
def test_a_projected_elman_rnn_matches_autograd(tmp_path, gradient, proj):
    """The only state is the projected one: H comes from gate_seq, P from h's buffer (run without JIT)."""
    path = tmp_path / "rnn_projected.toml"
    path.write_text(PROJECTED_RNN)
    m = import_without_jit(write_module(load_spec_file(path), tmp_path, gradient))
    T, B, I, H = 4, 3, 2, 3
    rng = np.random.default_rng(0)
    params = m.init_params(I, H, proj_size=proj, seed=1)
    assert {k: v.shape for k, v in params.items()} == {"W": (I, H), "R": (proj, H), "b": (H,), "W_p": (H, proj)}
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, proj))
    dy, dh = rng.standard_normal((T, B, proj)), rng.standard_normal((B, proj))
    lengths = np.array([4, 2, 0])
    y, (h_n,), tape = m.forward(x, params, (h0,), lengths=lengths)
    dx, grads, (dh0,) = m.backward(dy, tape, (dh,))

    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx, th = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    h, ys, valid = th, [], torch.tensor(np.arange(T)[:, None] < lengths[None, :])
    for t in range(T):
        recurrent = h.detach() if gradient == "truncated" else h
        new = torch.tanh(tx[t] @ tp["W"] + recurrent @ tp["R"] + tp["b"]) @ tp["W_p"]
        h = torch.where(valid[t][:, None], new, h)  # past its length a sequence keeps its state
        ys.append(torch.where(valid[t][:, None], new, torch.zeros_like(new)))
    loss = (torch.stack(ys) * torch.tensor(dy)).sum() + (h * torch.tensor(dh)).sum()
    loss.backward()
    np.testing.assert_allclose(y, torch.stack(ys).detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h_n, h.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dh0, th.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k in params:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize(("gradient", "backward_gemms"), [("full", 2), ("truncated", 1)])
def test_the_projection_adds_one_gemm_per_step_each_way(gradient, backward_gemms):
    """Forward: h_{t-1} R and u W_p; backward: dnext_h W_p^T, and d_hR R^T unless truncated."""
    module_plan = plan(VARIANTS["lstmp"], gradient)
    forward = [s for s in module_plan.forward.loop.body if isinstance(s, Gemm)]
    backward = [s for s in module_plan.backward.loop.body if isinstance(s, Gemm)]
    assert [g.b.buffer if hasattr(g.b, "buffer") else None for g in forward] == ["R", "W_p"]
    assert len(backward) == backward_gemms
    assert "dW_p" in module_plan.backward.returns


LSTM = VARIANTS["lstm"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"projection": "yes"}, "projection: expected true or false, got 'yes'"),
        ({"heads": 2}, "projection: not supported together with heads"),
        ({"unit_params": ("W_p",)}, r"projection \(its matrix\): 'W_p' is already defined by unit_params\[0\]"),
        (
            {
                "gates": (Gate("i", "sigmoid", "xW_i"), Gate("g", "tanh", "xW_g")),
                "equations": (("h", "i*g"),),
                "state": ("h",),
            },
            "projection: a projected output needs a gate whose pre-activation reads hR_k",
        ),
    ],
)
def test_bad_projected_specs(change, message):
    with pytest.raises(SpecError, match=message):
        replace(LSTM, **{"projection": True, **change})


def test_a_projected_state_read_unit_by_unit_is_refused():
    spec = CellSpec(
        "mingru_projected",
        "",
        "",
        (Gate("z", "sigmoid", "xW_z + hR_z"), Gate("n", "identity", "xW_n")),
        ("h",),
        (("h", "(1 - z)*h_prev + z*n"),),
        projection=True,
    )
    with pytest.raises(SpecError, match=r"projection: h reads h_prev unit by unit, but a projected h has P units"):
        build_forward_equations(spec)


def test_size_arguments(generated_module):
    lstmp = generated_module("lstmp")
    assert lstmp.param_shapes(3, 4)["W_p"] == (4, 4)  # P = H by default
    assert lstmp.param_shapes(3, 4, proj_size=2)["R"] == (2, 16)
    with pytest.raises(ValueError, match="proj_size: expected a positive integer, got 0"):
        lstmp.init_params(3, 4, proj_size=0)
    with pytest.raises(ValueError, match=r"proj_size: lstm has no projected output .* expected None, got 4"):
        generated_module("lstm").param_shapes(3, 4, proj_size=4)
    params = lstmp.init_params(3, 4, proj_size=2, seed=0)
    with pytest.raises(ValueError, match=r"state\['h'\]: expected shape \(1, 2\), got \(1, 4\)"):
        lstmp.forward(np.zeros((2, 1, 3)), params, (np.zeros((1, 4)), np.zeros((1, 4))))
    y, _, tape = lstmp.forward(np.zeros((2, 1, 3)), params)
    assert y.shape == (2, 1, 2)
    with pytest.raises(ValueError, match=r"dy: expected shape \(2, 1, 2\), got \(2, 1, 4\)"):
        lstmp.backward(np.zeros((2, 1, 4)), tape)
    with pytest.raises(ValueError, match=r"params\['W_p'\]: expected shape \(H, P\) with H, P >= 1, got \(4,\)"):
        lstmp.forward(np.zeros((2, 1, 3)), {**params, "W_p": np.zeros(4)})
