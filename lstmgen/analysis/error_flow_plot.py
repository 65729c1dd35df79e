"""The log-scale plot of measured error flow (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

#: Line styles and markers cycled over the curves: curves that coincide (lstm and lstm_nig often do) stay
#: visible as dashes and markers over each other.
_STYLES = [("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"), ((0, (5, 1, 1, 1)), "v"), ((0, (1, 2)), "x")]


def check_plot_target(path: str | os.PathLike[str]) -> None:
    """Raise before any measurement if the plot could not be written (no matplotlib, no such directory)."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("--plot: matplotlib is not installed (pip install 'lstmgen[plot]')")
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--plot: directory {str(out.parent)!r} does not exist")


def plot_error_flow(curves: dict[str, np.ndarray], path: str | os.PathLike[str], title: str) -> dict[str, np.ndarray]:
    """Write a PNG with one curve per label (‖∂L/∂s_{T−q}‖ against q, log scale) and return the y-data drawn.

    Zeros (an error that vanished exactly) cannot sit on a log axis and are left out of the drawing; a note
    under the plot says why the q = 0 point is missing for the cells whose plotted state is not h.
    """
    check_plot_target(path)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=110)
    drawn = {}
    every = max(len(curves), max(len(values) for values in curves.values()) // 12)
    for k, (label, values) in enumerate(curves.items()):
        q = np.arange(len(values))
        keep = values > 0
        style, marker = _STYLES[k % len(_STYLES)]
        (line,) = ax.semilogy(
            q[keep],
            values[keep],
            label=label,
            linewidth=1.6,
            linestyle=style,
            marker=marker,
            # Markers of different curves at different q, so coinciding curves each show theirs.
            markevery=(k * every // len(curves), every),
            markersize=4,
        )
        drawn[label] = np.asarray(line.get_ydata())
    if any(values[0] == 0 for values in curves.values()):
        fig.text(
            0.01,
            0.01,
            "The error is injected on h at step T; for a cell with a cell state c the curve is ‖∂L/∂c(T−q)‖, zero "
            "at q = 0\n(h_T does not reach c_T), so that point is not drawn on the log scale.",
            fontsize=7,
        )
    ax.set_xlabel("q (steps back from the injected error)")
    ax.set_ylabel("‖∂L/∂s(T−q)‖")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(Path(path), format="png")
    plt.close(fig)
    return drawn
