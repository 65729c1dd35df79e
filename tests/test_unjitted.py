"""The generated kernels also run as plain Python (NUMBA_DISABLE_JIT=1), for readable failures and debugging,
and give the same numbers as the compiled ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO
from problems import random_problem

RUN = """
import json, sys
import numpy as np
sys.path.insert(0, {repo!r})
sys.path.insert(0, {tests!r})
import importlib
from problems import random_problem
m = importlib.import_module("generated.{name}")
x, params, state, dy, dstate = random_problem(m, (3, 2, 3, 4), np.{dtype}, seed=3)
y, final, tape = m.forward(x, params, state)
dx, grads, dstate0 = m.backward(dy, tape, dstate)
print(json.dumps({{"y": y.tolist(), "dx": dx.tolist(), **{{k: v.tolist() for k, v in grads.items()}},
                  "dstate0": [d.tolist() for d in dstate0]}}))
"""


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["lstm_peephole", "gru_v3_truncated", "lstm_fgr"])
def test_plain_python_run_matches_the_compiled_kernel(generated_module, name, dtype):
    code = RUN.format(repo=str(REPO), tests=str(REPO / "tests"), name=name, dtype=dtype)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    plain = json.loads(out.stdout)

    m = generated_module(name)
    x, params, state, dy, dstate = random_problem(m, (3, 2, 3, 4), np.dtype(dtype).type, seed=3)
    y, _, tape = m.forward(x, params, state)
    dx, grads, dstate0 = m.backward(dy, tape, dstate)
    compiled = {"y": y, "dx": dx, **grads, "dstate0": np.stack(dstate0)}
    rtol = 1e-12 if dtype == "float64" else 1e-5
    for key, value in compiled.items():
        np.testing.assert_allclose(np.asarray(plain[key]), value, rtol=rtol, atol=rtol, err_msg=key)
