"""The Mamba-1 mixer after in_proj as ONE autograd Function, packed rows included (mamba_ssm's `MambaInnerFn`).

xz (B, 2D, L) -> causal conv + SiLU -> x_proj -> dt_proj -> selective scan (gate silu(z), skip D) -> out_proj.
Like `mamba_inner_fn` (checkpoint_lvl=1) it keeps the kernels' layout throughout: every (B, D, L) tensor is stored
channel-major, (D, B, L) in memory, so the projections are single matmuls over (D, B*L) views and nothing is
transposed or copied between the ops; it saves only xz, x_proj's output, the weights, B, C and the scan's
checkpoints and output, and recomputes the conv and delta in backward.

Document resets (`seg`), both sparse corrections of kernels that cannot reset in this layout:
- the scan: the exact construction of `selective_scan_reset.py` at the K document starts;
- the conv: causal_conv1d takes `seq_idx` only channel-last, so it runs without, and the A outputs whose window
  reaches into an earlier document (the first d_conv-1 tokens of each document) are recomputed from their own
  document's taps; in backward their gradient is taken out of the kernel's and applied by hand.
Unpacked rows (`seg` None) are the same code with nothing to correct.

`kernel`: `selective_scan_reset.CudaKernel` (the compiled kernels) or its pure-PyTorch stand-in `TorchKernel`
(CPU tests run this Function with it); benchmarks/mamba1_packed_check.py checks and times the real one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .selective_scan_reset import (CudaKernel, correct_gradients, correct_output, enter_resets, per_batch,
                                   start_positions)


@dataclass
class ConvWindows:
    """The conv outputs (rows, cols) (A,) whose window reaches into an earlier document: their window's positions
    (A, W) (clamped at 0), which taps lie in the output's own document (A, W), and per tap the entries whose tap
    does (so each scatter into dx writes every position once: plain scatters, faster on the GPU than one
    accumulating scatter, measured)."""

    rows: torch.Tensor
    cols: torch.Tensor
    taps: torch.Tensor
    inside: torch.Tensor
    by_tap: list


def conv_windows(seg: torch.Tensor, width: int) -> ConvWindows | None:
    """The outputs of a causal conv of `width` taps over packed rows that need the document correction, or None."""
    crossing = torch.zeros_like(seg, dtype=torch.bool)
    for lag in range(1, width):
        crossing[:, lag:] |= seg[:, lag:] != seg[:, :-lag]
    rows, cols = crossing.nonzero(as_tuple=True)
    if rows.numel() == 0:
        return None
    pos = cols[:, None] - (width - 1) + torch.arange(width, device=seg.device)
    taps = pos.clamp_min(0)
    inside = (pos >= 0) & (seg[rows[:, None], taps] == seg[rows, cols][:, None])
    by_tap = [inside[:, k].nonzero().squeeze(1) for k in range(width)]
    return ConvWindows(rows, cols, taps, inside, by_tap)


@dataclass
class Documents:
    """Per batch: the scan's document starts (rows, cols) and the conv's windows, or None for unpacked rows."""

    starts: tuple | None
    windows: ConvWindows | None


def documents(seg: torch.Tensor | None, width: int) -> Documents:
    if seg is None:
        return Documents(None, None)
    rows, cols = start_positions(seg)
    if rows.numel() == 0:
        return Documents(None, None)
    return Documents((rows, cols), per_batch(seg, ("conv", width), lambda s: conv_windows(s, width)))


@dataclass
class ConvFix:
    """The corrected conv outputs of one forward: their inputs (A, W, D) fp32, zero outside their document, and
    pre-activations (A, D) fp32; kept for backward (small), so neither pass gathers them again."""

    win: ConvWindows
    xw: torch.Tensor
    pre: torch.Tensor


def conv_forward(kernel, x, weight, bias, win: ConvWindows | None = None, fix: ConvFix | None = None):
    """SiLU(causal conv) of x (B, D, L) in the kernel's layout, taps across a document boundary count as zero.
    Returns (output, its ConvFix or None without windows); recomputing, pass that `fix` instead of `win`."""
    out = kernel.conv(x, weight, bias)
    if fix is None and win is not None:
        xw = x[win.rows[:, None], :, win.taps].float() * win.inside[..., None]
        pre = (xw * weight.t().float()).sum(1)
        fix = ConvFix(win, xw, pre if bias is None else pre + bias.float())
    if fix is not None:
        out[fix.win.rows, :, fix.win.cols] = F.silu(fix.pre).to(out.dtype)
    return out, fix


def conv_backward(kernel, x, weight, bias, dout, dx, fix: ConvFix | None):
    """Gradients of `conv_forward` (dout is overwritten); dx is written in place. Returns (dx, dweight, dbias)."""
    if fix is None:
        return kernel.conv_bwd(x, weight, bias, dout, dx)
    win = fix.win
    g = dout[win.rows, :, win.cols].float()  # (A, D): the corrected outputs' gradient, applied by hand below
    dout[win.rows, :, win.cols] = dout.new_zeros(())  # a device scalar: `= 0` copies one from the host (a sync)
    dx, dweight, dbias = kernel.conv_bwd(x, weight, bias, dout, dx)
    sig = torch.sigmoid(fix.pre)
    gpre = g * sig * (1 + fix.pre * (1 - sig))  # through SiLU
    dweight = dweight + (fix.xw * gpre[:, None]).sum(0).t().to(dweight.dtype)
    dbias = None if dbias is None else dbias + gpre.sum(0).to(dbias.dtype)
    w = weight.t().float()
    for k, sel in enumerate(win.by_tap):
        dx[win.rows[sel], :, win.taps[sel, k]] += (gpre[sel] * w[k]).to(dx.dtype)
    return dx, dweight, dbias


def _channel_major(t, b, length):
    """(D, B*L) -> (B, D, L) view."""
    return t.view(-1, b, length).permute(1, 0, 2)


def _flat(t):
    """(B, D, L) stored channel-major -> (D, B*L) view (a copy only if it is not stored that way)."""
    return t.permute(1, 0, 2).reshape(t.shape[1], -1)


def _delta(x_dbl, dt_proj_w, b, length):
    """dt_proj of x_proj's dt part, (B, D, L) channel-major: the raw step the scan reads."""
    return _channel_major(dt_proj_w @ x_dbl[:, :dt_proj_w.shape[1]].t(), b, length)


class Mamba1InnerFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_w, out_b, A, D, dt_bias, docs, kernel):
        b, _, length = xz.shape
        dtype = xz.dtype
        ctx.weight_dtypes = (x_proj_w.dtype, dt_proj_w.dtype, out_w.dtype, None if out_b is None else out_b.dtype)
        x_proj_w, dt_proj_w, out_w = (w.to(dtype) for w in (x_proj_w, dt_proj_w, out_w))
        out_b = None if out_b is None else out_b.to(dtype)
        rank, n = dt_proj_w.shape[1], A.shape[1]
        if xz.stride(-1) != 1:
            xz = xz.contiguous()
        x, z = xz.chunk(2, dim=1)
        u, conv_fix = conv_forward(kernel, x, conv_w, conv_b, docs.windows)
        x_dbl = F.linear(u.transpose(1, 2).reshape(b * length, -1), x_proj_w)  # (B*L, R + 2N)
        delta = _delta(x_dbl, dt_proj_w, b, length)
        Bm, Cm = (x_dbl[:, i:i + n].view(b, length, n).transpose(1, 2)[:, None].contiguous()  # (B, 1, N, L)
                  for i in (rank, rank + n))
        st = None if docs.starts is None else enter_resets(u, delta, z, A, dt_bias, *docs.starts)
        out_z, out, states = kernel.fwd(u, delta, A, Bm, Cm, D, z, dt_bias)
        if st is not None:
            correct_output(out_z, st, D)
        ctx.kernel, ctx.conv_fix, ctx.starts = kernel, conv_fix, st
        ctx.save_for_backward(xz, conv_w, conv_b, x_dbl, x_proj_w, dt_proj_w, out_w, A, Bm, Cm, D, dt_bias,
                              states, out)
        return F.linear(out_z.transpose(1, 2), out_w, out_b)

    @staticmethod
    def backward(ctx, dout):
        xz, conv_w, conv_b, x_dbl, x_proj_w, dt_proj_w, out_w, A, Bm, Cm, D, dt_bias, states, out = ctx.saved_tensors
        kernel, conv_fix, st = ctx.kernel, ctx.conv_fix, ctx.starts
        b, _, length = xz.shape
        rank, n = dt_proj_w.shape[1], A.shape[1]
        x, z = xz.chunk(2, dim=1)
        u, _ = conv_forward(kernel, x, conv_w, conv_b, fix=conv_fix)  # recomputed, as is delta
        delta = _delta(x_dbl, dt_proj_w, b, length)
        if st is not None:
            st.enter(u, delta)
        dxz = torch.empty_like(xz)
        dx, dz = dxz.chunk(2, dim=1)
        dout = dout.to(xz.dtype).reshape(b * length, -1).t()  # (M, B*L)
        dy = _channel_major(out_w.t() @ dout, b, length)  # gradient of the gated scan output, (B, D, L)
        du, ddelta, dA, dB, dC, dD, dz, ddt_bias, out_z = kernel.bwd(
            u, delta, A, Bm, Cm, D, z, dt_bias, dy, states, out, dz, recompute_out_z=True)
        if st is not None:
            dD_s, dbias_s = correct_gradients(st, D, dy[st.rows, :, st.cols].float(), du, ddelta, dz)
            dD, ddt_bias = dD + dD_s, ddt_bias + dbias_s
            correct_output(out_z, st, D)
            u[st.rows, :, st.cols] = st.xs.to(u.dtype)  # back to the conv's output, which x_proj read
        dout_w = dout @ _flat(out_z).t()
        tx, tdt, tout, tb = ctx.weight_dtypes
        dout_b = None if tb is None else dout.sum(1).to(tb)
        dx_dbl = torch.empty_like(x_dbl)
        for i, grad in ((rank, dB), (rank + n, dC)):
            dx_dbl[:, i:i + n].view(b, length, n).copy_(grad[:, 0].transpose(1, 2))
        ddelta = _flat(ddelta)
        ddt_proj_w = ddelta @ x_dbl[:, :rank]
        dx_dbl[:, :rank] = ddelta.t() @ dt_proj_w
        dx_proj_w = dx_dbl.t() @ u.transpose(1, 2).reshape(b * length, -1)
        du = _flat(du)
        dconv = _channel_major(torch.addmm(du, x_proj_w.t(), dx_dbl.t(), out=du), b, length)
        dx, dconv_w, dconv_b = conv_backward(kernel, x, conv_w, conv_b, dconv, dx, conv_fix)
        return (dxz, dconv_w, dconv_b, dx_proj_w.to(tx), ddt_proj_w.to(tdt), dout_w.to(tout), dout_b, dA, dD, ddt_bias,
                None, None)


def mamba1_inner(xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_w, out_b, A, D, dt_bias, seg=None, kernel=CudaKernel):
    """The Mamba-1 mixer from in_proj's output xz (B, 2*d_inner, L) to out_proj's output (B, L, d_model).

    conv_w (D, W), A (D, N) fp32, D and dt_bias (D,) fp32; `seg` (B, L) segment ids reset conv and scan where they
    change (None: one document per row). Weights are used in xz's dtype (bf16 under autocast), as mamba_ssm does.
    """
    docs = documents(seg, conv_w.shape[1])
    return Mamba1InnerFn.apply(xz, conv_w, conv_b, x_proj_w, dt_proj_w, out_w, out_b, A, D, dt_bias, docs, kernel)
