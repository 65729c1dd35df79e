"""The benchmark's quick mode runs in the suite so that it cannot rot (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import itertools
import json

from conftest import REPO


def _load_benchmark():
    """benchmarks/run.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("lstmgen_benchmark", REPO / "benchmarks" / "run.py")
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
