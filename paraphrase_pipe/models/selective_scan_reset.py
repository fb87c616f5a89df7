"""Packed Mamba-1 rows through mamba_ssm's `selective_scan_cuda`, a kernel that cannot reset its state in a row.

At a document's first token t the state must restart: h_t = delta_t x_t B_t, with no decay of h_{t-1}. The kernel
is handed, at those tokens only,
  - a step delta_k so large (a power of two with delta_k |A| >= 2^8 for every state) that exp(delta_k A) underflows
    to exactly 0 in fp32: the previous document's state is dropped, and so is its gradient;
  - u_t = x_t * delta_t / delta_k in place of x_t, so its input term delta_k u_t B_t is the token's own;
and its skip term D u_t is corrected to D x_t afterwards. Only the K document starts of a batch are touched
(K x d_inner values, written into the kernel-layout copies the kernel needs anyway): the rest is the kernel's own
work, so packed rows cost what unpacked rows cost. The chain rule through the construction is written out in
`backward`; the Function saves what `SelectiveScanFn` saves plus (K, d_inner) tensors.

`kernel` is the (B, D, L)-layout fwd/bwd pair of `selective_scan_cuda` (`CudaKernel`); tests pass a pure-PyTorch
stand-in with the same interface, and benchmarks/mamba1_packed_check.py checks the real one on a GPU.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F

DECAY_EXPONENT = 256.0  # delta_k * |A| >= this: exp(-256) == 0 in fp32 (smallest subnormal ~ exp(-103))


class CudaKernel:
    """mamba_ssm's compiled scan, the calls `SelectiveScanFn` makes (softplus on, z given)."""

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, bias):
        import selective_scan_cuda

        out, states, out_z = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)
        return out_z, out, states

    @staticmethod
    def bwd(u, delta, A, B, C, D, z, bias, dout, states, out):
        import selective_scan_cuda

        du, ddelta, dA, dB, dC, dD, dbias, dz = selective_scan_cuda.bwd(
            u, delta, A, B, C, D, z, bias, dout, states, out, None, True, False)[:8]
        return du, ddelta, dA, dB, dC, dD, dz, dbias


def _kernel_layout(t):
    return t.transpose(1, 2).contiguous()


def _reset_step(A, bias, dtype):
    """Per channel: the raw step the kernel reads at a document start, and the step it then uses (it adds the bias
    in fp32 and softplus(v) = v above 20)."""
    span = (-A.float()).amin(dim=1).clamp_min(1e-12)  # the slowest decay of the channel
    power = torch.exp2(torch.ceil(torch.log2(DECAY_EXPONENT / span)))
    raw_k = (power - bias.float()).to(dtype)
    return raw_k, raw_k.float() + bias.float()


class ResetScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, bias, rows, cols, kernel):
        raw_k, delta_k = _reset_step(A, bias, dt.dtype)
        u, raw, zk = _kernel_layout(x), _kernel_layout(dt), _kernel_layout(z)  # (B, D, L), as the kernel needs
        xs, zs = x[rows, cols].float(), z[rows, cols].float()  # (K, D): the document starts
        pre = dt[rows, cols].float() + bias.float()
        scale = F.softplus(pre) / delta_k
        u[rows, :, cols] = (xs * scale).to(u.dtype)
        raw[rows, :, cols] = raw_k.expand_as(xs)
        Bk, Ck = (_kernel_layout(t)[:, None] for t in (B, C))  # (B, 1, N, L)
        Af, Df, bf = A.float().contiguous(), D.float().contiguous(), bias.float().contiguous()
        out_z, out, states = kernel.fwd(u, raw, Af, Bk, Ck, Df, zk, bf)
        correction = Df * xs * (1 - scale) * F.silu(zs)  # D x - D u at the starts, gated
        out_z[rows, :, cols] += correction.to(out_z.dtype)
        ctx.kernel, ctx.dtypes = kernel, (x.dtype, dt.dtype, A.dtype, B.dtype, C.dtype, D.dtype, z.dtype, bias.dtype)
        ctx.save_for_backward(u, raw, zk, Af, Bk, Ck, Df, bf, states, out, rows, cols, xs, zs, pre, scale, delta_k)
        last = states[:, :, -1, 1::2].clone()  # final state (B, D, N), as selective_scan_fn gives it
        ctx.mark_non_differentiable(last)
        return out_z.transpose(1, 2), last

    @staticmethod
    def backward(ctx, g, _dlast):
        u, raw, zk, Af, Bk, Ck, Df, bf, states, out, rows, cols, xs, zs, pre, scale, delta_k = ctx.saved_tensors
        du, draw, dA, dB, dC, dD, dz, dbias = ctx.kernel.bwd(u, raw, Af, Bk, Ck, Df, zk, bf, _kernel_layout(g),
                                                             states, out)
        # at the starts: correction = D x (1 - scale) silu(z);  u = x scale;  scale = softplus(pre) / delta_k
        gs, du_s = g[rows, cols].float(), du[rows, :, cols].float()
        silu, sig = F.silu(zs), torch.sigmoid(zs)
        dscale = du_s * xs - gs * Df * xs * silu
        ddelta = dscale / delta_k * torch.sigmoid(pre)
        du[rows, :, cols] = (du_s * scale + gs * Df * (1 - scale) * silu).to(du.dtype)
        draw[rows, :, cols] = ddelta.to(draw.dtype)
        dz[rows, :, cols] += (gs * Df * xs * (1 - scale) * sig * (1 + zs * (1 - sig))).to(dz.dtype)
        dD = dD + (gs * xs * (1 - scale) * silu).sum(0)
        dbias = dbias + ddelta.sum(0) - (dscale * scale / delta_k).sum(0)  # raw_k is held fixed: see _reset_step
        tx, tdt, ta, tb, tc, td, tz, tbias = ctx.dtypes
        return (du.transpose(1, 2).to(tx), draw.transpose(1, 2).to(tdt), dA.to(ta),
                dB.squeeze(1).transpose(1, 2).to(tb), dC.squeeze(1).transpose(1, 2).to(tc), dD.to(td),
                dz.transpose(1, 2).to(tz), dbias.to(tbias), None, None, None)


def document_starts(seg: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True where a token's segment differs from its predecessor's (never at t = 0)."""
    starts = torch.zeros_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    return starts


_last: list = [None, -1, None]  # (weakref to seg, its version, (rows, cols)): every layer of a forward shares seg


def start_positions(seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the document starts of `seg`; computed once per batch (one device sync), not per layer."""
    ref, version, cached = _last
    if ref is not None and ref() is seg and version == seg._version:
        return cached
    positions = document_starts(seg).nonzero(as_tuple=True)
    _last[:] = [weakref.ref(seg), seg._version, positions]
    return positions


def selective_scan_reset(x, dt, A, B, C, D, z, dt_bias, seg, kernel=CudaKernel):
    """Mamba-1 scan of packed rows (tensors (B, L, ·) as in `selective_scan.selective_scan`, D, z and dt_bias
    given) on a kernel without resets. Returns (y in x's dtype, final state (B, D, N) fp32, no gradient)."""
    rows, cols = start_positions(seg)
    return ResetScan.apply(x, dt, A, B, C, D, z, dt_bias, rows, cols, kernel)
