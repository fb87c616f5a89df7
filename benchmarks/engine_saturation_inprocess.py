"""Does `build --engine vllm` (in-process) generate as fast as vLLM driven directly?

The in-process twin of engine_saturation.py. The same requests — prompt token ids, max_tokens, per-chunk seeds and
sampling, made by the build's own request builder — go (a) to `vllm.LLM.generate` all at once, and (b) through a
whole `paraphrase-pipe build --engine vllm` (read, chunk, render, feed, filter, compose, commit). Each round is a
fresh process, so both sides start with a cold prefix cache; sides alternate (direct first in odd rounds, build
first in even ones), and engine start-up is outside both windows:
  direct:  the `LLM.generate` call (every request added at once, stepped until the last finishes);
  build:   the engine's generation window from the manifest (first request reaching vLLM -> last answer), and the
           whole build's wall clock, start-up included.
Output tokens are counted on both sides; with random weights both generate until max_tokens, so they match.

    python benchmarks/engine_saturation_inprocess.py --model DIR --chunk 512 --max-num-seqs 256 --rounds 2
    python benchmarks/engine_saturation_inprocess.py --shape 1.7b --dummy ...   # GPU: random weights of a shape

`--shape` writes a Llama config of that shape (1.7b: SmolLM2-1.7B's; 8b: Llama-3.1-8B's, with the GPT-2 vocabulary
of the tokenizer given by --model-tokenizer-dir) and `--dummy` has vLLM initialise random weights (load_format
dummy): throughput only, nothing about quality. On a CPU, pass the tiny test model and `--cpu`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
NO_FILTERS = "filter_options: {" + ", ".join(f"{g}: {{enabled: false}}" for g in ("length", "lexical", "language", "semantic", "perplexity")) + "}\n"
SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "1.7b": (2048, 8192, 24, 32, 32),
    "8b": (4096, 14336, 32, 32, 8),
}


def write_shape(where: Path, shape: str, tokenizer_dir: Path) -> Path:
    hidden, inter, layers, heads, kv = SHAPES[shape]
    where.mkdir(parents=True, exist_ok=True)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, where / f.name)
    vocab = len(json.loads((tokenizer_dir / "tokenizer.json").read_text())["model"]["vocab"])
    (where / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
        "max_position_embeddings": 16384, "rope_theta": 500000.0, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 50256, "eos_token_id": 50256}))
    return where


def engine_args(args) -> dict:
    kwargs = {"dtype": "float32" if args.cpu else "bfloat16", "max_num_seqs": args.max_num_seqs,
              "max_model_len": args.max_model_len, "seed": 0}
    if args.cpu:
        kwargs.update(enforce_eager=True, enable_chunked_prefill=False, distributed_executor_backend="uni")
    if args.dummy:
        kwargs["load_format"] = "dummy"
    if args.gpu_memory_utilization:
        kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
    return kwargs


def build_requests(args, work: Path) -> list[dict]:
    """What a build with these settings sends, made by the build's own code (an HTTP engine renders; no server)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    from engine_saturation import requests_of_a_build

    from paraphrase_pipe.config import BuildConfig

    options = {"model": args.model, "endpoints": ["http://127.0.0.1:9"], "max_model_len": args.max_model_len,
               **({"max_tokens": args.max_tokens} if args.max_tokens else {})}
    config = BuildConfig(chunk=args.chunk, tokenizer=args.tokenizer, limit=args.docs, engine="openai", engine_options=options)
    payloads = requests_of_a_build(config, options)
    (work / "requests.json").write_text(json.dumps(payloads))
    return payloads


def direct_side(args) -> None:
    """One fresh engine: LLM.generate over every request at once; prints one JSON line."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    payloads = json.loads(Path(args.requests).read_text())
    llm = LLM(model=args.model, **engine_args(args))
    prompts = [TokensPrompt(prompt_token_ids=p["prompt"]) for p in payloads]
    params = [SamplingParams(temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"], seed=p["seed"])
              for p in payloads]
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, use_tqdm=False)
    window = time.perf_counter() - started
    tokens = sum(len(o.outputs[0].token_ids) for o in outputs)
    print("RESULT " + json.dumps({"output_tokens": tokens, "window_s": window, "output_tok_s": tokens / window,
                                  "max_num_seqs": llm.llm_engine.vllm_config.scheduler_config.max_num_seqs}), flush=True)


def run_direct(args, work: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", "direct", "--requests", str(work / "requests.json"), "--model", args.model,
           "--max-num-seqs", str(args.max_num_seqs), "--max-model-len", str(args.max_model_len)]
    cmd += ["--cpu"] * args.cpu + ["--dummy"] * args.dummy
    if args.gpu_memory_utilization:
        cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"direct side failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads(line[len("RESULT "):])


def run_build(args, work: Path, index: int) -> dict:
    out = work / f"out-{index}"
    recipe = work / "recipe.yaml"
    kwargs = engine_args(args)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in ("load_format", "enable_chunked_prefill", "distributed_executor_backend")}
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "-o", str(out), "--recipe", str(recipe),
           "--chunk", str(args.chunk), "--tokenizer", args.tokenizer, "--limit", str(args.docs), "--engine", "vllm",
           "--model", args.model, "--max-model-len", str(kwargs.pop("max_model_len")), "--workers", str(args.workers),
           "--no-progress", "-E", "top_p=0.95"]
    kwargs.pop("seed")
    for key, value in kwargs.items():
        cmd += ["-E", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if args.max_tokens:
        cmd += ["-E", f"max_tokens={args.max_tokens}"]
    if args.cpu:
        cmd += ["-E", "num_gpus=0"]
    cmd += ["-E", "engine_args=" + json.dumps(extra)]
    env = {**os.environ, **({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if args.cpu else {})}
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"build failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    shutil.rmtree(out, ignore_errors=True)
    return {**run["engine_window"], "wall_s": wall, "end_to_end_tok_s": run["engine_window"]["output_tokens"] / wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=("both", "direct"), default="both", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    parser.add_argument("--model", help="model dir/id (default: the tiny test model, or --shape)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="write a config of this shape (use with --dummy)")
    parser.add_argument("--model-tokenizer-dir", type=Path, help="tokenizer files for --shape (a tokenizer.json + chat template)")
    parser.add_argument("--dummy", action="store_true", help="random weights (vLLM load_format dummy)")
    parser.add_argument("--cpu", action="store_true", help="vLLM's CPU build: float32, eager, one process")
    parser.add_argument("--tokenizer", default="builtin:gpt2", help="the build's chunking tokenizer")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--docs", type=int, default=None, help="documents of the bundled sample (default: all)")
    parser.add_argument("--max-tokens", type=int, default=0, help="cap on new tokens (0: the build's rule)")
    parser.add_argument("--max-num-seqs", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--gpu-memory-utilization", type=float)
    parser.add_argument("--workers", type=int, default=8, help="the build's CPU workers")
    parser.add_argument("--docs-per-task", type=int, default=32, help="the build's task size (many task boundaries)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--build-only", action="store_true", help="per-GPU throughput of the build alone (no direct side)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.side == "direct":
        return direct_side(args)

    work = Path(tempfile.mkdtemp(prefix="saturation-inprocess-"))
    (work / "recipe.yaml").write_text(NO_FILTERS + f"docs_per_task: {args.docs_per_task}\n")
    if args.shape:
        args.model = str(write_shape(work / f"llama-{args.shape}", args.shape, args.model_tokenizer_dir))
    elif args.model is None:
        from tests.engines.tiny_llm import build_tiny_llm

        args.model = str(build_tiny_llm(work / "tiny-llm"))
    payloads = build_requests(args, work)
    rounds = []
    try:
        for index in range(args.rounds):
            order = ("direct", "build") if index % 2 == 0 else ("build", "direct")
            order = ("build",) if args.build_only else order
            got = {side: (run_direct(args, work) if side == "direct" else run_build(args, work, index)) for side in order}
            rounds.append(got)
            b = got["build"]
            if args.build_only:
                print(f"round {index + 1}: build {b['output_tokens']:,} tok in {b['window_s']:.1f} s = {b['output_tok_s']:,.0f} "
                      f"tok/s over the generation window = {1e9 / b['output_tok_s'] / 3600:,.1f} GPU-hours per billion output "
                      f"tokens; in flight {b['mean_in_flight']:.0f} (vLLM's counter {b['engine_counter']['mean_in_flight']:.0f}, "
                      f"full {b['engine_counter']['full_fraction']:.0%}, max_num_seqs {b['full_at']}); whole build "
                      f"{b['wall_s']:.1f} s = {b['end_to_end_tok_s']:,.0f} tok/s", flush=True)
                continue
            d = got["direct"]
            print(f"round {index + 1} ({' then '.join(order)}): direct {d['output_tokens']:,} tok in {d['window_s']:.1f} s = "
                  f"{d['output_tok_s']:,.0f} tok/s | build {b['output_tokens']:,} tok in {b['window_s']:.1f} s = "
                  f"{b['output_tok_s']:,.0f} tok/s (ratio {b['output_tok_s'] / d['output_tok_s']:.3f}); "
                  f"build in flight {b['mean_in_flight']:.0f} (vLLM's counter {b['engine_counter']['mean_in_flight']:.0f}, "
                  f"full {b['engine_counter']['full_fraction']:.0%} of the window, max_num_seqs {b['full_at']}); "
                  f"whole build {b['wall_s']:.1f} s = {b['end_to_end_tok_s']:,.0f} tok/s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mean = lambda side, key: sum(r[side][key] for r in rounds) / len(rounds)  # noqa: E731
    if args.build_only:
        if args.json:
            args.json.write_text(json.dumps({"requests": len(payloads), "chunk": args.chunk, "rounds": rounds,
                                             "model": args.shape or args.model}, indent=2))
        return
    ratio = mean("build", "output_tok_s") / mean("direct", "output_tok_s")
    print(f"{len(payloads)} requests, chunk {args.chunk}, max_num_seqs {args.max_num_seqs}: direct "
          f"{mean('direct', 'output_tok_s'):,.0f} tok/s, build (generation window) {mean('build', 'output_tok_s'):,.0f} tok/s "
          f"= {ratio:.3f} x direct (mean of {len(rounds)} rounds, target >= 0.95)")
    if args.json:
        args.json.write_text(json.dumps({"requests": len(payloads), "chunk": args.chunk, "max_num_seqs": args.max_num_seqs,
                                         "ratio": round(ratio, 3), "rounds": rounds, "model": args.shape or args.model}, indent=2))


if __name__ == "__main__":
    main()
