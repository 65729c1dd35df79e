"""The benchmarks' quick modes run in the suite so that they cannot rot (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import itertools
import json

import numpy as np
import pytest
from conftest import REPO


def _load_benchmark(script: str = "run.py"):
    """A script of benchmarks/ as a module (they are scripts, not part of the package)."""
    name = "lstmgen_benchmark_" + script.removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / script)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_quick_benchmark_runs_and_reports_every_pair(tmp_path, capsys):
    bench = _load_benchmark()
    out = tmp_path / "bench.json"
    png = tmp_path / "bench.png"
    bench.main(["--quick", "--json", str(out), "--plot", str(png)])
    assert png.read_bytes().startswith(b"\x89PNG")
    result = json.loads(out.read_text())
    measured = [r for r in result["results"] if "speedup" in r]
    pairs = {(r["dtype"], r["mode"], r["variant"], r["theirs"].split(" (")[0]) for r in measured}
    for dtype in ("float32", "float64"):
        for mode in ("fwd", "fwd+bwd"):
            assert (dtype, mode, "lstm", "torch.nn.LSTM") in pairs
            assert (dtype, mode, "gru", "torch.nn.GRU") in pairs
            assert (dtype, mode, "lstm_peephole", "torch peephole loop") in pairs
            assert (dtype, mode, bench.FLOOR, "torch.nn.LSTM") in pairs
    for r in measured:
        assert r["ours_ms"] > 0 and r["theirs_ms"] > 0 and r["gemm_gflops"] > 0
    assert "speedup" in capsys.readouterr().out


def test_interleaving_shuffles_so_no_contender_always_follows_the_same_one():
    bench = _load_benchmark()
    calls: list[str] = []
    runners = {name: (lambda name=name: calls.append(name)) for name in "abcd"}
    times = bench.time_interleaved(runners, repeats=20, min_seconds=0.0, settle=0.0)
    assert set(times) == set("abcd")
    timed = calls[8:]  # after two warm-up calls each
    rounds = [timed[k : k + 4] for k in range(0, len(timed), 4)]
    assert len(rounds) == 20 and all(sorted(r) == list("abcd") for r in rounds)  # each timed once per round
    predecessors: dict[str, set[str]] = {}
    for before, after in itertools.pairwise(timed):
        predecessors.setdefault(after, set()).add(before)
    assert all(predecessors[name] - {name} == set("abcd") - {name} for name in "abcd")  # itself: across rounds


def test_per_step_gemm_study_runs_every_contender_on_one_and_two_threads(capsys):
    study = _load_benchmark("per_step_gemm.py")
    by_threads = study.main(["--quick"])
    assert set(by_threads) == {1, 2}
    for results in by_threads.values():
        assert set(results) == set(study.QUICK_SIZES)
        for rates in results.values():
            assert set(rates) == set(study.CONTENDERS) and all(rate > 0 for rate in rates.values())
    assert "numba GEMM, R pre-transposed" in capsys.readouterr().out


def test_per_step_gemm_tiny_study_times_both_products_at_every_shape(capsys):
    study = _load_benchmark("per_step_gemm.py")
    results = study.main(["--tiny", "--rounds", "1"])
    assert set(results) == set(study.TINY_SHAPES)
    assert all(set(times) == set(study.TINY_CONTENDERS) and min(times.values()) > 0 for times in results.values())
    assert "_loop_dot" in capsys.readouterr().out


@pytest.fixture(scope="module")
def blocked_steps():
    return _load_benchmark("per_step_gemm.py")._numba_functions()[1]


@pytest.mark.parametrize("rows, inner, cols", [(1, 5, 7), (2, 4, 4), (3, 16, 64), (5, 3, 9)])
def test_per_step_gemm_study_blocked_gemm_matches_numpy_with_leftover_rows_and_columns(
    blocked_steps, rows, inner, cols
):
    rng = np.random.default_rng(rows * inner * cols)
    h = rng.standard_normal((rows, inner)).astype(np.float32)
    RT = rng.standard_normal((cols, inner)).astype(np.float32)
    out = np.full((rows, cols), np.nan, np.float32)
    blocked_steps(h, RT, out, 2)
    np.testing.assert_allclose(out, h.astype(np.float64) @ RT.T.astype(np.float64), rtol=1e-5, atol=1e-5)


def test_quick_modern_cells_benchmark_reports_every_cell(tmp_path):
    bench = _load_benchmark("modern_cells.py")
    out = tmp_path / "modern.json"
    bench.main(["--quick", "--dtypes", "float32", "--json", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert {r["cell"] for r in rows} == set(bench.CELLS)
    for r in rows:
        assert r["ours_ms"] > 0 and r["eager_ms"] > 0 and r["script_ms"] > 0 and r["speedup"] > 0
        assert ("of_lstm" in r) == (r["cell"] in bench.BESIDE_LSTM)
        assert ("norm_share" in r) == (r["cell"] == "layernorm_lstm")
