"""Experiment 6a of Hochreiter & Schmidhuber (1997), temporal order with two relevant symbols (§5.6).

Inputs are one-hot over 8 symbols (E, B, a, b, c, d, X, Y). A sequence starts with E, ends with B and is
otherwise random symbols of {a, b, c, d}, except at positions t1 (10…20) and t2 (50…60, 1-based as in the
paper), which hold X or Y; the length is 100…110. The class (4 one-hot outputs) is the order: XX → Q, XY → R,
YX → S, YY → U. A sequence is correct when every output's absolute error at its end is below 0.3; training
stops when the mean error over the last 2000 sequences is below 0.1 and all of them were correct. The paper's
network: 2 memory blocks of 2 cells, 4 output units; Table 9 reports about 31,000 sequences to success.

Assumptions (the paper's text was not at hand when this was written; each is a flag): learning rate 0.5,
input-gate biases −2 and −4, weights in [−0.1, 0.1], the error being the mean over the outputs of the
squared error.

    python experiments/temporal_order.py --seed 0 [--variant lstm_1997] [--max-sequences N]

The last line printed is one JSON object (variant, T, seed, sequences_to_success, test_wrong_of_2560, wall_s...).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from sequence_trainer import Network, Task, default_gradient, padded_batch, report, train

SYMBOLS = ("E", "B", "a", "b", "c", "d", "X", "Y")
CLASSES = ("Q", "R", "S", "U")  # XX, XY, YX, YY
TOLERANCE = 0.3
PAPER = {"sequences_to_success": 31_390}


def temporal_order_sequence(rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """One sequence, (length, 8) one-hot, and its class index into CLASSES."""
    length = int(rng.integers(100, 111))
    symbols = rng.integers(2, 6, size=length)  # a, b, c, d
    symbols[0], symbols[-1] = 0, 1  # E ... B
    t1, t2 = int(rng.integers(10, 21)) - 1, int(rng.integers(50, 61)) - 1
    first, second = (int(v) for v in rng.integers(0, 2, size=2))  # 0: X, 1: Y
    symbols[t1], symbols[t2] = 6 + first, 6 + second
    return np.eye(len(SYMBOLS))[symbols], 2 * first + second


def task() -> Task:
    def sample(rng: np.random.Generator, batch: int):
        drawn = [temporal_order_sequence(rng) for _ in range(batch)]
        x, lengths = padded_batch([s for s, _ in drawn])
        return x, lengths, np.eye(len(CLASSES))[[k for _, k in drawn]]

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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variant", default="lstm_1997", help="a built-in cell (default lstm_1997)")
    parser.add_argument("--gradient", choices=("full", "truncated"), help="default: truncated for lstm_1997")
    parser.add_argument("--cells", type=int, default=4, help="hidden units H (default 4, the paper's 2 blocks of 2)")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=1, help="sequences per update (default 1: online)")
    parser.add_argument("--max-sequences", type=int, default=200_000)
    parser.add_argument("--test-size", type=int, default=2560)
    parser.add_argument("--curve", help="write the learning curve (JSON) here")
    parser.add_argument("--log-every", type=int, default=10_000, help="progress line every N sequences (0: none)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    gradient = args.gradient or default_gradient(args.variant)
    biases = {"i": (-2.0, -4.0)} if args.variant.startswith("lstm") else {}
    t = task()
    network = Network.build(args.variant, t.n_in, args.cells, t.n_out, rng, gradient=gradient, gate_biases=biases)
    result = train(
        t,
        network,
        rng,
        lr=args.lr,
        max_sequences=args.max_sequences,
        batch=args.batch,
        test_size=args.test_size,
        log_every=args.log_every,
    )
    fields = {"variant": args.variant, "gradient": gradient, "T": 100, "seed": args.seed, "cells": args.cells}
    summary = report({**fields, "block_size": 1, "lr": args.lr, "batch": args.batch}, result, args.curve)
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
