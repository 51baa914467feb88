"""FSDP gradient clipping uses the global norm over all shards (2 gloo processes on CPU, a toy model)."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from training.trainer import clip_gradients


def _toy() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _loss(model: torch.nn.Module) -> torch.Tensor:
    x = torch.linspace(-1, 1, 24).reshape(3, 8)  # the same batch on both ranks: averaged grads = local grads
    return model(x).pow(2).sum()


def _worker(rank: int, port: int, out: dict) -> None:
    from torch.distributed.fsdp import FullyShardedDataParallel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        model = FullyShardedDataParallel(_toy(), use_orig_params=True, device_id=torch.device("cpu"))
        _loss(model).backward()
        local = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).norm().item()
        norm = clip_gradients(model, max_norm=0.1)
        with FullyShardedDataParallel.summon_full_params(model, with_grads=True):
            clipped = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
        out[rank] = (local, norm, clipped)
    finally:
        dist.destroy_process_group()


def test_fsdp_clipping_uses_the_global_norm_of_all_shards():
    reference = _toy()
    _loss(reference).backward()
    full = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm().item()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with mp.Manager() as manager:
        out = manager.dict()
        mp.start_processes(_worker, args=(port, out), nprocs=2, join=True, start_method="spawn")
        results = dict(out)
    for local, norm, clipped in results.values():
        assert local < 0.99 * full  # one shard's norm is not the global norm ...
        assert abs(norm - full) < 1e-4 * full  # ... but clip_gradients returns the global one on every rank
        assert abs(clipped - 0.1) < 1e-4  # and the full gradient is scaled to max_norm
