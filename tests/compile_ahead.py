"""Fill numba's on-disk cache of the modules the suite compiles, in a second process beside pytest.

Most of a cold run of the suite is numba compiling each generated module once per dtype, one after another in
pytest's process, while a second core idles. ``conftest.py`` starts this script when the session starts: it
compiles the same modules, imported under the same names (numba's cache is keyed by module and file), from the
other end of the list, so the two processes share the work, and pytest finds most kernels already in the cache.
It changes no result: a kernel loaded from the cache is the one pytest would have compiled. Where both processes
compile one module at once, numba writes each cache file atomically and the last one stays.

    python tests/compile_ahead.py [EXAMPLES_DIR]   # EXAMPLES_DIR: where test_spec_files writes the TOML examples
"""

from __future__ import annotations

import importlib
import sys
import warnings
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path[:0] = [str(REPO), str(TESTS)]

from problems import random_problem, random_step_inputs  # noqa: E402

import lstmgen  # noqa: E402
from lstmgen.codegen.render_module import module_name  # noqa: E402
from lstmgen.generate import write_module  # noqa: E402
from lstmgen.loader import load_module  # noqa: E402
from lstmgen.spec_file import load_spec_file  # noqa: E402
from lstmgen.variants import VARIANTS  # noqa: E402

#: Cells whose error flow ``lstmgen cec`` measures in test_modern_cells, through :func:`lstmgen.load` (float64).
MEASURED = ("indrnn", "sru", "mingru", "minlstm", "janet", "ligru", "rg_lru", "zoneout_lstm", "slstm")
MEASURED += ("layernorm_lstm", "lstmp")


def run_once(module, dtypes=(np.float64, np.float32)) -> None:
    """One forward and backward in each dtype: compiles (or loads) both kernels for each signature."""
    for dtype in dtypes:
        x, params, state, dy, dstate = random_problem(module, (3, 2, 3, 4), dtype, seed=0)
        inputs = random_step_inputs(module, x, 4, 0) or None
        _, _, tape = module.forward(x, params, state, inputs=inputs)
        module.backward(dy, tape, dstate)


def modules(examples: Path | None):
    """(module loader, dtypes) of the suite's compiled modules, the last used first: the TOML examples, the cells
    ``lstmgen cec`` loads, then the built-ins of generated/ in reverse order (pytest's own run starts at the
    front)."""
    both = (np.float64, np.float32)
    if examples is not None:
        examples.mkdir(parents=True, exist_ok=True)
        for path in sorted((REPO / "examples").glob("*.toml"), reverse=True):
            for mode in ("full", "truncated"):
                yield (
                    (lambda path=path, mode=mode: load_module(write_module(load_spec_file(path), examples, mode))),
                    both,
                )
    for name in MEASURED:
        yield (lambda name=name: lstmgen.load(name)), (np.float64,)
    for name in reversed(VARIANTS):
        for mode in ("truncated", "full"):
            stem = module_name(name, mode)
            yield (lambda stem=stem: importlib.import_module(f"generated.{stem}")), both


def main(argv: list[str]) -> None:
    warnings.simplefilter("ignore")
    examples = Path(argv[0]) if argv else None
    for load, dtypes in modules(examples):
        run_once(load(), dtypes)


if __name__ == "__main__":
    main(sys.argv[1:])
