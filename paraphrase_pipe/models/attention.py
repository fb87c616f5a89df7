"""Causal self-attention: PyTorch SDPA, rotary embeddings, grouped-query heads, document-aware masks.

Parameter names follow mamba_ssm's `MHA` (fused `in_proj` = [q | k, v interleaved as (2, heads_kv, head_dim)],
`out_proj`), and the rotary embedding is flash-attn's non-interleaved one on the first `rotary_emb_dim`
channels, so hybrid state-spaces checkpoints (e.g. mamba2attn) load unchanged.

The mask comes from the `SequenceContext`: None = plain causal (SDPA picks flash / memory-efficient kernels on
CUDA); for packed rows a FlexAttention block mask (document-causal, CUDA) or a dense boolean block-diagonal
causal mask for SDPA (CPU, and whenever a KV cache is involved).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .context import SequenceContext


def apply_rotary(x: torch.Tensor, positions: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """Rotate the first `dim` channels of x (B, L, H, D) by the angles of `positions` (B, L) (GPT-NeoX style)."""
    if dim == 0:
        return x
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, device=x.device, dtype=torch.float32) / dim))
    angles = positions.to(torch.float32)[..., None] * inv_freq  # (B, L, dim/2)
    cos, sin = angles.cos()[:, :, None, :], angles.sin()[:, :, None, :]
    x1, x2 = x[..., :dim].float().chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    return torch.cat([rotated, x[..., dim:]], dim=-1)


def append_kv(ctx: SequenceContext, key: str, k: torch.Tensor, v: torch.Tensor):
    """Concatenate k, v (B, L, Hkv, D) to the cached ones of module `key` and store them (no-op without cache)."""
    if ctx.cache is None:
        return k, v
    state = ctx.cache.states.setdefault(key, {})
    if "k" in state:
        k = torch.cat([state["k"], k], dim=1)
        v = torch.cat([state["v"], v], dim=1)
    state["k"], state["v"] = k, v
    return k, v


@functools.cache
def _compiled_flex_attention():
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention, dynamic=False)


def _flex_attention(device: torch.device):
    """flex_attention, compiled on CUDA (its eager form is a slow reference); eager elsewhere."""
    from torch.nn.attention.flex_attention import flex_attention

    return _compiled_flex_attention() if device.type == "cuda" else flex_attention


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, ctx: SequenceContext, scale: float | None = None):
    """Softmax attention of q (B, L, H, D) over k, v (B, T, Hkv, D) under the context's mask."""
    groups = q.shape[2] // k.shape[2]
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    if ctx.block_mask is not None:
        out = _flex_attention(q.device)(q, k, v, block_mask=ctx.block_mask, scale=scale, enable_gqa=groups > 1)
        return out.transpose(1, 2)
    if groups > 1:
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    mask = ctx.attn_mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and q.shape[2] > 1,
                                         scale=scale)
    return out.transpose(1, 2)


class SelfAttention(nn.Module):
    cache_key = "attn"  # replaced by the module path when the model is built

    def __init__(self, d_model: int, num_heads: int, num_heads_kv: int, head_dim: int, rotary_emb_dim: int = 0,
                 rotary_emb_base: float = 10000.0, qkv_proj_bias: bool = False, out_proj_bias: bool = False,
                 softmax_scale: float | None = None, **_ignored):
        super().__init__()
        self.num_heads, self.num_heads_kv, self.head_dim = num_heads, num_heads_kv, head_dim
        self.rotary_emb_dim, self.rotary_emb_base = rotary_emb_dim, rotary_emb_base
        self.softmax_scale = softmax_scale
        self.in_proj = nn.Linear(d_model, head_dim * (num_heads + 2 * num_heads_kv), bias=qkv_proj_bias)
        self.out_proj = nn.Linear(head_dim * num_heads, d_model, bias=out_proj_bias)

    def forward(self, x: torch.Tensor, ctx: SequenceContext) -> torch.Tensor:
        b, l, _ = x.shape
        q, kv = self.in_proj(x).split([self.num_heads * self.head_dim, 2 * self.num_heads_kv * self.head_dim], -1)
        q = q.view(b, l, self.num_heads, self.head_dim)
        k, v = kv.view(b, l, 2, self.num_heads_kv, self.head_dim).unbind(2)
        q = apply_rotary(q, ctx.positions, self.rotary_emb_dim, self.rotary_emb_base)
        k = apply_rotary(k, ctx.positions, self.rotary_emb_dim, self.rotary_emb_base)
        k, v = append_kv(ctx, self.cache_key, k, v)
        out = attend(q, k, v, ctx, self.softmax_scale)
        return self.out_proj(out.reshape(b, l, -1))
