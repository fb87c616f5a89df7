"""Mamba-1 selective scan, pure PyTorch reference (the math of mamba_ssm's `selective_scan_ref`).

    dt = softplus(dt + dt_bias);  h_t = exp(dt_t A) * h_{t-1} + dt_t B_t x_t;  y_t = C_t . h_t + D x_t;  y *= silu(z)

Layout (B, L, D) for x, dt, z and (B, L, N) for B, C; A (D, N). A sequential loop over L in fp32: slow but
exact and simple; on CUDA `kernels.py` uses mamba_ssm's `selective_scan_fn` instead. `seg` resets the state
where the segment id changes (segment 0 continues `state`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def selective_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, seg=None, state=None):
    """Return y (B, L, D) in x's dtype and the final state (B, D, N) in fp32."""
    dtype = x.dtype
    x, dt, B, C = x.float(), dt.float(), B.float(), C.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    dt = F.softplus(dt)
    decay = torch.exp(dt[..., None] * A.float())  # (B, L, D, N)
    inputs = (dt * x)[..., None] * B[:, :, None, :]  # (B, L, D, N)
    if seg is not None:
        prev = torch.cat([seg.new_zeros(seg.shape[0], 1), seg[:, :-1]], dim=1)
        decay = decay * (seg == prev)[..., None, None]
    h = x.new_zeros(x.shape[0], x.shape[2], A.shape[1]) if state is None else state.float()
    ys = []
    for t in range(x.shape[1]):
        h = decay[:, t] * h + inputs[:, t]
        ys.append(torch.einsum("bdn,bn->bd", h, C[:, t]))
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + x * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype), h
