"""Cross-entropy of the LM head without materialising the (tokens x vocab) fp32 logits.

The plain loss builds bf16 logits, an fp32 copy, its log-softmax, and the same again in backward: several
GB at 8x2048 tokens and a 50k vocabulary. Here the head and the loss run chunk by chunk, and each chunk's
gradients (w.r.t. hidden states and head weight) are computed right away in forward, so backward is a
multiply by the incoming scalar and peak memory is one chunk of logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100


def _softmax_grad(logits: torch.Tensor, t: torch.Tensor, need_grad: bool):
    """Summed CE of a chunk of logits and d(sum)/d(logits) in the logits' dtype (None when not wanted).

    Written as one reduction and one elementwise pass so that torch.compile turns it into two kernels that
    read the bf16 logits twice and write the gradient once (eager PyTorch makes ~8 passes in fp32).
    """
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    valid = t != IGNORE
    tgt = torch.where(valid, t, 0)
    loss = ((lse - x.gather(1, tgt[:, None]).squeeze(1)) * valid).sum()
    if not need_grad:
        return loss, None
    onehot = torch.arange(x.shape[1], device=x.device)[None, :] == tgt[:, None]
    grad = (torch.exp(x - lse[:, None]) - onehot.float()) * valid[:, None]
    return loss, grad.to(logits.dtype)


_compiled = {}


def _softmax_grad_fn(compiled: bool):
    if not compiled:
        return _softmax_grad
    if "fn" not in _compiled:
        _compiled["fn"] = torch.compile(_softmax_grad, dynamic=False)
    return _compiled["fn"]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, dtype, compiled, grad_enabled):
        h, w = hidden.to(dtype), weight.to(dtype)
        # needs_input_grad is True under no_grad as well (the weight requires grad): validation would pay for
        # the gradient buffers too, so the caller's grad mode decides
        need = grad_enabled and (ctx.needs_input_grad[0] or ctx.needs_input_grad[1])
        grad_h = torch.empty_like(h) if need else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need else None
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        softmax_grad = _softmax_grad_fn(compiled)
        for i in range(0, h.shape[0], chunk):
            loss, g = softmax_grad(h[i:i + chunk] @ w.t(), targets[i:i + chunk], need)
            total += loss
            if need:
                grad_h[i:i + chunk] = g @ w
                grad_w += g.t() @ h[i:i + chunk]
        if need:
            ctx.save_for_backward(grad_h, grad_w)
            ctx.dtypes = hidden.dtype, weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return ((grad_h * grad_out).to(ctx.dtypes[0]), (grad_w * grad_out).to(ctx.dtypes[1]), None, None, None, None,
                None)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, chunk: int = 4096,
                         dtype: torch.dtype | None = None, compiled: bool = False) -> torch.Tensor:
    """Sum over non-ignored targets of CE(hidden @ weight.T); hidden (N, d), weight (V, d), targets (N,).

    `dtype` is the matmul dtype (bf16 under autocast); the softmax is always fp32. chunk=0 runs the plain loss;
    `compiled` fuses the softmax/gradient of each chunk with torch.compile.
    """
    dtype = dtype or (torch.get_autocast_dtype(hidden.device.type)
                      if torch.is_autocast_enabled(hidden.device.type) else hidden.dtype)
    if chunk <= 0:
        logits = (hidden.to(dtype) @ weight.to(dtype).t()).float()
        return F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum")
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropy.apply(hidden, weight, targets, chunk, dtype, compiled, torch.is_grad_enabled())
