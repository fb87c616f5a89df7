"""Initialisation helpers shared by the SSM mixers (the mamba_ssm schemes).

`assign_` respects transformers' `_is_hf_initialized` flag, so re-running an initialiser after
`from_pretrained` never overwrites loaded weights.

Weight decay: a mixer names the parameters AdamW must not decay in its class attribute `no_weight_decay`
(A_log, D, dt_bias); `mark_no_weight_decay` sets mamba_ssm's `_no_weight_decay` flag on them, which the trainer's
parameter groups read. The flag lives on the tensor object, so it is set again wherever parameters are replaced:
at construction, after `from_pretrained` / assign-loading, and across FSDP sharding (`keeping_no_weight_decay`,
which also keeps the flags mamba_ssm's own models set).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import torch
from torch import nn


def assign_(param: torch.Tensor, value: torch.Tensor) -> None:
    if not getattr(param, "_is_hf_initialized", False):
        with torch.no_grad():
            param.copy_(value.to(device=param.device, dtype=param.dtype))


def inverse_softplus_dt(n: int, dt_min: float, dt_max: float, floor: float, device=None) -> torch.Tensor:
    """Bias b with softplus(b) log-uniform in [dt_min, dt_max] (Mamba's dt initialisation)."""
    if device is not None and torch.device(device).type == "meta":
        return torch.empty(n, device=device)
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def mark_no_weight_decay(module: nn.Module) -> None:
    """Flag the parameters every submodule lists in its class attribute `no_weight_decay`."""
    for m in module.modules():
        for name in getattr(type(m), "no_weight_decay", ()):
            getattr(m, name)._no_weight_decay = True


@contextmanager
def keeping_no_weight_decay(module: nn.Module):
    """Re-flag, by name, the parameters that were flagged before the body replaced them."""
    names = {n for n, p in module.named_parameters() if getattr(p, "_no_weight_decay", False)}
    yield
    for n, p in module.named_parameters():
        if n in names:
            p._no_weight_decay = True
