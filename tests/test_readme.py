"""Every code block of the README runs as written, so the page a newcomer reads cannot rot.

Python blocks run one by one, each in a fresh interpreter (a reader pastes one block, not the page); shell
blocks run their commands in an empty directory, without the ``pip install`` they start with (the fresh-clone
check installs for real); the TOML block is the shipped example. Plain blocks are command synopses, not code.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

from lstmgen.spec_file import load_spec_file

README = (REPO / "README.md").read_text()
BLOCKS = [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", README, re.M | re.S)]
#: Shell commands of the README that this test does not run, and why.
NOT_RUN = {"pytest": "the suite itself"}


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCKS if lang == language]


def test_the_readme_has_the_blocks_this_test_runs():
    assert {lang for lang, _ in BLOCKS} <= {"", "python", "bash", "toml"}
    assert len(blocks("python")) >= 3 and len(blocks("bash")) >= 2


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """One user cache for every block (the first compiles, the others reuse it), lstmgen as installed."""
    cache = tmp_path_factory.mktemp("cache")
    return {**os.environ, "LSTMGEN_CACHE_DIR": str(cache), "MPLBACKEND": "Agg"}


@pytest.mark.parametrize("k", range(len(blocks("python"))))
def test_python_block_runs(k, tmp_path, environment):
    code = blocks("python")[k]
    run = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"README python block {k} failed:\n{code}\n{run.stderr[-3000:]}"


def _commands(block: str) -> list[str]:
    commands = []
    for line in block.splitlines():
        line = re.sub(r"^pip install \S+ && ", "", line.strip())
        if line and not line.startswith("#"):
            commands.append(line)
    return commands


@pytest.mark.parametrize("k", range(len(blocks("bash"))))
def test_shell_block_runs(k, tmp_path, environment):
    for command in _commands(blocks("bash")[k]):
        if command in NOT_RUN:
            continue
        if "pdflatex" in command and shutil.which("pdflatex") is None:
            pytest.skip("pdflatex is not installed here (.ci/run installs it)")
        if command.startswith("python benchmarks/"):
            command = command.replace("python benchmarks/", f"{sys.executable} {REPO}/benchmarks/", 1)
        run = subprocess.run(
            command, shell=True, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600
        )
        assert run.returncode == 0, f"README command failed: {command}\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}"


def test_toml_block_is_the_shipped_example(tmp_path):
    (toml,) = blocks("toml")
    (tmp_path / "mgu.toml").write_text(toml)
    assert load_spec_file(tmp_path / "mgu.toml") == load_spec_file(REPO / "examples" / "mgu.toml")
