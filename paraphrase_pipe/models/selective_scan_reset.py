"""Packed Mamba-1 rows through mamba_ssm's `selective_scan_cuda`, a kernel that cannot reset its state in a row.

At a document's first token t the state must restart: h_t = delta_t x_t B_t, with no decay of h_{t-1}. The kernel
is handed, at those tokens only,
  - a step delta_k so large (a power of two with delta_k |A| >= 2^8 for every state) that exp(delta_k A) underflows
    to exactly 0 in fp32: the previous document's state is dropped, and so is its gradient;
  - u_t = x_t * delta_t / delta_k in place of x_t, so its input term delta_k u_t B_t is the token's own;
and its skip term D u_t is corrected to D x_t afterwards. Only the K document starts of a batch are touched
(K x d_inner values, written into the kernel-layout tensors the kernel reads anyway): the rest is the kernel's own
work, so packed rows cost what unpacked rows cost. `enter_resets` / `correct_output` / `correct_gradients` are the
construction and its chain rule; `ResetScan` (the scan alone, (B, L, D) tensors) and `mamba1_fused.Mamba1InnerFn`
(the whole mixer in the kernel's layout) both use them.

A kernel is the (B, D, L)-layout interface of `CudaKernel` (selective_scan_cuda's fwd/bwd and causal_conv1d's
fwd/bwd, which do not reset); `TorchKernel` is a pure-PyTorch stand-in with the same interface and output layouts,
so the CPU tests run the real autograd Functions; benchmarks/mamba1_packed_check.py checks the real one on a GPU.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .conv import causal_conv
from .selective_scan import selective_scan

DECAY_EXPONENT = 256.0  # delta_k * |A| >= this: exp(-256) == 0 in fp32 (smallest subnormal ~ exp(-103))
LINEAR_SOFTPLUS = 32.0  # delta_k above the kernel's softplus threshold (20), where softplus(v) == v


class CudaKernel:
    """mamba_ssm's compiled scan (the calls `SelectiveScanFn` / `MambaInnerFn` make, softplus on, z given) and
    causal_conv1d's compiled convolution (SiLU on, no `seq_idx`: it takes none in this layout)."""

    @staticmethod
    def fwd(u, delta, A, B, C, D, z, bias):
        import selective_scan_cuda

        out, states, out_z = selective_scan_cuda.fwd(u, delta, A, B, C, D, z, bias, True)
        return out_z, out, states

    @staticmethod
    def bwd(u, delta, A, B, C, D, z, bias, dout, states, out, dz=None, recompute_out_z=False):
        """-> du, ddelta, dA, dB, dC, dD, dz (written into `dz` when given), dbias, out_z (None unless recomputed)."""
        import selective_scan_cuda

        du, ddelta, dA, dB, dC, dD, dbias, dz, *out_z = selective_scan_cuda.bwd(
            u, delta, A, B, C, D, z, bias, dout, states, out, dz, True, recompute_out_z)
        return du, ddelta, dA, dB, dC, dD, dz, dbias, (out_z[0] if out_z else None)

    @staticmethod
    def conv(x, weight, bias):
        from causal_conv1d.cpp_functions import causal_conv1d_fwd_function

        return causal_conv1d_fwd_function(x, weight, bias, None, None, None, True)

    @staticmethod
    def conv_bwd(x, weight, bias, dout, dx):
        from causal_conv1d.cpp_functions import causal_conv1d_bwd_function

        return causal_conv1d_bwd_function(x, weight, bias, dout, None, None, None, dx, False, True)[:3]


def _like(ref, value):
    """`value` in a tensor allocated like `ref` (empty_like: the strides the compiled kernels give their outputs)."""
    return torch.empty_like(ref).copy_(value)


class TorchKernel:
    """`CudaKernel`'s interface (and output layouts) with the pure scan and conv, no resets: the CPU stand-in."""

    @staticmethod
    def _scan(u, delta, A, B, C, D, z, bias):
        y, last = selective_scan(u.transpose(1, 2), delta.transpose(1, 2), A, B[:, 0].transpose(1, 2),
                                 C[:, 0].transpose(1, 2), D, z if z is None else z.transpose(1, 2), bias)
        return y.transpose(1, 2), last

    @classmethod
    def fwd(cls, u, delta, A, B, C, D, z, bias):
        with torch.no_grad():
            y, last = cls._scan(u, delta, A, B, C, D, None, bias)
        states = torch.stack([torch.zeros_like(last), last], dim=-1).flatten(-2)[:, :, None]  # [..., -1, 1::2]
        out = _like(delta, y)
        return _like(z, out.float() * F.silu(z.float())), out, states

    @classmethod
    def bwd(cls, u, delta, A, B, C, D, z, bias, dout, states, out, dz=None, recompute_out_z=False):
        leaves = [t.detach().requires_grad_() for t in (u, delta, A, B, C, D, z, bias)]
        with torch.enable_grad():
            y, _ = cls._scan(*leaves)
            du, ddelta, dA, dB, dC, dD, gz, dbias = torch.autograd.grad(y, leaves, dout)
        dz = _like(z, gz) if dz is None else dz.copy_(gz)
        out_z = _like(out, out.float() * F.silu(z.float())) if recompute_out_z else None
        return _like(u, du), _like(delta, ddelta), dA, dB, dC, dD, dz, dbias, out_z

    @staticmethod
    def conv(x, weight, bias):
        return _like(x, causal_conv(x.transpose(1, 2), weight, bias).transpose(1, 2))

    @staticmethod
    def conv_bwd(x, weight, bias, dout, dx):
        leaves = [t.detach().requires_grad_() for t in (x, weight, bias) if t is not None]
        with torch.enable_grad():
            out = causal_conv(leaves[0].transpose(1, 2), *leaves[1:])
            grads = torch.autograd.grad(out.transpose(1, 2), leaves, dout)
        return dx.copy_(grads[0]), grads[1], (grads[2] if bias is not None else None)


def _kernel_layout(t):
    return t.transpose(1, 2).contiguous()


def _reset_step(A, bias, dtype):
    """Per channel: the raw step the kernel reads at a document start, and the step it then uses (it adds the bias
    in fp32 and softplus(v) = v above 20)."""
    span = (-A.float()).amin(dim=1).clamp_min(1e-12)  # the slowest decay of the channel
    power = torch.exp2(torch.ceil(torch.log2(DECAY_EXPONENT / span))).clamp_min(LINEAR_SOFTPLUS)
    raw_k = (power - bias.float()).to(dtype)
    return raw_k, raw_k.float() + bias.float()


@dataclass
class Starts:
    """The construction at the K document starts (rows, cols), (K, d_inner) fp32: true input, raw step + bias,
    gate input, u / x scale; the raw step written there (d_inner,) in the kernel's dtype and the step delta_k it
    gives (d_inner,) fp32."""

    rows: torch.Tensor
    cols: torch.Tensor
    xs: torch.Tensor
    pre: torch.Tensor
    zs: torch.Tensor
    scale: torch.Tensor
    raw_k: torch.Tensor
    delta_k: torch.Tensor

    def enter(self, u, raw) -> None:
        """Write the construction into (recomputed) kernel inputs u and raw step (B, D, L) at the starts."""
        u[self.rows, :, self.cols] = (self.xs * self.scale).to(u.dtype)
        raw[self.rows, :, self.cols] = self.raw_k.expand_as(self.xs)


def enter_resets(u, raw, z, A, bias, rows, cols) -> Starts:
    """Write the construction, in place, into the kernel's inputs u and raw step (B, D, L) at the starts."""
    raw_k, delta_k = _reset_step(A, bias, raw.dtype)
    xs, zs = u[rows, :, cols].float(), z[rows, :, cols].float()  # (K, D)
    pre = raw[rows, :, cols].float() + bias.float()
    st = Starts(rows, cols, xs, pre, zs, F.softplus(pre) / delta_k, raw_k, delta_k)
    st.enter(u, raw)
    return st


def correct_output(out_z, st: Starts, D) -> None:
    """The kernel's gated output at the starts gets D x - D u (gated), in place."""
    out_z[st.rows, :, st.cols] += (D.float() * st.xs * (1 - st.scale) * F.silu(st.zs)).to(out_z.dtype)


def correct_gradients(st: Starts, D, gs, du, draw, dz):
    """Chain rule through the construction, given gs (K, D), the gradient of the gated output at the starts: fixes
    du, draw and dz (B, D, L) in place there and returns the (dD, dbias) terms to add to the kernel's."""
    Df = D.float()
    du_s = du[st.rows, :, st.cols].float()
    silu, sig = F.silu(st.zs), torch.sigmoid(st.zs)
    keep = st.xs * (1 - st.scale)  # correction = D x (1 - scale) silu(z);  u = x scale;  scale = softplus(pre)/delta_k
    dscale = du_s * st.xs - gs * Df * st.xs * silu
    ddelta = dscale / st.delta_k * torch.sigmoid(st.pre)
    du[st.rows, :, st.cols] = (du_s * st.scale + gs * Df * (1 - st.scale) * silu).to(du.dtype)
    draw[st.rows, :, st.cols] = ddelta.to(draw.dtype)
    dz[st.rows, :, st.cols] += (gs * Df * keep * sig * (1 + st.zs * (1 - sig))).to(dz.dtype)
    dD = (gs * keep * silu).sum(0)
    dbias = ddelta.sum(0) - (dscale * st.scale / st.delta_k).sum(0)  # raw_k is held fixed: see _reset_step
    return dD, dbias


class ResetScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, bias, rows, cols, kernel):
        u, raw, zk = _kernel_layout(x), _kernel_layout(dt), _kernel_layout(z)  # (B, D, L), as the kernel needs
        st = enter_resets(u, raw, zk, A, bias, rows, cols)
        Bk, Ck = (_kernel_layout(t)[:, None] for t in (B, C))  # (B, 1, N, L)
        Af, Df, bf = A.float().contiguous(), D.float().contiguous(), bias.float().contiguous()
        out_z, out, states = kernel.fwd(u, raw, Af, Bk, Ck, Df, zk, bf)
        correct_output(out_z, st, Df)
        ctx.kernel, ctx.starts = kernel, st
        ctx.dtypes = (x.dtype, dt.dtype, A.dtype, B.dtype, C.dtype, D.dtype, z.dtype, bias.dtype)
        ctx.save_for_backward(u, raw, zk, Af, Bk, Ck, Df, bf, states, out)
        last = states[:, :, -1, 1::2].clone()  # final state (B, D, N), as selective_scan_fn gives it
        ctx.mark_non_differentiable(last)
        return out_z.transpose(1, 2), last

    @staticmethod
    def backward(ctx, g, _dlast):
        u, raw, zk, Af, Bk, Ck, Df, bf, states, out = ctx.saved_tensors
        st = ctx.starts
        gk = _kernel_layout(g)
        du, draw, dA, dB, dC, dD, dz, dbias, _ = ctx.kernel.bwd(u, raw, Af, Bk, Ck, Df, zk, bf, gk, states, out)
        dD_s, dbias_s = correct_gradients(st, Df, gk[st.rows, :, st.cols].float(), du, draw, dz)
        tx, tdt, ta, tb, tc, td, tz, tbias = ctx.dtypes
        return (du.transpose(1, 2).to(tx), draw.transpose(1, 2).to(tdt), dA.to(ta),
                dB.squeeze(1).transpose(1, 2).to(tb), dC.squeeze(1).transpose(1, 2).to(tc), (dD + dD_s).to(td),
                dz.transpose(1, 2).to(tz), (dbias + dbias_s).to(tbias), None, None, None)


def document_starts(seg: torch.Tensor) -> torch.Tensor:
    """(B, L) bool: True where a token's segment differs from its predecessor's (never at t = 0)."""
    starts = torch.zeros_like(seg, dtype=torch.bool)
    starts[:, 1:] = seg[:, 1:] != seg[:, :-1]
    return starts


_last: list = [None, -1, {}]  # (weakref to seg, its version, {key: value}): every layer of a forward shares seg


def per_batch(seg: torch.Tensor, key, build):
    """`build(seg)`, computed once per batch (index tensors cost a device sync each), not once per layer."""
    ref, version, cache = _last
    if ref is None or ref() is not seg or version != seg._version:
        cache = {}
        _last[:] = [weakref.ref(seg), seg._version, cache]
    if key not in cache:
        cache[key] = build(seg)
    return cache[key]


def start_positions(seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the document starts of `seg`; computed once per batch (one device sync), not per layer."""
    return per_batch(seg, "starts", lambda s: document_starts(s).nonzero(as_tuple=True))


def selective_scan_reset(x, dt, A, B, C, D, z, dt_bias, seg, kernel=CudaKernel):
    """Mamba-1 scan of packed rows (tensors (B, L, ·) as in `selective_scan.selective_scan`, D, z and dt_bias
    given) on a kernel without resets. Returns (y in x's dtype, final state (B, D, N) fp32, no gradient)."""
    rows, cols = start_positions(seg)
    return ResetScan.apply(x, dt, A, B, C, D, z, dt_bias, rows, cols, kernel)
