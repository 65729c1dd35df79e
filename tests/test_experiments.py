"""The 1997 experiments: their data generators follow the paper's rules, and a quick run of each learns."""

import dataclasses
import importlib
import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parent.parent / "experiments"


@pytest.fixture(scope="module")
def experiments():
    sys.path.insert(0, str(EXPERIMENTS))
    try:
        yield {name: importlib.import_module(name) for name in ("adding_problem", "temporal_order", "sequence_trainer")}
    finally:
        sys.path.remove(str(EXPERIMENTS))


@pytest.mark.parametrize("T", [20, 24, 100, 1000])
def test_adding_sequences_follow_the_paper(experiments, T):
    adding = experiments["adding_problem"]
    x, lengths, targets = adding.adding_batch(np.random.default_rng(T), T, 2000)
    assert x.shape == (T + T // 10, 2000, 2) and targets.shape == (2000, 1)
    positions = set()
    for b in range(2000):
        seq, target = x[: lengths[b], b], targets[b, 0]
        assert np.all(x[lengths[b] :, b] == 0.0)  # padding
        values, markers = seq[:, 0], seq[:, 1]
        assert T <= len(seq) <= T + T // 10
        assert np.all(np.abs(values) <= 1.0)
        marked = np.flatnonzero(markers == 1.0)
        assert len(marked) == 2
        # One marked pair is among the first ten, the other among the first T/2 - 1 (either may come first).
        assert marked.min() < 10 and marked.max() < max(10, T // 2 - 1)
        positions.update(marked.tolist())
        others = np.setdiff1d(np.arange(len(seq)), marked)
        ends = [k for k in (0, len(seq) - 1) if k not in marked]
        assert np.all(markers[ends] == -1.0)
        assert np.all(markers[np.setdiff1d(others, ends)] == 0.0)
        # A marked first pair holds the value 0, so the target is the sum of what the input shows.
        assert 0 not in marked or values[0] == 0.0
        assert target == pytest.approx(0.5 + values[marked].sum() / 4.0)
        assert 0.0 <= target <= 1.0
    # Every allowed position is drawn (too many to be seen in 2000 draws at T = 1000).
    if T <= 100:
        assert positions == set(range(max(10, T // 2 - 1)))


def test_adding_refuses_a_too_short_T(experiments):
    with pytest.raises(ValueError, match="T: expected at least 20"):
        experiments["adding_problem"].adding_batch(np.random.default_rng(0), 10, 1)


@pytest.mark.parametrize("variant", ["6a", "6b"])
def test_temporal_order_sequences_follow_the_paper(experiments, variant):
    order = experiments["temporal_order"]
    x, lengths, classes_drawn = order.temporal_order_batch(np.random.default_rng(0), 800, variant)
    # The paper's positions (1-based) and classes, written out here rather than taken from the module.
    positions = {"6a": [(10, 20), (50, 60)], "6b": [(10, 20), (33, 43), (66, 76)]}[variant]
    names = {"6a": "QRSU", "6b": "QRSUVABC"}[variant]
    classes, seen_at = set(), set()
    for b in range(800):
        seq, k = x[: lengths[b], b], classes_drawn[b]
        assert np.all(x[lengths[b] :, b] == 0.0)  # padding
        assert 100 <= len(seq) <= 110
        assert np.all(seq.sum(axis=1) == 1.0)
        symbols = [order.SYMBOLS[j] for j in seq.argmax(axis=1)]
        assert symbols[0] == "E" and symbols[-1] == "B"
        relevant = [t for t, s in enumerate(symbols) if s in "XY"]
        assert len(relevant) == len(positions)
        for t, (low, high) in zip(relevant, positions, strict=True):
            assert low <= t + 1 <= high  # the paper's positions are 1-based
            seen_at.add(t + 1)
        assert set(symbols[1:-1]) - {"X", "Y"} <= set("abcd")
        word = "".join(symbols[t] for t in relevant)
        assert order.TASKS[variant].classes[k] == names[int(word.replace("X", "0").replace("Y", "1"), 2)]
        classes.add(k)
    assert classes == set(range(len(names)))
    assert seen_at == {t for low, high in positions for t in range(low, high + 1)}


def _curve_falls(summary_path):
    curve = json.loads(summary_path.read_text())["curve"]
    errors = [e for _, e in curve]
    return errors[0], min(errors[-2:])


def test_adding_quick_run_learns(experiments, tmp_path, capsys):
    """A short problem (T = 20) in 20,000 sequences (seconds): the squared error falls well below chance."""
    curve = tmp_path / "curve.json"
    argv = ["--T", "20", "--seed", "0", "--max-sequences", "20000", "--test-size", "256", "--curve", str(curve)]
    summary = experiments["adding_problem"].main([*argv, "--log-every", "0"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last == summary
    assert {"variant", "T", "seed", "sequences_to_success", "test_wrong_of_256", "wall_s"} <= set(summary)
    # The paper's network and memory blocks, by default.
    assert summary["variant"] == "lstm_1997_net" and summary["block_size"] == 2
    assert sum(summary["test_wrong_by_target_tenth"]) == summary["test_wrong_of_256"]
    assert sum(summary["test_by_target_tenth"]) == 256
    first, final = _curve_falls(curve)
    # Chance (predicting the mean target 0.5) is a squared error of Var(X1 + X2)/16 = 1/24.
    assert first > 0.03
    assert final < first / 3


def test_the_old_connectivity_is_one_flag_away(experiments, tmp_path, capsys):
    """--variant lstm_1997: gates and cell inputs read only the cell outputs (no Q), trained with the same rule."""
    argv = ["--T", "20", "--max-sequences", "2000", "--test-size", "64", "--log-every", "0", "--variant", "lstm_1997"]
    summary = experiments["adding_problem"].main(argv)
    assert (summary["variant"], summary["gradient"], summary["block_size"]) == ("lstm_1997", "truncated", 2)
    net = experiments["sequence_trainer"].Network.build(
        "lstm_1997_net", 2, 4, 1, np.random.default_rng(0), block_size=2
    )
    assert net.params["Q"].shape == (4, 8) and np.all(np.abs(net.params["Q"]) <= 0.1)


def test_temporal_order_quick_run_learns(experiments, tmp_path, capsys):
    curve = tmp_path / "curve.json"
    argv = ["--seed", "0", "--max-sequences", "20000", "--test-size", "64", "--curve", str(curve), "--log-every", "0"]
    summary = experiments["temporal_order"].main(argv)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == summary
    first, final = _curve_falls(curve)
    # Chance is 3/16 per output once the net has learned the class priors; a net that tells the order is far below.
    assert first > 0.15
    assert final < first / 2


@pytest.mark.parametrize(
    ("experiment", "argv", "weights"),
    [
        ("adding_problem", ["--T", "20"], 93),  # Table 7
        ("temporal_order", [], 156),  # Table 9, 6a
        ("temporal_order", ["--task", "6b"], 308),  # Table 9, 6b
    ],
)
def test_each_task_runs_the_papers_network(experiments, monkeypatch, argv, experiment, weights):
    """A few hundred sequences of each task, with its defaults: the network has the paper's number of weights."""
    trainer = experiments["sequence_trainer"]
    built = []
    build = trainer.Network.build.__func__

    def record(cls, *args, **kwargs):
        built.append(build(cls, *args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trainer.Network, "build", classmethod(record))
    argv = [*argv, "--max-sequences", "300", "--test-size", "32", "--log-every", "0"]
    summary = experiments[experiment].main(argv)
    (net,) = built
    assert sum(p.size for p in net.params.values()) + net.V.size + net.c.size == weights
    assert summary["sequences_seen"] == 300 and summary["task"].startswith(experiment.split("_")[0])
    if "6b" in argv:
        assert (summary["cells"], summary["lr"], summary["gate_biases"]) == (6, 0.1, {"i": [-2.0, -4.0, -6.0]})


def test_gate_biases_are_spread_over_the_blocks(experiments):
    trainer = experiments["sequence_trainer"]
    net = trainer.Network.build("lstm_1997", 2, 4, 1, np.random.default_rng(0), gate_biases={"i": (-3.0, -6.0)})
    k = net.cell.GATES.index("i")
    np.testing.assert_array_equal(net.params["b"][4 * k : 4 * k + 4], [-3.0, -3.0, -6.0, -6.0])
    assert np.all(np.abs(net.params["W"]) <= 0.1)
    # Two memory blocks of two cells: one input-gate unit per block, so one bias each; b is [i (2), g (4), o (2)].
    blocks = trainer.Network.build(
        "lstm_1997", 2, 4, 1, np.random.default_rng(0), gate_biases={"i": (-3.0, -6.0)}, block_size=2
    )
    assert blocks.params["b"].shape == (8,) and blocks.params["W"].shape == (2, 8)
    np.testing.assert_array_equal(blocks.params["b"][:2], [-3.0, -6.0])
    assert np.all(np.abs(blocks.params["b"][2:]) <= 0.1)
    with pytest.raises(ValueError, match="gate_biases: lstm_1997 has no gate 'f'"):
        trainer.Network.build("lstm_1997", 2, 4, 1, np.random.default_rng(0), gate_biases={"f": (1.0,)})


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--T", "0"], "argument --T: expected an integer >= 20, got '0'"),
        (["--seed", "-1"], "argument --seed: expected an integer >= 0, got '-1'"),
        (["--variant", "nosuch"], "argument --variant: expected one of rnn_tanh, "),
        (["--batch", "0"], "argument --batch: expected a positive integer, got '0'"),
        (["--block-size", "0"], "argument --block-size: expected a positive integer, got '0'"),
        (["--cells", "3"], "argument --cells: expected a multiple of 2 (the default block size of lstm_1997_net)"),
        (["--variant", "lstm", "--block-size", "2"], "argument --block-size: expected a divisor of --cells 4 (1: lstm"),
        (["--lr", "nan"], "argument --lr: expected a finite number > 0, got 'nan'"),
        (["--max-sequences", "-5"], "argument --max-sequences: expected a positive integer, got '-5'"),
        (["--curve", "{tmp}/missing/curve.json"], "argument --curve: expected a file in an existing directory"),
        (["--curve", "{tmp}"], "argument --curve: expected a file in an existing directory"),
        (["--gate-bias", "o=x"], "argument --gate-bias: expected GATE=V1,V2,... with finite numbers"),
        (["--gate-bias", "o"], "argument --gate-bias: expected GATE=V1,V2,... with finite numbers"),
        (["--gate-bias", "f=1"], "argument --gate-bias: expected a gate of lstm_1997_net (i, g, o), got 'f'"),
        (["--output", "tanh"], "argument --output: invalid choice: 'tanh'"),
        (["--weight-range", "0"], "argument --weight-range: expected a finite number > 0, got '0'"),
        (["--probe-every", "10"], "argument --probe-every: its records go to the --curve file; give --curve"),
        (
            ["--probe-every", "10", "--curve", "{tmp}/c.json", "--variant", "rnn_tanh", "--block-size", "1"],
            "argument --probe-every: needs a cell with an input gate i and a cell input g, not rnn_tanh",
        ),
    ],
)
def test_experiment_arguments_are_checked_before_training(experiments, tmp_path, capsys, argv, message):
    """One line naming the flag and exit status 2, as lstmgen's own CLI, before any training."""
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exc:
        experiments["adding_problem"].main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert ": error: " in err and message in err


def test_the_storage_probe_records_the_run_without_changing_it(experiments, tmp_path, capsys):
    """--probe-every: the probe's records go to the curve file at 0, every N and at the end; the run is the same
    sequence for sequence as without it."""
    adding = experiments["adding_problem"]
    argv = ["--T", "20", "--max-sequences", "700", "--test-size", "64", "--log-every", "0", "--output", "linear"]
    plain, probed = tmp_path / "plain.json", tmp_path / "probed.json"
    adding.main([*argv, "--curve", str(plain)])
    adding.main([*argv, "--curve", str(probed), "--probe-every", "300"])
    runs = [json.loads(path.read_text()) for path in (plain, probed)]
    probes = runs[1].pop("probes")
    for run in runs:
        del run["wall_s"], run["us_per_sequence"]
    assert runs[0] == runs[1]
    assert [p["seen"] for p in probes] == [0, 300, 600, 700]
    first = probes[0]
    # Two memory blocks of two cells: a value per cell, and per block for the input gate.
    assert len(first["cell_state_abs"]) == len(first["cell_input_abs"]) == 4
    assert first["input_gate_bias"] == [-3.0, -6.0]
    assert len(first["input_gate_marked"]) == len(first["input_gate_all"]) == 2
    # The paper's biases: σ(−3) ≈ 0.047 and σ(−6) ≈ 0.0025 before training, marked steps or not.
    assert np.allclose(first["input_gate_all"], [0.047, 0.0025], rtol=0.3)
    assert first["mse"] > 0 and all(p["mse"] >= 0 for p in probes)
    assert runs[1]["sequences_seen"] == 700


def test_the_storage_probe_reads_a_cell_without_memory_blocks(experiments):
    """A gate per cell (lstm, block size 1): one input-gate value per cell, each gate's units found by name."""
    adding, trainer = experiments["adding_problem"], experiments["sequence_trainer"]
    net = trainer.Network.build("lstm", 2, 3, 1, np.random.default_rng(0), gate_biases={"i": (-2.0,)})
    record = adding.storage_probe(20)(net)
    assert record["input_gate_bias"] == [-2.0, -2.0, -2.0]
    assert len(record["input_gate_marked"]) == len(record["cell_input_abs"]) == 3
    assert net.gate_units("g") == slice(6, 9)  # lstm's gates i, f, g, o, each H wide


@pytest.mark.parametrize("output", ["logistic", "linear", "logistic-ce"])
def test_training_step_follows_the_gradient(experiments, output):
    """One SGD step with lr 1 moves every weight by minus the gradient of the batch's mean loss (½‖out − target‖²;
    for logistic-ce the cross-entropy summed over the outputs), checked by central differences (the full
    gradient, so that the loss's gradient is the one applied)."""
    trainer = experiments["sequence_trainer"]
    rng = np.random.default_rng(1)
    net = trainer.Network.build("lstm_1997_net", 2, 4, 1, rng, gradient="full", block_size=2, output=output)
    x, lengths, targets = rng.uniform(-1, 1, (6, 3, 2)), np.array([6, 4, 5]), rng.uniform(0.2, 0.8, (3, 1))

    def loss() -> float:
        out = net.predict(x, lengths)
        if output == "logistic-ce":
            return float(np.mean(-(targets * np.log(out) + (1 - targets) * np.log(1 - out)).sum(axis=1)))
        return float(np.mean(0.5 * ((out - targets) ** 2).sum(axis=1)))

    weights = {**net.params, "V": net.V, "c": net.c}
    numeric = {}
    for name, w in weights.items():
        numeric[name] = np.zeros_like(w)
        for k in np.ndindex(w.shape):
            keep = w[k]
            w[k] = keep + 1e-6
            up = loss()
            w[k] = keep - 1e-6
            numeric[name][k] = (up - loss()) / 2e-6
            w[k] = keep
    before = {name: w.copy() for name, w in weights.items()}
    net.train_step((x, lengths, targets), lr=1.0)
    after = {**net.params, "V": net.V, "c": net.c}
    for name in weights:
        np.testing.assert_allclose(before[name] - after[name], numeric[name], rtol=1e-6, atol=1e-9, err_msg=name)


def test_a_run_stopped_by_sigterm_still_tests_and_reports(experiments):
    """SIGTERM (or Ctrl-C) ends training after the current update; the run is tested and says it stopped early."""
    trainer, adding = experiments["sequence_trainer"], experiments["adding_problem"]
    task, draws = adding.task(20), []

    def sample(rng, n):
        draws.append(n)
        if len(draws) == 2:  # the second draw of training sequences: the first 1024 were trained on
            os.kill(os.getpid(), signal.SIGTERM)
        return adding.adding_batch(rng, 20, n)

    task = dataclasses.replace(task, sample=sample)
    rng = np.random.default_rng(0)
    net = trainer.Network.build("lstm_1997_net", 2, 4, 1, rng, block_size=2)
    before = signal.getsignal(signal.SIGTERM)
    result = trainer.train(task, net, rng, lr=0.5, max_sequences=10**9, test_size=16)
    assert result.stopped and result.sequences_to_success is None
    assert result.sequences_seen == 1025 and result.test_size == 16 and draws[-1] == 16
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
    summary = trainer.report({"task": task.name}, result)
    assert summary["stopped_early"] is True and summary["sequences_seen"] == 1025


def test_summary_groups_runs_by_task_and_settings(tmp_path, monkeypatch):
    """summarize.py: one row per task, cell, gradient and changed settings, tasks in natural order ("T=500"
    before "T=1000"), a stopped or failed run counted in its group but not in the mean; the PNG is written."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    summarize = importlib.import_module("summarize")

    def run(name, task, success, **settings):
        fields = {"task": task, "variant": "lstm_1997_net", "gradient": "truncated", "lr": 0.5, "output": "logistic"}
        fields |= {"sequences_to_success": success, "sequences_seen": success or 3000, "test_wrong_of_2560": 1}
        fields |= {"wall_s": 1.0, "us_per_sequence": 2.0, "curve": [[500, 0.05], [1000, 0.01]], **settings}
        (tmp_path / "sub").mkdir(exist_ok=True)
        (tmp_path / "sub" / name).write_text(json.dumps(fields))

    run("a.json", "adding T=1000", 2000)
    run("b.json", "adding T=500", 1000, output="linear")
    run("c.json", "adding T=500", 3000, output="linear")
    run("d.json", "adding T=500", None, output="linear")
    run("e.json", "temporal order 6b", 500, lr=0.1, gate_biases={"i": [-2.0, -4.0, -6.0], "o": [-1.0]})
    probe = {"cell_input_abs": [0.1, 0.2, 0.1, 0.1], "input_gate_marked": [0.05, 0.01], "input_gate_all": [0.05, 0.002]}
    probes = [{"seen": seen, **probe} for seen in (0, 500, 1000)]
    run("f.json", "adding T=1000", 3000, gate_biases={"i": [-4.6, -6.0]}, seed=0, probes=probes)
    # The same seed again, with a smaller budget (not succeeded): one run, the one that says more.
    run("g.json", "adding T=1000", None, gate_biases={"i": [-4.6, -6.0]}, seed=0)
    run("h.json", "adding T=1000", 4000, weight_range=0.2)
    run("i.json", "adding T=1000", 5000, weight_range=0.1)  # the default: no setting of its own
    rows = summarize.table(summarize.load_runs(tmp_path)).splitlines()[2:]
    tasks = ["| adding T=500", *["| adding T=1000"] * 3, "| temporal order 6b"]
    assert [r.split(" | ")[0] for r in rows] == tasks
    assert " | output linear | 2/3 | 2,000 ± 1,000 (1,000–3,000) | " in rows[0]
    # Input-gate biases other than the experiment's are a setting of their own; 6b's own ones and lr 0.1 are not.
    assert any(" | i biases [-4.6, -6.0] | 1/1 | 3,000 " in row for row in rows[1:4])
    assert any(" | weight_range 0.2 | 1/1 | 4,000 " in row for row in rows[1:4])
    assert any(" | — | 2/2 | 3,500 " in row for row in rows[1:4])
    assert " | o biases [-1.0] | 1/1 | " in rows[4]
    summarize.plot(summarize.load_runs(tmp_path), tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    summarize.plot_probes(summarize.load_runs(tmp_path), tmp_path / "probes.png")
    assert (tmp_path / "probes.png").read_bytes().startswith(b"\x89PNG")
