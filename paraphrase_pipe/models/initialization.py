"""Initialisation helpers shared by the SSM mixers (the mamba_ssm schemes).

`assign_` respects transformers' `_is_hf_initialized` flag, so re-running an initialiser after
`from_pretrained` never overwrites loaded weights.
"""

from __future__ import annotations

import math

import torch


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
