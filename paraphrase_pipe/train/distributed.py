"""One command line for 1 device, 8 GPUs or several nodes: torchrun sets RANK/WORLD_SIZE, this file does the rest.

NCCL on CUDA, gloo on CPU (how the tests run DDP with two processes). DDP keeps a full fp32 replica per rank;
FSDP2 (`fully_shard` per block, then the root) shards parameters, gradients and optimizer state.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from paraphrase_pipe.train.config import ConfigError
from paraphrase_pipe.train.model import blocks


@dataclass(frozen=True)
class Env:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def _device(preference: str, local_rank: int) -> torch.device:
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda, but no CUDA device is visible to this process")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init(preference: str = "auto") -> Env:
    """Join the torchrun process group if there is one; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = _device(preference, local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    return Env(int(os.environ.get("RANK", "0")), world, local_rank, device)


def shutdown(env: Env) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(env: Env) -> None:
    if env.distributed:
        dist.barrier()


def from_main(env: Env, value):
    """Rank 0's `value` (any picklable object of ours) on every rank."""
    if not env.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(env: Env, value: torch.Tensor) -> torch.Tensor:
    if env.distributed:
        dist.all_reduce(value)
    return value


def wrap(module: nn.Module, env: Env, mode: str, bf16: bool) -> nn.Module:
    """DDP or FSDP2 around the loss module; unchanged on a single process."""
    if not env.distributed:
        return module
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        from paraphrase_pipe.models.initialization import keeping_no_weight_decay

        policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16 if bf16 else None, reduce_dtype=torch.float32)
        with keeping_no_weight_decay(module):  # sharding replaces every parameter
            for block in blocks(module):
                fully_shard(block, mp_policy=policy)
            fully_shard(module, mp_policy=policy)
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def grad_sync(module: nn.Module, enabled: bool):
    """Context for one micro-batch: gradients are reduced across ranks only on the step's last one."""
    if hasattr(module, "set_requires_gradient_sync"):  # FSDP2
        module.set_requires_gradient_sync(enabled)
    elif isinstance(module, nn.parallel.DistributedDataParallel) and not enabled:
        return module.no_sync()
    return contextlib.nullcontext()
