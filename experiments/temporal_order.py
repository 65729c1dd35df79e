"""Experiment 6 of Hochreiter & Schmidhuber (1997), temporal order (§5.6): 6a with two relevant symbols, 6b with
three.

Inputs are one-hot over 8 symbols (E, B, a, b, c, d, X, Y). A sequence starts with E, ends with B and is
otherwise random symbols of {a, b, c, d}, except at the relevant positions (1-based as in the paper), which hold
X or Y; the length is 100…110. 6a: positions t1 in 10…20 and t2 in 50…60; the class (4 one-hot outputs) is the
order: XX → Q, XY → R, YX → S, YY → U. 6b: t1 in 10…20, t2 in 33…43, t3 in 66…76; 8 classes, XXX → Q, XXY → R,
XYX → S, XYY → U, YXX → V, YXY → A, YYX → B, YYY → C. A sequence is correct when every output's absolute error at
its end is below 0.3; training stops when the mean error over the last 2000 sequences is below 0.1 and all of
them were correct. The paper's networks: 2 memory blocks of 2 cells and 4 outputs (6a; 156 weights), 3 blocks of
2 and 8 outputs (6b; 308 weights); Table 9 reports 31,390 (6a) and 571,100 (6b) sequences to success.

The learning rates, 0.5 (6a) and 0.1 (6b), and the networks are the NIPS 1996 version's (its experiments 2a and
2b). Assumptions (the journal paper's text was not at hand; each is a flag): 6b's positions, input-gate biases
−2, −4 (6a) and −2, −4, −6 (6b), weights in [−0.1, 0.1], the error being the mean over the outputs of the squared
error.

    python experiments/temporal_order.py --seed 0 [--task 6a|6b] [--variant lstm_1997_net|lstm_1997]
        [--max-sequences N]

The last line printed is one JSON object (variant, T, seed, sequences_to_success, test_wrong_of_2560, wall_s...).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from sequence_trainer import Task, experiment_parser, run_experiment

SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")
TOLERANCE = 0.3
LONGEST = 110


@dataclass(frozen=True)
class OrderTask:
    """One of the paper's two tasks: where the relevant symbols go, the class names (X = 0, Y = 1 read as binary
    digits, first symbol most significant) and the paper's network and settings."""

    positions: tuple[tuple[int, int], ...]  # 1-based, inclusive
    classes: tuple[str, ...]
    cells: int
    lr: float
    input_gate_biases: tuple[float, ...]
    max_sequences: int


TASKS = {
    "6a": OrderTask(((10, 20), (50, 60)), ("Q", "R", "S", "U"), 4, 0.5, (-2.0, -4.0), 200_000),
    "6b": OrderTask(
        ((10, 20), (33, 43), (66, 76)), ("Q", "R", "S", "U", "V", "A", "B", "C"), 6, 0.1, (-2.0, -4.0, -6.0), 2_000_000
    ),
}


def temporal_order_batch(
    rng: np.random.Generator, n: int, variant: str = "6a"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n sequences, time-major and zero-padded: x (110, n, 8) one-hot, lengths (n,) in 100 … 110, and the class
    of each, an index into TASKS[variant].classes (n,)."""
    positions = TASKS[variant].positions
    rows = np.arange(n)
    lengths = rng.integers(100, LONGEST + 1, size=n)
    symbols = rng.integers(2, 6, size=(LONGEST, n))  # a, b, c, d
    symbols[0] = 0  # E
    symbols[lengths - 1, rows] = 1  # B
    classes = np.zeros(n, dtype=np.int64)
    for low, high in positions:
        t = rng.integers(low, high + 1, size=n) - 1
        which = rng.integers(0, 2, size=n)  # 0: X, 1: Y
        symbols[t, rows] = 6 + which
        classes = 2 * classes + which
    x = np.eye(len(SYMBOLS))[symbols]
    x[np.arange(LONGEST)[:, None] >= lengths] = 0.0
    return x, lengths, classes


def task(variant: str = "6a") -> Task:
    n_classes = len(TASKS[variant].classes)

    def sample(rng: np.random.Generator, batch: int):
        x, lengths, classes = temporal_order_batch(rng, batch, variant)
        return x, lengths, np.eye(n_classes)[classes]

    return Task(
        name=f"temporal order {variant}",
        n_in=len(SYMBOLS),
        n_out=n_classes,
        sample=sample,
        tolerance=TOLERANCE,
        error_goal=0.1,
    )


def main(argv: list[str] | None = None) -> dict:
    # The task decides the defaults of the other flags (the paper's network and learning rate for it).
    which = argparse.ArgumentParser(add_help=False)
    which.add_argument("--task", choices=tuple(TASKS), default="6a")
    chosen = TASKS[which.parse_known_args(argv)[0].task]
    parser = experiment_parser(
        __doc__.split("\n\n")[0], max_sequences=chosen.max_sequences, cells=chosen.cells, lr=chosen.lr
    )
    parser.add_argument("--task", choices=tuple(TASKS), default="6a", help="6a: two relevant symbols; 6b: three")
    args = parser.parse_args(argv)
    return run_experiment(args, task(args.task), 100, chosen.input_gate_biases)


if __name__ == "__main__":
    main()
