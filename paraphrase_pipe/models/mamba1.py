"""Mamba-1 mixer (selective SSM), parameter-compatible with mamba_ssm's `Mamba`.

in_proj -> (x, z); x -> causal conv + SiLU -> x_proj -> (dt, B, C); dt_proj; selective scan with A = -exp(A_log),
skip D, gate silu(z); out_proj. On CUDA without a cache (training) everything after in_proj is one autograd function
in the kernels' layout (`forward_fused`, `mamba1_fused.py`); otherwise op by op (`forward_ops`), the scan and the
conv dispatching through `kernels.py` (pure PyTorch or CUDA).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import causal_conv, mamba1_fused, selective_scan, use_fused_mamba1
from .context import SequenceContext
from .conv import conv_tail
from .initialization import assign_, inverse_softplus_dt, mark_no_weight_decay


class Mamba1(nn.Module):
    cache_key = "ssm"  # replaced by the module path when the model is built
    no_weight_decay = ("A_log", "D")  # AdamW groups (initialization.py)

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2, dt_rank="auto",
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random", dt_scale: float = 1.0,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False, **_ignored):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.dt_cfg = (dt_min, dt_max, dt_init, dt_scale, dt_init_floor)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        self.A_log = nn.Parameter(torch.empty(self.d_inner, d_state))
        self.D = nn.Parameter(torch.empty(self.d_inner))
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)
        mark_no_weight_decay(self)
        self.init_parameters()

    def init_parameters(self) -> None:
        dt_min, dt_max, dt_init, dt_scale, floor = self.dt_cfg
        std = self.dt_rank ** -0.5 * dt_scale
        w = self.dt_proj.weight
        with torch.no_grad():
            if dt_init == "constant":
                nn.init.constant_(w, std)
            else:
                nn.init.uniform_(w, -std, std)
        assign_(self.dt_proj.bias, inverse_softplus_dt(self.d_inner, dt_min, dt_max, floor, w.device))
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=w.device).expand(self.d_inner, -1)
        assign_(self.A_log, torch.log(a))
        assign_(self.D, torch.ones(self.d_inner, device=w.device))
        self.conv1d.reset_parameters()

    def forward(self, hidden: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        # fused only with plain projections: an adapter wrapping one (PEFT LoRA) must see its input
        plain = all(type(m) is nn.Linear for m in (self.in_proj, self.x_proj, self.dt_proj, self.out_proj))
        if ctx.cache is None and plain and use_fused_mamba1(hidden, ctx.kernels, self.d_conv):
            return self.forward_fused(hidden, ctx.seg)
        return self.forward_ops(hidden, ctx)

    def forward_fused(self, hidden: torch.Tensor, seg: torch.Tensor | None = None, kernel=None) -> torch.Tensor:
        """in_proj written straight into the (B, 2D, L) layout the kernels read (as mamba_ssm's Mamba does), then
        `kernels.mamba1_fused`; `kernel` replaces the compiled kernels (the CPU tests' pure stand-in)."""
        b, length, _ = hidden.shape
        xz = self.in_proj.weight @ hidden.reshape(b * length, -1).t()  # (2D, B*L)
        if self.in_proj.bias is not None:
            xz = xz + self.in_proj.bias.to(xz.dtype)[:, None]
        xz = xz.view(-1, b, length).permute(1, 0, 2)
        return mamba1_fused(xz, self.conv1d.weight.squeeze(1), self.conv1d.bias, self.x_proj.weight,
                            self.dt_proj.weight, self.out_proj.weight, self.out_proj.bias,
                            -torch.exp(self.A_log.float()), self.D.float(), self.dt_proj.bias.float(), seg,
                            **({} if kernel is None else {"kernel": kernel}))

    def forward_ops(self, hidden: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        state = ctx.cache.states.get(self.cache_key, {}) if ctx.cache is not None else {}
        x, z = self.in_proj(hidden).chunk(2, dim=-1)
        weight = self.conv1d.weight.squeeze(1)
        xc = causal_conv(x, weight, self.conv1d.bias, ctx.seg, state.get("conv"), ctx.kernels)
        dt, B, C = self.x_proj(xc).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)
        A = -torch.exp(self.A_log.float())
        y, last = selective_scan(xc, dt, A, B, C, self.D, z, self.dt_proj.bias, ctx.seg, state.get("ssm"),
                                         ctx.kernels)
        if ctx.cache is not None:
            ctx.cache.states[self.cache_key] = {
                "conv": conv_tail(x, ctx.seg, state.get("conv"), self.d_conv), "ssm": last.detach()}
        return self.out_proj(y)
