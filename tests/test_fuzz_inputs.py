"""Fuzzing the generated wrappers: random shapes, dtypes, strides and one mistake at a time. Each example ends in
either the exact documented error (predicted here from the input) or results equal to the reference: torch
autograd (tests/reference_cells.py) without lengths, each sequence alone with them (test_sequences)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from reference_cells import reference_gradients
from test_sequences import one_at_a_time

# Weighted towards valid input, so that about half of the examples reach the kernels.
DTYPES = [*[np.float64, np.float32] * 6, np.float16, np.int32, np.complex128]
LAYOUTS = ["c", "fortran", "negative", "strided"]
FORWARD_MISTAKES = [
    *[None] * 30,
    "x_rank",
    "x_list",
    "param_shape",
    "param_missing",
    "param_extra",
    "param_dtype",
    "state_shape",
    "state_count",
    "lengths_value",
    "lengths_dtype",
    "lengths_shape",
]
BACKWARD_MISTAKES = [*[None] * 4, "dy_shape", "dy_dtype", "dstate_shape", "tape"]


def with_layout(a: np.ndarray, layout: str) -> np.ndarray:
    """The same values in a non-contiguous or negatively strided array."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "negative":
        return np.flip(np.flip(a, 0).copy(), 0)
    if layout == "strided":
        big = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), dtype=a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    return a


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_forward_and_backward(generated_module, data):
    name = data.draw(st.sampled_from(["lstm", "lstm_peephole", "gru", "gru_v3"]), "variant")
    m = generated_module(name)
    T, B = data.draw(st.sampled_from([1, 2, 3, 4] * 3 + [0]), "T"), data.draw(st.sampled_from([1, 2, 3] * 4 + [0]), "B")
    I, H = data.draw(st.integers(1, 3), "I"), data.draw(st.integers(1, 3), "H")
    dtype = np.dtype(data.draw(st.sampled_from(DTYPES), "dtype"))
    layout = data.draw(st.sampled_from(LAYOUTS), "layout")
    mistake = data.draw(st.sampled_from(FORWARD_MISTAKES), "forward mistake")
    padded = (mistake is not None and mistake.startswith("lengths")) or data.draw(st.booleans(), "padded")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16), "seed"))
    real = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)

    x0 = rng.standard_normal((T, B, I))
    x = with_layout(x0.astype(dtype), layout)
    params = {k: with_layout(v, layout) for k, v in m.init_params(I, H, dtype=real, seed=1).items()}
    state = tuple(with_layout((0.5 * rng.standard_normal((B, H))).astype(real), layout) for _ in m.STATE)
    lengths = rng.integers(0, T + 1, size=B) if padded else None
    first = m.PARAMS[data.draw(st.integers(0, len(m.PARAMS) - 1), "param")]
    if mistake == "x_rank":
        x = x[0] if T else x[..., None]
    elif mistake == "x_list":
        x = x.tolist()
    elif mistake == "param_shape":
        params[first] = np.concatenate([params[first], params[first][..., :1]], axis=-1)
    elif mistake == "param_missing":
        del params[first]
    elif mistake == "param_extra":
        params["bias"] = params["b"]
    elif mistake == "param_dtype":
        params[first] = params[first].astype(np.float32 if real == np.float64 else np.float64)
    elif mistake == "state_shape":
        state = (state[0][:, :-1], *state[1:])
    elif mistake == "state_count":
        state = (*state, state[0])
    elif mistake == "lengths_value":
        lengths = np.full(B, T + 1)
    elif mistake == "lengths_dtype":
        lengths = np.full(B, T, dtype=np.float64)
    elif mistake == "lengths_shape":
        lengths = np.full(B + 1, T)

    # The documented error, in the order the wrapper checks its arguments.
    expected = None
    if mistake == "x_list":
        expected = (TypeError, "x: expected a numpy array, got list")
    elif dtype not in (np.float32, np.float64):
        expected = (TypeError, f"x: expected dtype float32 or float64, got {dtype}")
    elif mistake == "x_rank":
        expected = (ValueError, "x: expected 3 dimensions, got shape")
    elif T == 0 or B == 0:
        expected = (ValueError, f"x: expected T >= 1 and B >= 1, got shape {(T, B, I)}")
    elif mistake == "param_missing":
        expected = (ValueError, f"params: expected keys {m.PARAMS}; missing [{first!r}], unexpected []")
    elif mistake == "param_extra":
        expected = (ValueError, f"params: expected keys {m.PARAMS}; missing [], unexpected ['bias']")
    elif mistake == "param_dtype":
        expected = (TypeError, f"params[{first!r}]: expected dtype {real} (the dtype of x)")
    elif mistake == "param_shape":
        expected = (ValueError, f"params[{first!r}]: expected shape")
    elif mistake == "state_shape":
        expected = (ValueError, f"state['h']: expected shape {(B, H)}, got {(B, H - 1)}")
    elif mistake == "state_count":
        expected = (ValueError, f"state: expected a tuple of {len(m.STATE)} arrays in the order {m.STATE}")
    elif mistake == "lengths_value":
        expected = (ValueError, f"lengths: expected values in [0, {T}], got min {T + 1}")
    elif mistake == "lengths_dtype":
        expected = (TypeError, f"lengths: expected a numpy array of integers, shape ({B},), got float64")
    elif mistake == "lengths_shape":
        expected = (ValueError, f"lengths: expected shape ({B},), one length per batch row, got ({B + 1},)")
    if mistake == "param_shape" and first == "R" and expected[1].startswith("params["):
        expected = (ValueError, "params['R']: expected shape")

    event("error" if expected is not None else "forward runs")
    if expected is not None:
        with pytest.raises(expected[0]) as exc:
            m.forward(x, params, state, lengths=lengths)
        assert expected[1] in str(exc.value)
        return

    y, final, tape = m.forward(x, params, state, lengths=lengths)
    dy = with_layout(rng.standard_normal((T, B, H)).astype(real), layout)
    dstate = tuple(rng.standard_normal((B, H)).astype(real) for _ in m.STATE)
    back = data.draw(st.sampled_from(BACKWARD_MISTAKES), "backward mistake")
    if back is not None:
        bad_tape = tape
        if back == "dy_shape":
            dy, message = dy[:, :, :-1], f"dy: expected shape {(T, B, H)}, got {(T, B, H - 1)}"
        elif back == "dy_dtype":
            dy, message = dy.astype(np.float16), "dy: expected dtype float32 or float64, got float16"
        elif back == "dstate_shape":
            dstate, message = (dstate[0][:0], *dstate[1:]), f"dstate['h']: expected shape {(B, H)}, got {(0, H)}"
        else:
            bad_tape, message = (y, final), f"tape: expected the tape returned by {name}.forward, got tuple"
        with pytest.raises((TypeError, ValueError)) as exc:
            m.backward(dy, bad_tape, dstate)
        assert message in str(exc.value)
        return

    dx, grads, dstate0 = m.backward(dy, tape, dstate)
    event("compared with the reference" + (" (padded)" if padded else ""))
    f64 = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    s64 = tuple(np.asarray(s, dtype=np.float64) for s in state)
    dy64, ds64 = np.asarray(dy, dtype=np.float64), tuple(np.asarray(d, dtype=np.float64) for d in dstate)
    xr = np.asarray(x, dtype=np.float64)
    if lengths is None:
        ref = reference_gradients(name, xr, f64, s64, dy64, ds64)
        expected_values = [ref["y"], *ref["final"], ref["dx"], *ref["grads"].values(), *ref["dstate0"]]
    else:
        m64 = m  # the same module in float64: each sequence alone, unpadded
        ey, ef, edx, eg, ed0 = one_at_a_time(m64, xr, f64, s64, dy64, ds64, lengths, False, {})
        expected_values = [ey, *ef, edx, *(eg[k] for k in m.PARAMS), *ed0]
    got = [y, *final, dx, *(grads[k] for k in m.PARAMS), *dstate0]
    rtol, atol = (1e-9, 1e-11) if real == np.float64 else (1e-4, 1e-4)
    for a, e in zip(got, expected_values, strict=True):
        assert a.dtype == real
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * max(1.0, float(np.max(np.abs(e), initial=0))))
