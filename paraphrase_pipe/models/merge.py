"""How a parallel block merges its SSM branch output `s` and attention branch output `a` (both (B, L, D)).

- `sum`:           s + a
- `norm-mean`:     (RMSNorm_s(s) + RMSNorm_a(a)) / 2, each norm with its own learned scale (Hymba)
- `gate`:          sigmoid(g) * s + (1 - sigmoid(g)) * a, g a learned per-channel vector (starts at 1/2 each)
- `concat-proj`:   W [s; a], W a learned D x 2D projection
- `cross-attention` (the paper's "merge-attention"): one branch attends to the other, causally:
      q = W_q RMSNorm(s),  k, v = W_kv RMSNorm(a)
      out = s + W_o softmax(q k^T / sqrt(d_head) + M) v
  with M the same causal, same-document mask as self-attention, no rotary embedding (both branches already
  encode position), `merge_cfg.num_heads` heads (default: the attention branch's). `merge_cfg.query = "attn"`
  swaps the roles (queries from a, keys/values from s, residual a). It keeps its own KV cache when decoding.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import append_kv, attend
from .context import SequenceContext
from .rmsnorm import RMSNorm


class SumMerge(nn.Module):
    def forward(self, s, a, ctx):
        return s + a


class NormMeanMerge(nn.Module):
    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.norm_ssm = RMSNorm(d_model, eps)
        self.norm_attn = RMSNorm(d_model, eps)

    def forward(self, s, a, ctx):
        return (self.norm_ssm(s) + self.norm_attn(a)) / 2


class GateMerge(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Parameter(torch.zeros(d_model))

    def init_parameters(self) -> None:
        if not getattr(self.gate, "_is_hf_initialized", False):
            nn.init.zeros_(self.gate)

    def forward(self, s, a, ctx):
        g = torch.sigmoid(self.gate).to(s.dtype)
        return g * s + (1 - g) * a


class ConcatProjMerge(nn.Module):
    def __init__(self, d_model: int):
        super().__init__()
        self.proj = nn.Linear(2 * d_model, d_model, bias=False)

    def forward(self, s, a, ctx):
        return self.proj(torch.cat([s, a], dim=-1))


class CrossAttentionMerge(nn.Module):
    cache_key = "merge"  # replaced by the module path when the model is built

    def __init__(self, d_model: int, num_heads: int, eps: float, query: str = "ssm"):
        super().__init__()
        if query not in ("ssm", "attn"):
            raise ValueError(f"merge_cfg.query must be 'ssm' or 'attn', got {query!r}")
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} must be a multiple of merge_cfg.num_heads={num_heads}")
        self.query, self.num_heads, self.head_dim = query, num_heads, d_model // num_heads
        self.norm_q = RMSNorm(d_model, eps)
        self.norm_kv = RMSNorm(d_model, eps)
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, s: torch.Tensor, a: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        src_q, src_kv = (s, a) if self.query == "ssm" else (a, s)
        b, l, _ = s.shape
        q = self.q_proj(self.norm_q(src_q)).view(b, l, self.num_heads, self.head_dim)
        k, v = self.kv_proj(self.norm_kv(src_kv)).view(b, l, 2, self.num_heads, self.head_dim).unbind(2)
        k, v = append_kv(ctx, self.cache_key, k, v)
        out = attend(q, k, v, ctx)
        return src_q + self.out_proj(out.reshape(b, l, -1))


def make_merge(mode: str, d_model: int, eps: float, cfg: dict, attn_heads: int) -> nn.Module:
    if mode == "sum":
        return SumMerge()
    if mode == "norm-mean":
        return NormMeanMerge(d_model, eps)
    if mode == "gate":
        return GateMerge(d_model)
    if mode == "concat-proj":
        return ConcatProjMerge(d_model)
    if mode == "cross-attention":
        return CrossAttentionMerge(d_model, int(cfg.get("num_heads", attn_heads)), eps, cfg.get("query", "ssm"))
    raise ValueError(f"unknown merge mode {mode!r}")
