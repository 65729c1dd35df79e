"""Every built-in's CUDA step kernels compile to PTX (numba-cuda's NVVM) and assemble with the toolkit's
``ptxas -v`` for sm_80 and sm_90, in both dtypes, without a register spill and within the documented resources
(docs/architecture.md, "The GPU target": no shared memory, at most 255 registers). The build runs in a process
of its own from the start of the session (tests/conftest.py); this test waits for it."""

from __future__ import annotations

import json
import shutil
import subprocess

from conftest import GPU_RESOURCES, gpu_resources_command

from lstmgen.variants import VARIANTS


def test_every_cuda_kernel_assembles_without_spills(request):
    assert shutil.which("ptxas"), "ptxas (the CUDA toolkit) is expected on PATH"
    process = getattr(request.config, "lstmgen_gpu_resources", None)
    if process is None:  # pragma: no cover - the session starts it; run it here when it did not
        command, env = gpu_resources_command()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-4000:]
    rows = json.loads(GPU_RESOURCES.read_text())
    seen = {(r["variant"], r["kernel"], r["dtype"], r["arch"]) for r in rows}
    expected = {
        (v, k, d, a)
        for v in VARIANTS
        for k in ("_forward_steps", "_backward_steps")
        for d in ("float32", "float64")
        for a in ("sm_80", "sm_90")
    }
    assert seen == expected
    for r in rows:
        where = f"{r['variant']} {r['kernel']} {r['dtype']} {r['arch']}"
        assert r["spill_stores"] == r["spill_loads"] == 0, f"{where}: spills ({r})"
        assert r["shared_bytes"] == 0, f"{where}: shared memory ({r})"
        assert 0 < r["registers"] <= 255, f"{where}: registers ({r})"
