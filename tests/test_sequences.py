"""Padded batches (lengths, ONNX semantics) and reversed sequences, checked against one-sequence-at-a-time runs
of the same kernels (themselves checked against autograd in test_kernels_vs_autograd)."""

from __future__ import annotations

import numpy as np
import pytest
from problems import random_problem, random_step_inputs

from lstmgen.variants import VARIANTS

# Every mechanism the kernels have: plain, peepholes, mid-step source (gru_v3), gate feedback (lstm_fgr), unit
# parameters (gru's b_rn), the truncated gradient, cells without R (one reading x_t itself) and per-step inputs.
MODULES = ["lstm", "lstm_peephole", "gru", "gru_v3", "gru_v3_truncated", "lstm_fgr", "lstm_fgr_truncated", "rnn_tanh"]
MODULES += ["indrnn", "sru", "mingru", "minlstm", "janet", "ligru", "rg_lru", "zoneout_lstm", "slstm", "layernorm_lstm"]
MODULES += ["lstmp", "lstmp_truncated"]  # a projected output: h and dy of P units, R (P, 4H)


def one_at_a_time(m, x, params, state, dy, dstate, lengths, reverse, inputs):
    """Expected results: each sequence alone, cut to its length (reversed if asked), through the unpadded path."""
    B = dy.shape[1]
    y = np.zeros_like(dy)
    dx = np.zeros_like(x)
    final = [np.zeros_like(s) for s in state]  # (B, P) for a projected h, (B, H) otherwise
    dstate0 = [np.zeros_like(s) for s in state]
    grads = {k: np.zeros_like(v) for k, v in params.items()}
    for b in range(B):
        n = int(lengths[b])
        s0 = tuple(s[b : b + 1] for s in state)
        ds = tuple(d[b : b + 1] for d in dstate)
        if n == 0:  # nothing runs: the state passes through
            for k in range(len(m.STATE)):
                final[k][b], dstate0[k][b] = s0[k][0], ds[k][0]
            continue
        steps = slice(n - 1, None, -1) if reverse else slice(0, n)
        alone = {k: np.ascontiguousarray(v[steps, b : b + 1]) for k, v in inputs.items()}
        yb, fb, tape = m.forward(np.ascontiguousarray(x[steps, b : b + 1]), params, s0, inputs=alone)
        dxb, gb, d0 = m.backward(np.ascontiguousarray(dy[steps, b : b + 1]), tape, ds)
        y[steps, b] = yb[:, 0]
        dx[steps, b] = dxb[:, 0]
        for k in range(len(m.STATE)):
            final[k][b], dstate0[k][b] = fb[k][0], d0[k][0]
        for k in grads:
            grads[k] += gb[k]
    return y, final, dx, grads, dstate0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", MODULES)
def test_padded_batch_equals_each_sequence_alone(generated_module, name, reverse):
    m = generated_module(name)
    x, params, state, dy, dstate = random_problem(m, (6, 5, 3, 4), np.float64, seed=11)
    inputs = random_step_inputs(m, x, 4, 11)
    lengths = np.array([6, 3, 1, 0, 5])
    x[5:, 4] = np.nan  # padding is never read, whatever it holds
    x[3:, 1] = 1e30
    for value in inputs.values():
        value[5:, 4] = np.nan
    y, final, tape = m.forward(x, params, state, inputs=inputs, lengths=lengths, reverse=reverse)
    dx, grads, dstate0 = m.backward(dy, tape, dstate)
    ey, efinal, edx, egrads, edstate0 = one_at_a_time(m, x, params, state, dy, dstate, lengths, reverse, inputs)
    np.testing.assert_allclose(y, ey, rtol=1e-12, atol=1e-14)
    assert np.all(y[np.arange(6)[:, None] >= lengths[None, :]] == 0)
    np.testing.assert_allclose(dx, edx, rtol=1e-12, atol=1e-14)
    for k in range(len(m.STATE)):
        np.testing.assert_allclose(final[k], efinal[k], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(dstate0[k], edstate0[k], rtol=1e-12, atol=1e-14)
    for k in grads:
        np.testing.assert_allclose(grads[k], egrads[k], rtol=1e-10, atol=1e-12, err_msg=k)


@pytest.mark.parametrize("name", ["lstm", "gru_v3"])
def test_full_lengths_change_nothing(generated_module, name):
    m = generated_module(name)
    x, params, state, dy, dstate = random_problem(m, (4, 3, 2, 3), np.float32, seed=3)
    y0, _, t0 = m.forward(x, params, state)
    y1, _, t1 = m.forward(x, params, state, lengths=np.full(3, 4, dtype=np.int32))
    np.testing.assert_array_equal(y0, y1)
    for a, b in zip(m.backward(dy, t0, dstate)[2], m.backward(dy, t1, dstate)[2], strict=True):
        np.testing.assert_array_equal(a, b)


def test_reverse_without_lengths_is_the_flipped_sequence(generated_module):
    m = generated_module("lstm_peephole")
    x, params, state, dy, dstate = random_problem(m, (5, 2, 3, 4), np.float64, seed=8)
    y, _, tape = m.forward(x, params, state, reverse=True)
    yf, _, tf = m.forward(x[::-1], params, state)
    np.testing.assert_array_equal(y, yf[::-1])
    dx, grads, _ = m.backward(dy, tape, dstate)
    dxf, gf, _ = m.backward(dy[::-1], tf, dstate)
    np.testing.assert_array_equal(dx, dxf[::-1])
    for k in grads:
        np.testing.assert_array_equal(grads[k], gf[k])


@pytest.mark.parametrize(
    ("lengths", "error", "message"),
    [
        (np.array([3, 1.0]), TypeError, "lengths: expected a numpy array of integers, shape (2,), got float64"),
        ([3, 1], TypeError, "lengths: expected a numpy array of integers, shape (2,), got list"),
        (np.array([True, False]), TypeError, "got bool"),
        (np.array([3, 1, 2]), ValueError, "lengths: expected shape (2,), one length per batch row, got (3,)"),
        (np.array([[3, 1]]), ValueError, "got (1, 2)"),
        (np.array([4, 1]), ValueError, "lengths: expected values in [0, 3], got min 1 and max 4"),
        (np.array([-1, 1]), ValueError, "got min -1 and max 1"),
    ],
)
def test_bad_lengths_are_refused(generated_module, lengths, error, message):
    m = generated_module("lstm")
    x, params, state, _, _ = random_problem(m, (3, 2, 2, 3), np.float64, seed=0)
    with pytest.raises(error) as exc:
        m.forward(x, params, state, lengths=lengths)
    assert message in str(exc.value)


def test_bad_reverse_is_refused(generated_module):
    m = generated_module("lstm")
    x, params, state, _, _ = random_problem(m, (3, 2, 2, 3), np.float64, seed=0)
    with pytest.raises(TypeError, match="reverse: expected a bool, got str"):
        m.forward(x, params, state, reverse="yes")


def test_every_variant_takes_lengths(generated_module):
    for name in VARIANTS:
        m = generated_module(name)
        x, params, state, dy, _ = random_problem(m, (3, 2, 2, 2), np.float64, seed=1)
        inputs = random_step_inputs(m, x, 2, 1)
        y, _, tape = m.forward(x, params, state, inputs=inputs, lengths=np.array([2, 3]))
        assert np.all(y[2, 0] == 0) and np.all(np.isfinite(m.backward(dy, tape)[0]))
