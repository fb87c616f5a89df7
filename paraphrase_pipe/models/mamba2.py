"""Mamba-2 mixer (SSD), parameter-compatible with mamba_ssm's `Mamba2`.

in_proj -> [z, xBC, dt]; xBC -> causal conv + SiLU -> (x, B, C); SSD scan per head with A = -exp(A_log), dt_bias,
skip D; gated grouped RMSNorm `norm(y, z)`; out_proj. Scan and conv dispatch through `kernels.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import causal_conv, mamba2_fused, ssd_scan, use_fused_mamba2
from .context import SequenceContext
from .conv import conv_tail
from .initialization import assign_, inverse_softplus_dt, mark_no_weight_decay
from .rmsnorm import GatedRMSNorm


class Mamba2(nn.Module):
    cache_key = "ssm"  # replaced by the module path when the model is built
    no_weight_decay = ("A_log", "D", "dt_bias")  # AdamW groups (initialization.py)

    def __init__(self, d_model: int, d_state: int = 128, d_conv: int = 4, expand: int = 2, headdim: int = 64,
                 ngroups: int = 1, A_init_range=(1, 16), dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, dt_limit=(0.0, float("inf")), bias: bool = False,
                 conv_bias: bool = True, chunk_size: int = 256, rmsnorm: bool = True, norm_before_gate: bool = False,
                 **_ignored):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.headdim, self.ngroups = headdim, ngroups
        self.nheads = self.d_inner // headdim
        self.chunk_size, self.dt_limit = chunk_size, tuple(dt_limit)
        self.init_cfg = (tuple(A_init_range), dt_min, dt_max, dt_init_floor)
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=bias)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1,
                                bias=conv_bias)
        self.dt_bias = nn.Parameter(torch.empty(self.nheads))
        self.A_log = nn.Parameter(torch.empty(self.nheads))
        self.D = nn.Parameter(torch.empty(self.nheads))
        self.norm = (GatedRMSNorm(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups,
                                  norm_before_gate=norm_before_gate) if rmsnorm else None)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        mark_no_weight_decay(self)
        self.init_parameters()

    def init_parameters(self) -> None:
        (a_lo, a_hi), dt_min, dt_max, floor = self.init_cfg
        device = self.A_log.device
        assign_(self.dt_bias, inverse_softplus_dt(self.nheads, dt_min, dt_max, floor, device))
        a = torch.empty(self.nheads, device=device).uniform_(a_lo, a_hi)
        assign_(self.A_log, torch.log(a))
        assign_(self.D, torch.ones(self.nheads, device=device))
        if self.norm is not None:
            assign_(self.norm.weight, torch.ones(self.d_inner, device=device))
        self.conv1d.reset_parameters()

    def forward(self, hidden: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        b, l, _ = hidden.shape
        state = ctx.cache.states.get(self.cache_key, {}) if ctx.cache is not None else {}
        zxbcdt = self.in_proj(hidden)
        # fused only with a plain out_proj: an adapter wrapping it (PEFT LoRA) must see its input
        if (ctx.cache is None and self.norm is not None and type(self.out_proj) is nn.Linear
                and use_fused_mamba2(hidden, ctx.kernels, self.d_conv)):
            return mamba2_fused(
                zxbcdt, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.dt_bias, -torch.exp(self.A_log.float()),
                self.D, self.chunk_size, ctx.seg, self.dt_limit, self.norm.weight, self.norm.eps,
                self.out_proj.weight, self.out_proj.bias, self.headdim, self.ngroups, self.norm.norm_before_gate)
        z, xbc, dt = zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)
        weight = self.conv1d.weight.squeeze(1)
        xbc_c = causal_conv(xbc, weight, self.conv1d.bias, ctx.seg, state.get("conv"), ctx.kernels)
        x, B, C = xbc_c.split([self.d_inner, self.ngroups * self.d_state, self.ngroups * self.d_state], dim=-1)
        A = -torch.exp(self.A_log.float())
        y, last = ssd_scan(
            x.reshape(b, l, self.nheads, self.headdim), dt, A, B.reshape(b, l, self.ngroups, self.d_state),
            C.reshape(b, l, self.ngroups, self.d_state), self.D, self.dt_bias, self.chunk_size, ctx.seg,
            state.get("ssm"), self.dt_limit, ctx.kernels)
        y = y.reshape(b, l, self.d_inner)
        y = self.norm(y, z) if self.norm is not None else y * F.silu(z)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_key] = {
                "conv": conv_tail(xbc, ctx.seg, state.get("conv"), self.d_conv), "ssm": last.detach()}
        return self.out_proj(y)
