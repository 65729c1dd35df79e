"""Summarise runs of the experiments: a table per experiment and variant, and a PNG of the learning curves.

    python experiments/summarize.py RESULTS_DIR --png docs/experiments.png
    python experiments/summarize.py docs/experiment_runs/probes --probes docs/plateau.png

RESULTS_DIR holds the files the experiments wrote with ``--curve`` (one JSON per run, in it or in a folder below
it). Runs are grouped by task, cell, gradient and the settings that differ from the paper's; the table goes to
stdout as GitHub markdown.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import adding_problem
import temporal_order
from sequence_trainer import DEFAULT_LR, WEIGHT_RANGE

#: Table 7 and Table 9 of the paper: sequences to success (mean) and wrong predictions of 2560 test sequences.
PAPER = {
    "adding T=100": "74,000; 1 wrong",
    "adding T=500": "209,000; 0 wrong",
    "adding T=1000": "853,000; 1 wrong",
    "temporal order 6a": "31,390",
    "temporal order 6b": "571,100",
}
#: The settings a run is compared under when they differ from the experiment's defaults.
DEFAULTS = {"output": "logistic", "batch": 1, "weight_range": WEIGHT_RANGE}

Key = tuple[str, str, str, str]  # (task, variant, gradient, settings)


def natural(key: tuple) -> tuple:
    """Sort key: numbers inside the task's name by value ("adding T=500" before "adding T=1000")."""
    task, *rest = key
    return (*(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", task)), *rest)


def task_of(run: dict, path: Path) -> str:
    """The run's task ("adding T=100", "temporal order 6b"); runs from before the field existed are named by file."""
    if "task" in run:
        return run["task"]
    return f"adding T={run['T']}" if path.name.startswith("adding") else "temporal order 6a"


def _order_task(task: str) -> temporal_order.OrderTask | None:
    """The temporal-order experiment's record of ``task`` ("temporal order 6b"), None for an adding task."""
    return temporal_order.TASKS[task.removeprefix("temporal order ")] if task.startswith("temporal order ") else None


def default_lr(task: str) -> float:
    """The learning rate the task's experiment uses unless --lr changes it."""
    order = _order_task(task)
    return order.lr if order else DEFAULT_LR


def default_input_gate_biases(task: str) -> list[float]:
    """The input-gate biases the task's experiment gives unless --gate-bias i=... changes them."""
    order = _order_task(task)
    return list(order.input_gate_biases if order else adding_problem.INPUT_GATE_BIASES)


def settings_of(run: dict, task: str) -> str:
    """What sets the run apart from its experiment's defaults: output units, learning rate, gate biases."""
    parts = [f"{name} {run[name]}" for name, default in DEFAULTS.items() if run.get(name, default) != default]
    if run.get("lr", default_lr(task)) != default_lr(task):
        parts.append(f"lr {run['lr']}")
    biases = run.get("gate_biases", {})
    parts += [
        f"{gate} biases {values}"
        for gate, values in biases.items()
        if gate != "i" or values != default_input_gate_biases(task)
    ]
    return ", ".join(parts) or "—"


def load_runs(directory: Path) -> dict[Key, list[dict]]:
    """The runs of every JSON file below ``directory``, grouped by task, cell, gradient and settings. A run is
    deterministic given its settings and seed, so two files of one seed (a run repeated with a probe, or with a
    larger budget) count once: the one that succeeded, else the one that saw more sequences."""
    by_seed: dict[tuple, dict] = {}
    for path in sorted(directory.rglob("*.json")):
        run = json.loads(path.read_text())
        task = task_of(run, path)
        key = (task, run["variant"], run["gradient"], settings_of(run, task))
        seed = (*key, run.get("seed", path.name))
        if seed not in by_seed or _outlasts(run, by_seed[seed]):
            by_seed[seed] = run
    runs: dict[Key, list[dict]] = defaultdict(list)
    for (*key, _), run in by_seed.items():
        runs[tuple(key)].append(run)
    return runs


def _outlasts(run: dict, other: dict) -> bool:
    """Whether ``run`` says more than ``other`` of the same seed: it succeeded, or neither did and it saw more."""
    if (run["sequences_to_success"] is None) != (other["sequences_to_success"] is None):
        return run["sequences_to_success"] is not None
    return run["sequences_seen"] > other["sequences_seen"]


def table(runs: dict[Key, list[dict]]) -> str:
    lines = [
        "| task | cell (gradient) | settings | succeeded | sequences to success, mean ± sd (min–max) | "
        "sequences seen, max | test wrong of 2560, mean | wall s, mean | µs per sequence | paper |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for (task, variant, gradient, settings), group in sorted(runs.items(), key=lambda item: natural(item[0])):
        done = [r["sequences_to_success"] for r in group if r["sequences_to_success"] is not None]
        spread = (
            f"{statistics.mean(done):,.0f} ± {statistics.pstdev(done):,.0f} ({min(done):,}–{max(done):,})"
            if done
            else "–"
        )
        wrong = statistics.mean(r["test_wrong_of_2560"] for r in group)
        lines.append(
            f"| {task} | `{variant}` ({gradient}) | {settings} | {len(done)}/{len(group)} | {spread} | "
            f"{max(r['sequences_seen'] for r in group):,} | {wrong:.0f} | "
            f"{statistics.mean(r['wall_s'] for r in group):.0f} | "
            f"{statistics.mean(r['us_per_sequence'] for r in group):.0f} | {PAPER.get(task, '')} |"
        )
    return "\n".join(lines)


def plot(runs: dict[Key, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({key[0] for key in runs}, key=lambda task: natural((task,)))
    columns = min(3, len(tasks))
    rows = -(-len(tasks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 4 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks, strict=False):
        colours = {}  # per panel: the ten colours of the default cycle go a long way
        for (t, variant, gradient, settings), group in sorted(runs.items()):
            if t != task:
                continue
            label = f"{variant} ({gradient})" + ("" if settings == "—" else f", {settings}")
            colour = colours.setdefault(label, f"C{len(colours) % 10}")
            for k, run in enumerate(group):
                seen, error = zip(*run["curve"], strict=True) if run["curve"] else ((), ())
                ax.plot(seen, error, color=colour, alpha=0.7, lw=1, label=label if k == 0 else None)
        ax.set_xscale("log")  # the plateau at chance and the fall from it, whatever the run's length
        ax.set_yscale("log")
        ax.set_xlabel("training sequences seen")
        ax.set_ylabel("mean squared error (per 500 sequences)")
        ax.set_title(task)
        ax.legend(fontsize="small")
    for ax in axes.flat[len(tasks) :]:
        ax.set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_probes(runs: dict[Key, list[dict]], path: Path) -> None:
    """The runs recorded with --probe-every: per memory block, the largest mean |g| of its cells, and how much
    more its input gate opens at the marked steps than on average (1: not selective)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (storing, selective) = plt.subplots(1, 2, figsize=(13, 4.5))
    probed = [(key, run) for key, group in sorted(runs.items(), key=lambda i: natural(i[0])) for run in group]
    for k, ((task, _, _, settings), run) in enumerate((key, run) for key, run in probed if "probes" in run):
        probes = [p for p in run["probes"] if p["seen"] > 0]  # a log axis: the start is the first point's left
        seen = [p["seen"] for p in probes]
        blocks = len(probes[0]["input_gate_all"])
        size = len(probes[0]["cell_input_abs"]) // blocks
        label = f"{task}, seed {run['seed']}" + ("" if settings == "—" else f", {settings}")
        for b, style in zip(range(blocks), ("-", "--", ":"), strict=False):
            g = [max(p["cell_input_abs"][b * size : (b + 1) * size]) for p in probes]
            ratio = [p["input_gate_marked"][b] / p["input_gate_all"][b] for p in probes]
            tag = f"{label}, block {b + 1}"
            storing.plot(seen, g, style, color=f"C{k % 10}", label=tag)
            selective.plot(seen, ratio, style, color=f"C{k % 10}", label=tag)
    for ax in (storing, selective):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training sequences seen")
    storing.set_ylabel("largest mean |g| of a block's cells")
    selective.set_ylabel("input gate at marked steps / on average")
    storing.legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--png", type=Path)
    parser.add_argument("--probes", type=Path, help="plot the runs recorded with --probe-every here (PNG)")
    args = parser.parse_args()
    runs = load_runs(args.results)
    print(table(runs))
    if args.png:
        plot(runs, args.png)
    if args.probes:
        plot_probes(runs, args.probes)


if __name__ == "__main__":
    main()
