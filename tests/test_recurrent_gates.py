"""Gates without a recurrent block: R holds only the gates whose pre-activation reads hR_k (RECURRENT_GATES),
and a cell with none has no R and no recurrent GEMM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_functions import _against_autograd, _plain_module

from lstmgen.codegen.lower_kernel import lower
from lstmgen.spec import CellSpec, Gate, SpecError
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations

#: IndRNN (Li et al. 2018): h = relu(x W + b + u ⊙ h_{t-1}); a diagonal recurrence, no R.
INDRNN = CellSpec(
    "indrnn_test",
    "IndRNN",
    "",
    (Gate("n", "relu", "xW_n + u*h_prev"),),
    ("h",),
    (("h", "n"),),
    unit_params=("u",),
)

#: A GRU whose update gate z sees only the input: R has the blocks of r and n only, n's applied mid-step.
PARTIAL = CellSpec(
    "partial_test",
    "a GRU with an input-only update gate",
    "",
    (Gate("r", "sigmoid"), Gate("z", "sigmoid", "xW_z"), Gate("n", "tanh", recurrent_source="r*h_prev")),
    ("h",),
    (("h", "z*h_prev + (1 - z)*n"),),
)


def _indrnn_reference(p, x, state, truncated):
    (h,) = state
    hr = h.detach() if truncated else h
    return (torch.relu(x @ p["W"] + p["b"] + p["u"] * hr),)


def _partial_reference(p, x, state, truncated):
    (h,) = state
    hr = h.detach() if truncated else h
    H = h.shape[-1]
    a_r, a_z, a_n = (x @ p["W"] + p["b"]).split(H, dim=-1)
    R_r, R_n = p["R"][:, :H], p["R"][:, H:]
    r, z = torch.sigmoid(a_r + hr @ R_r), torch.sigmoid(a_z)
    n = torch.tanh(a_n + (r * hr) @ R_n)
    return (z * h + (1 - z) * n,)


CELLS = {"indrnn": (INDRNN, _indrnn_reference), "partial": (PARTIAL, _partial_reference)}


def plan(spec, gradient="full"):
    return lower(build_kernel_expressions(derive_backward(build_forward_equations(spec), gradient)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("cell", sorted(CELLS))
def test_cells_with_fewer_recurrent_blocks_match_autograd(cell, gradient, dtype, tmp_path):
    spec, reference = CELLS[cell]
    _against_autograd(_plain_module(spec, gradient, tmp_path), reference, dtype, gradient == "truncated")


def test_a_cell_without_recurrent_products_has_no_R_and_no_recurrent_gemm(tmp_path):
    assert INDRNN.recurrent_gates == () and INDRNN.params == ("W", "b", "u")
    for gradient in ("full", "truncated"):
        p = plan(INDRNN, gradient)
        assert p.forward.gemms() == () and p.backward.gemms() == ()
        names = {b.name for k in (p.forward, p.backward) for b in (*k.args, *k.locals)}
        assert not names & {"R", "rec_buf", "gemm_h_buf", "d_rec_seq"}
        assert "dR" not in p.backward.returns
    module = _plain_module(INDRNN, "full", tmp_path)
    assert "R" not in module.PARAMS and module.RECURRENT_GATES == ()
    assert set(module.param_shapes(2, 3)) == {"W", "b", "u"}


def test_R_holds_only_the_recurrent_gates_blocks(tmp_path):
    assert PARTIAL.recurrent_gates == ("r", "n")
    p = plan(PARTIAL)
    gemms = [(g.a.buffer if hasattr(g.a, "buffer") else g.a.operand.buffer) for g in p.forward.gemms()]
    assert gemms == ["h__seq", "src_n__seq"]  # r's block at step start, n's mid-step; none for z
    module = _plain_module(PARTIAL, "full", tmp_path)
    assert module.RECURRENT_GATES == ("r", "n") and module.param_shapes(2, 3)["R"] == (3, 6)


def test_bad_b_of_a_cell_without_R_is_named(tmp_path):
    module = _plain_module(INDRNN, "full", tmp_path)
    params = module.init_params(2, 3, seed=0)
    x = np.zeros((2, 1, 2))
    with pytest.raises(ValueError, match=r"params\['b'\]: expected shape \(1\*H,\)"):
        module.forward(x, {**params, "b": np.zeros((2, 2))})


def test_a_mid_step_source_needs_a_recurrent_product():
    spec = CellSpec("bad", "", "", (Gate("n", "tanh", "xW_n", recurrent_source="h_prev"),), ("h",), (("h", "n"),))
    with pytest.raises(SpecError, match=r"gates\[0\]\.recurrent_source: gate n has no recurrent product"):
        build_forward_equations(spec)


def test_a_stack_of_cells_without_R_runs_both_ways(tmp_path):
    from lstmgen.layers import RecurrentLayer

    module = _plain_module(INDRNN, "full", tmp_path)
    layer = RecurrentLayer(module, 2, 3, num_layers=2, bidirectional=True, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    out, final, tape = layer.forward(x)
    assert out.shape == (4, 2, 6) and final[0].shape == (4, 2, 3)
    dx, grads, _ = layer.backward(np.ones_like(out), tape)
    assert dx.shape == x.shape and set(grads[1][1]) == {"W", "b", "u"}
    assert all(np.all(np.isfinite(g)) for row in grads for p in row for g in p.values())


#: An RG-LRU-form cell (De et al. 2024): the input row x_t itself enters (I = H), no R.
INPUT_ROW_CELL = CellSpec(
    "lru_test",
    "a gated linear recurrence that reads x_t",
    "",
    (Gate("r", "sigmoid", "xW_r"), Gate("i", "sigmoid", "xW_i")),
    ("h",),
    (("decay", "exp(-8*r*softplus(lam))"), ("h", "decay*h_prev + sqrt(1 - decay*decay)*(i*x)")),
    unit_params=("lam",),
)


def _input_row_reference(p, x, state, truncated):
    (h,) = state
    H = h.shape[-1]
    a_r, a_i = (x @ p["W"] + p["b"]).split(H, dim=-1)
    r, i = torch.sigmoid(a_r), torch.sigmoid(a_i)
    decay = torch.exp(-8 * r * torch.nn.functional.softplus(p["lam"]))
    return (decay * h + torch.sqrt(1 - decay * decay) * (i * x),)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_the_input_row_enters_and_gets_its_gradient(gradient, dtype, tmp_path):
    module = _plain_module(INPUT_ROW_CELL, gradient, tmp_path)
    assert module.INPUT_ROW and "R" not in module.PARAMS
    rng = np.random.default_rng(5)
    T, B, H = 4, 3, 3
    params = module.init_params(H, H, dtype=dtype, seed=1)
    x = rng.standard_normal((T, B, H)).astype(dtype)
    state = ((0.5 * rng.standard_normal((B, H))).astype(dtype),)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    tp = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    tx = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    current, ys = (torch.tensor(state[0], dtype=torch.float64),), []
    for t in range(T):
        current = _input_row_reference(tp, tx[t], current, gradient == "truncated")
        ys.append(current[0])
    (torch.stack(ys) * torch.tensor(dy, dtype=torch.float64)).sum().backward()
    y, _, tape = module.forward(x, params, state)
    dx, grads, _ = module.backward(dy, tape)
    rtol = 1e-9 if dtype == np.float64 else 2e-4
    np.testing.assert_allclose(y, torch.stack(ys).detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=rtol, atol=rtol)  # x W and the row x_t itself
    for k in module.PARAMS:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=rtol, atol=rtol, err_msg=k)


def test_a_cell_that_reads_the_input_row_needs_I_equal_H(tmp_path):
    module = _plain_module(INPUT_ROW_CELL, "full", tmp_path)
    params = module.init_params(2, 3, seed=0)
    with pytest.raises(
        ValueError, match=r"x: this cell reads the input row x_t itself, so I must equal H; got I = 2, H = 3"
    ):
        module.forward(np.zeros((2, 1, 2)), params)
    p = plan(INPUT_ROW_CELL)
    views = {v.name: v.source for loop in p.forward.loop.body if hasattr(loop, "rows") for v in loop.rows.views}
    assert views["x__row"].buffer == "x"


@pytest.mark.parametrize("spec", [INDRNN, PARTIAL, INPUT_ROW_CELL], ids=lambda s: s.name)
def test_their_derivations_print_and_compile(spec, tmp_path):
    import shutil
    import subprocess

    from lstmgen.analysis.derivation import build_derivation
    from lstmgen.analysis.derivation_printer import render_derivation

    derivation = build_derivation(spec)
    text = render_derivation(derivation, "text")
    assert ("dL/dR" in text) == bool(spec.recurrent_gates)
    if spec is INPUT_ROW_CELL:  # dx_t has the elementwise term of the row x_t besides δxW Wᵀ
        (line,) = [row for row in text.splitlines() if row.strip().startswith("dL/dx_t")]
        assert line.strip() == "dL/dx_t = δa_r[t]·W_rᵀ + δa_i[t]·W_iᵀ + δx[t]"
    if shutil.which("pdflatex") is None:
        pytest.skip("pdflatex is not installed here (.ci/run installs it)")
    (tmp_path / "doc.tex").write_text(render_derivation(derivation, "latex", standalone=True))
    run = subprocess.run(
        ["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout[-2000:]
