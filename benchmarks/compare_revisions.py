"""A change's effect on speed: the generated modules of a git revision against the working tree's, in one run.

    python benchmarks/compare_revisions.py --rev 86b1f1d --cells minlstm,slstm,rg_lru
    python benchmarks/compare_revisions.py --rev HEAD~1 --cells lstm --sizes S2 --dtypes float32

For each cell, size and dtype: forward+backward of the same random problem with both modules, interleaved
after a warm-up, best of --repeats; the revision's module is read from ``git show REV:generated/<cell>.py``.
Both modules must take the same parameters (a change of a cell's parameters cannot be compared this way).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lstmgen.loader import load_module  # noqa: E402

SIZES = {
    "S1": (1000, 1, 16, 32),
    "S2": (100, 32, 64, 128),
    "S3": (100, 64, 256, 256),
    "speech": (50, 1, 64, 32),
    # The 1997 experiments' networks: online, 2 inputs, 4 cells.
    "tiny": (100, 1, 2, 4),
}


def time_pair(before, after, size, dtype, repeats: int) -> tuple[float, float]:
    """Best forward+backward seconds of ``before`` and ``after`` on one problem, runs interleaved."""
    T, B, I, H = size
    if getattr(after, "INPUT_ROW", False):
        I = H
    rng = np.random.default_rng(0)
    heads = {"heads": after.HEADS} if getattr(after, "HEADS", None) else {}
    params = after.init_params(I, H, dtype=dtype, seed=0, **heads)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    dy = rng.standard_normal((T, B, H)).astype(dtype)
    inputs = {name: rng.uniform(0, 1, (T, B, H)).astype(dtype) for name in getattr(after, "INPUTS", ())}

    def run(module) -> float:
        start = time.perf_counter()
        _, _, tape = module.forward(x, params, inputs=inputs)
        module.backward(dy, tape)
        return time.perf_counter() - start

    run(before), run(after)  # compile, or load numba's cache
    times = [(run(before), run(after)) for _ in range(repeats)]
    return min(t for t, _ in times), min(t for _, t in times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the git revision to compare with (its generated/)")
    parser.add_argument("--cells", required=True, help="built-in cells, comma separated")
    parser.add_argument("--sizes", default="S1,S2", help=f"of {', '.join(SIZES)} (default S1,S2)")
    parser.add_argument("--dtypes", default="float32,float64")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown or args.repeats < 1:
        parser.error(f"--sizes: expected some of {', '.join(SIZES)}, got {unknown}" if unknown else "--repeats: >= 1")
    with tempfile.TemporaryDirectory() as folder:
        print(f"forward+backward, best of {args.repeats}: {args.rev} against the working tree")
        for cell in args.cells.split(","):
            old_path = Path(folder) / f"{cell}_{args.rev.replace('/', '_').replace('~', '_')}.py"
            shown = subprocess.run(
                ["git", "show", f"{args.rev}:generated/{cell}.py"], cwd=REPO, capture_output=True, text=True
            )
            if shown.returncode != 0:
                parser.error(f"--cells: no generated/{cell}.py at {args.rev}: {shown.stderr.strip()}")
            old_path.write_text(shown.stdout)
            before, after = load_module(old_path), load_module(REPO / "generated" / f"{cell}.py")
            for size in sizes:
                for dtype in args.dtypes.split(","):
                    t_old, t_new = time_pair(before, after, SIZES[size], np.dtype(dtype).type, args.repeats)
                    print(
                        f"{cell:16s} {size:7s} {dtype:8s} {args.rev} {t_old * 1e3:9.3f} ms   now {t_new * 1e3:9.3f} ms"
                        f"   now/{args.rev} {t_new / t_old:5.2f}"
                    )


if __name__ == "__main__":
    main()
