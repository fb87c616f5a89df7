"""Packed Mamba-1 rows through mamba_ssm's `selective_scan_cuda`, a kernel that cannot reset its state in a row.

At a document's first token t the state must restart: h_t = delta_t x_t B_t, with no decay of h_{t-1}. The kernel
is handed, at those tokens only,
  - a step delta_k so large (a power of two with delta_k |A| >= 2^8 for every state) that exp(delta_k A) underflows
    to exactly 0 in fp32: the previous document's state is dropped, and so is its gradient;
  - u_t = x_t * delta_t / delta_k in place of x_t, so its input term delta_k u_t B_t is the token's own;
and its skip term D u_t is corrected to D x_t afterwards. Everything else is the kernel's own work, so packed rows
run at the speed of unpacked ones. The Function saves what `SelectiveScanFn` saves (plus the (B, L) mask) and
recomputes the elementwise preparation in backward; the chain rule through it is written out below.

`kernel` is the (B, D, L)-layout fwd/bwd pair of `selective_scan_cuda` (`CudaKernel`); tests pass a pure-PyTorch
stand-in with the same interface, and benchmarks/mamba1_packed_check.py checks the real one on a GPU.
"""

from __future__ import annotations

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


def _prepare(x, dt, A, bias, starts):
    """(u, raw delta, scale, delta_k) for the kernel; x, dt (B, L, D); starts (B, L) bool: a document begins."""
    span = (-A.float()).amin(dim=1).clamp_min(1e-12)  # per channel, the slowest decay
    power = torch.exp2(torch.ceil(torch.log2(DECAY_EXPONENT / span)))
    raw_k = (power - bias.float()).to(dt.dtype)  # what the kernel reads; it adds the bias in fp32
    delta_k = raw_k.float() + bias.float()  # the kernel's step there (softplus(v) = v above 20)
    s = starts[..., None]
    delta = F.softplus(dt.float() + bias.float())
    scale = torch.where(s, delta / delta_k, 1.0)
    u = (x.float() * scale).to(x.dtype)
    raw = torch.where(s, raw_k, dt)
    return u, raw, scale, delta_k


def _kernel_layout(t):
    return t.transpose(1, 2).contiguous()


class ResetScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, bias, starts, kernel):
        u, raw, scale, _ = _prepare(x, dt, A, bias, starts)
        Bk, Ck = (_kernel_layout(t)[:, None] for t in (B, C))  # (B, 1, N, L)
        args = (_kernel_layout(u), _kernel_layout(raw), A.float().contiguous(), Bk, Ck, D.float().contiguous(),
                _kernel_layout(z), bias.float().contiguous())
        out_z, out, states = kernel.fwd(*args)
        s = starts[..., None]
        correction = torch.where(s, D.float() * x.float() * (1 - scale) * F.silu(z.float()), 0.0)
        y = (out_z.transpose(1, 2).float() + correction).to(x.dtype)
        ctx.kernel = kernel
        ctx.save_for_backward(x, dt, A, B, C, D, z, bias, starts, states, out)
        ctx.mark_non_differentiable(states)
        return y, states[:, :, -1, 1::2]  # final state (B, D, N), as selective_scan_fn returns it

    @staticmethod
    def backward(ctx, g, _dlast):
        x, dt, A, B, C, D, z, bias, starts, states, out = ctx.saved_tensors
        u, raw, scale, delta_k = _prepare(x, dt, A, bias, starts)
        Bk, Ck = (_kernel_layout(t)[:, None] for t in (B, C))
        du, draw, dA, dB, dC, dD, dz, dbias = ctx.kernel.bwd(
            _kernel_layout(u), _kernel_layout(raw), A.float().contiguous(), Bk, Ck, D.float().contiguous(),
            _kernel_layout(z), bias.float().contiguous(), _kernel_layout(g), states, out)
        du, draw, dz = (t.transpose(1, 2).float() for t in (du, draw, dz))
        s = starts[..., None]
        xf, zf, gf = x.float(), z.float(), g.float() * s  # the correction term only lives at document starts
        silu = F.silu(zf)
        sig = torch.sigmoid(zf)
        # correction = D x (1 - scale) silu(z);  u = x * scale;  scale = softplus(dt + bias) / delta_k
        dx = du * scale + gf * D.float() * (1 - scale) * silu
        dscale = torch.where(s, du * xf - gf * D.float() * xf * silu, 0.0)
        dz = dz + gf * D.float() * xf * (1 - scale) * sig * (1 + zf * (1 - sig))
        dD = dD + (gf * xf * (1 - scale) * silu).sum((0, 1))
        pre = dt.float() + bias.float()
        ddelta = dscale / delta_k * torch.sigmoid(pre)
        ddt = torch.where(s, ddelta, draw)
        dbias = dbias + ddelta.sum((0, 1)) - (dscale * scale / delta_k).sum((0, 1))
        dB, dC = (t.squeeze(1).transpose(1, 2) for t in (dB, dC))
        return (dx.to(x.dtype), ddt.to(dt.dtype), dA.to(A.dtype), dB.to(B.dtype), dC.to(C.dtype), dD.to(D.dtype),
                dz.to(z.dtype), dbias.to(bias.dtype), None, None)


def document_starts(seg: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True where a token's segment differs from its predecessor's (never at t = 0)."""
    starts = torch.zeros_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    return starts


def selective_scan_reset(x, dt, A, B, C, D, z, dt_bias, seg, kernel=CudaKernel):
    """Mamba-1 scan of packed rows (tensors (B, L, ·) as in `selective_scan.selective_scan`, D, z and dt_bias
    given) on a kernel without resets. Returns (y in x's dtype, final state (B, D, N) fp32, no gradient)."""
    return ResetScan.apply(x, dt, A, B, C, D, z, dt_bias, document_starts(seg), kernel)
