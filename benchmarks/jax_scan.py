"""Forward + backward in JAX, side by side in one run: lstmgen's adapter (the generated kernels through
jax.pure_callback) and jax.jit of a lax.scan of the same cell, each under jax.jit(jax.grad(...)).

    python benchmarks/jax_scan.py [--cells lstm,gru] [--sizes S1,speech,S2] [--json FILE]

float32, on the CPU. Each time is the median of ``--repeats`` runs after a warm-up (the first call, whose time,
XLA's compilation included, is reported as ``first_s``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.run import SIZES  # noqa: E402


def _steps():
    import jax
    import jax.numpy as jnp

    sigmoid, tanh = jax.nn.sigmoid, jnp.tanh

    def lstm(p, x, state):
        h, c = state
        i, f, g, o = jnp.split(x + h @ p["R"], 4, axis=-1)
        c = sigmoid(f) * c + sigmoid(i) * tanh(g)
        return sigmoid(o) * tanh(c), c

    def gru(p, x, state):
        (h,) = state
        H = h.shape[-1]
        hR = h @ p["R"]
        r = sigmoid(x[..., :H] + hR[..., :H])
        z = sigmoid(x[..., H : 2 * H] + hR[..., H : 2 * H])
        n = tanh(x[..., 2 * H :] + r * (hR[..., 2 * H :] + p["b_rn"]))
        return ((1 - z) * n + z * h,)

    return {"lstm": lstm, "gru": gru}


def _scan_loss(step):
    """The usual JAX recurrence: the input projection for all steps at once, then lax.scan over the steps."""
    import jax.numpy as jnp
    from jax import lax

    def loss(params, x, state):
        projected = x @ params["W"] + params["b"]

        def body(carry, x_t):
            new = step(params, x_t, carry)
            return new, new[0]

        _, y = lax.scan(body, state, projected)
        return jnp.sum(y**2)

    return loss


def _time(run, repeats: int) -> tuple[float, float]:
    import jax

    start = time.perf_counter()
    jax.block_until_ready(run())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def measure(cell_name: str, size: str, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp

    import lstmgen
    from lstmgen.jax_adapter import jax_recurrent

    steps, batch, n_in, hidden = SIZES[size]
    cell = lstmgen.load(cell_name)
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(v) for k, v in cell.init_params(n_in, hidden, dtype=np.float32, seed=0).items()}
    x = jnp.asarray(rng.standard_normal((steps, batch, n_in)).astype(np.float32))
    state = tuple(jnp.zeros((batch, hidden), jnp.float32) for _ in cell.STATE)
    f = jax_recurrent(cell)
    ours = jax.jit(jax.grad(lambda p, x, s: jnp.sum(f(x, p, s)[0] ** 2), argnums=(0, 1, 2)))
    theirs = jax.jit(jax.grad(_scan_loss(_steps()[cell_name]), argnums=(0, 1, 2)))
    result = {"cell": cell_name, "size": size, "T_B_I_H": SIZES[size]}
    for name, run in (("lstmgen", ours), ("lax.scan", theirs)):
        first, median = _time(lambda run=run: run(params, x, state), repeats)
        result[name] = {"first_s": first, "median_ms": 1e3 * median}
    result["speedup"] = result["lax.scan"]["median_ms"] / result["lstmgen"]["median_ms"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--sizes", default="S1,speech,S2")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    results = []
    for size in args.sizes.split(","):
        for cell in args.cells.split(","):
            results.append(measure(cell, size, args.repeats))
            r = results[-1]
            print(
                f"{cell:6s} {size:7s} lstmgen {r['lstmgen']['median_ms']:9.2f} ms   lax.scan "
                f"{r['lax.scan']['median_ms']:9.2f} ms (first call {r['lax.scan']['first_s']:.1f} s)   "
                f"{r['speedup']:.1f}x",
                flush=True,
            )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
