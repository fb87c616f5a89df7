"""GPU check and timing of the model library: CUDA-kernel path against the pure-PyTorch path.

1. Agreement, for every architecture (and packed rows with seq_idx): the same weights and batch run with
   kernels="cuda" and kernels="torch"; relative error ||a - b|| / ||b|| of logits and of every parameter
   gradient (the worst one reported), in fp32 and under bf16 autocast; NaN never passes. The bf16 rows also
   give each path's error against the fp32 pure-PyTorch reference.
2. Forward + backward time of one block of each layer type at 130M shapes (B x L tokens, bf16 autocast).
3. Forward + backward throughput of the four 130M presets (no optimizer step).
4. greedy `generate` (CUDA prefill + decode steps) against full-forward argmax.

GPU machine (after `bash benchmarks/gpu_setup.sh`):  python3 benchmarks/gpu_models.py --out "$OUT"
CPU dry run of the script itself (pure vs pure, toy sizes):  python benchmarks/gpu_models.py --device cpu --quick
A table is printed last; all numbers go to OUT/gpu_models.json (written after every section).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from paraphrase_pipe.models import PRESETS, HybridConfig, HybridForCausalLM, kernels  # noqa: E402
from paraphrase_pipe.models.context import build_context  # noqa: E402


class KernelLog(logging.Handler):
    """Collects the kernel choices that `kernels.py` logs once each."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def doc_ids(batch: int, length: int, device, n_docs: int = 4) -> torch.Tensor:
    """Random document boundaries, a different packing per row."""
    g = torch.Generator().manual_seed(1)
    rows = []
    for _ in range(batch):
        cuts = sorted(torch.randperm(length - 1, generator=g)[: n_docs - 1].add(1).tolist())
        row = torch.zeros(length, dtype=torch.long)
        for c in cuts:
            row[c:] += 1
        rows.append(row)
    return torch.stack(rows).to(device)


def fwd_bwd(model, ids, seq_idx, mode, bf16):
    model.config.kernels = mode
    model.zero_grad(set_to_none=True)
    with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=bf16):
        out = model(ids, labels=ids, seq_idx=seq_idx, use_cache=False)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach().float(), grads


def agreement(name, cfg, args, device, fast_mode):
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**cfg)).to(device)
    ids = torch.randint(0, cfg["vocab_size"], (args.check_batch, args.check_len), device=device)
    packed = name.endswith("+packed")
    seq_idx = doc_ids(args.check_batch, args.check_len, device) if packed else None
    ref_logits, ref_grads = fwd_bwd(model, ids, seq_idx, "torch", False)
    rows = []
    for prec, bf16 in (("fp32", False), ("bf16", True)):
        lt, gt = (ref_logits, ref_grads) if not bf16 else fwd_bwd(model, ids, seq_idx, "torch", True)
        lc, gc = fwd_bwd(model, ids, seq_idx, fast_mode, bf16)
        worst = max(gt, key=lambda n: rel(gc[n], gt[n]))
        nan = any(not torch.isfinite(t).all() for t in [lc, lt, *gc.values(), *gt.values()])
        row = {"model": name, "precision": prec, "logits_rel": rel(lc, lt), "grad_rel_max": rel(gc[worst], gt[worst]),
               "grad_worst": worst, "nan": nan}
        if bf16:
            row["cuda_vs_fp32_ref"] = rel(lc, ref_logits)
            row["torch_vs_fp32_ref"] = rel(lt, ref_logits)
        rows.append(row)
    return rows


def time_it(fn, warmup, reps, device):
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        times = []
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    else:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), (max(times) - min(times))


def block_timing(label, cfg, mode, args, device, packed=False):
    """fwd+bwd of one block (no embedding / head) on random hidden states."""
    cfg = {**cfg, "n_layer": 1, "kernels": mode}
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**cfg)).to(device)
    block = model.backbone.layers[0]
    b, l = args.time_batch, args.time_len
    if "torch" in mode and "mamba1" in label:
        b = max(1, b // 4)  # the sequential pure scan keeps L states for backward: smaller batch, same per-token cost
    x = torch.randn(b, l, cfg["d_model"], device=device, requires_grad=True)
    seq_idx = doc_ids(b, l, device) if packed else None

    def step():
        ctx = build_context(b, l, device, seq_idx=seq_idx, kernels=mode)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = block(x, ctx=ctx)
        out.float().square().mean().backward()

    reps = args.reps if not ("torch" in mode and "mamba1" in label) else max(2, args.reps // 4)
    with kernels.record_paths() as paths:
        ms, spread = time_it(step, 2, reps, device)
    ran = ",".join(f"{op}:{path}" for op, path in sorted(paths.items())) or "sdpa"
    return {"block": label, "kernels": mode, "ran": ran, "tokens": b * l, "ms": ms, "spread_ms": spread,
            "us_per_1k_tokens": 1e3 * ms / (b * l / 1e3)}


def throughput(preset, args, device, packed=False):
    torch.manual_seed(0)
    model = HybridForCausalLM(HybridConfig(**PRESETS[preset])).to(device)
    b, l = args.time_batch, args.time_len
    ids = torch.randint(0, model.config.vocab_size, (b, l), device=device)
    seq_idx = doc_ids(b, l, device) if packed else None

    def step():
        model.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = model(ids, labels=ids, seq_idx=seq_idx, use_cache=False).loss
        loss.backward()

    ms, spread = time_it(step, 2, args.reps, device)
    n_params = sum(p.numel() for p in model.parameters())
    return {"preset": preset + ("+packed" if packed else ""), "params_M": n_params / 1e6, "ms": ms,
            "spread_ms": spread, "tokens_per_s": b * l / (ms / 1e3)}


def generation(args, device, fast_mode):
    torch.manual_seed(0)
    cfg = {**PRESETS["parallel-tiny"], "d_model": 128, "kernels": fast_mode,
           "ssm_cfg": {"d_state": 32, "headdim": 32, "chunk_size": 32}, "attn_cfg": {"num_heads": 4}}
    model = HybridForCausalLM(HybridConfig(**cfg)).to(device).eval()
    ids = torch.randint(0, 512, (2, 40), device=device)
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=16, do_sample=False)
        seq = ids
        for _ in range(16):
            nxt = model(seq, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], 1)
    return {"generate_matches_full_forward": float((out == seq).float().mean())}


def agreement_configs(quick: bool) -> dict[str, dict]:
    d = 64 if quick else 256
    base = {"vocab_size": 512 if quick else 1024, "d_model": d, "n_layer": 2 if quick else 4,
            "ssm_cfg": {"d_state": 16 if quick else 64, "headdim": 16 if quick else 64, "chunk_size": 16 if quick else 64},
            "attn_cfg": {"num_heads": 4}}
    m1 = {"ssm_layer": "mamba1"}
    cfgs = {
        "mamba/mamba2": {**base, "arch": "mamba"},
        "mamba/mamba1": {**base, "arch": "mamba", **m1},
        "transformer": {**base, "arch": "transformer", "d_intermediate": 2 * d, "mlp_multiple_of": 16},
        "sequential/mamba2": {**base, "arch": "sequential", "layer_pattern": "MA"},
        "sequential/mamba1": {**base, "arch": "sequential", "layer_pattern": "MA", **m1},
        "parallel-xattn/mamba2": {**base, "arch": "parallel", "merge": "cross-attention"},
        "parallel-gate/mamba1": {**base, "arch": "parallel", "merge": "gate", **m1},
    }
    for name in ("mamba/mamba2", "transformer", "sequential/mamba2", "parallel-xattn/mamba2"):
        cfgs[name + "+packed"] = cfgs[name]
    return cfgs


def timing_configs(quick: bool) -> list[tuple[str, dict, bool]]:
    d = 64 if quick else 768
    base = {"vocab_size": 512, "d_model": d, "attn_cfg": {"num_heads": max(1, d // 64)},
            "ssm_cfg": {"d_state": 16, "headdim": 16, "chunk_size": 16} if quick else {}}
    return [
        ("mamba2", {**base, "arch": "mamba"}, False),
        ("mamba2+packed", {**base, "arch": "mamba"}, True),
        ("mamba1", {**base, "arch": "mamba", "ssm_layer": "mamba1"}, False),
        ("attention", {**base, "arch": "transformer"}, False),
        ("attention+packed", {**base, "arch": "transformer"}, True),
        ("attention+mlp", {**base, "arch": "transformer", "d_intermediate": 3 * d}, False),
        ("parallel-xattn/mamba2", {**base, "arch": "parallel", "merge": "cross-attention"}, False),
    ]


def print_table(rows, header, fmt):
    if rows:
        print("\n" + header)
        for r in rows:
            print(f"{r['item']}: FAILED {r['error']}" if "error" in r else fmt(r))


def plan(args, device, fast_mode):
    """(section, label, thunk) in run order; each thunk returns a list of result rows."""
    for name, cfg in agreement_configs(args.quick).items():
        yield "agreement", name, lambda name=name, cfg=cfg: agreement(name, cfg, args, device, fast_mode)
    yield "generation", "parallel", lambda: [generation(args, device, fast_mode)]
    for label, cfg, packed in timing_configs(args.quick):
        # attention has one path unpacked (SDPA); packed rows: FlexAttention block mask (cuda) vs dense mask (torch)
        two = fast_mode != "torch" and ("attention" not in label or "packed" in label)
        modes = (fast_mode, "torch") if two else ("torch",)
        for mode in modes:
            yield "blocks", f"{label}/{mode}", lambda label=label, cfg=cfg, mode=mode, packed=packed: [
                block_timing(label, cfg, mode, args, device, packed)]
    size = "tiny" if args.quick else "130m"
    for arch, packed in (("mamba", False), ("transformer", False), ("sequential", False), ("parallel", False),
                         ("mamba", True)):
        yield "presets", f"{arch}-{size}", lambda arch=arch, packed=packed: [
            throughput(f"{arch}-{size}", args, device, packed)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="toy sizes (CPU dry run)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--deadline", type=float, default=0, help="unix time after which remaining items are skipped")
    ap.add_argument("--sections", default="agreement,generation,blocks,presets")
    ap.add_argument("--only", default="", help="comma-separated substrings: run only the items whose label has one")
    args = ap.parse_args()
    device = torch.device(args.device)
    args.check_batch, args.check_len = (2, 40) if args.quick else (2, 512)
    args.time_batch, args.time_len = (2, 64) if args.quick else (8, 2048)
    args.reps = 2 if args.quick else 10
    fast_mode = "torch"
    if device.type == "cuda":  # insist on the kernels when all import, so a silent fallback cannot pass
        ops = kernels.mamba_ssm_ops()
        fast_mode = "cuda" if ops is not None and ops.selective_scan_fn is not None else "auto"
    klog = KernelLog()
    logging.getLogger("paraphrase_pipe.models.kernels").addHandler(klog)
    logging.getLogger("paraphrase_pipe.models.kernels").setLevel(logging.INFO)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    result = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "fast_mode": fast_mode}
    for mod in ("mamba_ssm", "causal_conv1d", "triton", "transformers"):
        try:
            result[mod] = __import__(mod).__version__
        except Exception as exc:
            result[mod] = f"missing ({type(exc).__name__})"
    out_file = Path(args.out) / "gpu_models.json"

    def save():
        result["kernel_log"] = klog.lines
        out_file.parent.mkdir(parents=True, exist_ok=True)
        out_file.write_text(json.dumps(result, indent=1, default=str))

    wanted = set(args.sections.split(","))
    for section, label, thunk in plan(args, device, fast_mode):
        if section not in wanted or (args.only and not any(o in label for o in args.only.split(","))):
            continue
        if args.deadline and time.time() > args.deadline:
            result.setdefault("skipped (deadline)", []).append(f"{section}:{label}")
            continue
        t = time.time()
        try:
            rows = thunk()
        except Exception as exc:  # keep the other items' numbers
            rows = [{"item": label, "error": f"{type(exc).__name__}: {exc}"[:300]}]
        result.setdefault(section, []).extend(rows)
        print(f"[{section}] {label}: {time.time() - t:.1f} s", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        save()

    print("\n".join(klog.lines))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, default=str))
    print_table(result.get("agreement"), f"{'model':28s} {'prec':5s} {'logits rel':>11s} {'grad rel max':>13s} "
                f"{'bf16 cuda/ref':>13s} {'bf16 torch/ref':>14s}  nan  worst grad",
                lambda r: f"{r['model']:28s} {r['precision']:5s} {r['logits_rel']:11.2e} {r['grad_rel_max']:13.2e} "
                          f"{r.get('cuda_vs_fp32_ref', math.nan):13.2e} {r.get('torch_vs_fp32_ref', math.nan):14.2e}  "
                          f"{'NaN' if r['nan'] else 'ok ':3s}  {r['grad_worst']}")
    print_table(result.get("blocks"), f"{'block (fwd+bwd, bf16)':24s} {'ran':34s} {'tokens':>7s} {'ms':>9s} "
                f"{'us/1k tok':>10s}",
                lambda r: f"{r['block']:24s} {r['ran']:34s} {r['tokens']:7d} {r['ms']:9.2f} {r['us_per_1k_tokens']:10.1f}")
    print_table(result.get("presets"), f"{'preset (fwd+bwd, bf16)':26s} {'params M':>9s} {'ms':>9s} {'tok/s':>10s}",
                lambda r: f"{r['preset']:26s} {r['params_M']:9.1f} {r['ms']:9.1f} {r['tokens_per_s']:10.0f}")
    print(f"\ngeneration: {result.get('generation')}")
    if result.get("skipped (deadline)"):
        print(f"skipped (deadline): {result['skipped (deadline)']}")
    bad = [r for r in result.get("agreement", []) if r.get("nan") or "error" in r]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
