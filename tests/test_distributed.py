"""A TorchRecurrent trains under DistributedDataParallel (gloo, two processes on this machine) exactly as one
process does on the whole batch: the same gradients at the first step, the same parameters after a few."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
from conftest import REPO
from ddp_worker import B, problem, train


def test_distributed_data_parallel_matches_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    run = subprocess.run(
        [*command, str(REPO / "tests" / "ddp_worker.py"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    model, x, target = problem()
    single = train(model, x, target)
    final = {name: p.detach().numpy() for name, p in model.named_parameters()}
    assert B % 2 == 0  # equal halves: the mean of the halves' mean losses is the whole batch's
    for rank in (0, 1):
        saved = np.load(tmp_path / f"rank{rank}.npz")
        for name, grad in single[0].items():
            np.testing.assert_allclose(saved[f"grad0/{name}"], grad, rtol=1e-12, atol=1e-14, err_msg=name)
        for name, value in final.items():
            np.testing.assert_allclose(saved[f"param/{name}"], value, rtol=1e-12, atol=1e-14, err_msg=name)
