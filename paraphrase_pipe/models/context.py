"""Per-forward sequence context shared by every layer: document segments, RoPE positions, attention mask.

Document ids (`seq_idx`, shape (B, L), any integers; a change between neighbours starts a new document) are
turned into *segment ids* `seg`: int32, non-decreasing per row, where segment 0 is "continues the state in
the cache" and a fresh forward starts at 1. The SSM mixers reset their state where `seg` changes; attention
may only look at keys of the same segment. Positions restart at 0 in each document.

Without `seq_idx` and without a cache, `seg` and `attn_mask` are None: one document per row, plain causal
attention (the fast paths). Packed rows without a cache on CUDA get a FlexAttention `block_mask` instead of the
dense `attn_mask` (`kernels.use_flex_attention`): same function, no (B, L, L) mask, sparse kernels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

from .cache import HybridCache
from .kernels import use_flex_attention


@dataclass
class AnalysisHooks:
    """What the analyses add to a forward, none of which the computation itself needs."""

    skip_branches: frozenset = frozenset()  # "<layer>.ssm" | "<layer>.attn": the branch contributes zeros
    record: dict | None = None  # forward_hidden() collects per-block outputs here


@dataclass
class SequenceContext:
    """What every layer's forward needs: positions, segments, the attention mask, the cache, the kernel mode."""

    positions: torch.Tensor  # (B, L) int64 RoPE position inside the document
    seg: torch.Tensor | None = None  # (B, L) int32 segment ids (0 = continues the cache)
    attn_mask: torch.Tensor | None = None  # (B, 1, L, T + L) bool, True = may attend; None = causal
    block_mask: object | None = None  # FlexAttention BlockMask (document-causal), used instead of attn_mask
    cache: HybridCache | None = None
    kernels: str = "auto"
    hooks: AnalysisHooks = field(default_factory=AnalysisHooks)

    def continues_cache(self) -> bool:
        """True if some row carries state over from the cache (SSM mixers then need their pure-torch path)."""
        return self.cache is not None and self.cache.seen_tokens > 0


def mask_cross_document(targets, doc_ids, ignore: int = -100):
    """Set to `ignore`, in place, the next-token targets (..., L) that would cross a document boundary of
    `doc_ids` (..., L + 1): target t predicts token t + 1 from token t. numpy arrays or torch tensors."""
    targets[doc_ids[..., 1:] != doc_ids[..., :-1]] = ignore
    return targets


def _segment_starts(seq_idx: torch.Tensor, first_is_new: torch.Tensor) -> torch.Tensor:
    new = torch.ones_like(seq_idx, dtype=torch.bool)
    new[:, 1:] = seq_idx[:, 1:] != seq_idx[:, :-1]
    new[:, 0] = first_is_new
    return new


def _positions_from_starts(new: torch.Tensor) -> torch.Tensor:
    idx = torch.arange(new.shape[1], device=new.device).expand_as(new)
    return idx - torch.cummax(torch.where(new, idx, torch.zeros_like(idx)), dim=1).values


def document_positions(seq_idx: torch.Tensor) -> torch.Tensor:
    """(B, L) int64 positions that restart at 0 where the document id changes (and at every row start)."""
    return _positions_from_starts(_segment_starts(seq_idx, torch.ones_like(seq_idx[:, 0], dtype=torch.bool)))


@functools.cache
def _compiled_create_block_mask():
    from torch.nn.attention.flex_attention import create_block_mask

    return torch.compile(create_block_mask)


def document_block_mask(seg: torch.Tensor, compile_mask: bool | None = None):
    """FlexAttention block mask of (B, L) segment ids: a query sees the keys of its own segment, causally.
    `compile_mask` (default: on CUDA) builds it with `torch.compile(create_block_mask)` instead of materialising
    (B, L, L) eagerly: 0.16 vs 9.1 ms at 8 x 2,048 on an H200 (benchmarks/flex_attention_gpu.py)."""
    if compile_mask is None:
        compile_mask = seg.is_cuda
    from torch.nn.attention.flex_attention import create_block_mask

    def document_causal(b, h, q, k):
        return (seg[b, q] == seg[b, k]) & (k <= q)

    make = _compiled_create_block_mask() if compile_mask else create_block_mask
    batch, length = seg.shape
    return make(document_causal, batch, None, length, length, device=seg.device)


def build_context(
    batch: int,
    length: int,
    device: torch.device,
    seq_idx: torch.Tensor | None = None,
    cache: HybridCache | None = None,
    kernels: str = "auto",
    hooks: AnalysisHooks | None = None,
) -> SequenceContext:
    """Derive segments, positions and the attention mask from `seq_idx` and the cache."""
    hooks = hooks if hooks is not None else AnalysisHooks()
    fresh = cache is None or cache.seen_tokens == 0
    given = seq_idx
    if seq_idx is None and fresh:
        positions = torch.arange(length, device=device).expand(batch, length)
        ctx = SequenceContext(positions=positions, cache=cache, kernels=kernels, hooks=hooks)
        if cache is not None:  # generate's prefill: keep the bookkeeping of a one-document prompt
            cache.advance(torch.ones(batch, length, dtype=torch.int32, device=device), positions, None)
        return ctx

    if seq_idx is not None and tuple(seq_idx.shape) != (batch, length):
        raise ValueError(f"seq_idx must have shape {(batch, length)} like input_ids, got {tuple(seq_idx.shape)}")
    if fresh:
        first_is_new = torch.ones(batch, dtype=torch.bool, device=device)
        base = torch.zeros(batch, dtype=torch.int32, device=device)
    else:
        base = cache.last_seg.to(device)
        if seq_idx is None:  # decoding: new tokens continue the last document of each row
            seq_idx = torch.zeros(batch, length, dtype=torch.long, device=device)
            first_is_new = torch.zeros(batch, dtype=torch.bool, device=device)
        else:
            first_is_new = seq_idx[:, 0].to(device) != cache.last_doc.to(device)
    seq_idx = seq_idx.to(device)
    new = _segment_starts(seq_idx, first_is_new)
    seg = torch.cumsum(new.to(torch.int32), dim=1, dtype=torch.int32)

    positions = _positions_from_starts(new)
    if not fresh:
        positions = positions + torch.where(seg == 0, cache.next_pos.to(device)[:, None], 0)

    global_seg = base[:, None] + seg
    if cache is None and use_flex_attention(device, kernels):
        return SequenceContext(positions=positions, seg=seg, block_mask=document_block_mask(seg), kernels=kernels,
                               hooks=hooks)
    past = 0 if fresh else cache.seen_tokens
    key_segs = global_seg if fresh else torch.cat([cache.key_segs.to(device), global_seg], dim=1)
    same = key_segs[:, None, :] == global_seg[:, :, None]  # (B, L, T+L)
    causal = torch.arange(past + length, device=device)[None, :] <= (past + torch.arange(length, device=device))[:, None]
    attn_mask = (same & causal)[:, None]
    if cache is not None:
        cache.advance(global_seg, positions, given)
    return SequenceContext(positions=positions, seg=seg, attn_mask=attn_mask, cache=cache, kernels=kernels,
                           hooks=hooks)
