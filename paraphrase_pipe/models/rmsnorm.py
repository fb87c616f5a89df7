"""RMSNorm and the gated, grouped RMSNorm of Mamba-2 (mamba_ssm `RMSNorm` / `layernorm_gated.RMSNorm`).

Both compute in fp32 and return the input dtype, like the reference kernels; parameter names (`weight`, `eps`)
match mamba_ssm so state dicts load both ways.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float, group_size: int | None = None) -> torch.Tensor:
    """RMS-normalise the last dimension (per group of `group_size` channels when given), in fp32."""
    dtype = x.dtype
    h = x.float()
    if group_size is not None and group_size != h.shape[-1]:
        h = h.unflatten(-1, (-1, group_size))
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        h = h.flatten(-2)
    else:
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        h = h * weight.float()
    return h.to(dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class GatedRMSNorm(nn.Module):
    """Mamba-2's output norm: `norm(y * silu(z))` (or `norm(y) * silu(z)` with `norm_before_gate`), per group."""

    def __init__(self, dim: int, eps: float = 1e-5, group_size: int | None = None, norm_before_gate: bool = False):
        super().__init__()
        self.eps = eps
        self.group_size = group_size or dim
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, y: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = y.dtype
        y = y.float()
        if z is not None and not self.norm_before_gate:
            y = y * F.silu(z.float())
        out = rms_norm(y, self.weight, self.eps, self.group_size)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.float())
        return out.to(dtype)


def make_norm(dim: int, eps: float, rms: bool) -> nn.Module:
    """The block norm of a config: RMSNorm (`rms_norm=True`, all released Mamba checkpoints) or LayerNorm."""
    return RMSNorm(dim, eps) if rms else nn.LayerNorm(dim, eps=eps)
