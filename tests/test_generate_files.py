"""Writing generated modules: clear errors for bad output directories, atomic and concurrent writes, and a
module that still runs when numba's cache directory cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import lstmgen
from lstmgen.cli import main
from lstmgen.generate import generate_source, write_module

REPO = Path(__file__).resolve().parent.parent


def test_missing_output_directory(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"out: output directory .*missing. does not exist"):
        write_module("rnn_tanh", tmp_path / "missing")
    assert main(["generate", "rnn_tanh", "--out", str(tmp_path / "missing")]) == 0  # the CLI creates it


def test_output_path_that_is_a_file(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        write_module("rnn_tanh", tmp_path / "f")


def test_read_only_output_directory(tmp_path, monkeypatch, capsys):
    if os.geteuid() != 0:  # a real read-only directory
        tmp_path.chmod(0o500)
    else:  # root writes anywhere: make the temporary file's creation fail as it would

        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkstemp", refuse)
    try:
        with pytest.raises(PermissionError, match=r"out: cannot write to output directory .*Permission denied"):
            write_module("rnn_tanh", tmp_path)
        assert main(["generate", "rnn_tanh", "--out", str(tmp_path)]) == 2
        assert "cannot write to output directory" in capsys.readouterr().err
    finally:
        tmp_path.chmod(0o700)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = write_module("rnn_tanh", tmp_path)
    before = target.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_module("lstm", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rnn_tanh.py"]
    assert target.read_bytes() == before


def test_concurrent_generate_into_one_directory(tmp_path):
    """Four processes write the same modules at once: every file ends whole and byte-exact, no temporaries."""
    command = [sys.executable, "-m", "lstmgen", "generate", "lstm", "gru", "lstm_peephole", "--out", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru.py", "lstm.py", "lstm_peephole.py"]
    for name in ("lstm", "gru", "lstm_peephole"):
        assert (tmp_path / f"{name}.py").read_text() == generate_source(name)


def test_module_runs_when_numba_cannot_write_its_cache(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    code = (
        "import numpy as np, generated.rnn_tanh as m\n"
        "p = m.init_params(2, 3, seed=0)\n"
        "y, _, tape = m.forward(np.ones((2, 1, 2)), p)\n"
        "dx, grads, _ = m.backward(np.ones_like(y), tape)\n"
        "print(float(y.sum()), float(dx.sum()))\n"
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(blocker / "cache"), "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert not (blocker / "cache").exists()
    y_sum, dx_sum = map(float, run.stdout.split())
    assert abs(y_sum) > 0 and abs(dx_sum) > 0


def test_stale_temporaries_of_killed_writers_are_removed(tmp_path):
    """A writer killed between write and rename leaves .<name>.py.*.tmp: the next write removes the ones older
    than an hour, never a recent one (a concurrent writer may still rename it)."""
    old = tmp_path / ".rnn_tanh.py.abc123.tmp"
    recent = tmp_path / ".rnn_tanh.py.def456.tmp"
    other = tmp_path / ".gru.py.abc123.tmp"
    for f in (old, recent, other):
        f.write_text("half a module")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    os.utime(other, (two_hours_ago, two_hours_ago))
    write_module("rnn_tanh", tmp_path)
    assert not old.exists() and recent.exists() and other.exists()


def test_a_write_that_fails_midway_names_the_file(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(27, "File too large")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    with pytest.raises(OSError, match=r"cannot write '.*rnn_tanh\.py' \(File too large\)"):
        write_module("rnn_tanh", tmp_path)
    assert list(tmp_path.iterdir()) == []  # no temporary left behind


def test_write_module_refuses_a_name_that_shadows_a_module(tmp_path, monkeypatch):
    from dataclasses import replace

    from lstmgen.variants import RNN_TANH

    monkeypatch.chdir(tmp_path)  # where `python -c "import numpy"` would import numpy.py
    with pytest.raises(ValueError, match="name: 'numpy' is an installed module"):
        write_module(replace(RNN_TANH, name="numpy"), tmp_path)
    assert list(tmp_path.iterdir()) == []
    sub = tmp_path / "sub"
    sub.mkdir()
    monkeypatch.syspath_prepend(str(sub))
    with pytest.raises(ValueError, match="name: 'numpy' is an installed module"):
        write_module(replace(RNN_TANH, name="numpy"), sub)
    # Elsewhere the file is imported by a qualified name (generated.sru) and shadows nothing installed: a user
    # of the `sru` package can still generate the built-in sru; the standard library's names stay refused.
    elsewhere = tmp_path / "generated"
    elsewhere.mkdir()
    assert write_module(replace(RNN_TANH, name="numpy"), elsewhere).name == "numpy.py"
    with pytest.raises(ValueError, match="name: 'json' is a module of Python's standard library"):
        write_module(replace(RNN_TANH, name="json"), elsewhere)


RUN_CELL = """
import sys, warnings
import numpy as np
sys.path.insert(0, {directory!r})
import rnn_tanh as m
warnings.simplefilter("always")
p = m.init_params(2, 3, seed=0)
y, f, t = m.forward(np.zeros((2, 1, 2)), p)  # the forward kernel alone: its cache files are the ones damaged
print("ran")
"""


def _corrupt(cache: Path, how: str) -> None:
    rng = np.random.default_rng(0)
    pattern = "*.nbc" if how.startswith("data") else "*.nbi"
    for path in cache.glob(pattern):
        data = path.read_bytes()
        if how.endswith("truncated"):
            path.write_bytes(data[: len(data) // 3])
        elif how.endswith("random"):
            path.write_bytes(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())
        else:
            path.write_bytes(b"")


def test_a_corrupted_numba_cache_is_discarded_once_with_a_warning(tmp_path):
    """Truncated or random data files, an empty or random index: each time one warning, then a clean run."""
    write_module("rnn_tanh", tmp_path)
    code = RUN_CELL.format(directory=str(tmp_path))

    def run():
        return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)

    first = run()
    assert first.returncode == 0 and "ran" in first.stdout, first.stderr
    for how in ("data truncated", "data random", "index empty", "index random"):
        _corrupt(tmp_path / "__pycache__", how)
        again = run()
        assert again.returncode == 0 and "ran" in again.stdout, (how, again.stderr)
        assert again.stderr.count("numba's on-disk cache of this module was unreadable") == 1, (how, again.stderr)
    last = run()  # the cache written afresh is read back without a word
    assert last.returncode == 0 and "unreadable" not in last.stderr, last.stderr


def test_init_params_names_a_bad_seed(generated_module):
    with pytest.raises(TypeError, match=r"seed: expected None, a non-negative integer or a numpy Generator, got 'abc'"):
        generated_module("rnn_tanh").init_params(2, 3, seed="abc")
    with pytest.raises(TypeError, match=r"seed: expected .* got -1"):
        generated_module("rnn_tanh").init_params(2, 3, seed=-1)


@pytest.mark.parametrize("gradient", ["full", "truncated"])
def test_stages_returns_every_stage(gradient):
    """lstmgen.stages shows the pipeline: each stage's value, the last one the module generate_source returns."""
    from lstmgen.codegen.kernel_ir import ModulePlan
    from lstmgen.symbolic.derive_backward import BackwardEquations
    from lstmgen.symbolic.expression_lists import KernelExpressions
    from lstmgen.symbolic.forward_equations import ForwardEquations

    result = lstmgen.stages("lstm_peephole", gradient)
    assert result.spec == lstmgen.get_variant("lstm_peephole")
    assert isinstance(result.forward, ForwardEquations) and result.forward.spec == result.spec
    assert isinstance(result.backward, BackwardEquations) and result.backward.gradient == gradient
    assert isinstance(result.expressions, KernelExpressions) and result.expressions.backward == result.backward
    assert isinstance(result.plan, ModulePlan)
    assert result.layout.kernel == result.expressions and result.layout.spec == result.spec
    assert result.text.forward_text[0] in result.module
    assert result.kernels.forward.startswith("def _forward_kernel(")
    assert result.kernels.backward.startswith("def _backward_kernel(")
    assert "_sigmoid" in result.kernels.helpers
    assert result.kernels.forward in result.module and result.kernels.backward in result.module
    assert result.module == lstmgen.generate_source("lstm_peephole", gradient)
