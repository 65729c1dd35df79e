"""Experiment 4 of Hochreiter & Schmidhuber (1997), the adding problem (§5.4).

Each sequence element is a pair (value in [-1, 1], marker). Sequences have random lengths T … T + T/10. One of
the first ten pairs is marked (marker 1; its value is X1), then one of the first T/2 − 1 pairs not yet marked
(X2). The other markers are 0, except those of the first and the last pair, which are −1; if the first pair is
a marked one, its value is set to 0. The target at the end is 0.5 + (X1 + X2)/4; an absolute error above 0.04 is a
wrong prediction. Training stops when the mean squared error over the last 2000 sequences is below 0.01 and
none of them was wrong. The paper's network: 2 memory blocks of 2 cells, input-gate biases −3 and −6, weights
in [−0.1, 0.1], learning rate 0.5, online; Table 7, T = 100: 74,000 sequences to success on average, 1 wrong
prediction of 2560 test sequences.

    python experiments/adding_problem.py --T 100 --seed 0 [--variant lstm_1997_net|lstm_1997] [--block-size 2]
        [--max-sequences N] [--probe-every N --curve FILE]

The last line printed is one JSON object: variant, T, seed, sequences_to_success (null if not reached),
test_wrong_of_2560, wall_s, and the run's settings.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sequence_trainer import (
    OUTPUTS,
    Batch,
    Network,
    Task,
    count,
    experiment_parser,
    integer_at_least,
    run_experiment,
)

import lstmgen

TOLERANCE = 0.04
#: The paper's input-gate biases, one per memory block.
INPUT_GATE_BIASES = (-3.0, -6.0)


#: The shortest sequence the task allows: its second marked pair lies among the first T/2 - 1 steps.
MIN_T = 20


def adding_batch(rng: np.random.Generator, T: int, n: int) -> Batch:
    """n sequences, time-major and zero-padded: x (T + T/10, n, 2) of pairs (value, marker), lengths (n,) in
    T … T + T/10, targets (n, 1) = 0.5 + (X1 + X2)/4."""
    if T < MIN_T:
        raise ValueError(f"T: expected at least {MIN_T} (the second marked pair is among the first T/2 - 1), got {T}")
    rows = np.arange(n)
    lengths = rng.integers(T, T + T // 10 + 1, size=n)
    values = rng.uniform(-1.0, 1.0, size=(T + T // 10, n))
    markers = np.zeros_like(values)
    markers[0] = -1.0
    markers[lengths - 1, rows] = -1.0
    first = rng.integers(0, 10, size=n)
    # Uniform over the first T/2 - 1 pairs other than the first marked one.
    candidates = T // 2 - 1
    second = rng.integers(0, candidates - (first < candidates), size=n)
    second += (first < candidates) & (second >= first)
    markers[first, rows] = markers[second, rows] = 1.0
    # The paper's case of a marked first pair: "we set X1 to zero", the value itself, so that the input still says
    # what the target adds (whichever of the two draws marked it).
    values[0, (first == 0) | (second == 0)] = 0.0
    targets = 0.5 + (values[first, rows] + values[second, rows]) / 4.0
    x = np.stack([values, markers], axis=-1)
    x[np.arange(len(x))[:, None] >= lengths] = 0.0
    return x, lengths, targets[:, None]


def task(T: int) -> Task:
    def sample(rng: np.random.Generator, batch: int) -> Batch:
        return adding_batch(rng, T, batch)

    return Task(
        name=f"adding T={T}",
        n_in=2,
        n_out=1,
        sample=sample,
        tolerance=TOLERANCE,
        error_goal=0.01,
        test_breakdown=_wrong_by_target,
    )


def _wrong_by_target(out: np.ndarray, targets: np.ndarray, correct: np.ndarray) -> dict:
    """The test's wrong predictions and all its sequences per tenth of the target range [0, 1]."""
    tenth = np.minimum((targets[:, 0] * 10).astype(int), 9)
    return {
        "test_wrong_by_target_tenth": np.bincount(tenth[~correct], minlength=10).tolist(),
        "test_by_target_tenth": np.bincount(tenth, minlength=10).tolist(),
    }


#: The probe's sequences: drawn once from their own seed, the same for every run and every probe of a run.
PROBE_SEED, PROBE_SIZE = 12345, 512


def storage_probe(T: int) -> Callable[[Network], dict]:
    """What a network stores, measured on fixed probe sequences (``--probe-every``): per cell the mean |s_T| of
    its cell state at the sequence end and the mean |g| of its cell input over all steps; per memory block the
    input gate's mean activation at the marked steps and at all steps, and its bias; the output's squared error.
    The cell must have an input gate i and a cell input g (the 1997 cells)."""
    x, lengths, targets = adding_batch(np.random.default_rng(PROBE_SEED), T, PROBE_SIZE)
    valid = np.arange(len(x))[:, None] < lengths[None, :]
    marked = x[:, :, 1] == 1.0

    def probe(network: Network) -> dict:
        cell = network.cell
        _, (h, c), tape = cell.forward(x, network.params, lengths=lengths)
        gate_values = cell.tape_arrays(tape)[len(cell.STATE)]  # (T, B, G*H), a block gate repeated per cell
        hidden = h.shape[1]
        i_at = cell.GATES.index("i") * hidden
        g_at = cell.GATES.index("g") * hidden
        per_block = network.block_size if "i" in getattr(cell, "BLOCK_GATES", ()) else 1
        gate_i = gate_values[:, :, i_at : i_at + hidden : per_block]  # one column per input-gate unit
        out = OUTPUTS[network.output][0](h @ network.V + network.c)
        return {
            "mse": round(float(((out - targets) ** 2).mean()), 5),
            "cell_state_abs": np.round(np.abs(c).mean(axis=0), 3).tolist(),
            "cell_input_abs": np.round(np.abs(gate_values[:, :, g_at : g_at + hidden][valid]).mean(axis=0), 3).tolist(),
            "input_gate_marked": np.round(gate_i[marked].mean(axis=0), 4).tolist(),
            "input_gate_all": np.round(gate_i[valid].mean(axis=0), 4).tolist(),
            "input_gate_bias": np.round(network.params["b"][network.gate_units("i")], 3).tolist(),
        }

    return probe


def main(argv: list[str] | None = None) -> dict:
    parser = experiment_parser(__doc__.split("\n\n")[0], max_sequences=300_000)
    parser.add_argument(
        "--T",
        type=integer_at_least(MIN_T),
        default=100,
        help=f"minimal sequence length (default 100, at least {MIN_T})",
    )
    parser.add_argument(
        "--probe-every",
        type=count,
        default=0,
        metavar="N",
        help="every N sequences, measure what the cells store on fixed probe sequences (written to --curve)",
    )
    args = parser.parse_args(argv)
    probe = None
    if args.probe_every:
        if not args.curve:
            parser.error("argument --probe-every: its records go to the --curve file; give --curve")
        if not {"i", "g"} <= {gate.name for gate in lstmgen.get_variant(args.variant).gates}:
            parser.error(
                f"argument --probe-every: needs a cell with an input gate i and a cell input g, not {args.variant}"
            )
        probe = storage_probe(args.T)
    return run_experiment(args, task(args.T), args.T, INPUT_GATE_BIASES, probe, args.probe_every)


if __name__ == "__main__":
    main()
