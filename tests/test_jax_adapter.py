"""The JAX adapter: the generated kernels behind jax.custom_vjp and jax.pure_callback, against a lax.scan of the
same cell (written here from shared/reference/variants.md and modern-cells.md, differentiated by JAX)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from lstmgen.jax_adapter import jax_recurrent

jax.config.update("jax_enable_x64", True)  # float64 arrays; float32 stays float32
sigmoid, tanh = jax.nn.sigmoid, jnp.tanh


def lstm(p, x, state):
    h, c = state
    i, f, g, o = jnp.split(x @ p["W"] + h @ p["R"] + p["b"], 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * tanh(g)
    return sigmoid(o) * tanh(c), c


def gru(p, x, state):
    (h,) = state
    H = h.shape[-1]
    xw, hR = x @ p["W"] + p["b"], h @ p["R"]
    r = sigmoid(xw[..., :H] + hR[..., :H])
    z = sigmoid(xw[..., H : 2 * H] + hR[..., H : 2 * H])
    n = tanh(xw[..., 2 * H :] + r * (hR[..., 2 * H :] + p["b_rn"]))
    return ((1 - z) * n + z * h,)


def mingru(p, x, state):
    (h,) = state
    xw_z, xw_n = jnp.split(x @ p["W"] + p["b"], 2, axis=-1)
    z = sigmoid(xw_z)
    return ((1 - z) * h + z * xw_n,)


def janet(p, x, state):
    (h,) = state
    a_f, a_g = jnp.split(x @ p["W"] + h @ p["R"] + p["b"], 2, axis=-1)
    return (sigmoid(a_f) * h + (1 - sigmoid(a_f - 1.0)) * tanh(a_g),)


REFERENCES = {"lstm": lstm, "gru": gru, "mingru": mingru, "janet": janet}


def scan(step, x, params, state, lengths=None, reverse=False):
    """The cell over a sequence with lax.scan; past its length a sequence keeps its state and outputs zeros."""
    steps = x.shape[0]
    lengths = jnp.full(x.shape[1], steps) if lengths is None else lengths

    def body(carry, inputs):
        t, x_t = inputs
        new = step(params, x_t, carry)
        valid = (t < lengths)[:, None]
        carry = tuple(jnp.where(valid, n, c) for n, c in zip(new, carry, strict=True))
        return carry, jnp.where(valid, new[0], 0)

    final, y = lax.scan(body, tuple(state), (jnp.arange(steps), x), reverse=reverse)
    return y, final


def _problem(cell, dtype, seed=0):
    T, B, I, H = 6, 3, 2, 4
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(v * 1.5) for k, v in cell.init_params(I, H, dtype=dtype, seed=seed).items()}
    x = jnp.asarray(rng.standard_normal((T, B, I)).astype(dtype))
    state = tuple(jnp.asarray(0.5 * rng.standard_normal((B, H)).astype(dtype)) for _ in cell.STATE)
    return x, params, state


def _close(got, expected, dtype):
    tol = 1e-10 if dtype == np.float64 else 2e-5
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        assert g.dtype == e.dtype == dtype
        np.testing.assert_allclose(np.asarray(g), np.asarray(e), rtol=tol, atol=tol)


#: Every reference cell in both dtypes with a padded batch; the reversed direction once per dtype.
CASES = [(name, dtype, "lengths") for name in sorted(REFERENCES) for dtype in (np.float64, np.float32)]
CASES += [("lstm", np.float64, "reverse"), ("gru", np.float32, "reverse")]


@pytest.mark.parametrize(("name", "dtype", "case"), CASES)
def test_values_and_gradients_match_lax_scan(generated_module, name, dtype, case):
    cell = generated_module(name)
    f = jax_recurrent(cell, reverse=case == "reverse")
    x, params, state = _problem(cell, dtype)
    lengths = jnp.asarray([6, 2, 0]) if case == "lengths" else None

    def ours(x, params, state):
        return f(x, params, state, lengths=lengths)

    def theirs(x, params, state):
        return scan(REFERENCES[name], x, params, state, lengths, reverse=case == "reverse")

    def loss(run):
        def value(x, params, state):
            y, final = run(x, params, state)
            return jnp.sum(y**2) + sum(jnp.sum(jnp.sin(s)) for s in final)

        return jax.jit(jax.grad(value, argnums=(0, 1, 2)))

    _close(jax.jit(ours)(x, params, state), theirs(x, params, state), dtype)
    _close(loss(ours)(x, params, state), loss(theirs)(x, params, state), dtype)


def test_a_jitted_sgd_training_step_follows_lax_scan(generated_module):
    """Plain SGD (no optax) on a regression target, jitted: the adapter's steps are lax.scan's steps."""
    cell = generated_module("gru")
    f = jax_recurrent(cell)
    x, params, _ = _problem(cell, np.float64, seed=1)
    target = jnp.sin(jnp.arange(x.shape[0] * x.shape[1] * 4.0)).reshape(x.shape[0], x.shape[1], 4)

    def make_step(run):
        def loss(params):
            return jnp.mean((run(params)[0] - target) ** 2)

        @jax.jit
        def step(params):
            value, grads = jax.value_and_grad(loss)(params)
            return jax.tree.map(lambda p, g: p - 0.5 * g, params, grads), value

        return step

    zeros = (jnp.zeros((x.shape[1], 4)),)
    ours = make_step(lambda p: f(x, p))
    theirs = make_step(lambda p: scan(gru, x, p, zeros))
    p1 = p2 = params
    losses = []
    for _ in range(5):
        (p1, l1), (p2, l2) = ours(p1), theirs(p2)
        np.testing.assert_allclose(l1, l2, rtol=1e-10)
        losses.append(float(l1))
    assert losses[-1] < losses[0]
    _close(p1, p2, np.float64)


def test_bad_arguments_are_named(generated_module):
    f = jax_recurrent(generated_module("lstm"))
    x = jnp.zeros((3, 2, 2))
    params = generated_module("lstm").init_params(2, 4)
    with pytest.raises(ValueError, match=r"params: expected a dict keyed by \('W', 'R', 'b'\), got \['W'\]"):
        f(x, {"W": params["W"]})
    with pytest.raises(ValueError, match=r"x: expected a 3-D array \(T, B, I\), got shape \(2, 2\)"):
        f(x[0], params)
    with pytest.raises(ValueError, match=r"state: expected 2 array\(s\) of shapes \(\(2, 4\), \(2, 4\)\)"):
        f(x, params, (jnp.zeros((2, 4)),))
    cuda_module = types.ModuleType("lstm_cuda")
    cuda_module.TARGET = "cuda"
    with pytest.raises(ValueError, match="cell: expected a module of the CPU target"):
        jax_recurrent(cuda_module)
