"""Wall time of the full synthetic recall suite for ~130M presets on one GPU.

The suite is what `paraphrase-pipe eval --suite synthetic` runs by default: MQAR (50 examples x 16 queries),
phonebook (100) and passkey (100, five needle depths) at 512, 1024, 2048, 4096 and 8192 tokens — 1,250 sequences,
~4M tokens, scored by teacher forcing (one forward per batch, `--batch-tokens` tokens each). The weights are
random (no checkpoint can reach the GPU machine): the time, not the accuracy, is the point. A first small pass
warms up CUDA / Triton and is timed apart; each (task, length) is printed as it finishes. Then the JRT decoding path: batched greedy `generate` (recurrent /
KV cache, stop at newline) of `--decode-prompts` passkey prompts at 2048 tokens, 16 new tokens each.

GPU machine:  python3 benchmarks/eval_speed.py --tokenizer .gpu/eval/gpt2 --out "$OUT"
CPU dry run:  .venv/bin/python benchmarks/eval_speed.py --device cpu --dtype float32 --presets mamba-130m --quick
Prints a table; every number goes to OUT/eval_speed.json (rewritten after each preset).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from paraphrase_pipe.evaluate.decode import greedy_generate  # noqa: E402
from paraphrase_pipe.evaluate.defaults import RECALL_LENGTHS, SYNTHETIC_EXAMPLES, SYNTHETIC_TASKS  # noqa: E402
from paraphrase_pipe.evaluate.load import load_model  # noqa: E402
from paraphrase_pipe.evaluate.synthetic import evaluate_synthetic, generate  # noqa: E402
from paraphrase_pipe.models.kernels import record_paths  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(device: str, fn):
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def bench(preset: str, args) -> dict:
    loaded = load_model(f"preset:{preset}", args.device, args.dtype, args.tokenizer)
    model, tok = loaded.model, loaded.tokenizer
    lengths = (512, 1024) if args.quick else RECALL_LENGTHS
    n = 2 if args.quick else None
    row = {"preset": preset, "params_M": round(loaded.n_params / 1e6, 1), "device": str(model.device),
           "dtype": str(model.dtype), "lengths": list(lengths), "batch_tokens": args.batch_tokens}
    _, row["warmup_s"] = timed(args.device, lambda: evaluate_synthetic(model, tok, preset, lengths=(lengths[0],),
                                                                       n=2, batch_tokens=args.batch_tokens))
    row["steps"], row["suite_s"], row["suite_tokens"], row["n_answers"] = [], 0.0, 0, 0
    with record_paths() as suite_paths:
        for task in SYNTHETIC_TASKS:  # the suite one (task, length) at a time, so a run cut short still reports
            for length in lengths:
                results, seconds = timed(args.device, lambda: evaluate_synthetic(
                    model, tok, preset, tasks=(task,), lengths=(length,), n=n, batch_tokens=args.batch_tokens))
                tokens = sum(len(e.ids) for e in generate(task, tok, length, n or SYNTHETIC_EXAMPLES[task]))
                answers = sum(r.n for r in results if r.position is None)
                row["steps"].append({"task": task, "length": length, "s": round(seconds, 2), "tokens": tokens})
                row["suite_s"] += seconds
                row["suite_tokens"] += tokens
                row["n_answers"] += answers
                print(f"{preset} {task} {length}: {answers} answers, {tokens:,} tokens, {seconds:.1f} s "
                      f"({tokens / seconds:,.0f} tok/s)", flush=True)
    row["suite_tok_per_s"] = round(row["suite_tokens"] / row["suite_s"])
    row["suite_kernel_paths"] = suite_paths  # before decoding: cached decode steps run the pure functions
    if args.device.startswith("cuda"):
        row["peak_mem_GiB"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    prompts = [e.ids[: e.spans[0][0]] for e in generate("passkey", tok, 256 if args.quick else 2048,
                                                         4 if args.quick else args.decode_prompts)]
    with record_paths() as decode_paths:
        _, row["decode_s"] = timed(args.device, lambda: greedy_generate(model, tok, prompts, max_new_tokens=16,
                                                                        batch_size=args.decode_batch))
    row["decode_prompts"] = len(prompts)
    row["decode_kernel_paths"] = decode_paths
    del loaded, model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", default="sequential-130m,mamba-130m,parallel-130m,transformer-130m")
    parser.add_argument("--tokenizer", default="builtin:gpt2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--batch-tokens", type=int, default=16384, help="65536 ran out of the H100's memory in the "
                        "pure-PyTorch Mamba-2 scan")
    parser.add_argument("--decode-prompts", type=int, default=64)
    parser.add_argument("--decode-batch", type=int, default=32)
    parser.add_argument("--budget-s", type=float, default=float("inf"), help="start no preset after this many s")
    parser.add_argument("--quick", action="store_true", help="two short lengths, two examples (script check)")
    parser.add_argument("--out", type=Path, default=Path("out/eval_speed"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    start, rows = time.perf_counter(), []
    for preset in args.presets.split(","):
        if time.perf_counter() - start > args.budget_s:
            print(f"budget spent: {preset} not run", flush=True)
            continue
        rows.append(bench(preset, args))
        print(json.dumps(rows[-1]), flush=True)
        (args.out / "eval_speed.json").write_text(json.dumps({"rows": rows, "gpu": torch.cuda.get_device_name()
                                                              if torch.cuda.is_available() else None}, indent=2))
    print("\n| preset | params | suite tokens | warm-up s | suite s | tok/s | decode prompts | decode s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['params_M']}M | {r['suite_tokens']:,} | {r['warmup_s']:.1f} | {r['suite_s']:.1f} "
              f"| {r['suite_tok_per_s']:,} | {r['decode_prompts']} | {r['decode_s']:.1f} |")


if __name__ == "__main__":
    main()
