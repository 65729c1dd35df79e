"""Numerical behaviour of the kernels at the edges, and the generated wrappers' input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from problems import random_problem, random_step_inputs


@pytest.mark.parametrize("variant", ["lstm", "lstm_peephole"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_preactivations_saturate_without_overflow(generated_module, variant, dtype):
    m = generated_module(variant)
    x, params, state, dy, _ = random_problem(m, (4, 2, 3, 5), dtype, seed=5)
    x = (x * 1e4).astype(dtype)  # pre-activations of order ±1e4
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, final, tape = m.forward(x, params, state)
        dx, grads, dstate0 = m.backward(dy, tape)
    for arr in (y, *final, dx, *grads.values(), *dstate0):
        assert np.all(np.isfinite(arr))
    assert np.all(np.abs(y) <= 1)


def test_nan_input_propagates(generated_module):
    """Documented behaviour: a NaN in x gives NaN in the outputs that depend on it, no exception."""
    m = generated_module("lstm")
    x, params, state, _dy, _ = random_problem(m, (3, 2, 2, 3), np.float64, seed=1)
    x[1, 0, 0] = np.nan
    y, _, _ = m.forward(x, params, state)
    assert np.all(np.isfinite(y[0])) and np.all(np.isnan(y[1:, 0])) and np.all(np.isfinite(y[:, 1]))


#: The cells whose activations all saturate (docs/numerics.md, "Infinite inputs").
SQUASHING = (
    "rnn_tanh", "lstm_1997", "lstm", "lstm_peephole", "lstm_nig", "lstm_nfg", "lstm_nog", "lstm_noaf", "lstm_np",
    "lstm_cifg", "lstm_fgr", "zoneout_lstm", "lstmp", "gru", "gru_v3", "janet",
)  # fmt: skip


@pytest.mark.parametrize("variant", SQUASHING)
@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+inf", "-inf"])
def test_infinite_input_saturates_as_documented(generated_module, variant, sign):
    """Documented behaviour: outputs stay finite; only the weight gradients multiplying the inf are NaN."""
    m = generated_module(variant)
    x, params, state, dy, dstate = random_problem(m, (3, 2, 2, 3), np.float64, seed=1)
    inputs = random_step_inputs(m, x, dy.shape[2], seed=1)
    x[1, 0, 0] = sign * np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, final, tape = m.forward(x, params, state, inputs=inputs)
        dx, grads, dstate0 = m.backward(dy, tape, dstate)
    for arr in (y, *final, dx, *dstate0, *(g for k, g in grads.items() if k != "W")):
        assert np.all(np.isfinite(arr))
    assert np.all(np.isnan(grads["W"][0])) and np.all(np.isfinite(grads["W"][1:]))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["+inf", "-inf"])
def test_slstm_infinite_input_goes_to_its_limit(generated_module, sign):
    """An infinite input gate pre-activation, outputs finite (docs/numerics.md): ĩ = +inf gives i = 1, nothing
    carried and m = +inf; ĩ = -inf gives i = 0, the state carried and m finite. The input row drives ĩ to ±inf
    in every unit and f̃ to +inf, so that no unit has ĩ = f̃ = -inf."""
    m = generated_module("slstm")
    x, params, state, dy, dstate = random_problem(m, (3, 2, 2, 4), np.float64, seed=2)
    hidden = 4
    params["W"][0, :hidden] = 1.0  # row 0 of W: ĩ = x, f̃ = sign * x
    params["W"][0, hidden : 2 * hidden] = sign
    x[1, :, 0] = sign * np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y, (h, c, n, m_final), tape = m.forward(x, params, state)
        dx, grads, dstate0 = m.backward(dy, tape, dstate)
    for arr in (y, h, c, n, dx, *dstate0, *(g for k, g in grads.items() if k != "W")):
        assert np.all(np.isfinite(arr))
    # +inf: the stabiliser's limit is +inf (every later input gate is exp(-inf) = 0); -inf: m stays finite.
    assert np.all(m_final[:1] == np.inf) if sign > 0 else np.all(np.isfinite(m_final))


def test_state_defaults_to_zeros(generated_module):
    m = generated_module("lstm_peephole")
    x, params, _, dy, _ = random_problem(m, (3, 2, 2, 3), np.float64, seed=2)
    zeros = tuple(np.zeros((2, 3)) for _ in m.STATE)
    y0, _f0, tape0 = m.forward(x, params)
    y1, _f1, tape1 = m.forward(x, params, zeros)
    np.testing.assert_array_equal(y0, y1)
    dx0, _g0, _ = m.backward(dy, tape0)
    dx1, _g1, _ = m.backward(dy, tape1, zeros)
    np.testing.assert_array_equal(dx0, dx1)


def test_non_contiguous_inputs_give_the_same_result(generated_module):
    m = generated_module("lstm")
    x, params, state, _dy, _ = random_problem(m, (3, 2, 4, 3), np.float64, seed=4)
    y, _, _ = m.forward(x, params, state)
    x_strided = np.asfortranarray(x)
    params_strided = {k: v[::-1].copy()[::-1] for k, v in params.items()}
    y2, _, _ = m.forward(x_strided, params_strided, state)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (lambda x, p, s: (x.astype(np.int64), p, s), TypeError, "x: expected dtype float32 or float64, got int64"),
        (lambda x, p, s: (x.astype(np.float16), p, s), TypeError, "x: expected dtype float32 or float64"),
        (lambda x, p, s: (x[0], p, s), ValueError, "x: expected 3 dimensions"),
        (lambda x, p, s: (x[:0], p, s), ValueError, "x: expected T >= 1 and B >= 1"),
        (
            lambda x, p, s: (x, {**p, "W": p["W"].astype(np.float32)}, s),
            TypeError,
            "params['W']: expected dtype float64 (the dtype of x), got float32",
        ),
        (lambda x, p, s: (x, {**p, "R": p["R"][:, :-1]}, s), ValueError, "params['R']: expected shape"),
        (lambda x, p, s: (x, {k: v for k, v in p.items() if k != "b"}, s), ValueError, "missing ['b']"),
        (lambda x, p, s: (x, {**p, "extra": p["b"]}, s), ValueError, "unexpected ['extra']"),
        (lambda x, p, s: (x, p, s[:1]), ValueError, "state: expected a tuple of 2 arrays"),
        (lambda x, p, s: (x, p, (s[0], s[1][:, :-1])), ValueError, "state['c']: expected shape (2, 3)"),
        (lambda x, p, s: (x, p, (s[0], [[0.0]])), TypeError, "state['c']: expected a numpy array"),
    ],
)
def test_bad_forward_input_is_refused_clearly(generated_module, mutate, error, message):
    m = generated_module("lstm")
    x, params, state, _, _ = random_problem(m, (3, 2, 4, 3), np.float64, seed=4)
    with pytest.raises(error) as exc:
        m.forward(*mutate(x, params, state))
    assert message in str(exc.value)


def test_bad_backward_input_is_refused_clearly(generated_module):
    m = generated_module("lstm")
    other = generated_module("lstm_peephole")
    x, params, state, dy, _ = random_problem(m, (3, 2, 4, 3), np.float64, seed=4)
    _, _, tape = m.forward(x, params, state)
    with pytest.raises(ValueError, match=r"dy: expected shape \(3, 2, 3\)"):
        m.backward(dy[:, :1], tape)
    with pytest.raises(TypeError, match="dy: expected dtype float64"):
        m.backward(dy.astype(np.float32), tape)
    with pytest.raises(TypeError, match=r"tape: expected the tape returned by lstm_peephole\.forward"):
        other.backward(dy, tape)
    with pytest.raises(ValueError, match=r"dstate\['h'\]: expected shape"):
        m.backward(dy, tape, (dy[0, :1], dy[0]))


@pytest.mark.parametrize(
    ("variant", "key", "shape", "message"),
    [
        (
            "lstmp",
            "W_p",
            (4, 2),
            "params['R']: expected shape (2, 16) (H = 4, P = 2 from params['W_p'] of shape (4, 2))",
        ),
        ("slstm", "R", (4, 1, 16), "(H = 4, heads = 4 from params['R'] of shape (4, 1, 16)), got (4, 1, 16)"),
        ("lstm", "R", (3, 12), "params['W']: expected shape (3, 12) (H = 3 from params['R'] of shape (3, 12))"),
    ],
)
def test_a_wrong_shape_says_where_the_sizes_come_from(generated_module, variant, key, shape, message):
    """H (and P, the heads) are read from one parameter: a wrong W_p or compact R must not read as a wrong W."""
    m = generated_module(variant)
    params = m.init_params(3, 4, dtype=np.float64, seed=0, **({"heads": 2} if m.HEADS else {}))
    params[key] = np.zeros(shape)
    with pytest.raises(ValueError) as exc:
        m.forward(np.zeros((2, 1, 3)), params)
    assert message in str(exc.value)


@pytest.mark.parametrize(
    "order",
    [np.full((3, 2), 7), np.zeros((3, 2)), np.zeros((3, 2), dtype=np.int64), np.zeros((2, 2), dtype=np.int64)],
    ids=["out of range", "float", "not a permutation", "wrong shape"],
)
def test_a_replaced_time_order_on_the_tape_is_refused(generated_module, order):
    """The tape's time order indexes dy and dx: a replaced one is refused, not an IndexError or a wrong gather."""
    m = generated_module("lstm")
    x, params, state, dy, _ = random_problem(m, (3, 2, 4, 3), np.float64, seed=4)
    _, _, tape = m.forward(x, params, state, lengths=np.array([3, 2]))
    tape.order = order
    with pytest.raises(ValueError, match=r"tape: its arrays do not match each other"):
        m.backward(dy, tape)
