"""Depthwise causal convolution of the Mamba mixers (pure PyTorch), document-aware.

Channel-last layout: x (B, L, C), weight (C, K). `state` holds the K-1 inputs that precede x (the decode
cache); `seg` (B, L) segment ids stop a tap from reading an input of another document. Decoding one token is
the same call with L = 1, so there is no separate step function.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _extend(x: torch.Tensor, seg: torch.Tensor | None, state: torch.Tensor | None, k: int):
    """Prepend the K-1 preceding inputs (zeros for a fresh sequence; they belong to segment 0)."""
    b, _, c = x.shape
    prev = state.to(x.dtype) if state is not None else x.new_zeros(b, k - 1, c)
    xe = torch.cat([prev, x], dim=1)
    se = None if seg is None else torch.cat([seg.new_zeros(b, k - 1), seg], dim=1)
    return xe, se


def causal_conv(x, weight, bias=None, seg=None, state=None, activation: bool = True) -> torch.Tensor:
    """out_t = act(bias + sum_k weight[:, k] * x_{t-K+1+k}), taps across a document boundary count as zero."""
    k = weight.shape[1]
    length = x.shape[1]
    xe, se = _extend(x, seg, state, k)
    w = weight.float()
    out = torch.zeros_like(x, dtype=torch.float32) if bias is None else bias.float().expand_as(x).clone()
    for tap in range(k):
        term = xe[:, tap:tap + length].float() * w[:, tap]
        if seg is not None:
            term = term * (se[:, tap:tap + length] == seg)[..., None]
        out = out + term
    return (F.silu(out) if activation else out).to(x.dtype)


def conv_tail(x, seg=None, state=None, k: int = 4) -> torch.Tensor:
    """The K-1 last inputs (B, K-1, C) to cache, zeroed where they belong to an earlier document."""
    xe, se = _extend(x, seg, state, k)
    tail = xe[:, -(k - 1):]
    if seg is not None:
        tail = tail * (se[:, -(k - 1):] == seg[:, -1:])[..., None]
    return tail.detach()
