"""GPU check of packed attention (issue 16 item 4): FlexAttention document-causal block mask vs a dense SDPA mask.

What `attention.attend` runs on packed rows on CUDA (`ctx.block_mask`, compiled `flex_attention`) against what it
ran before (a dense (B, 1, L, L) boolean mask for `scaled_dot_product_attention`), same q, k, v (bf16), rows of
four documents of random lengths:
1. Agreement: output and the q, k, v gradients of flex relative to dense (bf16; target <= 1e-2).
2. Forward + backward time of the attention alone (mask built outside), of building each mask
   (`context.document_block_mask`, eager and through `torch.compile(create_block_mask)`, checked equal; the dense mask), and unpacked causal SDPA (flash,
   no mask) as the ceiling. Alternating rounds; the mask is built once per batch and shared by every attention
   layer of the model, so per layer it costs its time divided by the number of attention layers.

    python3 benchmarks/flex_attention_gpu.py --out "$OUT"        # after benchmarks/gpu_setup.sh (or plain torch)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from paraphrase_pipe.models.attention import _flex_attention  # noqa: E402
from paraphrase_pipe.models.context import document_block_mask  # noqa: E402
from mamba1_packed_check import rel, time_it  # noqa: E402  (same directory)


def segments(b, L, device, docs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    cuts = torch.sort(torch.randint(1, L, (b, docs - 1), generator=g), dim=1).values
    return (torch.arange(L)[None, None, :] >= cuts[:, :, None]).sum(1).to(torch.int32).to(device)


def dense_mask(seg):
    L = seg.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seg.device).tril()
    return ((seg[:, :, None] == seg[:, None, :]) & causal)[:, None]


def run(b, L, heads, dim, reps, device):
    seg = segments(b, L, device)
    q, k, v = (torch.randn(b, heads, L, dim, device=device, dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    grad = torch.randn(b, heads, L, dim, device=device, dtype=torch.bfloat16)
    flex = _flex_attention(device)
    block = document_block_mask(seg, compile_mask=False)
    mask = dense_mask(seg)

    def fwd_bwd(attn):
        out = attn()
        return out, torch.autograd.grad(out, (q, k, v), grad)

    sides = {"flex": lambda: flex(q, k, v, block_mask=block),
             "dense mask": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
             "causal, unpacked (flash)": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    (fo, fg), (do, dg) = fwd_bwd(sides["flex"]), fwd_bwd(sides["dense mask"])
    errs = {"out": rel(fo, do), **{n: rel(a, c) for n, a, c in zip("qkv", fg, dg)}}
    worst = max(errs, key=errs.get)
    compiled = document_block_mask(seg, compile_mask=True)  # what build_context uses on CUDA
    same_mask = all(torch.equal(getattr(block, f), getattr(compiled, f))
                    for f in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks", "full_kv_indices"))
    row = {"batch": b, "length": L, "heads": heads, "head_dim": dim, "agreement": errs, "worst": worst,
           "compiled_mask_equal": same_mask, "pass": errs[worst] <= 1e-2 and same_mask}
    print(f"B={b} L={L}: flex vs dense worst {worst} {errs[worst]:.2e}; compiled block mask equal: {same_mask} "
          f"{'PASS' if row['pass'] else 'FAIL'}", flush=True)
    masks = {"block mask (eager)": lambda: document_block_mask(seg, compile_mask=False),
             "block mask (compiled)": lambda: document_block_mask(seg, compile_mask=True),
             "dense mask": lambda: dense_mask(seg)}
    times = {}
    for rnd in (1, 2):
        order = list(sides.items()) if rnd == 1 else list(sides.items())[::-1]
        for name, attn in order:
            times.setdefault(f"fwd+bwd {name}", []).append(round(time_it(lambda: fwd_bwd(attn), reps, device, warmup=3) * 1e3, 3))
        for name, make in (masks.items() if rnd == 1 else list(masks.items())[::-1]):
            times.setdefault(f"build {name}", []).append(round(time_it(make, reps, device, warmup=3) * 1e3, 3))
    row["ms"] = times
    for name, ms in times.items():
        print(f"  {name:36s} {' / '.join(f'{m:8.3f}' for m in ms)} ms", flush=True)
    f, d = min(times["fwd+bwd flex"]), min(times["fwd+bwd dense mask"])
    row["flex_vs_dense_speed"] = round(d / f, 3)
    print(f"  flex / dense speed (attention alone): {d / f:.2f}x", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", nargs="+", default=["8x2048", "2x8192"], help="BATCHxLENGTH")
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", default="runs/flex_attention_gpu")
    args = ap.parse_args()
    device = torch.device("cuda")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": []}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for shape in args.shapes:
        b, L = map(int, shape.split("x"))
        result["rows"].append(run(b, L, args.heads, args.head_dim, args.reps, device))
        (out / "flex_attention_gpu.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
