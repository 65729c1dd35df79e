"""The log-scale plot of measured error flow (matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def plot_error_flow(curves: dict[str, np.ndarray], path: str | os.PathLike[str], title: str) -> dict[str, np.ndarray]:
    """Write a PNG with one curve per label (‖∂L/∂s_{T−q}‖ against q, log scale) and return the y-data drawn.

    Zeros (an error that vanished exactly) cannot sit on a log axis and are left out of the drawing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plot: matplotlib is not installed (pip install 'lstmgen[plot]')") from None
    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"plot: directory {str(out.parent)!r} does not exist")
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    drawn = {}
    for label, values in curves.items():
        q = np.arange(len(values))
        keep = values > 0
        (line,) = ax.semilogy(q[keep], values[keep], label=label, linewidth=1.6)
        drawn[label] = np.asarray(line.get_ydata())
    ax.set_xlabel("q (steps back from the injected error)")
    ax.set_ylabel("‖∂L/∂s(T−q)‖")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, format="png")
    plt.close(fig)
    return drawn
