"""The lstmgen command line."""

from __future__ import annotations

import subprocess
import sys

import pytest

from lstmgen.cli import main
from lstmgen.variants import VARIANTS


def test_list_shows_every_variant_with_its_paper(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name, spec in VARIANTS.items():
        assert name in out
        assert spec.paper in out


def test_generate_named_variant(tmp_path, capsys):
    assert main(["generate", "lstm_peephole", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lstm_peephole.py").is_file()
    assert "lstm_peephole" in capsys.readouterr().out


def test_generate_everything_into_default_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["generate"]) == 0
    assert sorted(p.name for p in (tmp_path / "generated").iterdir()) == sorted(f"{n}.py" for n in VARIANTS)
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["variant", "file", "parameters", "time"]
    assert len(table) == 2 + len(VARIANTS)


def test_generate_truncated_gradient(tmp_path):
    assert main(["generate", "lstm", "--gradient", "truncated", "--out", str(tmp_path)]) == 0
    assert 'GRADIENT = "truncated"' in (tmp_path / "lstm_truncated.py").read_text()


def test_unknown_variant_writes_nothing(tmp_path, capsys):
    assert main(["generate", "lstm", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown variant 'nope'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_missing_output_directory_is_created(tmp_path):
    """One rule for every form of generate: --out is created (with its parents) when missing."""
    assert main(["generate", "lstm", "--out", str(tmp_path / "missing" / "deeper")]) == 0
    assert (tmp_path / "missing" / "deeper" / "lstm.py").is_file()
    (tmp_path / "file").write_text("")
    assert main(["generate", "lstm", "--out", str(tmp_path / "file")]) == 2
    assert main(["generate", "lstm", "--out", str(tmp_path / "file" / "below")]) == 2


def test_two_cells_that_write_one_file_are_refused(tmp_path, capsys):
    spec = tmp_path / "f.toml"
    spec.write_text('name = "lstm"\nstate = ["h"]\n[[gates]]\nname = "g"\nactivation = "tanh"\n[equations]\nh = "g"\n')
    out = tmp_path / "out"
    assert main(["generate", "lstm", "--spec", str(spec), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--spec {spec}: writes lstm.py, as lstm does (rename one of the cells)" in err
    assert not out.exists()  # nothing written
    assert main(["generate", "lstm", "lstm", "--out", str(out)]) == 0  # the same variant twice: once


@pytest.mark.parametrize("name", ["numpy", "math", "json"])
def test_a_cell_named_like_an_importable_module_is_refused(tmp_path, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)  # --out is the working directory: `import numpy` there would find numpy.py
    spec = tmp_path / "f.toml"
    spec.write_text(
        f'name = "{name}"\nstate = ["h"]\n[[gates]]\nname = "g"\nactivation = "tanh"\n[equations]\nh = "g"\n'
    )
    assert main(["generate", "--spec", str(spec), "--out", str(tmp_path)]) == 2
    assert f"name: '{name}' is " in capsys.readouterr().err
    assert not (tmp_path / f"{name}.py").exists()


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lstmgen", "list"], capture_output=True, text=True, check=True)
    assert "lstm_peephole" in out.stdout


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--gradient", "sometimes"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["cec", "lstm", "--steps", "5", "--seed", "-5"], "--seed: expected a non-negative integer, got -5"),
        (["cec", "lstm", "--steps", "1000000000"], "--steps: expected an integer in [1, 5000]"),
        (["cec", "lstm", "--steps", "0"], "--steps: expected an integer in [1, 5000]"),
        (["cec", "lstm", "--plot", "x.png"], "--steps: --plot and --compare measure the error flow"),
        (["cec", "--spec", "{heads3}", "--steps", "3"], "heads: the measurement runs H = 32 units, which h3's heads"),
        (["cec", "lstm_1997", "--steps", "3", "--block-size", "0"], "--block-size: expected a divisor of the measured"),
        (["cec", "lstm", "--steps", "3", "--block-size", "2"], "--block-size: lstm has no gates a memory block"),
    ],
)
def test_cec_refuses_bad_measurement_arguments_before_printing(argv, message, capsys, tmp_path):
    heads3 = tmp_path / "h3.toml"
    heads3.write_text(
        'name = "h3"\nstate = ["h"]\nheads = 3\n[[gates]]\nname = "n"\nactivation = "tanh"\n[equations]\nh = "n"\n'
    )
    argv = [a.replace("{heads3}", str(heads3)) for a in argv]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert message in err and out == ""


def test_cec_plot_without_matplotlib_fails_before_measuring(monkeypatch, capsys, tmp_path):
    import importlib.util

    import lstmgen.analysis.error_flow as error_flow

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    monkeypatch.setattr(error_flow, "state_gradients", lambda *a, **k: pytest.fail("measured before failing"))
    assert main(["cec", "lstm", "--steps", "5", "--plot", str(tmp_path / "f.png")]) == 2
    assert "--plot: matplotlib is not installed" in capsys.readouterr().err


def test_cec_progress_on_a_terminal_only(monkeypatch, capsys):
    from lstmgen import cli

    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert cli._progress("lstm") is None
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    report = cli._progress("[1/2] lstm")
    for q in range(1, 41):
        report(q, 40)
    err = capsys.readouterr().err
    assert err.count("\r") == 20 and err.endswith("[1/2] lstm: measured 40/40 steps back\n")
