"""The CUDA target: every built-in's numba.cuda module against its CPU module (which the suite checks against
autograd), on the CUDA simulator where no GPU is present, so that CI runs all of it."""

from __future__ import annotations

import importlib.metadata
import os

import numpy as np
import pytest
from conftest import GENERATED, REPO, STRUCTURE_SIZES, import_without_jit

import lstmgen
from lstmgen.codegen.render_module import module_name
from lstmgen.variants import VARIANTS

#: Tiny sizes: the simulator runs every thread as a Python thread. Three blocks (batch rows), a length of each
#: kind (full, shorter, zero), fewer threads than units (each thread takes several).
T, B, H = 3, 3, 4
LENGTHS = np.array([3, 1, 0])
THREADS = 3
SIZES = STRUCTURE_SIZES
EXAMPLES = ("gru_layernorm", "slstm_exp_forget")


def _close(got, expected, dtype, what):
    # float32: the reductions over the units sum in another order on the GPU (per-thread partial sums).
    tol = 1e-10 if dtype == np.float64 else 3e-4
    scale = max(1.0, float(np.max(np.abs(expected), initial=0)))
    error = float(np.max(np.abs(np.asarray(got, np.float64) - expected), initial=0))
    assert error <= tol * scale, f"{what}: max error {error:.3g} (scale {scale:.3g})"


def _compare(cpu, gpu, dtype, reverse, seed=0, **sizes):
    rng = np.random.default_rng(seed)
    n_in = H if cpu.INPUT_ROW else 2
    params = cpu.init_params(n_in, H, dtype=dtype, seed=seed, **sizes)
    x = rng.standard_normal((T, B, n_in)).astype(dtype)
    inputs = {k: (rng.random((T, B, H)) > 0.5).astype(dtype) for k in cpu.INPUTS} or None
    kw = dict(lengths=LENGTHS, reverse=reverse, inputs=inputs)
    y1, s1, tape1 = cpu.forward(x, params, **kw)
    y2, s2, tape2 = gpu.forward(x, params, **kw)
    dy = rng.standard_normal(y1.shape).astype(dtype)
    dstate = [rng.standard_normal(s.shape).astype(dtype) for s in s1]
    dx1, g1, d1 = cpu.backward(dy, tape1, dstate)
    dx2, g2, d2 = gpu.backward(dy, tape2, dstate)
    assert y2.dtype == dx2.dtype == dtype
    _close(y2, y1, dtype, "y")
    _close(dx2, dx1, dtype, "dx")
    for k, (a, b) in enumerate(zip(s2, s1, strict=True)):
        _close(a, b, dtype, f"final state {cpu.STATE[k]}")
    for k, (a, b) in enumerate(zip(d2, d1, strict=True)):
        _close(a, b, dtype, f"dstate0 {cpu.STATE[k]}")
    assert g2.keys() == g1.keys()
    for name in g1:
        _close(g2[name], g1[name], dtype, f"d{name}")


@pytest.fixture(scope="module")
def cuda_modules(tmp_path_factory):
    """(CPU module, CUDA module) of a built-in (the committed CPU module) or an example's spec file.

    The CPU module runs by Python (numba's JIT off): the same code, checked against autograd compiled elsewhere in
    the suite, without minutes of compilation on a cold cache for these tiny sizes."""
    cache = {}
    directory = tmp_path_factory.mktemp("cuda")
    (directory / "cpu").mkdir()

    def get(variant, gradient):
        key = (str(variant), gradient)
        if key not in cache:
            if variant in VARIANTS:
                cpu = import_without_jit(GENERATED / f"{module_name(variant, gradient)}.py")
            else:
                cpu = import_without_jit(lstmgen.write_module(variant, directory / "cpu", gradient))
            gpu = lstmgen.load_module(lstmgen.write_module(variant, directory, gradient, target="cuda"))
            gpu.THREADS, gpu.GEMM_TILE = THREADS, 2
            cache[key] = cpu, gpu
        return cache[key]

    return get


def test_the_simulator_is_installed():
    """The CUDA extra (which the test extra includes) brings NVIDIA's numba-cuda, whose simulator runs these tests
    where no GPU is present: a missing package fails here, it does not skip."""
    from numba import cuda

    assert importlib.metadata.version("numba-cuda") == "0.30.4"
    assert cuda.implementation == "NVIDIA"
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        assert cuda.jit.__module__.startswith("numba.cuda.simulator")


@pytest.mark.parametrize("gradient", ["full", "truncated"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cuda_module_matches_the_cpu_module(cuda_modules, variant, gradient):
    """Full gradient: float64 forward in time and float32 reversed. Truncated, whose modules differ from the full
    ones only in the backward kernel: float64 reversed (the tight tolerance, the other direction; the simulator
    runs every thread in Python, so each case costs seconds)."""
    cpu, gpu = cuda_modules(variant, gradient)
    cases = [(np.float64, False), (np.float32, True)] if gradient == "full" else [(np.float64, True)]
    for dtype, reverse in cases:
        _compare(cpu, gpu, dtype, reverse=reverse, **SIZES.get(variant, {}))


@pytest.mark.parametrize("example", EXAMPLES)
def test_cuda_module_of_an_example_cell(cuda_modules, example):
    path = REPO / "examples" / f"{example}.toml"
    cpu, gpu = cuda_modules(path, "full")
    for k, dtype in enumerate((np.float64, np.float32)):
        _compare(cpu, gpu, dtype, reverse=not k)


def test_cuda_module_keeps_the_contract(cuda_modules):
    """The CUDA module has the CPU module's constants and functions."""
    cpu, gpu = cuda_modules("lstm_peephole", "full")
    for name in ("VARIANT", "GATES", "RECURRENT_GATES", "STATE", "PARAMS", "INPUTS", "GRADIENT", "TAPE_EXTRA"):
        assert getattr(gpu, name) == getattr(cpu, name), name
    assert gpu.param_shapes(3, 4) == cpu.param_shapes(3, 4)
    with pytest.raises(ValueError, match="lengths"):
        gpu.forward(np.zeros((2, 1, 3)), gpu.init_params(3, 4), lengths=np.array([5]))


def test_generate_command_writes_a_cuda_module(tmp_path):
    from lstmgen.cli import main

    assert main(["generate", "lstm", "--gradient", "both", "--target", "cuda", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.glob("*.py")) == ["lstm_cuda.py", "lstm_truncated_cuda.py"]
    source = (tmp_path / "lstm_truncated_cuda.py").read_text()
    assert "lstmgen generate lstm --gradient truncated --target cuda --out generated/" in source
    assert "@cuda.jit\ndef _forward_steps(" in source and "@cuda.jit\ndef _backward_steps(" in source
    assert source == lstmgen.generate_source("lstm", "truncated", target="cuda")  # deterministic


def test_unknown_target_is_refused():
    with pytest.raises(ValueError, match="target: expected one of"):
        lstmgen.generate_source("lstm", target="tpu")


@pytest.mark.parametrize("variant", ["lstm_1997", "zoneout_lstm", "lstmp", "slstm"])
def test_device_arrays_stay_on_the_device(cuda_modules, variant):
    """Given device arrays, forward and backward compute on the device and return device arrays: the same
    numbers as from host arrays (the same kernels run)."""
    from numba import cuda

    _, gpu = cuda_modules(variant, "full")
    rng = np.random.default_rng(3)
    n_in = H if gpu.INPUT_ROW else 2
    params = gpu.init_params(n_in, H, seed=3, **SIZES.get(variant, {}))
    x = rng.standard_normal((T, B, n_in))
    inputs = {k: (rng.random((T, B, H)) > 0.5).astype(np.float64) for k in gpu.INPUTS} or None
    y, state, _ = gpu.forward(x, params, inputs=inputs)  # a state to start from
    dy = rng.standard_normal(y.shape)
    dstate = tuple(rng.standard_normal(s.shape) for s in state)

    def run(put):
        on = {k: put(v) for k, v in (inputs or {}).items()} or None
        params_on = {k: put(v) for k, v in params.items()}
        start = tuple(map(put, state))
        y, final, tape = gpu.forward(put(x), params_on, start, lengths=LENGTHS, reverse=True, inputs=on)
        dx, grads, dstate0 = gpu.backward(put(dy), tape, tuple(map(put, dstate)))
        return y, final, dx, grads, dstate0

    host = run(lambda a: a)
    device = run(cuda.to_device)
    y, final, dx, grads, dstate0 = device
    arrays = [y, dx, *final, *dstate0, *grads.values()]
    assert all(not isinstance(a, np.ndarray) and hasattr(a, "copy_to_host") for a in arrays)
    for got, expected in zip(arrays, [host[0], host[2], *host[1], *host[4], *host[3].values()], strict=True):
        np.testing.assert_array_equal(got.copy_to_host(), expected)


def test_device_array_checks(cuda_modules):
    from numba import cuda

    _, gpu = cuda_modules("lstm", "full")
    params = gpu.init_params(2, H)
    x = np.zeros((T, B, 2))
    with pytest.raises(TypeError, match=r"params\['W'\]: expected dtype float64"):
        gpu.forward(cuda.to_device(x), params | {"W": cuda.to_device(params["W"].astype(np.float32))})
    with pytest.raises(ValueError, match="x: expected a C-contiguous device array"):
        gpu.forward(cuda.to_device(np.zeros((T, B, 4)))[:, :, :2], params)


def test_on_stream_launches_and_allocates_where_told(cuda_modules, monkeypatch):
    """Within on_stream(stream, empty), every array the module makes on the device comes from ``empty`` (torch's
    allocator in the PyTorch adapter) and the results are those of the default stream; the setting ends with the
    block."""
    from numba import cuda

    _, gpu = cuda_modules("lstm_peephole", "full")
    params = gpu.init_params(2, H, seed=1)
    x = np.random.default_rng(1).standard_normal((T, B, 2))
    y0, _, tape0 = gpu.forward(x, params, lengths=LENGTHS)
    dx0, grads0, _ = gpu.backward(np.ones_like(y0), tape0)

    device_array, made = cuda.device_array, []

    def empty(shape, dtype):
        assert isinstance(shape, tuple) and isinstance(dtype, np.dtype)
        made.append(shape)
        return device_array(shape, dtype=dtype)

    def refuse(*args, **kwargs):
        raise AssertionError("numba's allocator was used within on_stream(..., empty)")

    on = {k: cuda.to_device(v) for k, v in params.items()}
    x_on, dy_on = cuda.to_device(x), cuda.to_device(np.ones_like(y0))
    stream = cuda.stream()
    monkeypatch.setattr(cuda, "device_array", refuse)
    with gpu.on_stream(stream, empty):
        y, _, tape = gpu.forward(x_on, on, lengths=LENGTHS)
        dx, grads, _ = gpu.backward(dy_on, tape)
    monkeypatch.undo()
    assert gpu._LAUNCH.stream == 0 and gpu._LAUNCH.empty is None
    assert len(made) > 10
    np.testing.assert_array_equal(y.copy_to_host(), y0)
    np.testing.assert_array_equal(dx.copy_to_host(), dx0)
    for name in grads0:
        np.testing.assert_array_equal(grads[name].copy_to_host(), grads0[name])


def test_dlpack_only_gpu_arrays_are_refused_clearly(cuda_modules):
    """numba reads GPU memory through __cuda_array_interface__; a GPU array that exports only DLPack is named,
    with the conversion that needs no copy, instead of failing inside numba."""

    class DLPackOnly:
        shape, ndim = (T, B, 2), 3

        def __dlpack_device__(self):
            return (2, 0)  # kDLCUDA, device 0

    _, gpu = cuda_modules("lstm", "full")
    with pytest.raises(TypeError, match=r"exports DLPack but not __cuda_array_interface__.*torch.from_dlpack"):
        gpu.forward(DLPackOnly(), gpu.init_params(2, H))


def test_gpu_benchmark_says_when_there_is_no_gpu(capsys):
    """benchmarks/gpu.py measures only on a GPU; elsewhere it says so and exits 2 (measured when one is lent)."""
    import torch

    if torch.cuda.is_available():  # pragma: no cover - the lent GPU runs the benchmark itself
        pytest.skip("a GPU is present: run benchmarks/gpu.py")
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_benchmark", REPO / "benchmarks" / "gpu.py")
    gpu_benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_benchmark)
    assert gpu_benchmark.main(["--cells", "lstm", "--sizes", "S1"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
