"""torch.compile of a small model that holds a TorchRecurrent (issue 28's model: one TorchRecurrent and one
nn.Linear): graph breaks, compile time (the first compiled forward + backward) and the time of a step after it,
eager beside compiled, with and without fullgraph=True. Run it on two revisions to compare them:

    python benchmarks/torch_compile.py [--cell lstm] [--json FILE]
    PYTHONPATH=<other checkout> python benchmarks/torch_compile.py ...

Each compile runs in a fresh process with a fresh inductor cache (TORCHINDUCTOR_CACHE_DIR), so that no earlier
compilation is reused; the cell's numba kernels are compiled (and cached) before any timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

SIZE = {"T": 50, "B": 16, "I": 8, "H": 64}


def _model(cell: str):
    import torch

    from lstmgen.torch_adapter import TorchRecurrent

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = TorchRecurrent(cell, SIZE["I"], SIZE["H"], seed=0)
            self.head = torch.nn.Linear(SIZE["H"], 1)

        def forward(self, x):
            out, _ = self.rnn(x)
            return self.head(out[-1])

    return Model()


def _step(model, x) -> None:
    model.zero_grad()
    model(x).sum().backward()


def measure(cell: str, mode: str) -> dict:
    """One mode in this process: "eager", "compile" or "fullgraph"."""
    import torch

    torch.manual_seed(0)
    model = _model(cell)
    x = torch.randn(SIZE["T"], SIZE["B"], SIZE["I"])
    _step(model, x)  # numba's compilation (or its cache) happens here, outside every timing
    result: dict = {"mode": mode}
    if mode != "eager":
        explanation = torch._dynamo.explain(model)(x)
        result["graph_breaks"] = explanation.graph_break_count
        torch._dynamo.reset()
        compiled = torch.compile(model, fullgraph=mode == "fullgraph")
        start = time.perf_counter()
        try:
            _step(compiled, x)
        except Exception as exc:  # fullgraph=True refuses a graph break: the number says so
            result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            return result
        result["first_call_s"] = time.perf_counter() - start
        model = compiled
    times = []
    for _ in range(20):
        start = time.perf_counter()
        _step(model, x)
        times.append(time.perf_counter() - start)
    result["step_ms"] = 1e3 * statistics.median(times)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cell", default="lstm")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # one mode, in a child process
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(measure(args.cell, args.mode)))
        return 0
    results = []
    for mode in ("eager", "compile", "fullgraph"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            command = [sys.executable, __file__, "--cell", args.cell, "--mode", mode]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cell": args.cell, "size": SIZE, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
