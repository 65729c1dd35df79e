"""Summarise runs of the experiments: a table per experiment and variant, and a PNG of the learning curves.

    python experiments/summarize.py RESULTS_DIR --png docs/experiments.png

RESULTS_DIR holds the files the experiments wrote with ``--curve`` (one JSON per run, named
``<experiment>_<variant>_s<seed>.json``). The table goes to stdout as GitHub markdown.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

PAPER = {"adding_problem": "74,000 (Table 7, T = 100)", "temporal_order": "31,390 (Table 9, 6a)"}


def load_runs(directory: Path) -> dict[tuple[str, str], list[dict]]:
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for path in sorted(directory.glob("*.json")):
        experiment = "adding_problem" if path.name.startswith("adding_problem") else "temporal_order"
        run = json.loads(path.read_text())
        runs[(experiment, run["variant"])].append(run)
    return runs


def table(runs: dict[tuple[str, str], list[dict]]) -> str:
    lines = [
        "| experiment | cell (gradient) | succeeded | sequences to success, mean ± sd (min–max) | "
        "sequences seen, max | test wrong of 2560, mean | wall s, mean | µs per sequence | paper |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (experiment, variant), group in sorted(runs.items()):
        done = [r["sequences_to_success"] for r in group if r["sequences_to_success"] is not None]
        spread = (
            f"{statistics.mean(done):,.0f} ± {statistics.pstdev(done):,.0f} ({min(done):,}–{max(done):,})"
            if done
            else "–"
        )
        wrong = statistics.mean(r["test_wrong_of_2560"] for r in group)
        lines.append(
            f"| {experiment} | `{variant}` ({group[0]['gradient']}) | {len(done)}/{len(group)} | {spread} | "
            f"{max(r['sequences_seen'] for r in group):,} | {wrong:.0f} | "
            f"{statistics.mean(r['wall_s'] for r in group):.0f} | "
            f"{statistics.mean(r['us_per_sequence'] for r in group):.0f} | {PAPER[experiment]} |"
        )
    return "\n".join(lines)


def plot(runs: dict[tuple[str, str], list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    experiments = sorted({e for e, _ in runs})
    fig, axes = plt.subplots(1, len(experiments), figsize=(6 * len(experiments), 4), squeeze=False)
    colours = {}
    for ax, experiment in zip(axes[0], experiments, strict=True):
        for (e, variant), group in sorted(runs.items()):
            if e != experiment:
                continue
            colour = colours.setdefault(variant, f"C{len(colours)}")
            for k, run in enumerate(group):
                seen, error = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
                ax.plot(seen, error, color=colour, alpha=0.7, lw=1, label=variant if k == 0 else None)
        ax.set_yscale("log")
        ax.set_xlabel("training sequences seen")
        ax.set_ylabel("mean squared error (per 500 sequences)")
        ax.set_title(experiment.replace("_", " "))
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--png", type=Path)
    args = parser.parse_args()
    runs = load_runs(args.results)
    print(table(runs))
    if args.png:
        plot(runs, args.png)


if __name__ == "__main__":
    main()
