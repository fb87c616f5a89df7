"""Mamba-2 state-space duality (SSD) scan, pure PyTorch, chunked and document-aware.

Per head h (scalar decay): a_t = A_h dt_t,  h_t = exp(a_t) h_{t-1} + dt_t B_t x_t,  y_t = C_t . h_t + D_h x_t.
The chunked algorithm of the Mamba-2 paper (`ssd_minimal_discrete`): quadratic attention-like form inside
chunks, a recurrence over chunk states between them. Document boundaries are exact masks, not decay tricks:
a token sees another token / chunk state only if both lie in the same segment (`seg`, non-decreasing, where
segment 0 continues the initial `state`). The result does not depend on `chunk_size`; decoding is the same
call with L = 1. On CUDA `kernels.py` uses mamba_ssm's Triton `mamba_chunk_scan_combined` instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def segsum(a: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T) with out[..., t, s] = sum_{s < r <= t} a_r for s <= t and -inf above the diagonal."""
    t = a.shape[-1]
    x = a[..., None].expand(*a.shape, t)  # x[..., r, s] = a_r
    strict = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device), diagonal=-1)
    x = torch.cumsum(x.masked_fill(~strict, 0.0), dim=-2)
    lower = torch.tril(torch.ones(t, t, dtype=torch.bool, device=a.device))
    return x.masked_fill(~lower, float("-inf"))


def ssd_scan(x, dt, A, B, C, D=None, dt_bias=None, chunk_size: int = 256, seg=None, state=None,
             dt_limit=(0.0, float("inf"))):
    """x (b, l, h, p), dt (b, l, h), A (h), B/C (b, l, g, n), D (h), state (b, h, p, n).

    Returns y (b, l, h, p) in x's dtype and the final state (b, h, p, n) in fp32.
    """
    dtype = x.dtype
    b, l, nh, p = x.shape
    dt = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    dt = F.softplus(dt).clamp(min=dt_limit[0], max=dt_limit[1])
    xf = x.float()
    B = B.float().repeat_interleave(nh // B.shape[2], dim=2)
    C = C.float().repeat_interleave(nh // C.shape[2], dim=2)
    seg = torch.zeros(b, l, dtype=torch.int32, device=x.device) if seg is None else seg
    init = x.new_zeros(b, nh, p, B.shape[-1], dtype=torch.float32) if state is None else state.float()

    t = max(1, min(chunk_size, l))
    pad = (-l) % t
    if pad:  # dt = 0 on padding: no input, no decay, so the final state is the one after the last token
        xf, dt, B, C = (F.pad(v, (0, 0) * (v.dim() - 2) + (0, pad)) for v in (xf, dt, B, C))
        seg = torch.cat([seg, seg[:, -1:].expand(b, pad)], dim=1)
    nc = (l + pad) // t
    xdt = (xf * dt[..., None]).view(b, nc, t, nh, p)
    Bc, Cc = B.view(b, nc, t, nh, -1), C.view(b, nc, t, nh, -1)
    a = (dt * A.float()).view(b, nc, t, nh).permute(0, 3, 1, 2)  # (b, h, c, t)
    a_cum = torch.cumsum(a, dim=-1)
    sc = seg.view(b, nc, t)

    # 1. inside each chunk: y_t = sum_{s <= t, same segment} C_t.B_s exp(a_{s+1} + ... + a_t) dt_s x_s
    same = (sc[..., :, None] == sc[..., None, :]).float()  # (b, c, t, s)
    decay = torch.exp(segsum(a)) * same[:, None]
    scores = torch.einsum("bclhn,bcshn->bchls", Cc, Bc) * decay.permute(0, 2, 1, 3, 4)  # (b, c, h, t, s)
    y = torch.einsum("bchls,bcshp->bclhp", scores, xdt)

    # 2. state at the end of each chunk, from the tokens of the chunk's last segment
    in_last = (sc == sc[..., -1:]).float()  # (b, c, t)
    to_end = torch.exp(a_cum[..., -1:] - a_cum)
    weight = to_end.permute(0, 2, 3, 1) * in_last[..., None]  # (b, c, t, h): scale first, then one matmul
    states = torch.einsum("bclhn,bclhp->bchpn", Bc, xdt * weight[..., None])

    # 3. recurrence over chunks: the state entering each chunk (index 0 is the initial state, segment 0)
    states = torch.cat([init[:, None], states], dim=1)  # (b, c+1, h, p, n)
    end_seg = torch.cat([seg.new_zeros(b, 1), sc[..., -1]], dim=1)  # (b, c+1)
    chunk_decay = torch.exp(segsum(F.pad(a_cum[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    chunk_decay = chunk_decay * (end_seg[:, :, None] == end_seg[:, None, :]).float()[:, None]
    entering = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)
    entering, final = entering[:, :-1], entering[:, -1]

    # 4. contribution of the entering state to the tokens that continue its segment
    cont = (sc == end_seg[:, :-1, None]).float()  # (b, c, t)
    gate = torch.exp(a_cum).permute(0, 2, 3, 1) * cont[..., None]  # (b, c, t, h)
    y = y + torch.einsum("bclhn,bchpn->bclhp", Cc, entering) * gate[..., None]

    y = y.reshape(b, nc * t, nh, p)[:, :l]
    if D is not None:
        y = y + x.float() * D.float()[:, None]
    return y.to(dtype), final
