"""The one place that chooses between the pure-PyTorch mixers and the state-spaces CUDA kernels.

Mode ("auto" | "torch" | "cuda"): `HybridConfig.kernels`, overridden by the environment variable
PARAPHRASE_PIPE_KERNELS. In "auto" the kernels are used when the tensors are on CUDA and `mamba_ssm` /
`causal_conv1d` import cleanly; "cuda" insists (clear error otherwise); "torch" never uses them.
mamba_ssm is imported lazily, only for a CUDA tensor: importing it on CPU would make transformers switch its own
Mamba models to the kernels and crash (ENVIRONMENT.md), and it needs triton. Each choice is logged once;
`record_paths()` tells a caller (benchmarks) which implementation each op ran inside its block.

What runs where (CUDA path):
- Mamba-2 training forward (no cache): `mamba_split_conv1d_scan_combined` (conv + scan + gated norm + out_proj in
  one autograd function, conv and norm recomputed in backward), document resets via `seq_idx`; other Mamba-2
  calls: `mamba_chunk_scan_combined` (Triton);
- Mamba-1 training forward (no cache): `mamba1_fused.py`, mamba_ssm's `mamba_inner_fn` structure (conv, x_proj,
  dt_proj, scan, gate and out_proj in one autograd function in the kernels' (B, D, L) layout, conv and delta
  recomputed in backward) on `selective_scan_cuda` + causal_conv1d's compiled functions, packed rows through sparse
  exact corrections at the document starts (path "fused" / "fused-reset"); other Mamba-1 scans:
  `selective_scan_fn`, packed rows with the same reset construction (`selective_scan_reset.py`, "cuda-reset");
- convolution: `causal_conv1d_fn` when causal_conv1d is installed (with `seq_idx`), else the pure conv;
- decoding steps and forwards that continue a cached state run the pure functions (same math).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from types import SimpleNamespace

import torch

from .conv import causal_conv as _conv_torch
from .mamba1_fused import mamba1_inner
from .selective_scan_reset import CudaKernel
from .selective_scan import selective_scan as _scan_torch
from .ssd import ssd_scan as _ssd_torch

ENV_VAR = "PARAPHRASE_PIPE_KERNELS"
ATTENTION_ENV_VAR = "PARAPHRASE_PIPE_ATTENTION"
log = logging.getLogger(__name__)
_logged: set = set()
_paths: contextvars.ContextVar[dict | None] = contextvars.ContextVar("kernel_paths", default=None)
# Measured on an H100 (benchmarks/README.md, "Kernel paths"): Mamba-1 block fwd+bwd, bf16, per 1k tokens
MAMBA1_PURE_SLOWDOWN = "1,520x"


@contextlib.contextmanager
def record_paths():
    """`with record_paths() as paths: model(x)` -> paths == {"scan1" | "scan2" | "conv": "cuda" | "torch"}, the
    implementation each op ran last inside the block (eager calls; compiled graphs do not report)."""
    paths: dict[str, str] = {}
    token = _paths.set(paths)
    try:
        yield paths
    finally:
        _paths.reset(token)


def _ran(op: str, path: str) -> None:
    paths = _paths.get()
    if paths is not None and not torch.compiler.is_compiling():
        paths[op] = path


def _once(key, msg, *args, level=logging.INFO):
    if key not in _logged:
        _logged.add(key)
        log.log(level, msg, *args)


def resolve_mode(configured: str = "auto") -> str:
    mode = os.environ.get(ENV_VAR, "").strip().lower() or configured
    if mode not in ("auto", "torch", "cuda"):
        raise ValueError(f"{ENV_VAR} / config.kernels must be auto, torch or cuda, got {mode!r}")
    return mode


@functools.lru_cache(maxsize=None)
def mamba_ssm_ops() -> SimpleNamespace | None:
    """mamba_ssm's scan kernels, or None (with the reason logged) when they do not import.

    `selective_scan_fn` is None when mamba_ssm was installed without its compiled extension (a stub
    `selective_scan_cuda` module, the no-build route of benchmarks/gpu_setup.sh): Mamba-2 then still runs the
    Triton kernels and Mamba-1 the pure scan.
    """
    try:
        import selective_scan_cuda
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined, mamba_split_conv1d_scan_combined
    except Exception as exc:  # ImportError, missing compiled module, triton problems...
        log.info("mamba_ssm kernels unavailable (%s: %s): using the pure PyTorch scans", type(exc).__name__, exc)
        return None
    if not hasattr(selective_scan_cuda, "fwd"):
        log.info("mamba_ssm has no compiled selective_scan_cuda: Mamba-1 uses the pure PyTorch scan")
        selective_scan_fn = None
    return SimpleNamespace(selective_scan_fn=selective_scan_fn, mamba_chunk_scan_combined=mamba_chunk_scan_combined,
                           mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined)


@functools.lru_cache(maxsize=None)
def causal_conv1d_op():
    try:
        from causal_conv1d import causal_conv1d_fn
    except Exception as exc:
        log.info("causal_conv1d unavailable (%s: %s): using the pure PyTorch convolution", type(exc).__name__, exc)
        return None
    return causal_conv1d_fn


@functools.lru_cache(maxsize=None)
def causal_conv1d_cpp_available() -> bool:
    """causal_conv1d's compiled fwd/bwd functions (what `mamba1_fused` calls, as mamba_ssm's `mamba_inner_fn` does)."""
    try:
        from causal_conv1d.cpp_functions import causal_conv1d_bwd_function, causal_conv1d_fwd_function  # noqa: F401
    except Exception as exc:
        log.info("causal_conv1d.cpp_functions unavailable (%s: %s): Mamba-1 runs op by op", type(exc).__name__, exc)
        return False
    return True


@torch.compiler.assume_constant_result
def kernel_available(op: str) -> bool:
    """Whether mamba_ssm's `op`, or causal_conv1d's "causal_conv1d_fn" / "causal_conv1d_cpp", imports: fixed for a
    process, so compiled blocks bake the answer in instead of tracing the imports."""
    if op == "causal_conv1d_fn":
        return causal_conv1d_op() is not None
    if op == "causal_conv1d_cpp":
        return causal_conv1d_cpp_available()
    ops = mamba_ssm_ops()
    return ops is not None and getattr(ops, op) is not None


def use_cuda(x: torch.Tensor, mode: str, op: str = "mamba_chunk_scan_combined") -> bool:
    """Whether mamba_ssm's kernel `op` should run for tensor x under `mode`."""
    mode = resolve_mode(mode)
    if mode == "torch" or not x.is_cuda:
        if mode == "cuda" and not x.is_cuda:
            raise RuntimeError("kernels='cuda' needs the model on a CUDA device")
        return False
    available = kernel_available(op)
    if not available and mode == "cuda":
        raise RuntimeError(f"kernels='cuda' but mamba_ssm's {op} is not available; build mamba-ssm "
                           "(benchmarks/gpu_setup.sh, README) or use kernels='auto'")
    return available


def use_flex_attention(device: torch.device, mode: str = "auto") -> bool:
    """Packed rows: FlexAttention with a document-causal block mask (sparse, flash-style kernels) instead of a
    dense boolean mask for SDPA. On CUDA by default; `PARAPHRASE_PIPE_ATTENTION=flex | dense` overrides. Not on
    CPU by default: in torch 2.13 CPU FlexAttention has no backward, its eager forward is ~12x slower than dense
    SDPA at 1,024 tokens and compiling it costs 12-23 s (measured, benchmarks/README.md)."""
    choice = os.environ.get(ATTENTION_ENV_VAR, "").strip().lower() or "auto"
    if choice not in ("auto", "flex", "dense"):
        raise ValueError(f"{ATTENTION_ENV_VAR} must be auto, flex or dense, got {choice!r}")
    if choice != "auto":
        return choice == "flex"
    return device.type == "cuda" and resolve_mode(mode) != "torch"


def selective_scan(x, dt, A, B, C, D, z, dt_bias, seg=None, state=None, mode="auto"):
    """Mamba-1 scan; tensors (B, L, ·) as in `selective_scan.selective_scan`. Returns (y, final state)."""
    if use_cuda(x, mode, "selective_scan_fn") and state is None:
        if seg is None:
            _once("scan1-cuda", "Mamba-1 scan: mamba_ssm selective_scan_fn (CUDA)")
            _ran("scan1", "cuda")
            return _selective_scan_cuda(x, dt, A, B, C, D, z, dt_bias)
        _once("scan1-reset", "Mamba-1 scan, packed rows: mamba_ssm selective_scan_cuda with document resets "
              "(selective_scan_reset.py)")
        _ran("scan1", "cuda-reset")
        return _selective_scan_reset(x, dt, A, B, C, D, z, dt_bias, seg)
    if x.is_cuda and resolve_mode(mode) != "torch" and not kernel_available("selective_scan_fn"):
        _once("scan1-nokernel", "Mamba-1 on CUDA without mamba_ssm's compiled selective_scan_fn: every Mamba-1 "
              "layer runs the pure PyTorch scan, %s slower per token (benchmarks/README.md); build mamba-ssm "
              "(benchmarks/gpu_setup.sh)", MAMBA1_PURE_SLOWDOWN, level=logging.WARNING)
    else:
        _once(("scan1-torch", x.device.type), "Mamba-1 scan: pure PyTorch on %s", x.device.type)
    _ran("scan1", "torch")
    return _scan_torch(x, dt, A, B, C, D, z, dt_bias, seg=seg, state=state)


FUSED_MAMBA1_ENV = "PARAPHRASE_PIPE_FUSED_MAMBA1"


def use_fused_mamba1(x: torch.Tensor, mode: str, d_conv: int) -> bool:
    """Whether the Mamba-1 training forward runs as one autograd function (`mamba1_fused.py`): on CUDA with the
    kernels, unless PARAPHRASE_PIPE_FUSED_MAMBA1=0 (then op by op). Checked on the GPU against the pure mixer and
    mamba_inner_fn by benchmarks/mamba1_packed_check.py --sections mixer."""
    return (os.environ.get(FUSED_MAMBA1_ENV, "1") != "0" and x.is_cuda and resolve_mode(mode) != "torch" and d_conv in (2, 3, 4)
            and kernel_available("selective_scan_fn") and kernel_available("causal_conv1d_cpp"))


@torch.compiler.disable
def mamba1_fused(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, out_weight, out_bias, A, D, dt_bias,
                 seg=None, kernel=CudaKernel):
    """Mamba-1 mixer after in_proj (xz (B, 2D, L)), see `use_fused_mamba1`; `kernel` = TorchKernel on CPU (tests)."""
    path = "fused" if seg is None else "fused-reset"
    _once(("scan1-fused", path), "Mamba-1 training path: conv + x_proj + dt_proj + selective_scan_cuda + out_proj in "
          "one autograd function (mamba1_fused.py)%s", "" if seg is None else ", document resets at the starts")
    _ran("scan1", path)
    _ran("conv", path)
    return mamba1_inner(xz, conv_weight, conv_bias, x_proj_weight, dt_proj_weight, out_weight, out_bias, A, D, dt_bias,
                        seg, kernel)


def use_fused_mamba2(x: torch.Tensor, mode: str, d_conv: int) -> bool:
    """Whether the Mamba-2 training forward can run as mamba_ssm's `mamba_split_conv1d_scan_combined` (conv, scan,
    gated norm and out_proj in one autograd function that recomputes the conv and norm in backward)."""
    return (x.is_cuda and resolve_mode(mode) != "torch" and d_conv in (2, 3, 4)
            and kernel_available("mamba_split_conv1d_scan_combined") and kernel_available("causal_conv1d_fn"))


def ssd_scan(x, dt, A, B, C, D, dt_bias, chunk_size, seg=None, state=None, dt_limit=(0.0, float("inf")), mode="auto"):
    """Mamba-2 scan; tensors as in `ssd.ssd_scan`. Returns (y, final state)."""
    if use_cuda(x, mode) and state is None:
        _once("scan2-cuda", "Mamba-2 scan: mamba_ssm mamba_chunk_scan_combined (Triton)")
        _ran("scan2", "cuda")
        return _ssd_scan_cuda(x, dt, A, B, C, D, dt_bias, chunk_size, seg, tuple(dt_limit))
    _once(("scan2-torch", x.device.type), "Mamba-2 scan: pure PyTorch on %s", x.device.type)
    _ran("scan2", "torch")
    return _ssd_torch(x, dt, A, B, C, D, dt_bias, chunk_size, seg=seg, state=state, dt_limit=dt_limit)


def causal_conv(x, weight, bias, seg=None, state=None, mode="auto"):
    """Depthwise causal conv + SiLU of x (B, L, C) with weight (C, K)."""
    cuda_ok = x.is_cuda and resolve_mode(mode) != "torch" and state is None
    if cuda_ok and weight.shape[1] in (2, 3, 4) and x.shape[-1] % 8 == 0 and kernel_available("causal_conv1d_fn"):
        _once("conv-cuda", "causal conv: causal_conv1d_fn (CUDA)")
        _ran("conv", "cuda")
        return _causal_conv_cuda(x, weight, bias, seg)
    _once(("conv-torch", x.device.type), "causal conv: pure PyTorch on %s", x.device.type)
    _ran("conv", "torch")
    return _conv_torch(x, weight, bias, seg=seg, state=state)


# The kernel calls below are opaque to torch.compile: dynamo would otherwise try to trace mamba_ssm's autograd
# Functions and autotuned Triton launchers; compiled blocks break the graph around them instead.
@torch.compiler.disable
def _selective_scan_cuda(x, dt, A, B, C, D, z, dt_bias):
    dtype = x.dtype
    y, last = mamba_ssm_ops().selective_scan_fn(
        x.transpose(1, 2), dt.to(dtype).transpose(1, 2), A, B.to(dtype).transpose(1, 2),
        C.to(dtype).transpose(1, 2), D.float(), z=z.to(dtype).transpose(1, 2), delta_bias=dt_bias.float(),
        delta_softplus=True, return_last_state=True,
    )
    return y.transpose(1, 2), last


@torch.compiler.disable
def _selective_scan_reset(x, dt, A, B, C, D, z, dt_bias, seg):
    from .selective_scan_reset import selective_scan_reset

    dtype = x.dtype
    return selective_scan_reset(x, dt.to(dtype), A, B.to(dtype), C.to(dtype), D, z.to(dtype), dt_bias, seg)


@torch.compiler.disable
def mamba2_fused(zxbcdt, conv_weight, conv_bias, dt_bias, A, D, chunk_size, seg, dt_limit, norm_weight, norm_eps,
                 out_weight, out_bias, headdim, ngroups, norm_before_gate):
    """Mamba-2 mixer after in_proj, as mamba_ssm's Mamba2 runs it in training (see `use_fused_mamba2`)."""
    _once("scan2-fused", "Mamba-2 training path: mamba_ssm mamba_split_conv1d_scan_combined (conv + scan + norm + "
          "out_proj fused, seq_idx resets)")
    _ran("scan2", "fused")
    _ran("conv", "fused")
    extra = {} if tuple(dt_limit) == (0.0, float("inf")) else {"dt_limit": tuple(dt_limit)}
    return mamba_ssm_ops().mamba_split_conv1d_scan_combined(
        zxbcdt, conv_weight, conv_bias, dt_bias, A, D, chunk_size,
        seq_idx=None if seg is None else seg.to(torch.int32).contiguous(), activation="silu",
        rmsnorm_weight=norm_weight, rmsnorm_eps=norm_eps, outproj_weight=out_weight, outproj_bias=out_bias,
        headdim=headdim, ngroups=ngroups, norm_before_gate=norm_before_gate, **extra)


@torch.compiler.disable
def _ssd_scan_cuda(x, dt, A, B, C, D, dt_bias, chunk_size, seg, dt_limit):
    dtype = x.dtype
    extra = {} if dt_limit == (0.0, float("inf")) else {"dt_limit": dt_limit}
    return mamba_ssm_ops().mamba_chunk_scan_combined(
        x, dt.to(dtype), A, B.to(dtype), C.to(dtype), chunk_size, D=D.float(), dt_bias=dt_bias.float(),
        seq_idx=None if seg is None else seg.to(torch.int32).contiguous(), dt_softplus=True,
        return_final_states=True, **extra,
    )


@torch.compiler.disable
def _causal_conv_cuda(x, weight, bias, seg):
    out = causal_conv1d_op()(x.contiguous().transpose(1, 2), weight.to(x.dtype), None if bias is None else bias.to(x.dtype),
             seq_idx=None if seg is None else seg.to(torch.int32).contiguous(), activation="silu")
    return out.transpose(1, 2)
