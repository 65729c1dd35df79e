"""A small trainer for the 1997 paper's experiments, on lstmgen's public API only.

A network is one recurrent layer (a module from ``lstmgen.load``) and a layer of logistic output units that
reads the cells' outputs h at the end of each sequence; the loss is the squared error there, as in Hochreiter &
Schmidhuber (1997). Training is plain SGD, online (one sequence per update, the paper's setting) or on
mini-batches; everything is drawn from one seed, so a run is deterministic.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import lstmgen

#: A batch: x (T, B, I), lengths (B,), targets (B, outputs).
Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


#: The 1997 paper's cells: they train with its truncated rule.
CELLS_OF_1997 = ("lstm_1997_net", "lstm_1997")

#: The initial weights' range, [-0.1, 0.1]: an assumption (the text at hand does not give it for these tasks).
WEIGHT_RANGE = 0.1


def default_gradient(variant: str) -> str:
    """The 1997 cells train with the paper's truncated rule; every other cell with the full gradient."""
    return "truncated" if variant in CELLS_OF_1997 else "full"


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


#: The output units: name -> (f(z), the factor d_z / (out - target), written with out = f(z); None: 1). The paper's
#: are logistic units trained on the squared error (the factor is f'). The controls ask what slows the end of
#: training: linear units (the same loss, no flat ends), and logistic units trained on the cross-entropy, whose
#: error signal out - target is not scaled down by f' where the targets are near 0 or 1.
OUTPUTS = {
    "logistic": (_sigmoid, lambda out: out * (1.0 - out)),
    "linear": (lambda z: z, None),
    "logistic-ce": (_sigmoid, None),
}


@dataclass
class Network:
    """One recurrent layer and a layer of output units read at the end of every sequence.

    Attributes:
        cell: the generated module (``forward``, ``backward``, ``init_params``, ``GATES``).
        params: the cell's parameters, keyed by ``cell.PARAMS``.
        V: (H, outputs) output weights; c: (outputs,) output biases.
        output: the output units' squashing, a key of ``OUTPUTS`` (the paper's: logistic).
        block_size: S cells per memory block (1: a gate per cell).
    """

    cell: object
    params: dict[str, np.ndarray]
    V: np.ndarray
    c: np.ndarray
    output: str = "logistic"
    block_size: int = 1

    def gate_units(self, gate: str) -> slice:
        """The columns of a gate's units in b (and W, R): H wide, H/S for a gate the memory blocks share."""
        hidden = self.V.shape[0]
        return _gate_units(self.cell, gate, hidden, self.block_size)

    @classmethod
    def build(
        cls,
        variant: str,
        n_in: int,
        hidden: int,
        n_out: int,
        rng: np.random.Generator,
        *,
        gradient: str | None = None,
        weight_range: float = WEIGHT_RANGE,
        gate_biases: dict[str, Sequence[float]] | None = None,
        block_size: int = 1,
        output: str = "logistic",
    ) -> Network:
        """Every weight uniform in [-weight_range, weight_range]; ``gate_biases`` sets the bias of a gate's units
        (gate name -> values spread over the units in contiguous groups: (-3, -6) over 4 units is -3, -3, -6, -6,
        the paper's input-gate biases of its two memory blocks). ``block_size``: S cells per memory block, which
        share one unit of each of the cell's BLOCK_GATES (1: a gate per cell). ``output``: a key of ``OUTPUTS``."""
        if output not in OUTPUTS:
            raise ValueError(f"output: expected one of {', '.join(OUTPUTS)}, got {output!r}")
        cell = lstmgen.load(variant, gradient=gradient or default_gradient(variant))
        shapes = cell.param_shapes(n_in, hidden, **({"block_size": block_size} if block_size != 1 else {}))
        params = {name: rng.uniform(-weight_range, weight_range, size=shape) for name, shape in shapes.items()}
        for gate, values in (gate_biases or {}).items():
            if gate not in cell.GATES:
                raise ValueError(f"gate_biases: {variant} has no gate {gate!r} (its gates: {cell.GATES})")
            units = _gate_units(cell, gate, hidden, block_size)
            width = units.stop - units.start
            groups = np.arange(width) * len(values) // width
            params["b"][units] = np.asarray(values, dtype=float)[groups]
        V = rng.uniform(-weight_range, weight_range, size=(hidden, n_out))
        c = rng.uniform(-weight_range, weight_range, size=n_out)
        return cls(cell, params, V, c, output, block_size)

    def predict(self, x: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """(B, outputs): the output units at the end of each sequence of x (T, B, I)."""
        _, final, _ = self.cell.forward(x, self.params, lengths=lengths)
        return OUTPUTS[self.output][0](final[0] @ self.V + self.c)

    def train_step(self, batch: Batch, lr: float) -> np.ndarray:
        """One SGD update on the mean over the batch of ½‖out − target‖² (for ``logistic-ce``: of the cross-entropy
        of each output); returns out (B, outputs) before it."""
        x, lengths, targets = batch
        # Sequences that all fill x need no lengths (online training: always), which saves the kernel the masking.
        padded = len(lengths) > 1 and lengths.min() < len(x)
        y, final, tape = self.cell.forward(x, self.params, lengths=lengths if padded else None)
        h_end = final[0]
        squash, slope = OUTPUTS[self.output]
        out = squash(h_end @ self.V + self.c)
        d_z = out - targets if slope is None else (out - targets) * slope(out)
        d_z /= len(targets)
        dstate = (d_z @ self.V.T, *(np.zeros_like(s) for s in final[1:]))
        _, grads, _ = self.cell.backward(np.zeros_like(y), tape, dstate)
        self.V -= lr * (h_end.T @ d_z)
        self.c -= lr * d_z.sum(axis=0)
        for name, g in grads.items():
            self.params[name] -= lr * g
        return out


def _gate_units(cell: object, gate: str, hidden: int, block_size: int) -> slice:
    """The columns of ``gate``'s units in the cell's b: each gate's block is H wide, H/S for a block gate."""
    widths = [hidden // block_size if g in getattr(cell, "BLOCK_GATES", ()) else hidden for g in cell.GATES]
    k = cell.GATES.index(gate)
    return slice(sum(widths[:k]), sum(widths[: k + 1]))


@dataclass(frozen=True)
class Task:
    """What an experiment defines: its data, and when an output is right.

    ``sample(rng, n)`` draws n sequences at once (a batch: time-major, zero-padded). An output is correct when
    every unit is within ``tolerance`` of its target; training succeeds once the mean squared error over the last
    ``window`` sequences is below ``error_goal`` and all of them are correct (the paper's rule).
    """

    name: str
    n_in: int
    n_out: int
    sample: Callable[[np.random.Generator, int], Batch]
    tolerance: float
    error_goal: float
    window: int = 2000
    #: Where the test's wrong outputs are, from (out, targets, correct): fields added to the run's summary.
    test_breakdown: Callable[[np.ndarray, np.ndarray, np.ndarray], dict] | None = None

    def score(self, out: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) the squared error averaged over the output units, and (B,) bool: every unit within tolerance."""
        miss = out - targets
        return (miss * miss).sum(axis=1) / miss.shape[1], np.abs(miss).max(axis=1) < self.tolerance


@dataclass
class RunResult:
    sequences_to_success: int | None
    sequences_seen: int
    test_wrong: int
    test_size: int
    wall_s: float
    train_s: float
    curve: list[tuple[int, float]] = field(default_factory=list)
    breakdown: dict = field(default_factory=dict)
    stopped: bool = False  # by SIGINT or SIGTERM, before success or the budget
    #: (sequences seen, what the run's probe measured then): the network's state through training.
    probes: list[tuple[int, dict]] = field(default_factory=list)


class _Window:
    """The stopping rule's window: the errors and correctness of the last ``size`` sequences, kept as running
    totals (O(1) per sequence)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.errors: deque[float] = deque()
        self.wrongs: deque[bool] = deque()
        self.error_sum, self.wrong = 0.0, 0

    def __len__(self) -> int:
        return len(self.errors)

    def add(self, error: float, correct: bool) -> None:
        self.errors.append(error)
        self.wrongs.append(not correct)
        self.error_sum += error
        self.wrong += not correct
        if len(self.errors) > self.size:
            self.error_sum -= self.errors.popleft()
            self.wrong -= self.wrongs.popleft()

    @property
    def mean_error(self) -> float:
        return self.error_sum / max(len(self.errors), 1)

    def met(self, error_goal: float) -> bool:
        """Full, every sequence in it correct, and its mean error below the goal."""
        return len(self.errors) == self.size and self.wrong == 0 and self.error_sum / self.size < error_goal


class _StopRequest:
    """Set by SIGINT or SIGTERM while ``train`` runs: training stops after the current update, and the run still
    tests and reports (a long run cut short says how far it got)."""

    def __init__(self) -> None:
        self.requested = False

    def __enter__(self) -> _StopRequest:
        self.saved = {sig: signal.signal(sig, self._request) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

    def _request(self, signum, frame) -> None:
        self.requested = True


def train(
    task: Task,
    network: Network,
    rng: np.random.Generator,
    *,
    lr: float,
    max_sequences: int,
    batch: int = 1,
    test_size: int = 2560,
    log_every: int = 0,
    curve_every: int = 500,
    probe: Callable[[Network], dict] | None = None,
    probe_every: int = 0,
) -> RunResult:
    """Train until the task's success rule holds or ``max_sequences`` have been seen; then count the wrong
    outputs on ``test_size`` fresh sequences. ``curve`` holds (sequences seen, mean error of the last
    ``curve_every``). A progress line goes to stderr every ``log_every`` sequences (0: none). ``probe(network)``
    runs before training, every ``probe_every`` sequences and at the end (it must not draw from ``rng``, so that
    probing leaves the run unchanged)."""
    start = time.perf_counter()
    window = _Window(task.window)
    curve: list[tuple[int, float]] = []
    probes: list[tuple[int, dict]] = [(0, probe(network))] if probe else []
    recent: list[float] = []
    seen, success = 0, None
    batches = _batches(task, rng, batch)
    with _StopRequest() as stop:
        while seen < max_sequences and success is None and not stop.requested:
            data = next(batches)
            out = network.train_step(data, lr)
            errors, correct = task.score(out, data[2])
            for e, k in zip(errors.tolist(), correct.tolist(), strict=True):
                seen += 1
                window.add(e, k)
                recent.append(e)
                if len(recent) == curve_every:
                    curve.append((seen, float(np.mean(recent))))
                    recent.clear()
                if probe and probe_every and seen % probe_every == 0:
                    probes.append((seen, probe(network)))
                if log_every and seen % log_every == 0:
                    print(
                        f"{task.name}: {seen} sequences, mean error {window.mean_error:.4f} over the last "
                        f"{len(window)}, {window.wrong} wrong",
                        file=sys.stderr,
                    )
                if success is None and window.met(task.error_goal):
                    success = seen
    train_s = time.perf_counter() - start
    if probe and probes[-1][0] != seen:
        probes.append((seen, probe(network)))
    x, lengths, targets = task.sample(rng, test_size)
    out = network.predict(x, lengths)
    _, correct = task.score(out, targets)
    breakdown = task.test_breakdown(out, targets, correct) if task.test_breakdown else {}
    wall_s = time.perf_counter() - start
    return RunResult(
        success, seen, int(np.sum(~correct)), test_size, wall_s, train_s, curve, breakdown, stop.requested, probes
    )


def _batches(task: Task, rng: np.random.Generator, batch: int, draw: int = 1024):
    """Batches of ``batch`` sequences, drawn about ``draw`` at a time (one vectorised draw, not one per
    sequence), each cut to its longest sequence."""
    per_draw = batch * max(1, draw // batch)
    while True:
        x, lengths, targets = task.sample(rng, per_draw)
        longest = lengths.reshape(-1, batch).max(axis=1).tolist()
        # Batch-major, so that a batch is one block of memory: time-major with B = 1, contiguous as forward wants it.
        by_row = np.ascontiguousarray(x.transpose(1, 0, 2))
        for n, k in enumerate(range(0, per_draw, batch)):
            part = by_row[k : k + batch, : longest[n]]
            yield part.transpose(1, 0, 2), lengths[k : k + batch], targets[k : k + batch]


def report(fields: dict, result: RunResult, curve_path: str | None = None) -> dict:
    """The run's summary (the experiment's fields, then the result's); the curve goes to ``curve_path`` as JSON."""
    summary = {
        **fields,
        "sequences_to_success": result.sequences_to_success,
        "sequences_seen": result.sequences_seen,
        f"test_wrong_of_{result.test_size}": result.test_wrong,
        "wall_s": round(result.wall_s, 3),
        "us_per_sequence": round(1e6 * result.train_s / max(result.sequences_seen, 1), 1),
        **({"stopped_early": True} if result.stopped else {}),
        **result.breakdown,
    }
    if curve_path:
        probes = {"probes": [{"seen": seen, **values} for seen, values in result.probes]} if result.probes else {}
        with open(curve_path, "w") as f:
            json.dump({**summary, "curve": result.curve, **probes}, f)
    return summary


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    return _integer(text, 1, "a positive integer")


def count(text: str) -> int:
    """An argparse type: an integer >= 0."""
    return _integer(text, 0, "an integer >= 0")


def integer_at_least(least: int) -> Callable[[str], int]:
    """An argparse type: an integer >= least."""
    return lambda text: _integer(text, least, f"an integer >= {least}")


def _integer(text: str, least: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def gate_bias(text: str) -> tuple[str, tuple[float, ...]]:
    """An argparse type: GATE=V1,V2,... (one value per memory block, or one for all), e.g. o=-2,-4."""
    gate, sep, values = text.partition("=")
    try:
        numbers = tuple(float(v) for v in values.split(","))
    except ValueError:
        numbers = ()
    if not (sep and gate.isidentifier() and numbers and all(math.isfinite(v) for v in numbers)):
        raise argparse.ArgumentTypeError(f"expected GATE=V1,V2,... with finite numbers, such as o=-2,-4; got {text!r}")
    return gate, numbers


def positive_float(text: str) -> float:
    """An argparse type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return value


class ExperimentParser(argparse.ArgumentParser):
    """Checks what one flag's type cannot (the variant, the block size against --cells, where --curve goes)
    before any training, as one line naming the flag and exit status 2."""

    def parse_args(self, args=None, namespace=None):  # argparse's own signature
        parsed = super().parse_args(args, namespace)
        if parsed.variant not in lstmgen.VARIANTS:
            self.error(f"argument --variant: expected one of {', '.join(lstmgen.VARIANTS)}, got {parsed.variant!r}")
        blocks = lstmgen.get_variant(parsed.variant).block_gates
        if parsed.block_size is None and parsed.cells % default_block_size(parsed.variant):
            self.error(
                f"argument --cells: expected a multiple of {default_block_size(parsed.variant)} (the default block "
                f"size of {parsed.variant}), got {parsed.cells}"
            )
        if parsed.block_size is not None and (
            parsed.cells % parsed.block_size or (parsed.block_size > 1 and not blocks)
        ):
            self.error(
                f"argument --block-size: expected a divisor of --cells {parsed.cells}"
                f"{'' if blocks else ' (1: ' + parsed.variant + ' has no block gates)'}, got {parsed.block_size}"
            )
        gates = [g.name for g in lstmgen.get_variant(parsed.variant).gates]
        for gate, _ in parsed.gate_bias:
            if gate not in gates:
                self.error(
                    f"argument --gate-bias: expected a gate of {parsed.variant} ({', '.join(gates)}), got {gate!r}"
                )
        if parsed.curve is not None:
            curve = Path(parsed.curve)
            if curve.is_dir() or not curve.parent.is_dir():
                self.error(f"argument --curve: expected a file in an existing directory, got {parsed.curve!r}")
        return parsed


#: The paper's learning rate for the adding problem and 6a (6b passes its own).
DEFAULT_LR = 0.5


def experiment_parser(
    description: str, max_sequences: int, *, cells: int = 4, lr: float = DEFAULT_LR
) -> argparse.ArgumentParser:
    """The options every experiment takes, with the experiment's defaults (the experiment adds its own)."""
    parser = ExperimentParser(description=description)
    parser.add_argument("--seed", type=count, default=0)
    parser.add_argument(
        "--variant",
        default="lstm_1997_net",
        help="a built-in cell (default lstm_1997_net, the paper's network: gate activations feed every gate and cell "
        "input; lstm_1997 is the same cell whose gates and cell inputs read only the cell outputs)",
    )
    parser.add_argument("--gradient", choices=("full", "truncated"), help="default: truncated for the 1997 cells")
    parser.add_argument(
        "--cells", type=positive_int, default=cells, help=f"hidden units H (default {cells}, the paper's blocks of 2)"
    )
    parser.add_argument(
        "--block-size",
        type=positive_int,
        help="cells per memory block, sharing the cell's block gates (default: 2, the paper's, for a cell with "
        "block gates such as lstm_1997; 1 for the others)",
    )
    parser.add_argument("--lr", type=positive_float, default=lr, help=f"learning rate (default {lr})")
    parser.add_argument(
        "--gate-bias",
        type=gate_bias,
        action="append",
        default=[],
        metavar="GATE=V1,V2",
        help="initial biases of a gate's units, one value per memory block (repeatable; replaces the experiment's "
        "input-gate biases for i)",
    )
    parser.add_argument(
        "--output", choices=tuple(OUTPUTS), default="logistic", help="the output units (default: the paper's logistic)"
    )
    parser.add_argument(
        "--weight-range",
        type=positive_float,
        default=WEIGHT_RANGE,
        metavar="A",
        help=f"initial weights uniform in [-A, A], but the gate biases given (default {WEIGHT_RANGE}, an assumption)",
    )
    parser.add_argument("--batch", type=positive_int, default=1, help="sequences per update (default 1: online)")
    parser.add_argument("--max-sequences", type=positive_int, default=max_sequences)
    parser.add_argument("--test-size", type=positive_int, default=2560)
    parser.add_argument("--curve", help="write the learning curve (JSON) here")
    parser.add_argument("--log-every", type=count, default=10_000, help="progress line every N sequences (0: none)")
    return parser


def default_block_size(variant: str) -> int:
    """The paper's 2 cells per block for a cell with block gates (lstm_1997), 1 for the others."""
    return 2 if lstmgen.get_variant(variant).block_gates else 1


def run_experiment(
    args: argparse.Namespace,
    task: Task,
    T: int,
    input_gate_biases: tuple[float, ...],
    probe: Callable[[Network], dict] | None = None,
    probe_every: int = 0,
) -> dict:
    """Build the network, train it, print the summary as one JSON line and return it. ``input_gate_biases``: one
    per memory block of the paper, given to the input gate of a cell that has one; ``probe``: see :func:`train`
    (its records go to the curve file)."""
    rng = np.random.default_rng(args.seed)
    gradient = args.gradient or default_gradient(args.variant)
    biases = {"i": input_gate_biases} if args.variant.startswith("lstm") else {}
    biases.update(args.gate_bias)
    # The spec says whether the cell has block gates (loading the module here would generate it a second time).
    block_size = args.block_size if args.block_size is not None else default_block_size(args.variant)
    network = Network.build(
        args.variant,
        task.n_in,
        args.cells,
        task.n_out,
        rng,
        gradient=gradient,
        weight_range=args.weight_range,
        gate_biases=biases,
        block_size=block_size,
        output=args.output,
    )
    result = train(
        task,
        network,
        rng,
        lr=args.lr,
        max_sequences=args.max_sequences,
        batch=args.batch,
        test_size=args.test_size,
        log_every=args.log_every,
        probe=probe,
        probe_every=probe_every,
    )
    fields = {"task": task.name, "variant": args.variant, "gradient": gradient, "T": T, "seed": args.seed}
    fields["cells"] = args.cells
    settings = {"block_size": block_size, "lr": args.lr, "batch": args.batch, "output": args.output}
    settings |= {"weight_range": args.weight_range}
    settings["gate_biases"] = {gate: list(values) for gate, values in biases.items()}
    summary = report({**fields, **settings}, result, args.curve)
    print(json.dumps(summary))
    return summary
