"""Every built-in's CUDA step kernels compile to PTX (numba-cuda's NVVM) and assemble with the toolkit's
``ptxas -v`` for sm_80 and sm_90, in both dtypes, without a register spill and within the documented resources
(docs/architecture.md, "The GPU target": no shared memory, at most 255 registers). The build runs in a process
of its own from the start of the session (tests/conftest.py); this test, in whichever process runs it, waits for
its exit status."""

from __future__ import annotations

import json
import shutil
import time

from conftest import GPU_RESOURCES, GPU_RESOURCES_LOG, GPU_RESOURCES_STATUS, start_gpu_resources

from lstmgen.variants import VARIANTS


def _wait_for_the_build() -> tuple[int, str]:
    """The exit status and output of the session's PTX build (tests/conftest.py starts it); started here when the
    session did not (a run of this file from another directory)."""
    if not GPU_RESOURCES_STATUS.exists() and not GPU_RESOURCES_LOG.exists():  # pragma: no cover
        start_gpu_resources()
    deadline = time.monotonic() + 900
    while not GPU_RESOURCES_STATUS.exists():
        assert time.monotonic() < deadline, "the PTX build did not finish within 900 s"
        time.sleep(1)
    return int(GPU_RESOURCES_STATUS.read_text()), GPU_RESOURCES_LOG.read_text()


def test_every_cuda_kernel_assembles_without_spills():
    assert shutil.which("ptxas"), "ptxas (the CUDA toolkit) is expected on PATH"
    status, output = _wait_for_the_build()
    assert status == 0, output[-4000:]
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
