"""The static half of every generated module: the Tape, the argument checks, the kernel call.

The same in every module, so it lives here once, as plain Python that ruff and the tests see; the generator
inlines the part below :data:`INLINE_MARKER` into each module (which stays standalone: numpy and numba
only). It reads the module's own constants and ``param_shapes``; the stand-ins above the marker give this
file something to import and lint against and are not inlined.
"""

import contextlib
import functools
import operator
import traceback
import warnings

import numba
import numpy as np

# Stand-ins for what every generated module defines itself (not inlined).
VARIANT = "cell"
GATES: tuple[str, ...] = ("a",)
RECURRENT_GATES: tuple[str, ...] = ("a",)
#: Whether the equations read the input row x_t itself (then I must equal H).
INPUT_ROW = False
#: The per-step inputs (T, B, H) forward takes in ``inputs`` (masks...), without gradient.
INPUTS: tuple[str, ...] = ()
#: The default number of heads of a block-diagonal R (K, H/K, G_r·H/K); None: R is dense (H, G_r·H).
HEADS: int | None = None
STATE: tuple[str, ...] = ("h",)
#: Parameters ``init_params`` fills with a constant instead of drawing them (layer norm gains and shifts).
INIT: dict[str, float] = {}
#: Whether the output h is projected: h = u W_p with W_p (H, P), so h, y and the rows of R have P units.
PROJECTED = False
PARAMS: tuple[str, ...] = ("W", "R", "b")
#: The gates a memory block of S = block_size cells shares: their columns of W, R and b are H/S wide.
BLOCK_GATES: tuple[str, ...] = ()
#: The gates fed back through Q (its row blocks) and the gates they feed (its column blocks).
FEEDBACK: tuple[str, ...] = ()
FEEDBACK_INTO: tuple[str, ...] = ()
#: Per array the tape keeps besides the states and gate_seq: (extra steps beyond T, width in blocks of H; 0 for
#: a per-row value, (T, B)).
TAPE_EXTRA: tuple[tuple[int, int], ...] = ()


def param_shapes(input_size, hidden_size, heads=None, proj_size=None, block_size=None):
    """Shape of every parameter, keyed by PARAMS."""
    return {"W": (input_size, hidden_size), "R": (hidden_size, hidden_size), "b": (hidden_size,)}


_jit = numba.njit(cache=True, error_model="numpy", nogil=True)


INLINE_MARKER = "# ---- generated modules inline this file from here ----"
# ---- generated modules inline this file from here ----


class Tape:
    """What forward saved for backward: x, the per-step inputs (a dict keyed by INPUTS), the parameters (a
    block gate's columns repeated for each cell of its block), every state, the stored gate values, the
    lengths, the time order of each sequence and the cells per memory block.

    ``checked``: the arrays fit each other (forward made them); the tape then records them, and backward checks
    only that none was replaced or reshaped since. Otherwise backward checks them all (a tape from tape_from).
    """

    __slots__ = ("_made", "block_size", "extra", "gate_seq", "inputs", "lengths", "order", "params", "states", "x")

    def __init__(self, x, inputs, params, states, gate_seq, extra, lengths, order, block_size, *, checked=False):
        self.x = x
        self.inputs = inputs
        self.params = params
        self.states = states
        self.gate_seq = gate_seq
        self.extra = extra
        self.lengths = lengths
        self.order = order
        self.block_size = block_size
        self._made = _tape_record(self) if checked else None


def forward_shapes(x_shape, params):
    """The shapes of forward's results, without running it: ``(y, final_state, tape_arrays)``, the shape of y, of
    each final state (STATE order) and of each of the tape's arrays (see :func:`tape_arrays`); ``x_shape`` is
    (T, B, I), ``params`` a dict keyed by PARAMS of anything with a ``.shape`` (arrays, tensors)."""
    steps, batch, _ = x_shape
    hidden, widths = _hidden(params), _widths(params)
    tape = [(steps + 1, batch, w) for w in widths] + [(steps, batch, len(GATES) * hidden)]
    tape += [(steps + more, batch, blocks * hidden) if blocks else (steps + more, batch) for more, blocks in TAPE_EXTRA]
    return (steps, batch, widths[0]), tuple((batch, w) for w in widths), tuple(tape)


def tape_arrays(tape):
    """The arrays forward computed for backward, in the order of :func:`forward_shapes`: every state at every step
    (STATE order), the gate values, the arrays of TAPE_EXTRA. What a framework that saves arrays, not objects,
    keeps of a tape; :func:`tape_from` makes the tape again."""
    return (*tape.states, tape.gate_seq, *tape.extra)


def tape_from(arrays, x, params, *, inputs=None, lengths=None, reverse=False):
    """The tape of ``forward(x, params, inputs=inputs, lengths=lengths, reverse=reverse)`` from its
    :func:`tape_arrays` (the state forward started from is not needed); backward checks that they fit."""
    x, step_inputs, params, _, lengths, order, _, block_size = _prepare_forward(
        x, params, None, lengths, reverse, inputs
    )
    arrays, n = tuple(arrays), len(STATE)
    if len(arrays) != n + 1 + len(TAPE_EXTRA):
        raise ValueError(f"arrays: expected the {n + 1 + len(TAPE_EXTRA)} arrays of tape_arrays, got {len(arrays)}")
    return Tape(x, step_inputs, params, arrays[:n], arrays[n], arrays[n + 1 :], lengths, order, block_size)


def init_params(input_size, hidden_size, *, dtype=np.float64, seed=None, heads=None, proj_size=None, block_size=None):
    """Parameters drawn uniformly from (-1/sqrt(H), 1/sqrt(H)), as torch.nn.LSTM does, except those in INIT,
    filled with their constant; dict keyed by PARAMS.

    ``heads``: the number of heads of a block-diagonal R (default HEADS); only None for a dense R.
    ``proj_size``: P, the units of a projected output (default H); only None for a cell without projection.
    ``block_size``: S, the cells of a memory block, which share one unit of each gate in BLOCK_GATES (default
    1, a gate per cell); only None for a cell without block gates.
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError):
        raise TypeError(f"seed: expected None, a non-negative integer or a numpy Generator, got {seed!r}") from None
    bound = 1.0 / np.sqrt(_check_size(hidden_size, "hidden_size"))
    params = {
        name: rng.uniform(-bound, bound, size=shape).astype(dtype)
        for name, shape in param_shapes(input_size, hidden_size, heads, proj_size, block_size).items()
    }
    # Drawn above too, so that the other parameters are the same draws with or without INIT.
    return {name: np.full_like(value, INIT[name]) if name in INIT else value for name, value in params.items()}


def _prepare_forward(x, params, state, lengths, reverse, inputs):
    """Check forward's arguments; x and the per-step inputs in the order the kernel runs them, padding zeroed.

    Returns x, the per-step inputs (dict keyed by INPUTS), params (per cell: a block gate's columns repeated for
    each cell of its block), initial state, lengths (int64), the time order (or None), whether the batch is
    padded and the cells per memory block.
    """
    x = _check_array(x, "x", 3, None)
    steps, batch, n_in = x.shape
    if steps == 0 or batch == 0:
        raise ValueError(f"x: expected T >= 1 and B >= 1, got shape {x.shape}")
    params = _check_params(params, n_in, x.dtype)
    block_size = _block_size(params)
    params = _per_cell(params, block_size)
    hidden = _hidden(params)
    if INPUT_ROW and n_in != hidden:
        raise ValueError(
            f"x: this cell reads the input row x_t itself, so I must equal H; got I = {n_in}, H = {hidden}"
        )
    initial = _check_state(state, "state", batch, _widths(params), x)
    step_inputs = _check_inputs(inputs, (steps, batch, hidden), x.dtype)
    padded = lengths is not None
    lengths = _check_lengths(lengths, steps, batch)
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse: expected a bool, got {type(reverse).__name__}")
    order = _time_order(lengths, steps, bool(reverse))
    if order is not None:
        x = _reorder(x, order)
        step_inputs = {k: _reorder(v, order) for k, v in step_inputs.items()}
    if padded:
        # Padding may hold anything (NaN included): zero it so that no gradient GEMM reads it.
        x = _zero_past(x, lengths)
        step_inputs = {k: _zero_past(v, lengths) for k, v in step_inputs.items()}
    return x, step_inputs, params, initial, lengths, order, padded, block_size


def _check_inputs(inputs, shape, dtype):
    """The per-step inputs as a dict keyed by INPUTS, each a C-contiguous (T, B, H) array of x's dtype."""
    if inputs is None:
        if not INPUTS:
            return {}
        inputs = {}
    if not isinstance(inputs, dict):
        raise TypeError(f"inputs: expected a dict keyed by {INPUTS}, got {type(inputs).__name__}")
    missing = [k for k in INPUTS if k not in inputs]
    extra = [k for k in inputs if k not in INPUTS]
    if missing or extra:
        raise ValueError(
            f"inputs: expected the per-step inputs {INPUTS}, each of shape (T, B, H) = {shape}; "
            f"missing {missing}, unexpected {extra}"
        )
    checked = {}
    for name in INPUTS:
        checked[name] = _check_array(inputs[name], f"inputs[{name!r}]", 3, dtype)
        if checked[name].shape != shape:
            raise ValueError(f"inputs[{name!r}]: expected shape (T, B, H) = {shape}, got {checked[name].shape}")
    return checked


def _outputs(output_seq, lengths, order, padded):
    """y (T, B, H) in input order from the output state's buffer (T + 1, B, H), zero past each length."""
    y = _copy_of(output_seq[1:]) if order is None else _reorder(output_seq[1:], order)
    return _zero_past(y, lengths) if padded else y


def _prepare_backward(dy, tape, dstate):
    """Check backward's arguments; dy in the order the kernel runs it.

    Returns dy, the gradient on the final state and the allocator of the adjoint buffers (zeros when padded).
    """
    if not isinstance(tape, Tape):
        raise TypeError(f"tape: expected the tape returned by {VARIANT}.forward, got {type(tape).__name__}")
    _check_tape(tape)
    x, params = tape.x, tape.params
    steps, batch, _ = x.shape
    width = _output_width(params)
    dy = _check_array(dy, "dy", 3, x.dtype)
    if dy.shape != (steps, batch, width):
        raise ValueError(f"dy: expected shape {(steps, batch, width)}, got {dy.shape}")
    if tape.order is not None:
        dy = _reorder(dy, tape.order)
    alloc = _allocator(x, bool(tape.lengths.min() < steps))  # rows past a length stay zero
    final = _check_state(dstate, "dstate", batch, _widths(params), x)
    return dy, final, alloc


def _input_order(dx, order):
    """dx in the order of the input sequence."""
    return dx if order is None else _reorder(dx, order)


def _hidden(params):
    """The hidden size H of checked parameters."""
    if PROJECTED:
        return params["W_p"].shape[0]
    if not RECURRENT_GATES:
        return params["b"].shape[0] // len(GATES)
    R = params["R"]
    return R.shape[0] * R.shape[1] if HEADS is not None else R.shape[0]


def _output_width(params):
    """The units of the output h (P when projected, else H) of checked parameters."""
    return params["W_p"].shape[1] if PROJECTED else _hidden(params)


def _widths(params):
    """The units of each state, in STATE order: the output's, then H for every other."""
    return (_output_width(params),) + (_hidden(params),) * (len(STATE) - 1)


def _check_proj(proj_size, hidden):
    """P, the units of a projected output (H when None); refuses any for a cell without projection."""
    if not PROJECTED:
        if proj_size is not None:
            raise ValueError(
                f"proj_size: {VARIANT} has no projected output (its spec declares no projection); expected None, "
                f"got {proj_size!r}"
            )
        return None
    return _check_size(hidden if proj_size is None else proj_size, "proj_size")


def _check_heads(heads, hidden):
    """The number of heads (HEADS when None) of a block-diagonal R; refuses any for a dense one."""
    if HEADS is None:
        if heads is not None:
            raise ValueError(
                f"heads: {VARIANT} has a dense R (its spec declares no heads); expected None, got {heads!r}"
            )
        return None
    heads = _check_size(HEADS if heads is None else heads, "heads")
    if hidden % heads:
        raise ValueError(f"heads: H = {hidden} is not divisible by heads = {heads} (each head has H/heads units)")
    return heads


def _check_block_size(block_size, hidden):
    """S, the cells of a memory block (1 when None); refuses any for a cell without block gates."""
    if not BLOCK_GATES:
        if block_size is not None:
            raise ValueError(
                f"block_size: {VARIANT} has no gates a memory block shares (its spec declares no block_gates); "
                f"expected None, got {block_size!r}"
            )
        return 1
    block_size = _check_size(1 if block_size is None else block_size, "block_size")
    if hidden % block_size:
        raise ValueError(
            f"block_size: H = {hidden} is not divisible by block_size = {block_size} (each memory block has "
            "block_size cells)"
        )
    return block_size


def _block_size_of(b, hidden):
    """S read from the width of an unchecked b: (G - n)·H + n·H/S for the n gates in BLOCK_GATES."""
    per_cell = len(GATES) - len(BLOCK_GATES)
    width = b.shape[0] if _is_array(b) and b.ndim == 1 else 0
    shared = width - per_cell * hidden
    units = shared // len(BLOCK_GATES)
    if shared <= 0 or shared % len(BLOCK_GATES) or hidden % units:
        raise ValueError(
            f"params['b']: expected shape ({per_cell}*H + {len(BLOCK_GATES)}*H/S,) with H = {hidden} and S, the "
            f"cells per memory block (gates {', '.join(BLOCK_GATES)}), dividing H; got {getattr(b, 'shape', b)!r}"
        )
    return hidden // units


def _block_size(params):
    """S of checked parameters: the cells per memory block (1 for a cell without block gates)."""
    return _block_size_of(params["b"], _hidden(params)) if BLOCK_GATES else 1


@functools.lru_cache(maxsize=32)
def _shared_columns(hidden, block_size, gates):
    """For each column of the per-cell layout of ``gates`` (len(gates)·H columns), the column of the compact
    layout it repeats (a block gate's column serves the S cells of its block); and the first per-cell column of
    each compact one."""
    columns = []
    for gate in gates:
        units = np.arange(hidden) // block_size if gate in BLOCK_GATES else np.arange(hidden)
        columns.append(units + (columns[-1][-1] + 1 if columns else 0))
    columns = np.concatenate(columns)
    starts = np.flatnonzero(np.diff(columns, prepend=-1))
    columns.setflags(write=False)
    starts.setflags(write=False)
    return columns, starts


def _per_cell(params, block_size):
    """The parameters with each block gate's column repeated for the S cells of its block: the kernels run the
    per-cell equations, and every cell of a block computes the same gate value."""
    if block_size == 1:
        return params
    hidden = _hidden(params)
    gate_columns, _ = _shared_columns(hidden, block_size, GATES)
    recurrent_columns, _ = _shared_columns(hidden, block_size, RECURRENT_GATES)
    per_cell = dict(params)
    per_cell["W"] = _take_columns(params["W"], gate_columns)
    per_cell["b"] = _take_columns(params["b"], gate_columns)
    per_cell["R"] = _take_columns(params["R"], recurrent_columns)
    if FEEDBACK:
        # Q's rows: a block gate's value is fed back once per block, from the first cell of the block (every cell
        # holds it; the other cells' rows are zero). Its columns: repeated for each cell, like W's.
        target_columns, _ = _shared_columns(hidden, block_size, FEEDBACK_INTO)
        _, first_cells = _shared_columns(hidden, block_size, FEEDBACK)
        columns = _take_columns(params["Q"], target_columns)
        per_cell["Q"] = _place_rows(columns, first_cells, len(FEEDBACK) * hidden)
    return per_cell


def _per_block(grads, hidden, block_size):
    """The gradients of the compact parameters from the per-cell ones: a shared column's gradient is the sum of
    its S cells' (the adjoint of repeating it)."""
    if block_size == 1:
        return grads
    _, gate_starts = _shared_columns(hidden, block_size, GATES)
    _, recurrent_starts = _shared_columns(hidden, block_size, RECURRENT_GATES)
    grads["W"] = _sum_columns(grads["W"], gate_starts)
    grads["b"] = _sum_columns(grads["b"], gate_starts)
    grads["R"] = _sum_columns(grads["R"], recurrent_starts)
    if FEEDBACK:
        _, target_starts = _shared_columns(hidden, block_size, FEEDBACK_INTO)
        _, first_cells = _shared_columns(hidden, block_size, FEEDBACK)
        grads["Q"] = _sum_columns(_take_rows(grads["Q"], first_cells), target_starts)
    return grads


def _run(kernel, *args):
    """Call a compiled kernel. A corrupted numba cache file next to this module (truncated, overwritten) makes
    numba fail while loading it on every run: discard the cache once, with a warning, and compile afresh."""
    try:
        return kernel(*args)
    except Exception as exc:
        if not _raised_by_numba_cache(exc):
            raise
        for jitted in list(globals().values()):
            if isinstance(jitted, numba.core.dispatcher.Dispatcher):
                # An unwritable cache is not written to (numba warns of it itself).
                with contextlib.suppress(OSError):
                    jitted._cache.flush()  # an empty index: every entry is compiled again and saved
        warnings.warn(
            f"{VARIANT}: numba's on-disk cache of this module was unreadable ({type(exc).__name__}: {exc}); "
            "it was discarded and the kernels are compiled again",
            RuntimeWarning,
            stacklevel=3,
        )
        return kernel(*args)


def _raised_by_numba_cache(exc):
    return any(
        frame.f_code.co_filename.replace("\\", "/").endswith("numba/core/caching.py")
        for frame, _ in traceback.walk_tb(exc.__traceback__)
    )


def _check_size(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def _check_array(a, name, ndim, dtype):
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{name}: expected a numpy array, got {type(a).__name__}")
    if a.dtype not in (np.float32, np.float64):
        raise TypeError(f"{name}: expected dtype float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {a.shape}")
    return np.ascontiguousarray(a)


def _check_tape(tape):
    """The kernels index every array of the tape by the sizes of x: refuse a tape whose arrays were replaced."""
    if _tape_unchanged(tape):
        return  # what forward checked and recorded, as it was
    if not _tape_fits(tape):
        raise ValueError("tape: its arrays do not match each other (was the tape modified after forward?)")
    tape._made = _tape_record(tape)


def _tape_unchanged(tape):
    """Whether the tape holds the very objects it recorded when checked, each array with its recorded layout."""
    made, now = tape._made, _tape_record(tape)
    if made is None or now is None or len(now[0]) != len(made[0]):
        return False
    return all(map(operator.is_, now[0], made[0])) and now[1] == made[1]


def _tape_record(tape):
    """Every object the tape holds, and the shape, strides and dtype of each of its arrays; None for a tape whose
    attributes are not even containers of arrays."""
    try:
        arrays = (
            tape.x, *tape.params.values(), *tape.states, tape.gate_seq, *tape.extra, *tape.inputs.values(),
            tape.lengths, *(() if tape.order is None else (tape.order,)),
        )  # fmt: skip
        layout = [(a.shape, a.strides, a.dtype) for a in arrays]
    except (AttributeError, TypeError):
        return None
    # An order set or removed changes the count of arrays: the containers and block_size are the rest to compare.
    return (*arrays, tape.params, tape.states, tape.extra, tape.inputs, tape.block_size), layout


def _tape_fits(tape):
    """Whether the tape's arrays have the shapes, dtypes and layout forward gives them, for its x and params."""
    x, params = tape.x, tape.params
    ok = _is_array(x) and x.ndim == 3 and isinstance(params, dict)
    if ok:
        try:
            _check_params(params, x.shape[2], x.dtype)
        except (TypeError, ValueError):
            ok = False
    if ok:
        steps, batch, _ = x.shape
        hidden = _hidden(params)
        own = (*tape.states, tape.gate_seq, *tape.extra)
        arrays = list(zip(own, forward_shapes(x.shape, params)[2], strict=False))
        inputs_ok = isinstance(tape.inputs, dict) and set(tape.inputs) == set(INPUTS)
        arrays += [(tape.inputs[k], (steps, batch, hidden)) for k in INPUTS] if inputs_ok else []
        arrays.append((tape.lengths, (batch,)))
        ok = (
            inputs_ok
            and len(tape.states) == len(STATE)
            and len(tape.extra) == len(TAPE_EXTRA)
            and all(_is_array(a) and a.shape == shape and _is_contiguous(a) for a, shape in arrays)
        )
        ok = ok and all(a.dtype == x.dtype for a, _ in arrays[:-1]) and tape.lengths.dtype == np.int64
        ok = ok and (tape.order is None or _is_time_order(tape.order, steps, batch))
        # The tape's parameters are per cell (one column per cell): S only says how backward sums them.
        size = tape.block_size
        ok = ok and isinstance(size, int) and size >= 1 and hidden % size == 0 and (size == 1 or bool(BLOCK_GATES))
    return ok


def _is_time_order(order, steps, batch):
    """Whether ``order`` is a (T, B) integer array whose every column is a permutation of the T steps."""
    if not (isinstance(order, np.ndarray) and order.shape == (steps, batch) and order.dtype.kind in "iu"):
        return False
    return bool(np.all(np.sort(order, axis=0) == np.arange(steps)[:, None]))


def _check_lengths(lengths, steps, batch):
    if lengths is None:
        return np.full(batch, steps, dtype=np.int64)
    if not isinstance(lengths, np.ndarray) or lengths.dtype.kind not in "iu":
        got = lengths.dtype if isinstance(lengths, np.ndarray) else type(lengths).__name__
        raise TypeError(f"lengths: expected a numpy array of integers, shape ({batch},), got {got}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths: expected shape ({batch},), one length per batch row, got {lengths.shape}")
    if lengths.min() < 0 or lengths.max() > steps:
        raise ValueError(f"lengths: expected values in [0, {steps}], got min {lengths.min()} and max {lengths.max()}")
    return lengths.astype(np.int64)


def _valid(lengths, steps):
    """(T, B) mask: True where step t is within sequence b's length."""
    return np.arange(steps)[:, None] < lengths[None, :]


def _time_order(lengths, steps, reverse):
    """(T, B) index of the input step that runs at step t, or None for the identity: a reversed sequence runs
    its valid steps last to first; padding stays where it is. The map is its own inverse."""
    if not reverse:
        return None
    t = np.arange(steps)[:, None]
    return np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


_PARAM_NAMES = frozenset(PARAMS)


def _check_params(params, n_in, dtype):
    if not isinstance(params, dict):
        raise TypeError(f"params: expected a dict keyed by {PARAMS}, got {type(params).__name__}")
    if params.keys() != _PARAM_NAMES:
        missing = [k for k in PARAMS if k not in params]
        extra = [k for k in params if k not in PARAMS]
        raise ValueError(f"params: expected keys {PARAMS}; missing {missing}, unexpected {extra}")
    # The hidden size comes from W_p, R, or from b in a cell without R: check that one before reading it.
    heads = proj = None
    if PROJECTED:
        W_p = params["W_p"]
        if not (_is_array(W_p) and W_p.ndim == 2 and W_p.shape[0] > 0 and W_p.shape[1] > 0):
            got = getattr(W_p, "shape", W_p)
            raise ValueError(f"params['W_p']: expected shape (H, P) with H, P >= 1, got {got!r}")
        proj = W_p.shape[1]
    elif RECURRENT_GATES and HEADS is not None:
        R = params["R"]
        if not (_is_array(R) and R.ndim == 3 and R.shape[0] > 0 and R.shape[1] > 0):
            got = getattr(R, "shape", R)
            raise ValueError(
                f"params['R']: expected the block-diagonal shape (heads, H/heads, {len(RECURRENT_GATES)}*H/heads) "
                f"with both sizes >= 1, got {got!r}"
            )
        heads = R.shape[0]
    elif RECURRENT_GATES:
        R = params["R"]
        if not (_is_array(R) and R.ndim == 2 and R.shape[0] > 0):
            got = getattr(R, "shape", R)
            raise ValueError(f"params['R']: expected shape (H, {len(RECURRENT_GATES)}*H) with H >= 1, got {got!r}")
    else:
        b = params["b"]
        if not (_is_array(b) and b.ndim == 1 and b.shape[0] > 0 and b.shape[0] % len(GATES) == 0):
            raise ValueError(
                f"params['b']: expected shape ({len(GATES)}*H,) with H >= 1, got {getattr(b, 'shape', b)!r}"
            )
    hidden = _hidden(params)
    block_size = _block_size_of(params["b"], hidden) if BLOCK_GATES else None
    checked = {}
    for name, shape in _param_shapes(n_in, hidden, heads, proj, block_size):
        value = params[name]
        if not _ready(value, shape, dtype):
            value = _check_array(value, f"params[{name!r}]", len(shape), dtype)
            if value.shape != shape:
                origin = _size_origin(params, hidden, proj, heads, block_size)
                raise ValueError(f"params[{name!r}]: expected shape {shape} ({origin}), got {value.shape}")
        checked[name] = value
    return checked


@functools.lru_cache(maxsize=64)
def _param_shapes(n_in, hidden, heads, proj, block_size):
    """param_shapes's items, kept: the same sizes come with every call."""
    return tuple(param_shapes(n_in, hidden, heads, proj, block_size).items())


def _size_origin(params, hidden, proj, heads, block_size):
    """Where the sizes come from, so that a wrong W_p or compact R is not mistaken for a wrong W."""
    reference = "W_p" if PROJECTED else "R" if RECURRENT_GATES else "b"
    sizes = f"H = {hidden}" + (f", P = {proj}" if proj is not None else "") + (f", heads = {heads}" if heads else "")
    origin = f"{sizes} from params[{reference!r}] of shape {params[reference].shape}"
    if block_size is not None:
        origin += f", S = {block_size} from params['b'] of shape {params['b'].shape}"
    return origin


def _check_state(state, name, batch, widths, like):
    """The states (or their gradients) in STATE order, each (B, its width) of ``like``'s dtype; zeros beside
    ``like`` (x) when None."""
    if state is None:
        return tuple(_zeros((batch, w), like) for w in widths)
    if not isinstance(state, (tuple, list)) or len(state) != len(STATE):
        got = f"{len(state)} items" if isinstance(state, (tuple, list)) else type(state).__name__
        raise ValueError(f"{name}: expected a tuple of {len(STATE)} arrays in the order {STATE}, got {got}")
    checked = []
    for s, value, w in zip(STATE, state, widths, strict=True):
        if not _ready(value, (batch, w), like.dtype):
            value = _check_array(value, f"{name}[{s!r}]", 2, like.dtype)
            if value.shape != (batch, w):
                raise ValueError(f"{name}[{s!r}]: expected shape {(batch, w)}, got {value.shape}")
        checked.append(value)
    return tuple(checked)


def _ready(a, shape, dtype):
    """Whether ``a`` is already what a check would return: a C-contiguous numpy array of this shape and dtype. What
    forward and backward are usually given passes at once; anything else is converted, or refused with its name
    (the checks' names and messages cost microseconds, which online training pays at every sequence)."""
    return type(a) is np.ndarray and a.shape == shape and a.dtype == dtype and a.flags.c_contiguous


# Array operations of the wrappers, one function each, so that a module of another target replaces them for its
# arrays (a CUDA module's runtime redefines them for device arrays below this file).


def _is_array(a):
    return isinstance(a, np.ndarray)


def _is_contiguous(a):
    return a.flags.c_contiguous


def _allocator(like, zeroed):
    """np.zeros or np.empty: what allocates arrays beside ``like``."""
    return np.zeros if zeroed else np.empty


def _empty(shape, like):
    """An array of ``like``'s dtype, beside it, not initialised."""
    return _allocator(like, False)(shape, dtype=like.dtype)


def _zeros(shape, like):
    return _allocator(like, True)(shape, dtype=like.dtype)


def _copy_of(a):
    return a.copy()


def _reorder(a, order):
    """(T, B, ...) ``a`` with step t of row b taken from step order[t, b]."""
    return np.take_along_axis(a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=0)


def _zero_past(a, lengths):
    """(T, B, ...) ``a`` with every step past its row's length set to zero (a new array)."""
    valid = _valid(lengths, a.shape[0]).reshape(a.shape[:2] + (1,) * (a.ndim - 2))
    return np.where(valid, a, a.dtype.type(0))


# The array methods, not np.take or fancy indexing: their dispatch costs 1-2 us on these tiny arrays, the methods
# 0.1-0.3 (it adds up in online training).


def _take_columns(a, columns):
    """The columns ``columns`` of a 1-D or 2-D array (last axis)."""
    return a.take(columns) if a.ndim == 1 else a.take(columns, axis=1)


def _sum_columns(a, starts):
    """Sums of the runs of columns (last axis) that begin at ``starts``."""
    rows = a.reshape(1, a.shape[0]) if a.ndim == 1 else a
    out = np.empty((rows.shape[0], len(starts)), dtype=a.dtype)
    _sum_column_runs(rows, starts, out)
    return out.reshape(len(starts)) if a.ndim == 1 else out


@_jit
def _sum_column_runs(a, starts, out):
    # out[r, k] = a[r, starts[k]] + ... in order, as np.add.reduceat adds them (a tenth of its time here).
    for r in range(a.shape[0]):
        for k in range(starts.shape[0]):
            end = starts[k + 1] if k + 1 < starts.shape[0] else a.shape[1]
            total = a[r, starts[k]]
            for c in range(starts[k] + 1, end):
                total += a[r, c]
            out[r, k] = total


def _take_rows(a, rows):
    """The rows ``rows`` of a 2-D array."""
    return a.take(rows, axis=0)


def _place_rows(a, rows, count):
    """A (count, a's columns) array of zeros but for row rows[k], which is a[k]."""
    out = np.zeros((count, a.shape[1]), dtype=a.dtype)
    _copy_rows_to(a, rows, out)
    return out


@_jit
def _copy_rows_to(a, rows, out):
    # out[rows[k]] = a[k] (a third of the time of the same assignment by fancy indexing here).
    for k in range(rows.shape[0]):
        for c in range(a.shape[1]):
            out[rows[k], c] = a[k, c]
