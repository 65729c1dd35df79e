"""One process of the DistributedDataParallel test (tests/test_distributed.py), started by torchrun: trains a
TorchRecurrent on its half of the batch for a few SGD steps under DDP (gloo) and saves the parameters it ends
with and the gradients of its first step.

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT_DIR
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lstmgen.torch_adapter import TorchRecurrent  # noqa: E402

#: The whole problem: both the distributed run and the single process of the test build it from here.
T, B, I, H, STEPS, LR = 6, 8, 3, 5, 3, 0.5


def problem() -> tuple[TorchRecurrent, torch.Tensor, torch.Tensor]:
    import generated.lstm_peephole as cell

    model = TorchRecurrent(cell, I, H, num_layers=2, bidirectional=True, dtype=torch.float64, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=g)
    target = torch.randn(T, B, 2 * H, dtype=torch.float64, generator=g)
    return model, x, target


def train(model, x, target, steps: int = STEPS) -> list[dict[str, np.ndarray]]:
    """SGD on the mean squared error over the batch; the gradients of every step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    grads = []
    for _ in range(steps):
        optimizer.zero_grad()
        output, _ = model(x)
        ((output - target) ** 2).mean().backward()
        grads.append({name: p.grad.detach().numpy().copy() for name, p in model.named_parameters()})
        optimizer.step()
    return grads


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, x, target = problem()
    rows = slice(rank * B // world, (rank + 1) * B // world)  # this process's share of the batch
    ddp = DistributedDataParallel(model)
    grads = train(ddp, x[:, rows], target[:, rows])
    params = {name.removeprefix("module."): p.detach().numpy() for name, p in ddp.named_parameters()}
    np.savez(
        out / f"rank{rank}.npz",
        **{f"grad0/{k.removeprefix('module.')}": v for k, v in grads[0].items()},
        **{f"param/{k}": v for k, v in params.items()},
    )
    # Both ranks reach the teardown together: a rank that closes its gloo pairs while the other still reads them
    # can abort the other (seen once, 2026-12-07: "terminate called without an active exception", SIGABRT).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
