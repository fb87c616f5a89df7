"""Training throughput on one GPU: `paraphrase-pipe train`'s step against the loop users write with mamba_ssm,
each side given its own best micro-batch.

Reference, the loop a user writes: mamba_ssm `MambaLMHeadModel` (Mamba-2 layers, mem-efficient path with
causal_conv1d; Mamba-1 layers with `selective_scan_fn` for the 2.8B Mamba-1 shape), fp32 parameters, bf16
autocast, `F.cross_entropy` on the logits, fused AdamW, grad clip 1.0, batches already on the GPU.
Ours: `paraphrase_pipe.train.loop.train_step` on the `paraphrase_pipe.models` model built by `loop.build_module`
exactly as `paraphrase-pipe train` builds it (packed rows with `seq_idx`; Mamba-1 unpacked, see below), with and
without `--compile` (a separate column).

Fairness: every variant runs the same global batch per optimizer step (`--global-batch` sequences of 2048,
gradient accumulation over micro-batches), and the micro-batch is swept per side over the size's candidates
(`MICROS`, or `--micros`) until the GPU runs out of memory; each side's best micro-batch is the one compared.
The candidates bracket the best point of earlier sweeps (doubling from 4 at every size costs ~3x the device time).
tok/s = tokens per optimizer step / median step time. MFU is printed against the machine's measured dense bf16
matmul ceiling (~790 TFLOP/s on the H200) and the 989 TFLOP/s datasheet figure. Before any timing, agreement
checks: our model loaded with the reference's weights gives the reference's loss and gradients on the same batch;
our fused chunked loss equals `F.cross_entropy` on materialised logits; and on packed rows (`seq_idx`) our CUDA
path (Mamba-2: `mamba_split_conv1d_scan_combined`) gives the loss of our pure-PyTorch path (Mamba-2 sizes; the
Mamba-1 fused mixer and reset scan are checked by benchmarks/mamba1_packed_check.py). Ours always trains on packed
rows, Mamba-1 included (`mamba1_fused.py`, mamba_inner_fn's structure with document resets; recorded path
`scan1: fused-reset`); the reference cannot reset at document boundaries and is timed unpacked.

GPU, one call per size (kernels from .gpu/wheels, see benchmarks/train_throughput_gpu.sh):
    bash benchmarks/train_throughput_gpu.sh run --sizes 130m
CPU dry run of the script (tiny model, our pure-PyTorch model stands in for mamba_ssm):
    python benchmarks/train_throughput.py --device cpu --quick
The table is printed last; every number goes to OUT/train_throughput.json (rewritten after each row).
"""
from __future__ import annotations

import argparse
import json
import os
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

# size -> (d_model, n_layer, ssm layer): the state-spaces shapes (mamba2-130m ... mamba2-2.7b, mamba-2.8b-slimpj)
SIZES = {"130m": (768, 24, "mamba2"), "370m": (1024, 48, "mamba2"), "780m": (1536, 48, "mamba2"),
         "1.4b": (2048, 48, "mamba2"), "2.7b": (2560, 64, "mamba2"), "2.8b-m1": (2560, 64, "mamba1"),
         "tiny": (64, 2, "mamba2")}
VOCAB = 50277
PEAK_MEASURED = 790e12  # dense bf16 matmul ceiling measured on the H200 (ENVIRONMENT.md)
PEAK_DATASHEET = 989e12
SSM = {"d_state": 128, "headdim": 64, "expand": 2, "ngroups": 1, "chunk_size": 256}
SSM1 = {"d_state": 16, "expand": 2}
# micro-batch candidates per size (seq_len 2048): the reference's best was 32 at 130M and 16 at 780M (H200)
MICROS = {"130m": [16, 32, 64], "370m": [16, 32, 64], "780m": [8, 16, 32], "1.4b": [8, 16, 32],
          "2.7b": [4, 8, 16], "2.8b-m1": [2, 4, 8], "tiny": [2, 4]}


def flops_per_token(d: int, n_layer: int, vocab: int, layer: str = "mamba2") -> float:
    """Model FLOPs per token, 3 x forward: projections 2*params, the LM head 2*d*V, and the scan."""
    if layer == "mamba1":
        d_in, n = SSM1["expand"] * d, SSM1["d_state"]
        r = -(-d // 16)
        proj = d * 2 * d_in + d_in * (r + 2 * n) + r * d_in + d_in * d
        scan = 9 * d_in * n  # decay, input, state update, output per (channel, state)
        return 3 * (n_layer * (2 * proj + scan) + 2 * d * vocab)
    ssm = SSM
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


def mamba_ssm_model(d: int, n_layer: int, device, layer: str = "mamba2"):
    from mamba_ssm.models.config_mamba import MambaConfig
    from mamba_ssm.models.mixer_seq_simple import MambaLMHeadModel

    try:  # the mem-efficient path (conv + scan + norm in one autograd function) needs causal_conv1d
        import causal_conv1d  # noqa: F401
        ssm_cfg = {"layer": "Mamba2"}
    except ImportError:
        ssm_cfg = {"layer": "Mamba2", "use_mem_eff_path": False}
    if layer == "mamba1":
        ssm_cfg = {"layer": "Mamba1"}
    cfg = MambaConfig(d_model=d, n_layer=n_layer, d_intermediate=0, vocab_size=VOCAB, ssm_cfg=ssm_cfg,
                      rms_norm=True, residual_in_fp32=True, fused_add_norm=True, pad_vocab_size_multiple=16)
    return MambaLMHeadModel(cfg, device=device, dtype=torch.float32)


def our_model(d: int, n_layer: int, quick: bool, layer: str = "mamba2"):
    from paraphrase_pipe.models import build_model

    return build_model("mamba-tiny" if quick else "mamba-130m", vocab_size=VOCAB, d_model=d, n_layer=n_layer,
                       ssm_layer=layer)


def reference_model(d, n_layer, device, quick, layer="mamba2"):
    """mamba_ssm on CUDA; our pure-PyTorch model stands in on CPU (dry runs of this script only)."""
    if device.type == "cpu":
        return our_model(d, n_layer, quick, layer).to(device)
    return mamba_ssm_model(d, n_layer, device, layer)


def ours_from_reference(ref, quick: bool):
    """Our model holding the reference's weights (state-dict keys map one to one): the agreement check."""
    from paraphrase_pipe.models.checkpoints import config_from_state_spaces, model_from_state_dict

    if not hasattr(ref, "base_model") and hasattr(ref.config, "ssm_cfg"):  # mamba_ssm MambaLMHeadModel
        import dataclasses

        cfg = config_from_state_spaces(dataclasses.asdict(ref.config))
        return model_from_state_dict(cfg, {k: v.detach().clone() for k, v in ref.state_dict().items()})
    import copy

    return copy.deepcopy(ref)


def reference_step(model, device):
    """The loop users write: logits -> F.cross_entropy, fused AdamW, clip; a step = a list of micro-batches."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1, fused=device.type == "cuda" or None)

    def step(micro):
        for batch in micro:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                logits = model(batch["input_ids"]).logits
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), batch["targets"].view(-1))
            (loss / len(micro)).backward()
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

    def step(micro):
        parts = [{k: b[k] for k in ("input_ids", "targets", "seq_idx") if k != "seq_idx" or seq_idx} for b in micro]
        loss, _ = train_step(module, opt, parts, 1.0 / sum(b["count"] for b in micro), autocast, cfg.grad_clip,
                             device)
        return loss

    return step, module


def agreement(size: str, device, quick: bool, batch: dict) -> dict:
    """Before timing: (1) our model with the reference's weights gives the reference's loss and gradients on the
    same batch (bf16 autocast, relative errors; the worst parameter's gradient); (2) our fused chunked loss equals
    F.cross_entropy on materialised logits; (3) Mamba-2: on packed rows our CUDA path gives our pure path's loss."""
    from paraphrase_pipe.models.kernels import record_paths

    d, n_layer, layer = SIZES[size]
    torch.manual_seed(0)
    ref = reference_model(d, n_layer, device, quick, layer)
    ours = ours_from_reference(ref, quick).to(device)
    gpu = {k: v.to(device) for k, v in batch.items() if k != "count"}
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = ref(gpu["input_ids"]).logits
        plain = F.cross_entropy(logits.float().view(-1, logits.size(-1)), gpu["targets"].view(-1), reduction="sum")
        with torch.no_grad():  # on ours: SummedCausalLMLoss refuses mamba_ssm's Mamba-1 model (no seq_idx)
            ours_logits = ours(gpu["input_ids"]).logits
            ours_plain = F.cross_entropy(ours_logits.float().view(-1, ours_logits.size(-1)), gpu["targets"].view(-1),
                                         reduction="sum")
            del ours_logits
        with record_paths() as paths:
            mine = SummedCausalLMLoss(ours, 4096)(gpu["input_ids"], gpu["targets"])
    del logits
    plain.backward()
    mine.backward()
    ref_grads = dict(ref.named_parameters())
    worst, worst_name, matched = 0.0, None, 0
    for name, p in ours.named_parameters():
        q = ref_grads.get(name)
        if q is None or p.grad is None or q.grad is None:
            continue
        matched += 1
        err = float((p.grad.float() - q.grad.float()).norm() / q.grad.float().norm().clamp_min(1e-30))
        if err > worst:
            worst, worst_name = err, name
    out = {"ours_vs_reference_loss": float(abs(mine.detach() - plain.detach()) / plain.detach()),
           "ours_vs_reference_grad_worst": worst, "worst_param": worst_name, "params_compared": matched,
           "fused_vs_plain_loss": float(abs(mine.detach() - ours_plain) / ours_plain), "paths": dict(paths)}
    del ref
    ours.zero_grad(set_to_none=True)
    if layer == "mamba2" and "seq_idx" in gpu:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            with record_paths() as packed_paths:
                fast = SummedCausalLMLoss(ours, 4096)(gpu["input_ids"], gpu["targets"], gpu["seq_idx"])
            os.environ["PARAPHRASE_PIPE_KERNELS"] = "torch"
            try:
                pure = SummedCausalLMLoss(ours, 4096)(gpu["input_ids"], gpu["targets"], gpu["seq_idx"])
            finally:
                del os.environ["PARAPHRASE_PIPE_KERNELS"]
        out["packed_cuda_vs_pure_loss"] = float(abs(fast - pure) / pure)
        out["packed_paths"] = dict(packed_paths)
    del ours
    return out


def _batches_for(micro: int, args, size: str) -> list[list[dict]]:
    """Two optimizer steps of `global_batch` sequences, cut into micro-batches of `micro`."""
    accum = max(1, args.global_batch // micro)
    flat = packed_batches(micro, args.seq_len, VOCAB, 2 * accum)
    return [flat[i * accum:(i + 1) * accum] for i in range(2)]


def run_variant(side: str, size: str, micro: int, args, device) -> dict:
    """One (side, micro-batch) point: side is "ref", "ours" or "ours+compile"."""
    d, n_layer, layer = SIZES[size]
    torch.manual_seed(0)
    steps = _batches_for(micro, args, size)
    if side == "ref":
        model = reference_model(d, n_layer, device, args.quick, layer)
        steps = [[{k: v.to(device) for k, v in b.items() if k != "count"} for b in micro_] for micro_ in steps]
        step, params = reference_step(model, device), model.parameters()
        times = timed(step, steps, args.warmup, args.iters, device)
    else:
        model = our_model(d, n_layer, args.quick, layer)
        compile = side == "ours+compile"
        step, module = our_step(model, micro, compile, device, seq_idx=True)
        params = module.parameters()
        times = timed(step, steps, args.warmup + (2 if compile else 0), args.iters, device)
    n_params = sum(p.numel() for p in params)
    tokens = len(steps[0]) * micro * args.seq_len
    med = statistics.median(times)
    flops = tokens / med * flops_per_token(d, n_layer, VOCAB, layer)
    row = {"size": size, "side": side, "micro": micro, "accum": len(steps[0]), "params_M": round(n_params / 1e6, 1),
           "tokens_per_step": tokens, "step_ms": round(med * 1e3, 2),
           "spread_ms": round((max(times) - min(times)) * 1e3, 2), "tok_per_s": round(tokens / med),
           "mfu_measured_peak": round(flops / PEAK_MEASURED, 4), "mfu_datasheet": round(flops / PEAK_DATASHEET, 4),
           "peak_mem_GiB": round(torch.cuda.max_memory_allocated() / 2**30, 1) if device.type == "cuda" else None,
           "packed": side != "ref"}
    del model, step
    return row


def micro_candidates(given: list[str] | None, size: str) -> list[int]:
    """`--micros 16 32` (every size) or `--micros 130m=32 2.7b=4,8` (per size); default MICROS[size]."""
    for item in given or []:
        name, _, values = item.rpartition("=")
        if name in ("", size):
            return [int(v) for v in values.split(",")]
    return MICROS[size]


def sweep(side: str, size: str, args, device, rows: list, save) -> None:
    """The size's micro-batch candidates, smallest first, until out of memory."""
    for micro in micro_candidates(args.micros, size):
        if micro > args.global_batch:
            break
        if time.time() - START > args.budget_s:
            rows.append({"size": size, "side": side, "micro": micro, "error": "skipped (time budget)"})
            return
        try:
            row = run_variant(side, size, micro, args, device)
        except torch.cuda.OutOfMemoryError:
            row = {"size": size, "side": side, "micro": micro, "error": "out of memory"}
        except Exception as exc:  # noqa: BLE001 - one failing point must not lose the others
            traceback.print_exc()
            row = {"size": size, "side": side, "micro": micro, "error": f"{type(exc).__name__}: {exc}"[:300]}
        cleanup(device)
        rows.append(row)
        print(json.dumps(row), f"[{time.time() - START:.0f} s]", flush=True)
        save()
        if "error" in row:
            return


def profile(side: str, size: str, micro: int, args, device, out: Path) -> None:
    """Top CUDA kernels of two optimizer steps of one (side, micro-batch) point (what to speed up next)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile

    d, n_layer, layer = SIZES[size]
    steps = _batches_for(micro, args, size)
    if side == "ref":
        model = reference_model(d, n_layer, device, args.quick, layer)
        step = reference_step(model, device)
        steps = [[{k: v.to(device) for k, v in b.items() if k != "count"} for b in m] for m in steps]
    else:
        model = our_model(d, n_layer, args.quick, layer)
        step, _ = our_step(model, micro, side == "ours+compile", device, seq_idx=True)
    for m in steps * 2:
        step(m)
    sync(device)
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for m in steps:
            step(m)
        sync(device)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=args.profile_rows, max_name_column_width=70)
    (out / f"profile_{size}_{side.replace('+', '_')}_{micro}.txt").write_text(table)
    print(f"\n### profile {size} {side} micro {micro} (2 steps)\n{table}", flush=True)
    del model, step


def end_to_end(args, out: Path, rows: list[dict]) -> dict:
    """`paraphrase-pipe train` as a user runs it (a fresh process, the CLI, a real build's shards), 130M, the same
    micro-batch, global batch and compile setting as one of the benchmark's rows: steady tok/s from its
    metrics.jsonl, and its ratio to that row (target: within 5%)."""
    import subprocess

    from paraphrase_pipe.train.metrics import read_metrics

    micro, compile = int(args.e2e_micro), args.e2e_compile
    run = out / "e2e"
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "train", "--data", args.e2e, "--model", "mamba-130m",
           "--tokenizer", args.e2e_tokenizer, "--seq-len", str(args.seq_len), "--micro-batch", str(micro),
           "--batch-tokens", str(args.global_batch * args.seq_len), "--steps", str(args.e2e_steps),
           "--warmup-steps", "5", "--save-every", "0", "--eval-every", "0", "--no-resume", "--no-progress",
           "--output", str(run), "--set", "log_every=5", "--compile" if compile else "--no-compile"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    (out / "e2e.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"train exited {proc.returncode}: {(proc.stdout + proc.stderr)[-500:]}")
    rates = [r["tok_per_s"] for r in read_metrics(run / "metrics.jsonl") if r.get("tok_per_s")]
    rates = rates[1:] or rates  # the first interval holds start-up (compile, autotuning)
    side = "ours+compile" if compile else "ours"
    bench = [r for r in rows if r.get("size") == "130m" and r.get("side") == side and r.get("micro") == micro
             and "tok_per_s" in r]
    rate = statistics.median(rates)
    return {"size": "130m", "side": "train CLI" + ("+compile" if compile else ""), "micro": micro,
            "tok_per_s": round(rate), "e2e_rows": rates,
            "vs_benchmark_row": round(rate / bench[0]["tok_per_s"], 3) if bench else None,
            "mfu_measured_peak": round(rate * flops_per_token(*SIZES["130m"][:2], VOCAB) / PEAK_MEASURED, 4),
            "step_ms": None, "peak_mem_GiB": None}


def cleanup(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def print_table(rows: list[dict]) -> None:
    """Per size: each side's best micro-batch, the ratio to the reference's best, MFU against both peaks."""
    ok = [r for r in rows if "tok_per_s" in r]
    best_ref = {}
    for r in ok:
        if r["side"] == "ref":
            best_ref[r["size"]] = max(best_ref.get(r["size"], 0), r["tok_per_s"])
    print(f"\n{'size':8} {'side':15} {'micro':>5} {'tok/s':>9} {'x best ref':>10} {'MFU 790':>8} {'MFU 989':>8} "
          f"{'mem GiB':>8}  best?")
    for r in rows:
        if "tok_per_s" not in r:
            print(f"{r['size']:8} {r['side']:15} {r.get('micro', ''):>5} {'-':>9}  {r.get('error', '')[:80]}")
            continue
        side_best = max(x["tok_per_s"] for x in ok if x["size"] == r["size"] and x["side"] == r["side"])
        ratio = r["tok_per_s"] / best_ref[r["size"]] if r["size"] in best_ref else float("nan")
        print(f"{r['size']:8} {r['side']:15} {r['micro']:>5} {r['tok_per_s']:>9,} {ratio:>10.2f} "
              f"{r.get('mfu_measured_peak', float('nan')):>8.1%} {r.get('mfu_datasheet', float('nan')):>8.1%} "
              f"{r['peak_mem_GiB'] if r.get('peak_mem_GiB') is not None else '-':>8}  "
              f"{'<- best' if r['tok_per_s'] == side_best else ''}")


START = time.time()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", nargs="+", default=["130m"], choices=[k for k in SIZES])
    ap.add_argument("--sides", nargs="*", default=["ref", "ours", "ours+compile"],
                    choices=["ref", "ours", "ours+compile"])
    ap.add_argument("--global-batch", type=int, default=64, help="sequences per optimizer step, every variant")
    ap.add_argument("--micros", nargs="+", help="micro-batch candidates: '16,32' or 'SIZE=16,32' (default: MICROS)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--profile", nargs="*", default=[], help="size/side/micro points, e.g. 130m/ref/32")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip what would start after this many seconds")
    ap.add_argument("--e2e", help="a build output dir: also time `paraphrase-pipe train` (the CLI, a fresh process) on it, 130m")
    ap.add_argument("--e2e-tokenizer", default="builtin:gpt2")
    ap.add_argument("--e2e-micro", default="32")
    ap.add_argument("--e2e-compile", action="store_true")
    ap.add_argument("--e2e-steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="tiny model, short sequences (CPU dry run)")
    ap.add_argument("--out", default="runs/train_throughput")
    args = ap.parse_args()
    if args.quick:
        args.sizes, args.seq_len, args.warmup, args.iters = ["tiny"], 128, 1, 2
        args.global_batch = 4
    device = torch.device(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "global_batch": args.global_batch, "seq_len": args.seq_len}
    for name in ("mamba_ssm", "causal_conv1d", "triton"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001 - report whatever is missing
            info[name] = f"missing ({type(exc).__name__})"
    print(json.dumps(info), flush=True)
    rows: list[dict] = []
    results = {"info": info, "rows": rows}

    def save():
        (out / "train_throughput.json").write_text(json.dumps(results, indent=1))

    for size in args.sizes if args.sides else []:  # `--sides` alone: only --profile / --e2e
        try:
            info[f"agreement_{size}"] = agreement(size, device, args.quick, packed_batches(2, args.seq_len, VOCAB, 1)[0])
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            info[f"agreement_{size}"] = f"FAILED {type(exc).__name__}: {exc}"
        print(f"agreement {size}: {info[f'agreement_{size}']}", flush=True)
        cleanup(device)
        for side in args.sides:
            sweep(side, size, args, device, rows, save)
    if args.e2e and time.time() - START < args.budget_s:
        try:
            rows.append(end_to_end(args, out, rows))
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            rows.append({"size": "130m", "side": "train()", "error": f"{type(exc).__name__}: {exc}"[:300]})
        print(json.dumps(rows[-1]), f"[{time.time() - START:.0f} s]", flush=True)
        save()
        cleanup(device)
    for item in args.profile:
        size, side, micro = item.split("/")
        if time.time() - START < args.budget_s:
            try:
                profile(side, size, int(micro), args, device, out)
            except Exception as exc:  # noqa: BLE001
                print(f"profile {item} failed: {type(exc).__name__}: {exc}")
            cleanup(device)
    print_table(rows)
    sys.stdout.flush()
    if device.type == "cuda":  # inductor's compile workers kept the interpreter alive ~100 s after the last line
        os._exit(0)


if __name__ == "__main__":
    main()
