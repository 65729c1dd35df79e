"""Experiment 6a of Hochreiter & Schmidhuber (1997), temporal order with two relevant symbols (§5.6).

Inputs are one-hot over 8 symbols (E, B, a, b, c, d, X, Y). A sequence starts with E, ends with B and is
otherwise random symbols of {a, b, c, d}, except at positions t1 (10…20) and t2 (50…60, 1-based as in the
paper), which hold X or Y; the length is 100…110. The class (4 one-hot outputs) is the order: XX → Q, XY → R,
YX → S, YY → U. A sequence is correct when every output's absolute error at its end is below 0.3; training
stops when the mean error over the last 2000 sequences is below 0.1 and all of them were correct. The paper's
network: 2 memory blocks of 2 cells, 4 output units; Table 9 reports about 31,000 sequences to success.

The learning rate 0.5 is the NIPS 1996 version's (its experiment 2a). Assumptions (the journal paper's text was
not at hand; each is a flag): input-gate biases −2 and −4, weights in [−0.1, 0.1], the error being the mean over
the outputs of the squared error.

    python experiments/temporal_order.py --seed 0 [--variant lstm_1997_net|lstm_1997] [--max-sequences N]

The last line printed is one JSON object (variant, T, seed, sequences_to_success, test_wrong_of_2560, wall_s...).
"""

from __future__ import annotations

import numpy as np
from sequence_trainer import Task, experiment_parser, run_experiment

SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")
CLASSES = ("Q", "R", "S", "U")  # XX, XY, YX, YY
TOLERANCE = 0.3


def temporal_order_batch(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n sequences, time-major and zero-padded: x (110, n, 8) one-hot, lengths (n,) in 100 … 110, and the class
    of each, an index into CLASSES (n,)."""
    rows = np.arange(n)
    lengths = rng.integers(100, 111, size=n)
    symbols = rng.integers(2, 6, size=(110, n))  # a, b, c, d
    symbols[0] = 0  # E
    symbols[lengths - 1, rows] = 1  # B
    t1, t2 = rng.integers(10, 21, size=n) - 1, rng.integers(50, 61, size=n) - 1
    first, second = rng.integers(0, 2, size=(2, n))  # 0: X, 1: Y
    symbols[t1, rows], symbols[t2, rows] = 6 + first, 6 + second
    x = np.eye(len(SYMBOLS))[symbols]
    x[np.arange(110)[:, None] >= lengths] = 0.0
    return x, lengths, 2 * first + second


def task() -> Task:
    def sample(rng: np.random.Generator, batch: int):
        x, lengths, classes = temporal_order_batch(rng, batch)
        return x, lengths, np.eye(len(CLASSES))[classes]

    return Task(
        name="temporal order 6a",
        n_in=len(SYMBOLS),
        n_out=len(CLASSES),
        sample=sample,
        correct=lambda out, t: np.abs(out - t).max(axis=1) < TOLERANCE,
        error=lambda out, t: ((out - t) ** 2).mean(axis=1),
        error_goal=0.1,
    )


def main(argv: list[str] | None = None) -> dict:
    args = experiment_parser(__doc__.split("\n\n")[0], max_sequences=200_000).parse_args(argv)
    return run_experiment(args, task(), 100, (-2.0, -4.0))


if __name__ == "__main__":
    main()
