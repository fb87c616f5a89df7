"""FlexAttention (document-causal block mask) against SDPA with a dense boolean mask, on CPU: whether the backward
exists, forward time eager / compiled (first call = compile), and the largest difference.

    python benchmarks/flex_attention_cpu.py              # forward
    python benchmarks/flex_attention_cpu.py --backward   # forward + backward (torch 2.13 CPU: NotImplementedError)
"""
from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def main() -> None:
    backward = "--backward" in sys.argv
    torch.manual_seed(0)
    batch, heads, dim = 2, 4, 64
    for length in (128, 1024):
        q, k, v = (torch.randn(batch, heads, length, dim, requires_grad=backward) for _ in range(3))
        seg = torch.cat([torch.zeros(batch, length // 3, dtype=torch.int32),
                         torch.ones(batch, length - length // 3, dtype=torch.int32)], 1)

        def document_causal(b, h, qi, ki):
            return (seg[b, qi] == seg[b, ki]) & (ki <= qi)

        start = time.perf_counter()
        block_mask = create_block_mask(document_causal, batch, None, length, length, device="cpu")
        build = time.perf_counter() - start
        dense = ((seg[:, None, :] == seg[:, :, None]) & torch.ones(length, length, dtype=torch.bool).tril())[:, None]

        def run(fn):
            start = time.perf_counter()
            out = fn()
            if backward:
                out.sum().backward()
            return out, time.perf_counter() - start

        ref, t_dense = run(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=dense))
        print(f"L={length}: dense SDPA {t_dense * 1e3:.1f} ms, create_block_mask {build * 1e3:.1f} ms")
        for name, fn in (("eager", flex_attention), ("compiled", torch.compile(flex_attention))):
            try:
                _, first = run(lambda: fn(q, k, v, block_mask=block_mask))
                out, second = run(lambda: fn(q, k, v, block_mask=block_mask))
                print(f"  flex {name}: first {first * 1e3:.0f} ms, then {second * 1e3:.1f} ms, "
                      f"max |diff| {(out - ref).abs().max().item():.1e}")
            except Exception as exc:  # noqa: BLE001 - report what this torch does not support
                print(f"  flex {name}: {type(exc).__name__}: {str(exc)[:120]}")


if __name__ == "__main__":
    main()
