"""TorchRecurrent on CUDA tensors: the cell's CUDA module, found from the module or spec it was given, run on
torch's current stream. Finding the module runs everywhere; running it needs a GPU that torch sees (the lent GPU
runs these through benchmarks/gpu_session.sh)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO

import lstmgen
from lstmgen.spec_file import load_spec_file
from lstmgen.torch_adapter import TorchRecurrent
from lstmgen.torch_ops import module_on

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU")


def test_module_on_finds_the_other_targets_module(generated_module):
    cpu = generated_module("lstm")
    gpu = module_on(cpu, "cuda")
    assert (cpu.TARGET, gpu.TARGET) == ("cpu", "cuda")
    assert (gpu.VARIANT, gpu.GRADIENT, gpu.FINGERPRINT) == (cpu.VARIANT, cpu.GRADIENT, cpu.FINGERPRINT)
    assert module_on(cpu, "cpu") is cpu
    back = module_on(gpu, "cpu")
    assert (back.TARGET, back.FINGERPRINT) == ("cpu", cpu.FINGERPRINT)


def test_a_user_cells_module_needs_its_spec_for_the_other_target(tmp_path):
    """A module of a user's spec does not carry the spec: its CUDA module is refused rather than guessed (a
    built-in of the same name would be another computation), and found when the spec is given."""
    path = REPO / "examples" / "gru_layernorm.toml"
    cpu = lstmgen.load_module(lstmgen.write_module(path, tmp_path))
    refusal = r"its cuda module \(TorchRecurrent on cuda tensors\) needs: give the cell's spec"
    with pytest.raises(ValueError, match=refusal):
        module_on(cpu, "cuda")
    assert module_on(cpu, "cuda", load_spec_file(path)).TARGET == "cuda"
    rnn = TorchRecurrent(path, 2, 4)
    assert rnn.module_for(torch.device("cuda")).FINGERPRINT == cpu.FINGERPRINT
    assert rnn.module_for(torch.device("cpu")) is rnn.cell


def test_meta_tensors_give_the_shapes(generated_module):
    """On the meta device the operators' fake implementation runs: shapes without computing (what torch.compile
    and torch.export trace with)."""
    rnn = TorchRecurrent(generated_module("lstmp"), 2, 4, num_layers=2, bidirectional=True, proj_size=3).to("meta")
    out, (h_n, c_n) = rnn(torch.zeros(5, 2, 2, device="meta"))
    assert out.device.type == h_n.device.type == "meta"
    assert (out.shape, h_n.shape, c_n.shape) == ((5, 2, 6), (4, 2, 3), (4, 2, 4))


@needs_gpu
@pytest.mark.parametrize("name", ["lstm_peephole", "slstm", "gru"])
def test_cuda_tensors_match_the_cpu_module(generated_module, name):
    """Forward and backward on CUDA tensors (on a side stream, as a training loop with several streams has them)
    give the CPU module's output, final state and gradients, and leave every tensor on the GPU."""
    torch.manual_seed(0)
    sizes = {"heads": 2} if name == "slstm" else {}
    cpu = TorchRecurrent(generated_module(name), 3, 8, num_layers=2, bidirectional=True, seed=0, **sizes)
    gpu = TorchRecurrent(generated_module(name), 3, 8, num_layers=2, bidirectional=True, seed=0, **sizes).cuda()
    x = torch.randn(5, 4, 3)
    lengths = torch.tensor([5, 3, 1, 0])
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        x_gpu = x.cuda().requires_grad_()
        out_gpu, final_gpu = gpu(x_gpu, lengths=lengths)
        loss_gpu = out_gpu.square().sum() + sum(
            f.sum() for f in (final_gpu if isinstance(final_gpu, tuple) else (final_gpu,))
        )
        loss_gpu.backward()
    stream.synchronize()
    x_cpu = x.clone().requires_grad_()
    out_cpu, final_cpu = cpu(x_cpu, lengths=lengths)
    loss_cpu = out_cpu.square().sum() + sum(
        f.sum() for f in (final_cpu if isinstance(final_cpu, tuple) else (final_cpu,))
    )
    loss_cpu.backward()
    assert out_gpu.device.type == "cuda" and x_gpu.grad.device.type == "cuda"
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(x_gpu.grad.cpu(), x_cpu.grad, rtol=1e-4, atol=1e-4)
    for (name_cpu, p_cpu), (name_gpu, p_gpu) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        assert name_cpu == name_gpu and p_gpu.grad.device.type == "cuda"
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-4, atol=1e-4, msg=name_cpu)


@needs_gpu
def test_gradcheck_on_the_gpu(generated_module):
    """gradcheck on the GPU: the CUDA module's backward is the derivative of its forward."""
    from lstmgen.torch_ops import recurrent

    cell = module_on(generated_module("lstm_peephole"), "cuda")
    T, B, I, H = 3, 2, 2, 3
    rng = np.random.default_rng(0)
    params = cell.init_params(I, H, dtype=np.float64, seed=1)
    tensors = [torch.tensor(params[n], device="cuda", requires_grad=True) for n in cell.PARAMS]
    x = torch.tensor(rng.standard_normal((T, B, I)), device="cuda", requires_grad=True)

    def f(x, *rest):
        y, final = recurrent(cell, x, rest)
        return (y, *final)

    assert torch.autograd.gradcheck(f, (x, *tensors), eps=1e-6, atol=1e-7, rtol=1e-6)
