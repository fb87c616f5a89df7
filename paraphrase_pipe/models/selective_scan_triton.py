"""Document-resetting Mamba-1 selective scan as a Triton kernel, forward and backward (issue 16 item 2).

The math of `selective_scan.selective_scan` (the pure-PyTorch reference and CPU path), with the state reset
where the segment id `seg` changes, so packed rows need neither the Python loop nor (B, L, D, N) tensors:

    dt = softplus(dt + dt_bias);  h_t = keep_t exp(dt_t A) h_{t-1} + dt_t x_t B_t;  y_t = C_t . h_t + D x_t;
    out_t = y_t silu(z_t);        keep_t = seg_t == seg_{t-1} (and 0 at t = 0)

One program per (batch row, block of channels) keeps the (BLOCK_D, N) state in registers and walks the time
axis; every `CHUNK` steps it writes the state to a small checkpoint tensor (B, L / CHUNK, D, N). The backward
walks the chunks in reverse: it recomputes a chunk's states from its checkpoint into a per-program scratch
buffer, then runs the adjoint recurrence  delta_t = dy_t C_t + keep_{t+1} exp(dt_{t+1} A) delta_{t+1}  through
it. dB, dC (summed over channels) and dA, dD (summed over the batch) come out as per-program partial sums that
torch adds up: deterministic, no atomics.

Not the default yet: `kernels.selective_scan` uses it for packed Mamba-1 rows on CUDA only with
`PARAPHRASE_PIPE_MAMBA1_PACKED=triton`, until `benchmarks/mamba1_packed_check.py` has shown agreement and speed on a
GPU. Tests run it on CPU under Triton's interpreter (TRITON_INTERPRET=1) when triton is installed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

CHUNK = 64


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _channel_block(pid_d, a_ptr, d_ptr, bias_ptr, D, N, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Offsets, masks and the per-channel parameters (A, D, dt_bias) of this program's block of channels."""
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    offs_n = tl.arange(0, BLOCK_N)
    md = offs_d < D
    mn = offs_n < N
    mdn = md[:, None] & mn[None, :]
    A = tl.load(a_ptr + offs_d[:, None] * N + offs_n[None, :], mask=mdn, other=0.0).to(tl.float32)
    Dv = tl.load(d_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    bias = tl.load(bias_ptr + offs_d, mask=md, other=0.0).to(tl.float32)
    return offs_d, offs_n, md, mn, mdn, A, Dv, bias


@triton.jit
def _fwd_kernel(x_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, seg_ptr, a_ptr, d_ptr, bias_ptr, out_ptr, ckpt_ptr, last_ptr,
                L, D, N, n_chunks,
                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, K: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d, offs_n, md, mn, mdn, A, Dv, bias = _channel_block(pid_d, a_ptr, d_ptr, bias_ptr, D, N, BLOCK_D, BLOCK_N)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    row = pid_b * L
    for t in range(0, L):
        seg_t = tl.load(seg_ptr + row + t)
        seg_p = tl.load(seg_ptr + row + tl.maximum(t - 1, 0))
        keep = ((seg_t == seg_p) & (t > 0)).to(tl.float32)
        base = (row + t) * D
        xv = tl.load(x_ptr + base + offs_d, mask=md, other=0.0).to(tl.float32)
        dtv = _softplus(tl.load(dt_ptr + base + offs_d, mask=md, other=0.0).to(tl.float32) + bias)
        zv = tl.load(z_ptr + base + offs_d, mask=md, other=0.0).to(tl.float32)
        bt = tl.load(b_ptr + (row + t) * N + offs_n, mask=mn, other=0.0).to(tl.float32)
        ct = tl.load(c_ptr + (row + t) * N + offs_n, mask=mn, other=0.0).to(tl.float32)
        decay = tl.exp(dtv[:, None] * A) * keep
        h = decay * h + (dtv * xv)[:, None] * bt[None, :]
        y = tl.sum(h * ct[None, :], axis=1) + Dv * xv
        out = y * zv * tl.sigmoid(zv)
        tl.store(out_ptr + base + offs_d, out, mask=md)
        chunk = t // K
        at_end = ((t % K) == K - 1) & (chunk < n_chunks - 1)
        tl.store(ckpt_ptr + ((pid_b * n_chunks + chunk) * D + offs_d[:, None]) * N + offs_n[None, :], h,
                 mask=mdn & at_end)
    tl.store(last_ptr + (pid_b * D + offs_d[:, None]) * N + offs_n[None, :], h, mask=mdn)


@triton.jit
def _bwd_kernel(x_ptr, dt_ptr, z_ptr, b_ptr, c_ptr, seg_ptr, a_ptr, d_ptr, bias_ptr, ckpt_ptr, dout_ptr,
                dx_ptr, ddt_ptr, dz_ptr, db_ptr, dc_ptr, da_ptr, dd_ptr, scratch_ptr,
                L, D, N, n_chunks, n_dblocks,
                BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, K: tl.constexpr):
    pid_b = tl.program_id(0)
    pid_d = tl.program_id(1)
    offs_d, offs_n, md, mn, mdn, A, Dv, bias = _channel_block(pid_d, a_ptr, d_ptr, bias_ptr, D, N, BLOCK_D, BLOCK_N)
    row = pid_b * L
    # this program's scratch: K + 1 states (slot 0 = the state before the chunk), (BLOCK_D, BLOCK_N) each
    scratch = scratch_ptr + (pid_b * n_dblocks + pid_d) * (K + 1) * BLOCK_D * BLOCK_N
    tile = tl.arange(0, BLOCK_D)[:, None] * BLOCK_N + offs_n[None, :]
    delta = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    decay_next = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)  # keep_{t+1} exp(dt_{t+1} A)
    da_acc = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    dd_acc = tl.zeros((BLOCK_D,), dtype=tl.float32)
    for ci in range(0, n_chunks):
        c = n_chunks - 1 - ci
        start = c * K
        h = tl.load(ckpt_ptr + ((pid_b * n_chunks + tl.maximum(c - 1, 0)) * D + offs_d[:, None]) * N
                    + offs_n[None, :], mask=mdn, other=0.0)
        h = tl.where(c > 0, h, 0.0)
        tl.store(scratch + tile, h)
        for s in range(0, K):  # recompute the chunk's states
            t = start + s
            live_d = (tl.zeros([BLOCK_D], dtype=tl.int32) + t) < L
            live_n = (tl.zeros([BLOCK_N], dtype=tl.int32) + t) < L
            seg_t = tl.load(seg_ptr + row + tl.minimum(t, L - 1))
            seg_p = tl.load(seg_ptr + row + tl.maximum(tl.minimum(t, L - 1) - 1, 0))
            keep = ((seg_t == seg_p) & (t > 0)).to(tl.float32)
            base = (row + t) * D
            xv = tl.load(x_ptr + base + offs_d, mask=md & live_d, other=0.0).to(tl.float32)
            dtv = _softplus(tl.load(dt_ptr + base + offs_d, mask=md & live_d, other=0.0).to(tl.float32) + bias)
            bt = tl.load(b_ptr + (row + t) * N + offs_n, mask=mn & live_n, other=0.0).to(tl.float32)
            h = tl.exp(dtv[:, None] * A) * keep * h + (dtv * xv)[:, None] * bt[None, :]
            tl.store(scratch + (s + 1) * BLOCK_D * BLOCK_N + tile, h)
        tl.debug_barrier()
        for si in range(0, K):  # the adjoint recurrence, backwards through the chunk
            s = K - 1 - si
            t = start + s
            live_d = (tl.zeros([BLOCK_D], dtype=tl.int32) + t) < L
            live_n = (tl.zeros([BLOCK_N], dtype=tl.int32) + t) < L
            tt = tl.minimum(t, L - 1)
            seg_t = tl.load(seg_ptr + row + tt)
            seg_p = tl.load(seg_ptr + row + tl.maximum(tt - 1, 0))
            keep = ((seg_t == seg_p) & (t > 0)).to(tl.float32)
            base = (row + tt) * D
            mdl = md & live_d
            xv = tl.load(x_ptr + base + offs_d, mask=mdl, other=0.0).to(tl.float32)
            raw = tl.load(dt_ptr + base + offs_d, mask=mdl, other=0.0).to(tl.float32) + bias
            dtv = _softplus(raw)
            zv = tl.load(z_ptr + base + offs_d, mask=mdl, other=0.0).to(tl.float32)
            go = tl.load(dout_ptr + base + offs_d, mask=mdl, other=0.0).to(tl.float32)
            bt = tl.load(b_ptr + (row + tt) * N + offs_n, mask=mn & live_n, other=0.0).to(tl.float32)
            ct = tl.load(c_ptr + (row + tt) * N + offs_n, mask=mn & live_n, other=0.0).to(tl.float32)
            h_t = tl.load(scratch + (s + 1) * BLOCK_D * BLOCK_N + tile)
            h_p = tl.load(scratch + s * BLOCK_D * BLOCK_N + tile)
            sig = tl.sigmoid(zv)
            y = tl.sum(h_t * ct[None, :], axis=1) + Dv * xv
            dy = go * zv * sig
            dz = go * y * sig * (1.0 + zv * (1.0 - sig))
            delta = delta * decay_next + dy[:, None] * ct[None, :]
            delta = tl.where(mdn & live_d[:, None], delta, 0.0)
            decay = tl.exp(dtv[:, None] * A) * keep
            g_exp = delta * h_p * decay  # gradient of the exponent dt * A
            dx = dy * Dv + tl.sum(delta * dtv[:, None] * bt[None, :], axis=1)
            ddt = tl.sum(g_exp * A, axis=1) + tl.sum(delta * xv[:, None] * bt[None, :], axis=1)
            ddt_raw = ddt * tl.where(raw > 20.0, 1.0, tl.sigmoid(raw))
            da_acc += g_exp * dtv[:, None]
            dd_acc += dy * xv
            dc = tl.sum(dy[:, None] * h_t, axis=0)
            db = tl.sum(delta * (dtv * xv)[:, None], axis=0)
            tl.store(dx_ptr + base + offs_d, dx, mask=mdl)
            tl.store(ddt_ptr + base + offs_d, ddt_raw, mask=mdl)
            tl.store(dz_ptr + base + offs_d, dz, mask=mdl)
            part = ((pid_b * n_dblocks + pid_d) * L + tt) * N + offs_n
            tl.store(db_ptr + part, db, mask=mn & live_n)
            tl.store(dc_ptr + part, dc, mask=mn & live_n)
            decay_next = tl.where(live_d[:, None], decay, decay_next)
        tl.debug_barrier()
    tl.store(da_ptr + (pid_b * D + offs_d[:, None]) * N + offs_n[None, :], da_acc, mask=mdn)
    tl.store(dd_ptr + pid_b * D + offs_d, dd_acc, mask=md)


def _geometry(D: int, N: int):
    block_n = max(16, triton.next_power_of_2(N))
    block_d = 32 if block_n <= 16 else 16
    return block_d, block_n, triton.cdiv(D, block_d)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, z, dt_bias, seg, chunk):
        b, L, d = x.shape
        n = A.shape[1]
        block_d, block_n, n_dblocks = _geometry(d, n)
        n_chunks = triton.cdiv(L, chunk)
        ctx.chunk = chunk
        f32 = dict(device=x.device, dtype=torch.float32)
        args = [t.contiguous() for t in (x, dt, z, B, C)] + [seg.to(torch.int32).contiguous(),
                                                              A.float().contiguous(), D.float().contiguous(),
                                                              dt_bias.float().contiguous()]
        out = torch.empty(b, L, d, **f32)
        ckpt = torch.empty(b, n_chunks, d, n, **f32)
        last = torch.empty(b, d, n, **f32)
        _fwd_kernel[(b, n_dblocks)](*args, out, ckpt, last, L, d, n, n_chunks, BLOCK_D=block_d, BLOCK_N=block_n,
                                    K=chunk)
        ctx.save_for_backward(*args, ckpt)
        ctx.mark_non_differentiable(last)
        ctx.dtypes = (x.dtype, dt.dtype, A.dtype, B.dtype, C.dtype, D.dtype, z.dtype, dt_bias.dtype)
        return out.to(x.dtype), last

    @staticmethod
    def backward(ctx, dout, dlast):
        x, dt, z, B, C, seg, A, D, bias, ckpt = ctx.saved_tensors
        b, L, d = x.shape
        n = A.shape[1]
        block_d, block_n, n_dblocks = _geometry(d, n)
        n_chunks = ckpt.shape[1]
        f32 = dict(device=x.device, dtype=torch.float32)
        dx, ddt, dz = (torch.empty(b, L, d, **f32) for _ in range(3))
        db, dc = (torch.empty(b, n_dblocks, L, n, **f32) for _ in range(2))
        da = torch.empty(b, d, n, **f32)
        dd = torch.empty(b, d, **f32)
        scratch = torch.empty(b * n_dblocks * (ctx.chunk + 1) * block_d * block_n, **f32)
        _bwd_kernel[(b, n_dblocks)](x, dt, z, B, C, seg, A, D, bias, ckpt, dout.contiguous(), dx, ddt, dz, db, dc,
                                    da, dd, scratch, L, d, n, n_chunks, n_dblocks, BLOCK_D=block_d,
                                    BLOCK_N=block_n, K=ctx.chunk)
        tx, tdt, ta, tb, tc, td, tz, tbias = ctx.dtypes
        return (dx.to(tx), ddt.to(tdt), da.sum(0).to(ta), db.sum(1).to(tb), dc.sum(1).to(tc), dd.sum(0).to(td),
                dz.to(tz), ddt.sum((0, 1)).to(tbias), None, None)


def selective_scan_triton(x, dt, A, B, C, D, z, dt_bias, seg=None, chunk: int = CHUNK):
    """Mamba-1 scan with document resets; tensors as in `selective_scan.selective_scan` (B, L, ·), all of D, z,
    dt_bias given (as the mixer passes them). Returns (y in x's dtype, final state (B, D, N) fp32, no gradient:
    training does not carry state across steps). `chunk`: steps between state checkpoints (memory vs recompute)."""
    if seg is None:
        seg = torch.zeros(x.shape[:2], dtype=torch.int32, device=x.device)
    return _SelectiveScan.apply(x, dt, A, B, C, D, z, dt_bias, seg, chunk)
