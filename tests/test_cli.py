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


def test_missing_output_directory(tmp_path, capsys):
    assert main(["generate", "lstm", "--out", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_python_dash_m(tmp_path):
    out = subprocess.run([sys.executable, "-m", "lstmgen", "list"], capture_output=True, text=True, check=True)
    assert "lstm_peephole" in out.stdout


def test_bad_arguments_exit_with_usage():
    with pytest.raises(SystemExit) as exc:
        main(["generate", "--gradient", "sometimes"])
    assert exc.value.code == 2
