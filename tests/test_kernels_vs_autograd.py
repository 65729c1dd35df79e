"""Generated kernels against PyTorch autograd on references written from the equations (variants.md §5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from problems import random_problem, random_step_inputs
from reference_cells import STEPS, reference_gradients

from lstmgen.variants import VARIANTS

SIZES = [(1, 1, 1, 1), (3, 2, 5, 4), (7, 3, 2, 9), (5, 1, 3, 1), (4, 5, 1, 6)]
MODES = ["full", "truncated"]


def test_every_builtin_variant_has_a_reference():
    assert set(VARIANTS) == set(STEPS)


def module_for(generated_module, variant, gradient):
    return generated_module(variant if gradient == "full" else f"{variant}_{gradient}")


def assert_close(actual, expected, rtol, atol_scale, name, atol_floor=1.0, atol_min=0.0):
    """rtol, and atol = atol_scale · max(atol_floor, max|expected|), at least atol_min."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(atol_floor, float(np.max(np.abs(expected)))) if expected.size else 1.0
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64),
        expected,
        rtol=rtol,
        atol=max(atol_scale * scale, atol_min),
        err_msg=name,
    )


def compare(module, variant, sizes, dtype, seed, rtol, atol_scale, atol_floor, skip=()):
    x, params, state, dy, dstate = random_problem(module, sizes, dtype, seed)
    inputs = random_step_inputs(module, x, dy.shape[2], seed)
    assert module.GRADIENT in MODES
    ref = reference_gradients(
        variant,
        x.astype(np.float64),
        {k: v.astype(np.float64) for k, v in params.items()},
        tuple(s.astype(np.float64) for s in state),
        dy.astype(np.float64),
        tuple(d.astype(np.float64) for d in dstate),
        truncated=module.GRADIENT == "truncated",
        inputs={k: v.astype(np.float64) for k, v in inputs.items()},
    )
    y, final, tape = module.forward(x, params, state, inputs=inputs)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    outputs = {
        "y": y,
        "dx": dx,
        **{f"final[{s}]": v for s, v in zip(module.STATE, final, strict=True)},
        **{f"d{k}": v for k, v in grads.items()},
        **{f"dstate0[{s}]": v for s, v in zip(module.STATE, dstate0, strict=True)},
    }
    for name, value in outputs.items():
        assert value.dtype == dtype, f"{name} came back as {value.dtype}, expected {dtype}"
    expected = {
        "y": ref["y"],
        "dx": ref["dx"],
        **{f"final[{s}]": v for s, v in zip(module.STATE, ref["final"], strict=True)},
        **{f"d{k}": v for k, v in ref["grads"].items()},
        **{f"dstate0[{s}]": v for s, v in zip(module.STATE, ref["dstate0"], strict=True)},
    }
    assert set(outputs) == set(expected)
    for name in expected:
        if name in skip:
            continue
        assert_close(outputs[name], expected[name], rtol, atol_scale, name, atol_floor)


@pytest.mark.parametrize("gradient", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_float64_matches_autograd(generated_module, variant, gradient, sizes):
    module = module_for(generated_module, variant, gradient)
    compare(module, variant, sizes, np.float64, seed=sum(sizes), rtol=1e-9, atol_scale=1e-12, atol_floor=1.0)


@pytest.mark.parametrize("gradient", MODES)
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("sizes", SIZES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
def test_float32_matches_float64_reference(generated_module, variant, gradient, sizes):
    # float32 policy: rtol 1e-4, atol 1e-5 * max|ref| (no floor of 1).
    module = module_for(generated_module, variant, gradient)
    skip = float32_skips(variant, sizes)
    compare(
        module, variant, sizes, np.float32, seed=sum(sizes) + 1, rtol=1e-4, atol_scale=1e-5, atol_floor=0.0, skip=skip
    )


def float32_skips(variant, sizes):
    """The outputs a float32 comparison leaves to the float64 ones.

    With I = 1, x_t W is x_t times one row of W, and its layer norm hardly depends on x_t: dx is a cancellation
    of terms ~1e4 times larger than itself (modern-cells.md: compare it in float64, as the float64 tests do).
    With H = 1 the same holds for h_0 R and the gradient on h_0.
    """
    if variant != "layernorm_lstm":
        return ()
    _, _, n_in, hidden = sizes
    return ("dx",) * (n_in == 1) + ("dstate0[h]",) * (hidden == 1)


def test_lstm_matches_torch_nn_lstm(generated_module):
    """torch.nn.LSTM itself, weights copied (W = weight_ih.T, R = weight_hh.T, b = bias_ih + bias_hh)."""
    import torch

    module = generated_module("lstm")
    T, B, I, H = 6, 3, 4, 5
    torch.manual_seed(0)
    net = torch.nn.LSTM(I, H, dtype=torch.float64)
    params = {
        "W": net.weight_ih_l0.detach().numpy().T.copy(),
        "R": net.weight_hh_l0.detach().numpy().T.copy(),
        "b": (net.bias_ih_l0 + net.bias_hh_l0).detach().numpy(),
    }
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    h0, c0 = rng.standard_normal((B, H)), rng.standard_normal((B, H))
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    tc0 = torch.tensor(c0[None], requires_grad=True)
    out, (hT, cT) = net(tx, (th0, tc0))
    loss = (out * torch.tensor(dy)).sum() + (hT[0] * torch.tensor(dh)).sum() + (cT[0] * torch.tensor(dc)).sum()
    loss.backward()

    y, (h_last, c_last), tape = module.forward(x, params, (h0, c0))
    dx, grads, (dh0, dc0) = module.backward(dy, tape, (dh, dc))
    tol = {"rtol": 1e-9, "atol": 1e-12}
    np.testing.assert_allclose(y, out.detach().numpy(), **tol)
    np.testing.assert_allclose(h_last, hT[0].detach().numpy(), **tol)
    np.testing.assert_allclose(c_last, cT[0].detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(grads["W"], net.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(grads["R"], net.weight_hh_l0.grad.numpy().T, **tol)
    # Both torch biases receive the same gradient: the one of the folded bias.
    np.testing.assert_allclose(grads["b"], net.bias_ih_l0.grad.numpy(), **tol)
    np.testing.assert_allclose(grads["b"], net.bias_hh_l0.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, th0.grad[0].numpy(), **tol)
    np.testing.assert_allclose(dc0, tc0.grad[0].numpy(), **tol)


@pytest.mark.parametrize("variant", VARIANTS)
def test_float64_matches_finite_differences(generated_module, variant):
    """A second oracle that shares nothing with torch: central differences, ε = 1e-6."""
    module = generated_module(variant)
    x, params, state, dy, dstate = random_problem(module, (3, 2, 2, 3), np.float64, seed=11)
    masks = random_step_inputs(module, x, dy.shape[2], 11)

    def loss(x, params, state):
        y, final, _ = module.forward(x, params, state, inputs=masks)
        return float(np.sum(y * dy) + sum(np.sum(f * d) for f, d in zip(final, dstate, strict=True)))

    _, _, tape = module.forward(x, params, state, inputs=masks)
    dx, grads, dstate0 = module.backward(dy, tape, dstate)
    analytic = {"x": dx, **grads, **{f"state{k}": g for k, g in enumerate(dstate0)}}
    inputs = {"x": x, **params, **{f"state{k}": s for k, s in enumerate(state)}}
    eps = 1e-6
    for name, array in inputs.items():
        numeric = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            saved = array[idx]
            array[idx] = saved + eps
            up = loss(x, params, state)
            array[idx] = saved - eps
            down = loss(x, params, state)
            array[idx] = saved
            numeric[idx] = (up - down) / (2 * eps)
        scale = max(1.0, float(np.max(np.abs(numeric))))
        np.testing.assert_allclose(analytic[name], numeric, rtol=1e-5, atol=1e-8 * scale, err_msg=name)


def test_gru_matches_torch_nn_gru(generated_module):
    """torch.nn.GRU with copied weights: rows r, z, n; b_r, b_z folded; b_n = bias_ih_n; b_rn = bias_hh_n."""
    import torch

    module = generated_module("gru")
    T, B, I, H = 5, 3, 4, 6
    torch.manual_seed(1)
    net = torch.nn.GRU(I, H, dtype=torch.float64)
    b_ih, b_hh = net.bias_ih_l0.detach().numpy(), net.bias_hh_l0.detach().numpy()
    params = {
        "W": net.weight_ih_l0.detach().numpy().T.copy(),
        "R": net.weight_hh_l0.detach().numpy().T.copy(),
        "b": np.concatenate([b_ih[: 2 * H] + b_hh[: 2 * H], b_ih[2 * H :]]),
        "b_rn": b_hh[2 * H :].copy(),
    }
    rng = np.random.default_rng(5)
    x, h0 = rng.standard_normal((T, B, I)), rng.standard_normal((B, H))
    dy, dh = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))

    tx = torch.tensor(x, requires_grad=True)
    th0 = torch.tensor(h0[None], requires_grad=True)
    out, hT = net(tx, th0)
    ((out * torch.tensor(dy)).sum() + (hT[0] * torch.tensor(dh)).sum()).backward()

    y, (h_last,), tape = module.forward(x, params, (h0,))
    dx, grads, (dh0,) = module.backward(dy, tape, (dh,))
    tol = {"rtol": 1e-9, "atol": 1e-12}
    np.testing.assert_allclose(y, out.detach().numpy(), **tol)
    np.testing.assert_allclose(h_last, hT[0].detach().numpy(), **tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, th0.grad[0].numpy(), **tol)
    np.testing.assert_allclose(grads["W"], net.weight_ih_l0.grad.numpy().T, **tol)
    np.testing.assert_allclose(grads["R"], net.weight_hh_l0.grad.numpy().T, **tol)
    g_ih, g_hh = net.bias_ih_l0.grad.numpy(), net.bias_hh_l0.grad.numpy()
    np.testing.assert_allclose(grads["b"][: 2 * H], g_ih[: 2 * H], **tol)  # folded: both biases get it
    np.testing.assert_allclose(grads["b"][: 2 * H], g_hh[: 2 * H], **tol)
    np.testing.assert_allclose(grads["b"][2 * H :], g_ih[2 * H :], **tol)
    np.testing.assert_allclose(grads["b_rn"], g_hh[2 * H :], **tol)  # Σ δa_n ⊙ r, not Σ δa_n


def test_lstm_np_and_lstm_are_the_same_cell(generated_module):
    lstm, lstm_np = generated_module("lstm"), generated_module("lstm_np")
    x, params, state, dy, dstate = random_problem(lstm, (5, 2, 3, 4), np.float64, seed=9)
    results = []
    for module in (lstm, lstm_np):
        y, final, tape = module.forward(x, params, state)
        results.append((y, *final, *module.backward(dy, tape, dstate)[0:1], *module.backward(dy, tape, dstate)[2]))
        results[-1] += tuple(module.backward(dy, tape, dstate)[1].values())
    for a, b in zip(*results, strict=True):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    variant=st.sampled_from(sorted(VARIANTS)),
    gradient=st.sampled_from(MODES),
    sizes=st.tuples(*(st.integers(1, 6) for _ in range(4))),
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_any_variant_any_sizes(generated_module, variant, gradient, sizes, dtype, seed):
    module = module_for(generated_module, variant, gradient)
    if dtype == np.float64:
        compare(module, variant, sizes, dtype, seed, rtol=1e-9, atol_scale=1e-12, atol_floor=1.0)
    else:
        skip = float32_skips(variant, sizes)
        compare(module, variant, sizes, dtype, seed, rtol=1e-4, atol_scale=1e-5, atol_floor=0.0, skip=skip)
