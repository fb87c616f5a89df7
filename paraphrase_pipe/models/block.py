"""A residual block: x + mixer(norm(x)) [+ mlp(norm2(x))], and the parallel SSM + attention mixer.

Same parameter names as mamba_ssm's `Block` (`norm`, `mixer`, `norm2`, `mlp`); mamba_ssm's fused
"add -> norm" ordering is the same function. The residual stream is kept in fp32 with `residual_in_fp32`.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer

from .attention import SelfAttention
from .configuration import HybridConfig
from .context import SequenceContext
from .mamba1 import Mamba1
from .mamba2 import Mamba2
from .merge import make_merge
from .mlp import MLP
from .rmsnorm import make_norm


def make_ssm(config: HybridConfig) -> nn.Module:
    cls = Mamba2 if config.ssm_layer == "mamba2" else Mamba1
    return cls(config.d_model, **config.ssm_kwargs())


class ParallelMixer(nn.Module):
    """Runs an SSM branch and an attention branch on the same input and merges them (`merge.py`)."""

    def __init__(self, config: HybridConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        attn_cfg = config.attn_kwargs()
        self.ssm = make_ssm(config)
        self.attn = SelfAttention(config.d_model, **attn_cfg)
        self.merge = make_merge(config.merge, config.d_model, config.norm_epsilon, config.merge_cfg,
                                attn_cfg["num_heads"])

    def forward(self, x: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        s, a = self.ssm(x, ctx), self.attn(x, ctx)
        drop_ssm, drop_attn = f"{self.layer_idx}.ssm" in ctx.hooks.skip_branches, f"{self.layer_idx}.attn" in ctx.hooks.skip_branches
        if drop_ssm:
            s = torch.zeros_like(s)
        if drop_attn:
            a = torch.zeros_like(a)
        if ctx.hooks.record is not None:
            ctx.hooks.record["branch_outputs"][self.layer_idx] = {"ssm": s, "attn": a}
        # A removed branch leaves the block as a single-branch block of the kept kind, whatever the merge: zeros
        # through the merge would mean different things per merge (cross-attention without its query branch is
        # a uniform causal average of the values, a gate or norm-mean halves the kept branch), so recall drops
        # would not be comparable across merges. With `sum` both definitions agree.
        if drop_ssm or drop_attn:
            return s if drop_attn else a
        return self.merge(s, a, ctx)


class Block(GradientCheckpointingLayer):
    def __init__(self, config: HybridConfig, layer_idx: int, kind: str):
        super().__init__()
        self.layer_idx, self.kind = layer_idx, kind
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = make_norm(config.d_model, config.norm_epsilon, config.rms_norm)
        if kind == "M":
            self.mixer = make_ssm(config)
        elif kind == "A":
            self.mixer = SelfAttention(config.d_model, **config.attn_kwargs())
        else:
            self.mixer = ParallelMixer(config, layer_idx)
        self.mlp = None
        if config.d_intermediate > 0:
            self.norm2 = make_norm(config.d_model, config.norm_epsilon, config.rms_norm)
            self.mlp = MLP(config.d_model, config.d_intermediate, config.mlp_type, config.mlp_multiple_of)

    def forward(self, hidden: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        residual = hidden.float() if self.residual_in_fp32 else hidden
        out = self.mixer(self.norm(hidden.to(self.norm.weight.dtype)), ctx)
        if ctx.hooks.record is not None:
            ctx.hooks.record["mixer_outputs"].append(out)
        hidden = residual + out
        if self.mlp is not None:
            hidden = hidden + self.mlp(self.norm2(hidden.to(self.norm2.weight.dtype)))
        return hidden
