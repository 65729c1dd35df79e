"""backward trusts a tape forward made only while it holds what forward put in it.

forward records the tape's objects and their layout; backward then checks only that nothing was replaced or
reshaped, and otherwise checks every array against x and the parameters, as for a tape from tape_from. The
kernels index the tape's arrays by the sizes of x without bounds checks: a tape that no longer fits must be
refused, never read out of bounds.
"""

import numpy as np
import pytest
from problems import random_problem

REFUSED = "tape: its arrays do not match each other"


@pytest.fixture
def lstm_tape(generated_module):
    m = generated_module("lstm")
    x, params, state, dy, dstate = random_problem(m, (4, 2, 3, 5), np.float64, seed=1)
    _, _, tape = m.forward(x, params, state)
    return m, tape, dy, dstate


def _grads(m, tape, dy, dstate):
    dx, grads, dstate0 = m.backward(dy, tape, dstate)
    return [dx, *grads.values(), *dstate0]


def test_an_unchanged_tape_gives_the_gradient_of_a_rebuilt_one(lstm_tape):
    """The recorded tape and the same arrays through tape_from (checked in full) give the same gradients."""
    m, tape, dy, dstate = lstm_tape
    rebuilt = m.tape_from(m.tape_arrays(tape), tape.x, tape.params)
    for trusted, checked in zip(_grads(m, tape, dy, dstate), _grads(m, rebuilt, dy, dstate), strict=True):
        np.testing.assert_array_equal(trusted, checked)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda tape: setattr(tape, "x", tape.x[:, :1]),
        lambda tape: setattr(tape, "x", np.zeros((*tape.x.shape[:2], 7))),
        lambda tape: setattr(tape, "gate_seq", tape.gate_seq[:-1]),
        lambda tape: setattr(tape, "gate_seq", np.asfortranarray(tape.gate_seq)),
        lambda tape: setattr(tape, "states", tape.states[:1]),
        lambda tape: setattr(tape, "params", list(tape.params.values())),
        lambda tape: setattr(tape, "params", None),
        lambda tape: tape.params.update(R=tape.params["R"][:, :4]),
        lambda tape: tape.params.update(b=tape.params["b"].astype(np.float32)),
        lambda tape: tape.params.pop("b"),
        lambda tape: setattr(tape, "lengths", tape.lengths[:1]),
        lambda tape: setattr(tape, "lengths", tape.lengths.astype(np.int32)),
    ],
    ids=[
        "x of another batch",
        "x of another width",
        "gate_seq a step short",
        "gate_seq not C-contiguous",
        "a state missing",
        "params not a dict",
        "params None",
        "R narrower",
        "b float32",
        "b removed",
        "lengths shorter",
        "lengths int32",
    ],
)
def test_a_replaced_array_is_checked_and_refused(lstm_tape, tamper):
    m, tape, dy, dstate = lstm_tape
    tamper(tape)
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, tape, dstate)


@pytest.mark.parametrize(("which", "shape"), [("x", (2, 4, 3)), ("gate_seq", (2, 4, 20)), ("c", (5, 1, 10))])
def test_an_array_reshaped_in_place_is_refused(lstm_tape, which, shape):
    """``a.shape = ...`` keeps the object: the recorded layout, not the identity, catches it."""
    m, tape, dy, dstate = lstm_tape
    array = {"x": tape.x, "gate_seq": tape.gate_seq, "c": tape.states[1]}[which]
    array.shape = shape
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, tape, dstate)


def test_an_array_reinterpreted_in_place_is_refused(lstm_tape):
    """Setting the dtype of an array reinterprets its bytes: float64 read as float32 doubles its last axis."""
    m, tape, dy, dstate = lstm_tape
    tape.gate_seq.dtype = np.float32
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, tape, dstate)


def test_a_fitting_replacement_is_used(lstm_tape):
    """A replaced array that fits is checked in full and then used: backward runs on what the tape holds."""
    m, tape, dy, dstate = lstm_tape
    R = tape.params["R"]
    expected = _grads(m, m.tape_from(m.tape_arrays(tape), tape.x, {**tape.params, "R": 2 * R}), dy, dstate)
    tape.params["R"] = 2 * R
    for got, want in zip(_grads(m, tape, dy, dstate), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_tape_from_arrays_that_do_not_fit_is_refused(lstm_tape):
    m, tape, dy, dstate = lstm_tape
    arrays = list(m.tape_arrays(tape))
    arrays[0] = arrays[0][:-1]
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, m.tape_from(arrays, tape.x, tape.params), dstate)


def test_memory_blocks_and_feedback_tapes_are_checked_too(generated_module):
    """The 1997 network's tape holds per-cell parameters and the fed-back gates: both are checked."""
    m = generated_module("lstm_1997_net")
    rng = np.random.default_rng(0)
    params = m.init_params(2, 4, seed=0, block_size=2)
    x, dy = rng.standard_normal((5, 1, 2)), rng.standard_normal((5, 1, 4))
    _, _, tape = m.forward(x, params)
    m.backward(dy, tape)
    fed_back = tape.extra[0]
    tape.extra = (fed_back[:, :, :2], *tape.extra[1:])
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, tape)
    tape.extra = (fed_back, *tape.extra[1:])
    m.backward(dy, tape)  # as forward made it again: accepted
    tape.params["Q"] = tape.params["Q"][:4]
    with pytest.raises(ValueError, match=REFUSED):
        m.backward(dy, tape)
