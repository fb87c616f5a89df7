"""Training throughput on one GPU: `paraphrase-pipe train`'s step against the loop users write with mamba_ssm.

Reference, the loop a user writes: mamba_ssm `MambaLMHeadModel` with Mamba-2 layers (mem-efficient path, needs
causal_conv1d), fp32 parameters, bf16 autocast, `F.cross_entropy` on the logits, fused AdamW, grad clip 1.0,
batch 8 x 2048, batches already on the GPU. Ours, in the same process on the same packed batches:
- `ssm:M`     our step (`paraphrase_pipe.train.loop.train_step`: chunked fused cross-entropy, no fp32
              logits) on the same mamba_ssm model class: isolates what the trainer adds;
- `ours:M`    the product path: `paraphrase_pipe.models` Mamba-2 preset (packed rows with seq_idx: document
              resets), built by `loop.build_module` exactly as `paraphrase-pipe train` builds it;
- suffix `:c` torch.compile of every block and of the loss chunk math (`--compile`).
M is the micro-batch (sequences of 2048). tok/s = tokens per optimizer step / median step time.

MFU = model FLOPs/s over the H100 SXM dense bf16 peak (989 TFLOP/s; the machine's measured bf16 matmul
ceiling is ~800). Model FLOPs per token = 3 x forward: projections 2*params, the LM head 2*d*V, and the SSD
scan at chunk size Q (per layer 2*Q*N*G + 2*Q*P*H + 4*N*P*H; N state, P head dim, H heads, G groups).

GPU (after installing the kernels, see benchmarks/README.md):
    python3 benchmarks/train_throughput.py --sizes 130m 370m 780m --out "$OUT"
CPU dry run of the script (tiny model, our pure-PyTorch model stands in for mamba_ssm):
    python benchmarks/train_throughput.py --device cpu --quick
The table is printed last; every number goes to OUT/train_throughput.json (rewritten after each run).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from paraphrase_pipe.train import distributed  # noqa: E402
from paraphrase_pipe.train.config import TrainConfig  # noqa: E402
from paraphrase_pipe.train.loop import autocast_fn, build_module, make_optimizer, train_step  # noqa: E402
from paraphrase_pipe.train.model import SummedCausalLMLoss  # noqa: E402
from paraphrase_pipe.train.packing import Mixture, PackedWindows  # noqa: E402

SIZES = {"130m": (768, 24), "370m": (1024, 48), "780m": (1536, 48), "tiny": (64, 2)}
REFERENCE_H100 = {"130m": 94.5e3, "370m": 56.4e3, "780m": 46.4e3}  # tok/s measured 2026-11-23 (ENVIRONMENT.md)
VOCAB = 50277
PEAK = 989e12
SSM = {"d_state": 128, "headdim": 64, "expand": 2, "ngroups": 1, "chunk_size": 256}


def flops_per_token(d: int, n_layer: int, vocab: int, ssm: dict = SSM) -> float:
    d_in = ssm["expand"] * d
    heads, n, p, q, g = d_in // ssm["headdim"], ssm["d_state"], ssm["headdim"], ssm["chunk_size"], ssm["ngroups"]
    proj = d * (2 * d_in + 2 * g * n + heads) + d_in * d
    scan = 2 * q * n * g + 2 * q * p * heads + 4 * n * p * heads
    return 3 * (n_layer * (2 * proj + scan) + 2 * d * vocab)


def packed_batches(micro: int, seq_len: int, vocab: int, count: int, seed: int = 0) -> list[dict]:
    """Real packing (PackedWindows + Mixture) over random documents of ~1500 tokens: 1-3 boundaries a row."""
    rng = np.random.default_rng(seed)
    lengths = rng.geometric(1 / 1500, size=(micro * count * seq_len) // 1000 + 8)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(0, vocab, size=offsets[-1]).astype(np.int32)
    mix = Mixture([PackedWindows(tokens, offsets, np.arange(len(lengths)), seq_len, seed=seed)], [1.0], seed)
    batches = []
    for _ in range(count):
        picks = mix.draw(micro)
        batches.append({**mix.batch(picks), "count": mix.targets(picks)})
    return batches


def timed(step, batches, warmup: int, iters: int, device) -> list[float]:
    for i in range(warmup):
        step(batches[i % len(batches)])
    times = []
    for i in range(iters):
        sync(device)
        t = time.perf_counter()
        step(batches[i % len(batches)])
        sync(device)
        times.append(time.perf_counter() - t)
    return times


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def mamba_ssm_model(d: int, n_layer: int, device):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    try:  # the mem-efficient path (conv + scan + norm in one autograd function) needs causal_conv1d
        import causal_conv1d  # noqa: F401
        ssm_cfg = {"layer": "Mamba2"}
    except ImportError:
        ssm_cfg = {"layer": "Mamba2", "use_mem_eff_path": False}
    cfg = MambaConfig(d_model=d, n_layer=n_layer, d_intermediate=0, vocab_size=VOCAB, ssm_cfg=ssm_cfg,
                      rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=16)
    return MambaLMHeadModel(cfg, device=device, dtype=torch.float32)


def our_model(d: int, n_layer: int, quick: bool):
    from paraphrase_pipe.models import build_model

    if quick:
        return build_model("mamba-tiny", vocab_size=VOCAB, d_model=d, n_layer=n_layer)
    return build_model("mamba-130m", vocab_size=VOCAB, d_model=d, n_layer=n_layer)


def reference_model(d, n_layer, device, quick):
    """mamba_ssm on CUDA; our pure-PyTorch model stands in on CPU (dry runs of this script only)."""
    return our_model(d, n_layer, quick).to(device) if device.type == "cpu" else mamba_ssm_model(d, n_layer, device)


def reference_step(model, device):
    """The loop users write: logits -> F.cross_entropy, fused AdamW, clip."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=device.type == "cuda" or None)

    def step(batch):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(batch["input_ids"]).logits
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch["targets"].view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def our_step(model, micro: int, compile: bool, device, seq_idx: bool):
    cfg = TrainConfig(steps=1, seq_len=2048, micro_batch=micro, compile=compile, lr=3e-4, weight_decay=0.1,
                      grad_clip=1.0, precision="bf16")
    env = distributed.Env(device=device)
    _, module = build_module(cfg, VOCAB, env, model=model.to(device))
    opt = make_optimizer(module, cfg, device)
    autocast = autocast_fn(device, True)

    def step(batch):
        parts = {k: batch[k] for k in ("input_ids", "targets", "seq_idx") if k != "seq_idx" or seq_idx}
        loss, _ = train_step(module, opt, [parts], 1.0 / batch["count"], autocast, cfg.grad_clip, device)
        return loss

    return step, module


def loss_agreement(d, n_layer, device, quick, batch) -> float:
    """Our fused loss against F.cross_entropy on materialised logits, same weights and batch (bf16 autocast)."""
    torch.manual_seed(0)
    model = reference_model(d, n_layer, device, quick)
    gpu = {k: v.to(device) for k, v in batch.items() if k != "count"}
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(gpu["input_ids"]).logits
        ref = F.cross_entropy(logits.float().view(-1, logits.size(-1)), gpu["targets"].view(-1), reduction="sum")
        ours = SummedCausalLMLoss(model, 4096)(gpu["input_ids"], gpu["targets"])
    del model
    return float(abs(ours - ref) / ref)


def run_variant(spec: str, size: str, args, device) -> dict:
    d, n_layer = SIZES[size]
    kind, micro, *flags = spec.split(":")
    micro = int(micro)
    compile = "c" in flags
    torch.manual_seed(0)
    batches = packed_batches(micro, args.seq_len, VOCAB, 3)
    if kind == "ref":
        model = reference_model(d, n_layer, device, args.quick)
        gpu = [{k: v.to(device) for k, v in b.items() if k != "count"} for b in batches]
        step, params = reference_step(model, device), model.parameters()
        times = timed(step, gpu, args.warmup, args.iters, device)
    else:
        model = reference_model(d, n_layer, device, args.quick) if kind == "ssm" else our_model(d, n_layer, args.quick)
        step, module = our_step(model, micro, compile, device, seq_idx=kind == "ours")
        params = module.parameters()
        times = timed(step, batches, args.warmup + (2 if compile else 0), args.iters, device)
    n_params = sum(p.numel() for p in params)
    tokens = micro * args.seq_len
    med = statistics.median(times)
    row = {"size": size, "variant": spec, "params_M": round(n_params / 1e6, 1), "tokens_per_step": tokens,
           "step_ms": round(med * 1e3, 2), "spread_ms": round((max(times) - min(times)) * 1e3, 2),
           "tok_per_s": round(tokens / med), "mfu": round(tokens / med * flops_per_token(d, n_layer, VOCAB) / PEAK, 4),
           "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None}
    del model, step
    return row


def profile(spec: str, size: str, args, device, out: Path) -> None:
    """Top CUDA kernels of two steps of one variant (what to speed up next)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    d, n_layer = SIZES[size]
    kind, micro, *flags = spec.split(":")
    batches = packed_batches(int(micro), args.seq_len, VOCAB, 2)
    if kind == "ref":
        model = reference_model(d, n_layer, device, args.quick)
        step = reference_step(model, device)
        batches = [{k: v.to(device) for k, v in b.items() if k != "count"} for b in batches]
    else:
        model = reference_model(d, n_layer, device, args.quick) if kind == "ssm" else our_model(d, n_layer, args.quick)
        step, _ = our_step(model, int(micro), "c" in flags, device, seq_idx=kind == "ours")
    for b in batches * 2:
        step(b)
    sync(device)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for b in batches:
            step(b)
        sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows, max_name_column_width=70)
    (out / f"profile_{size}_{spec.replace(':', '-')}.txt").write_text(table)
    print(f"\n### profile {size} {spec} (2 steps)\n{table}", flush=True)
    del model, step


def end_to_end(args, out: Path) -> dict:
    """`train()` exactly as the CLI runs it, on a real build: steady tok/s from its metrics.jsonl."""
    from paraphrase_pipe.train.config import load_config
    from paraphrase_pipe.train.loop import train
    from paraphrase_pipe.train.metrics import read_metrics

    micro, compile = int(args.e2e_micro), args.e2e_compile
    run = out / "e2e"
    cfg = load_config(None, {"data": [args.e2e], "tokenizer": args.e2e_tokenizer, "model": "mamba-130m",
                             "seq_len": args.seq_len, "micro_batch": micro, "steps": args.e2e_steps,
                             "compile": compile, "log_every": 5, "eval_every": 0, "save_every": 0,
                             "warmup_steps": 5, "output": str(run), "progress": False, "resume": False})
    summary = train(cfg)
    rates = [r["tok_per_s"] for r in read_metrics(run / "metrics.jsonl") if r.get("tok_per_s")]
    rates = rates[1:] or rates  # the first interval holds start-up (compile, autotuning)
    return {"size": "130m", "variant": f"train():{micro}{':c' if compile else ''}", "tok_per_s": round(
        statistics.median(rates)), "e2e_rows": rates, "steps": summary["steps"], "mfu": round(
        statistics.median(rates) * flops_per_token(*SIZES["130m"], VOCAB) / PEAK, 4), "step_ms": None,
        "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1) if torch.cuda.is_available() else None}


def cleanup(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def print_table(rows: list[dict]) -> None:
    ref = {r["size"]: r["tok_per_s"] for r in rows if r.get("variant", "").startswith("ref") and "tok_per_s" in r}
    print(f"\n{'size':6} {'variant':12} {'tok/s':>9} {'x ref':>6} {'MFU':>6} {'step ms':>8} {'mem GiB':>8}  note")
    for r in rows:
        if "tok_per_s" not in r:
            print(f"{r['size']:6} {r['variant']:12} {'-':>9} {'':>6} {'':>6} {'':>8} {'':>8}  {r.get('error', '')[:90]}")
            continue
        ratio = r["tok_per_s"] / ref[r["size"]] if r["size"] in ref else float("nan")
        note = f"H100 ref figure {REFERENCE_H100[r['size']] / 1e3:.1f}k" if r["variant"].startswith("ref") and \
            r["size"] in REFERENCE_H100 else ""
        print(f"{r['size']:6} {r['variant']:12} {r['tok_per_s']:>9,} {ratio:>6.2f} {r['mfu']:>6.1%} {r['step_ms'] or '-':>8} "
              f"{r['peak_mem_GiB'] if r['peak_mem_GiB'] is not None else '-':>8}  {note}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["130m", "370m", "780m"])
    ap.add_argument("--variants", nargs="*", default=["ref:8", "ssm:8", "ours:8", "ours:8:c", "ours:16:c"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--iters", type=int, default=8)
    ap.add_argument("--profile", nargs="*", default=[], help="size/variant pairs to profile, e.g. 130m/ref:8")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip what would start after this many seconds")
    ap.add_argument("--e2e", help="a build output dir: also time train() (the CLI's code path) on it, 130m")
    ap.add_argument("--e2e-tokenizer", default="builtin:gpt2")
    ap.add_argument("--e2e-micro", default="16")
    ap.add_argument("--e2e-compile", action="store_true")
    ap.add_argument("--e2e-steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="tiny model, short sequences (CPU dry run)")
    ap.add_argument("--out", default="runs/train_throughput")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.seq_len, args.warmup, args.iters = ["tiny"], 128, 1, 2
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__}
    for name in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - report whatever is missing
            info[name] = f"missing ({type(exc).__name__})"
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    results = {"info": info, "rows": rows}
    try:
        info["loss_rel_err_fused_vs_plain"] = loss_agreement(
            *SIZES[args.sizes[0]], device, args.quick, packed_batches(2, args.seq_len, VOCAB, 1)[0])
    except Exception as exc:  # noqa: BLE001
        info["loss_rel_err_fused_vs_plain"] = f"FAILED {type(exc).__name__}: {exc}"
    print(f"fused loss vs plain CE: {info['loss_rel_err_fused_vs_plain']}", flush=True)
    for size in args.sizes:
        for spec in args.variants:
            if time.time() - start > args.budget_s:
                rows.append({"size": size, "variant": spec, "error": "skipped (time budget)"})
                continue
            try:
                row = run_variant(spec, size, args, device)
            except Exception as exc:  # noqa: BLE001 - one failing variant must not lose the others
                traceback.print_exc()
                row = {"size": size, "variant": spec, "error": f"{type(exc).__name__}: {exc}"[:300]}
            cleanup(device)
            rows.append(row)
            print(json.dumps(row), f"[{time.time() - start:.0f} s]", flush=True)
            (out / "train_throughput.json").write_text(json.dumps(results, indent=1))
    if args.e2e and time.time() - start < args.budget_s:
        try:
            rows.append(end_to_end(args, out))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append({"size": "130m", "variant": "train()", "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(json.dumps(rows[-1]), f"[{time.time() - start:.0f} s]", flush=True)
        (out / "train_throughput.json").write_text(json.dumps(results, indent=1))
        cleanup(device)
    for item in args.profile:
        size, spec = item.split("/")
        if time.time() - start < args.budget_s:
            try:
                profile(spec, size, args, device, out)
            except Exception as exc:  # noqa: BLE001
                print(f"profile {item} failed: {type(exc).__name__}: {exc}")
            cleanup(device)
    print_table(rows)


if __name__ == "__main__":
    main()
