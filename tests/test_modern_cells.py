"""The modern built-ins (modern-cells.md) beyond the autograd comparison every built-in gets: their structure
in the kernel plan, the closed forms of their error flow, zoneout's masks, stacked layers and TorchRecurrent
against a stack of the torch references, and the errors their inputs get."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch
from problems import proj_size, random_problem, random_step_inputs, state_widths
from reference_cells import STEPS

from lstmgen.analysis.error_flow import state_jacobian
from lstmgen.codegen.lower_kernel import lower
from lstmgen.functions import BY_NAME
from lstmgen.layers import RecurrentLayer
from lstmgen.symbolic.derive_backward import derive_backward
from lstmgen.symbolic.expression_lists import build_kernel_expressions
from lstmgen.symbolic.forward_equations import build_forward_equations
from lstmgen.torch_adapter import TorchRecurrent
from lstmgen.torch_ops import recurrent
from lstmgen.variants import VARIANTS

NO_R = ["indrnn", "sru", "mingru", "minlstm", "rg_lru"]
MODERN = [*NO_R, "janet", "ligru", "zoneout_lstm", "slstm", "layernorm_lstm", "lstmp"]


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("name", NO_R)
def test_cells_without_R_have_no_recurrent_gemm_in_their_plan(name, gradient):
    spec = VARIANTS[name]
    plan = lower(build_kernel_expressions(derive_backward(build_forward_equations(spec), gradient)))
    assert spec.recurrent_gates == () and "R" not in spec.params
    assert plan.forward.gemms() == () and plan.backward.gemms() == ()
    assert "dR" not in plan.backward.returns


def carried(name, source=None, gradient="truncated"):
    spec = VARIANTS[name]
    blocks = {(b.target, b.source): b for b in state_jacobian(spec, gradient)}
    state = spec.state[-1]
    return blocks[(state, source or state)]


def test_error_flow_closed_forms_of_the_modern_cells():
    S = sympy.Symbol
    z, f, u, n, keep_c, decay = (S(v, real=True) for v in ("z", "f", "u", "n", "keep_c", "decay"))
    c_prev, v_f = S("c_prev", real=True), S("v_f", real=True)
    # IndRNN: diag(relu'(a) ⊙ u), relu' written through the saved output n; no recurrent product.
    block = carried("indrnn", gradient="full")
    assert not block.recurrent and sympy.simplify(block.diagonal - u * BY_NAME["positive"].cls(n)) == 0
    assert sympy.simplify(carried("mingru", gradient="full").diagonal - (1 - z)) == 0
    # minLSTM: σ(f)/(σ(f) + σ(i)), written with the log-sum-exp shift m (e_f = e^(m-f), e_i = e^(m-i), e_m = e^m)
    e_m, e_f, e_i, m, i = (S(v, real=True) for v in ("e_m", "e_f", "e_i", "m", "i"))
    shifted = carried("minlstm", gradient="full").diagonal.subs(
        {e_m: sympy.exp(m), e_f: sympy.exp(m - f), e_i: sympy.exp(m - i)}
    )
    quotient = (
        sympy.exp(f) * (1 + sympy.exp(i)) / (sympy.exp(f) * (1 + sympy.exp(i)) + sympy.exp(i) * (1 + sympy.exp(f)))
    )
    assert sympy.simplify(shifted - quotient) == 0
    assert sympy.simplify(carried("rg_lru", gradient="full").diagonal - decay) == 0
    # SRU: c_t = f c_{t-1} + (1 - f) n with f = σ(xW_f + v_f c_{t-1}).
    expected = f + (c_prev - n) * f * (1 - f) * v_f
    assert sympy.simplify(carried("sru", gradient="full").diagonal - expected) == 0
    # Zoneout: the kept share passes unchanged, the rest through the forget gate.
    assert sympy.simplify(carried("zoneout_lstm").diagonal - (keep_c + (1 - keep_c) * f)) == 0


def test_zoneout_with_masks_zero_is_the_lstm(generated_module):
    lstm, zoneout = generated_module("lstm"), generated_module("zoneout_lstm")
    x, params, state, dy, dstate = random_problem(lstm, (5, 3, 2, 4), np.float64, 4)
    zeros = {name: np.zeros_like(dy) for name in zoneout.INPUTS}
    y, final, tape = lstm.forward(x, params, state)
    zy, zfinal, ztape = zoneout.forward(x, params, state, inputs=zeros)
    np.testing.assert_array_equal(zy, y)
    for a, b in zip(zfinal, final, strict=True):
        np.testing.assert_array_equal(a, b)
    dx, grads, d0 = lstm.backward(dy, tape, dstate)
    zdx, zgrads, zd0 = zoneout.backward(dy, ztape, dstate)
    # The derived adjoints are the LSTM's plus terms multiplied by the zero masks: equal up to rounding.
    np.testing.assert_allclose(zdx, dx, rtol=1e-13, atol=1e-15)
    for k in grads:
        np.testing.assert_allclose(zgrads[k], grads[k], rtol=1e-13, atol=1e-15, err_msg=k)
    for a, b in zip(zd0, d0, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_zoneout_with_masks_one_carries_the_state_unchanged(generated_module):
    zoneout = generated_module("zoneout_lstm")
    x, params, state, dy, dstate = random_problem(zoneout, (5, 3, 2, 4), np.float64, 6)
    ones = {name: np.ones_like(dy) for name in zoneout.INPUTS}
    y, final, tape = zoneout.forward(x, params, state, inputs=ones)
    for t in range(5):
        np.testing.assert_array_equal(y[t], state[0])
    for a, b in zip(final, state, strict=True):
        np.testing.assert_array_equal(a, b)
    dx, grads, d0 = zoneout.backward(dy, tape, dstate)
    # Nothing of the step is used: no gradient reaches x or the weights; dh_0 collects every dy_t.
    assert not np.any(dx) and not any(np.any(g) for g in grads.values())
    np.testing.assert_allclose(d0[0], dstate[0] + dy.sum(axis=0), rtol=1e-13)
    np.testing.assert_array_equal(d0[1], dstate[1])


def test_zoneout_masks_are_checked_by_name(generated_module):
    zoneout = generated_module("zoneout_lstm")
    x, params, state, dy, _ = random_problem(zoneout, (3, 2, 2, 4), np.float64, 0)
    masks = {name: np.full_like(dy, 0.5) for name in zoneout.INPUTS}
    assert zoneout.INPUTS == ("keep_c", "keep_h")
    with pytest.raises(ValueError, match=r"inputs: expected the per-step inputs \('keep_c', 'keep_h'\).*missing \["):
        zoneout.forward(x, params, state)
    with pytest.raises(ValueError, match=r"missing \['keep_h'\], unexpected \['d_h'\]"):
        zoneout.forward(x, params, state, inputs={"keep_c": masks["keep_c"], "d_h": masks["keep_h"]})
    shape = r"inputs\['keep_h'\]: expected shape \(T, B, H\) = \(3, 2, 4\), got \(3, 2, 3\)"
    with pytest.raises(ValueError, match=shape):
        zoneout.forward(x, params, state, inputs={**masks, "keep_h": masks["keep_h"][:, :, :3]})
    with pytest.raises(TypeError, match=r"inputs\['keep_c'\]: expected dtype float64 \(the dtype of x\), got float32"):
        zoneout.forward(x, params, state, inputs={**masks, "keep_c": masks["keep_c"].astype(np.float32)})
    with pytest.raises(TypeError, match=r"inputs: expected a dict keyed by \('keep_c', 'keep_h'\), got list"):
        zoneout.forward(x, params, state, inputs=[masks["keep_c"]])
    lstm = generated_module("lstm")
    with pytest.raises(ValueError, match=r"inputs: expected the per-step inputs \(\).*unexpected \['keep_c'\]"):
        lstm.forward(x, lstm.init_params(2, 4), inputs={"keep_c": masks["keep_c"]})
    # The tape keeps the masks: replacing them after forward is refused.
    _, _, tape = zoneout.forward(x, params, state, inputs=masks)
    tape.inputs["keep_c"] = masks["keep_c"][:2]
    with pytest.raises(ValueError, match="tape: its arrays do not match"):
        zoneout.backward(dy, tape)


def test_the_masks_follow_lengths_and_reverse(generated_module):
    """A padded, reversed batch equals each sequence alone, its masks cut and reversed with it."""
    m = generated_module("zoneout_lstm")
    x, params, state, dy, dstate = random_problem(m, (5, 3, 2, 4), np.float64, 2)
    masks = random_step_inputs(m, x, 4, 2)
    masks["keep_c"][4:, 2] = np.nan  # padding of a mask is never read either
    lengths = np.array([5, 2, 4])
    y, _final, tape = m.forward(x, params, state, inputs=masks, lengths=lengths, reverse=True)
    dx, grads, _ = m.backward(dy, tape, dstate)
    total = {k: np.zeros_like(v) for k, v in params.items()}
    for b, n in enumerate(lengths):
        steps = slice(n - 1, None, -1)
        alone = {k: np.ascontiguousarray(v[steps, b : b + 1]) for k, v in masks.items()}
        s0 = tuple(s[b : b + 1] for s in state)
        yb, _fb, tb = m.forward(np.ascontiguousarray(x[steps, b : b + 1]), params, s0, inputs=alone)
        dxb, gb, _ = m.backward(np.ascontiguousarray(dy[steps, b : b + 1]), tb, tuple(d[b : b + 1] for d in dstate))
        np.testing.assert_allclose(y[steps, b], yb[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dx[steps, b], dxb[:, 0], rtol=1e-12, atol=1e-14)
        for k in total:
            total[k] += gb[k]
    for k in total:
        np.testing.assert_allclose(grads[k], total[k], rtol=1e-10, atol=1e-12, err_msg=k)


def _stack_reference(name, x, params, num_layers, bidirectional, masks):
    """torch: the reference step unrolled per layer and direction (the reverse one on the flipped sequence)."""
    directions = 2 if bidirectional else 1
    finals, inputs = [], x
    for layer in range(num_layers):
        outputs = []
        for direction in range(directions):
            k = layer * directions + direction
            p = params[layer][direction]
            H = p["b"].shape[0] // len(VARIANTS[name].gates)
            widths = [p["W_p"].shape[1] if "W_p" in p else H] + [H] * (len(VARIANTS[name].state) - 1)
            state = tuple(torch.zeros(x.shape[1], w, dtype=x.dtype) for w in widths)
            steps = range(x.shape[0] - 1, -1, -1) if direction else range(x.shape[0])
            ys = {}
            for t in steps:
                extra = {m: v[k, t] for m, v in masks.items()}
                state = STEPS[name](p, inputs[t], state, False, **extra)
                ys[t] = state[0]
            outputs.append(torch.stack([ys[t] for t in range(x.shape[0])]))
            finals.append(state)
        inputs = torch.cat(outputs, dim=2)
    return inputs, finals


@pytest.mark.parametrize("name", MODERN)
def test_stacked_layers_match_a_stack_of_references(generated_module, name):
    bidirectional = name != "rg_lru"  # the RG-LRU reads x_t itself: every layer needs I = H
    layers, H = 2, 4 if name == "slstm" else 3
    I = H if name == "rg_lru" else 2
    cell = generated_module(name)
    heads = 2 if name == "slstm" else None
    proj = {"proj_size": 2} if cell.PROJECTED else {}
    layer = RecurrentLayer(cell, I, H, num_layers=layers, bidirectional=bidirectional, seed=3, heads=heads, **proj)
    D = layer.num_directions
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, I))
    masks = {m: rng.uniform(0, 1, (layers * D, 4, 2, H)) for m in cell.INPUTS}
    out, final, tape = layer.forward(x, inputs=masks or None)
    dout = rng.standard_normal(out.shape)
    dx, grads, _ = layer.backward(dout, tape)

    tx = torch.tensor(x, requires_grad=True)
    tp = [[{k: torch.tensor(v, requires_grad=True) for k, v in p.items()} for p in row] for row in layer.params]
    tmasks = {m: torch.tensor(v) for m, v in masks.items()}
    ref_out, ref_final = _stack_reference(name, tx, tp, layers, bidirectional, tmasks)
    (ref_out * torch.tensor(dout)).sum().backward()
    np.testing.assert_allclose(out, ref_out.detach().numpy(), rtol=1e-10, atol=1e-12)
    for s in range(len(cell.STATE)):
        np.testing.assert_allclose(final[s], np.stack([f[s].detach().numpy() for f in ref_final]), atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    for row, ref_row in zip(grads, tp, strict=True):
        for g, ref in zip(row, ref_row, strict=True):
            for k in g:
                np.testing.assert_allclose(g[k], ref[k].grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", MODERN)
def test_torch_autograd_function_passes_gradcheck(generated_module, name):
    cell = generated_module(name)
    T, B, H = 3, 2, 4 if name == "slstm" else 3
    I = H if cell.INPUT_ROW else 2
    rng = np.random.default_rng(1)
    proj = proj_size(cell, H)
    sizes = {"heads": 2 if cell.HEADS else None, **({"proj_size": proj} if proj else {})}
    params = cell.init_params(I, H, dtype=np.float64, seed=2, **sizes)
    tensors = [torch.tensor(params[n] * 1.5, requires_grad=True) for n in cell.PARAMS]
    x = torch.tensor(rng.standard_normal((T, B, I)), requires_grad=True)
    # Positive states: the sLSTM's normaliser n is (a zero one takes the zero-state rule, tested elsewhere).
    state = [torch.tensor(0.5 + rng.random((B, w)), requires_grad=True) for w in state_widths(cell, H, proj)]
    masks = [torch.tensor(rng.uniform(0, 1, (T, B, H))) for _ in cell.INPUTS]

    def f(x, *rest):
        n = len(cell.PARAMS)
        y, final = recurrent(cell, x, rest[:n], rest[n:], inputs=masks, lengths=np.array([3, 2]), reverse=True)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *tensors, *state), eps=1e-6, atol=1e-7, rtol=1e-6)


def test_torch_module_takes_the_masks_of_every_layer(generated_module):
    cell = generated_module("zoneout_lstm")
    rnn = TorchRecurrent(cell, 2, 3, num_layers=2, bidirectional=True, batch_first=True, dtype=torch.float64, seed=0)
    layer = RecurrentLayer(cell, 2, 3, num_layers=2, bidirectional=True, batch_first=True, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 3 - 1))
    masks = {m: rng.uniform(0, 1, (4, 2, 5, 3)) for m in cell.INPUTS}
    out, (_h_n, c_n) = rnn(torch.tensor(x), inputs={m: torch.tensor(v) for m, v in masks.items()})
    expected, final, _ = layer.forward(x, inputs=masks)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(c_n.detach().numpy(), final[1], rtol=1e-12)
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in rnn.parameters())
    with pytest.raises(ValueError, match=r"inputs: expected a dict with keys \('keep_c', 'keep_h'\)"):
        rnn(torch.tensor(x))
    with pytest.raises(ValueError, match=r"inputs\['keep_h'\]: expected a tensor of shape \(4, 2, 5, 3\)"):
        rnn(torch.tensor(x), inputs={"keep_c": torch.tensor(masks["keep_c"]), "keep_h": torch.zeros(2, 5, 3)})
    with pytest.raises(ValueError, match=r"inputs\['keep_c'\]: expected shape \(4, 2, 5, 3\) \(L\*D, B, T, H\)"):
        layer.forward(x, inputs={**masks, "keep_c": masks["keep_c"][:2]})


def test_the_rg_lru_needs_I_equal_H(generated_module):
    cell = generated_module("rg_lru")
    with pytest.raises(ValueError, match=r"x: this cell reads the input row x_t itself, so I must equal H; got I = 2"):
        cell.forward(np.zeros((3, 1, 2)), cell.init_params(2, 4))


# ------------------------------------------------------------------------------------------------ the sLSTM
def test_the_compact_R_is_the_block_diagonal_of_the_reference_sheet():
    """The torch reference's product (per head) equals h R_dense with R_dense built by the sheet's formula."""
    from reference_cells import block_diagonal_product

    K, d, G = 3, 2, 4
    H = K * d
    R = torch.randn(K, d, G * d, dtype=torch.float64)
    dense = torch.zeros(H, G * H, dtype=torch.float64)
    for k in range(K):
        for g in range(G):
            dense[k * d : (k + 1) * d, g * H + k * d : g * H + (k + 1) * d] = R[k][:, g * d : (g + 1) * d]
    h = torch.randn(5, H, dtype=torch.float64)
    torch.testing.assert_close(block_diagonal_product(h, R), h @ dense, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_slstm_matches_autograd_for_several_head_counts(generated_module, heads, gradient):
    from reference_cells import reference_gradients
    from test_kernels_vs_autograd import assert_close

    module = generated_module("slstm" if gradient == "full" else "slstm_truncated")
    T, B, I, H = 5, 3, 3, 8
    rng = np.random.default_rng(heads)
    params = {k: 1.5 * v for k, v in module.init_params(I, H, seed=heads, heads=heads).items()}
    assert params["R"].shape == (heads, H // heads, 4 * H // heads)
    x = rng.standard_normal((T, B, I))
    state = (
        0.5 * rng.standard_normal((B, H)),
        rng.standard_normal((B, H)),
        0.5 + rng.random((B, H)),
        rng.random((B, H)),
    )
    dy, dstate = rng.standard_normal((T, B, H)), tuple(rng.standard_normal((B, H)) for _ in range(4))
    ref = reference_gradients("slstm", x, params, state, dy, dstate, truncated=gradient == "truncated")
    y, _, tape = module.forward(x, params, state)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    assert_close(y, ref["y"], 1e-9, 1e-12, "y")
    assert_close(dx, ref["dx"], 1e-9, 1e-12, "dx")
    for k in grads:
        assert_close(grads[k], ref["grads"][k], 1e-9, 1e-12, f"d{k}")
    for s, a, b in zip(module.STATE, dstate0, ref["dstate0"], strict=True):
        assert_close(a, b, 1e-9, 1e-12, f"dstate0[{s}]")


def test_slstm_with_heads_does_one_small_product_per_head():
    from lstmgen.codegen.kernel_ir import HeadProjection, HeadProjectionT, HeadWeightGradient

    plan = lower(build_kernel_expressions(derive_backward(build_forward_equations(VARIANTS["slstm"]))))
    (forward,) = plan.forward.gemms()
    (backward,) = plan.backward.gemms()
    assert isinstance(forward, HeadProjection) and isinstance(backward, HeadProjectionT)
    assert forward.blocks == backward.blocks == 4 and plan.forward.heads and plan.backward.heads
    assert any(isinstance(s, HeadWeightGradient) for s in plan.backward.after)
    shapes = {b.name: b.shape for b in plan.forward.locals}
    assert shapes["head_in"] == ("heads", "batch", "head_size")
    assert shapes["head_out"] == ("heads", "batch", "4 * head_size")


def test_slstm_from_the_zero_state_follows_the_authors_rule(generated_module):
    """From the zero state m = ã_i, so the first step gives h = σ(ã_o) tanh(ã_z) even where exp(ã_i - m)
    would underflow (ã_i = -120 in float32 made 0/0 = NaN of the whole sequence)."""
    module = generated_module("slstm")
    H = 4
    params = module.init_params(2, H, dtype=np.float32, seed=0)
    params["b"][:H] = -120.0  # ã_i of every unit
    x = np.random.default_rng(0).standard_normal((3, 2, 2)).astype(np.float32)
    y, final, tape = module.forward(x, params)
    assert np.all(np.isfinite(y)) and all(np.all(np.isfinite(f)) for f in final)
    a = x[0] @ params["W"] + params["b"]  # step 1: h_0 = 0, so the pre-activations are x W + b
    expected = 1 / (1 + np.exp(-a[:, 3 * H :])) * np.tanh(a[:, 2 * H : 3 * H])
    np.testing.assert_allclose(y[0], expected, rtol=2e-6, atol=1e-7)
    dx, grads, _ = module.backward(np.ones_like(y), tape)
    assert np.all(np.isfinite(dx)) and all(np.all(np.isfinite(g)) for g in grads.values())


@pytest.mark.parametrize("scaled", ["exponential gates", "every gate"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_slstm_stays_finite_at_preactivations_of_1e4(generated_module, dtype, scaled):
    """Pre-activations up to ±1e4: every exponential is stabilised, outputs and gradients are finite and equal
    to the float64 torch reference. With only i and f that large, z and o stay moderate, so h and the gradients
    are far from saturated and the comparison is tight."""
    from reference_cells import reference_gradients

    module = generated_module("slstm")
    T, B, I, H = 6, 2, 3, 4
    rng = np.random.default_rng(7)
    params = module.init_params(I, H, seed=1, heads=2)
    scale = np.full(4 * H, 3500.0)
    if scaled == "exponential gates":
        scale[2 * H :] = 1.0  # GATES = (i, f, z, o)
    params = {k: (v * scale if k in ("W", "b") else v).astype(dtype) for k, v in params.items()}
    x = (4 * rng.uniform(-1, 1, (T, B, I))).astype(dtype)
    a = np.einsum("tbi,ig->tbg", x.astype(np.float64), params["W"].astype(np.float64))
    assert 5e3 < np.abs(a[..., : 2 * H]).max() <= 1.1e4  # the exponential gates' pre-activations reach ~1e4
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    f64 = {k: v.astype(np.float64) for k, v in params.items()}
    zeros = tuple(np.zeros((B, H)) for _ in range(4))
    ref = reference_gradients("slstm", x.astype(np.float64), f64, zeros, dy.astype(np.float64), zeros)
    y, _, tape = module.forward(x, params)
    dx, grads, dstate0 = module.backward(dy, tape)
    results = {"y": y, "dx": dx, **{f"d{k}": g for k, g in grads.items()}}
    expected = {"y": ref["y"], "dx": ref["dx"], **{f"d{k}": g for k, g in ref["grads"].items()}}
    results.update({f"dstate0[{s}]": g for s, g in zip(module.STATE, dstate0, strict=True)})
    expected.update({f"dstate0[{s}]": g for s, g in zip(module.STATE, ref["dstate0"], strict=True)})
    if scaled == "exponential gates":
        assert np.abs(expected["dR"]).max() > 0.05  # the gradients are not saturated away
    rtol = 1e-9 if dtype == np.float64 else 1e-5
    for name, value in results.items():
        assert np.all(np.isfinite(value)), name
        scale_of = max(1.0, float(np.abs(expected[name]).max()))
        np.testing.assert_allclose(value, expected[name], rtol=rtol, atol=rtol * scale_of, err_msg=name)


def test_heads_are_checked_by_name(generated_module):
    module, lstm = generated_module("slstm"), generated_module("lstm")
    assert module.HEADS == 4 and lstm.HEADS is None
    with pytest.raises(ValueError, match=r"heads: H = 6 is not divisible by heads = 4 \(each head has H/heads units\)"):
        module.init_params(2, 6)
    with pytest.raises(
        ValueError, match=r"heads: lstm has a dense R \(its spec declares no heads\); expected None, got 2"
    ):
        lstm.init_params(2, 4, heads=2)
    params = module.init_params(2, 8, heads=2)
    x = np.zeros((3, 1, 2))
    with pytest.raises(
        ValueError, match=r"params\['R'\]: expected shape \(2, 4, 16\) \(H = 8, heads = 2 from .*\), got \(2"
    ):
        module.forward(x, {**params, "R": params["R"][:, :, :12]})
    with pytest.raises(
        ValueError, match=r"params\['R'\]: expected the block-diagonal shape \(heads, H/heads, 4\*H/heads\)"
    ):
        module.forward(x, {**params, "R": np.zeros((8, 32))})
    with pytest.raises(
        ValueError, match=r"params\['W'\]: expected shape \(2, 16\) \(H = 4, heads = 1 from .*\), got \(2, 32\)"
    ):
        module.forward(x, {**params, "R": np.zeros((1, 4, 16))})  # H = 4 from R, 8 from the others


def test_measured_flow_of_mingru_is_scaled_by_one_minus_z(generated_module):
    """No R: one step back multiplies ∂L/∂h by 1 - z of that step exactly, as the derived Jacobian says."""
    from lstmgen.analysis.error_flow import state_gradients

    steps, hidden = 30, 5
    grads, tape = state_gradients(generated_module("mingru"), steps, batch=3, hidden=hidden)
    z = tape.gate_seq[:, :, :hidden]  # GATES = (z, n)
    for q in range(1, steps):
        k = steps - q
        np.testing.assert_allclose(grads[q + 1][0], (1 - z[k - 1]) * grads[q][0], rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", MODERN)
def test_cec_derives_and_measures_every_modern_cell(name, capsys):
    from lstmgen.cli import main

    assert main(["cec", name, "--steps", "4"]) == 0
    out = capsys.readouterr().out
    carried = "c" if "c" in VARIANTS[name].state else "h"
    assert f"∂{carried}[t]/∂{carried}[t-1] = " in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 2]
    assert len(rows) == 5 and all(np.isfinite(float(value)) for _, value in rows)


def test_torch_module_builds_the_heads_it_is_given():
    rnn = TorchRecurrent("slstm", 3, 8, num_layers=2, heads=2, dtype=torch.float64, seed=0)
    assert rnn.R_l0.shape == (2, 4, 16) and rnn.R_l1.shape == (2, 4, 16)
    out, final = rnn(torch.randn(5, 2, 3, dtype=torch.float64))
    assert out.shape == (5, 2, 8) and [tuple(s.shape) for s in final] == [(2, 2, 8)] * 4  # h, c, n, m
    out.sum().backward()
    assert rnn.R_l0.grad.shape == (2, 4, 16) and torch.isfinite(rnn.R_l0.grad).all()
