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

`--shape` writes a Llama config of that shape (1.7b: SmolLM2-1.7B's; 1.7b-gqa: Qwen3-1.7B's layers, heads and 8 KV
heads, without its QK norm and tied embeddings; 8b: Llama-3.1-8B's; all with the GPT-2 vocabulary
of the tokenizer given by --model-tokenizer-dir) and `--dummy` has vLLM initialise random weights (load_format
dummy): throughput only, nothing about quality. On a CPU, pass the tiny test model and `--cpu`.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))  # engine_saturation, imported where needed (not by the direct side)
SHAPES = {  # hidden, intermediate, layers, heads, kv heads
    "125m": (768, 3072, 12, 12, 12),
    "1.7b": (2048, 8192, 24, 32, 32),
    "1.7b-gqa": (2048, 6144, 28, 16, 8),
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


def write_corpus(root: Path, docs: int, per_file: int = 2048) -> Path:
    """`docs` SlimPajama-format documents for a run longer than the bundled sample: document i is the sample's
    document i mod 332 with its lines in a seeded random order, so every chunk (and every prompt) is new to the
    prefix cache while lengths, sets and text stay the sample's."""
    import random

    import zstandard

    from paraphrase_pipe.sources.files import SAMPLE_DIR

    raw = zstandard.ZstdDecompressor().decompress((SAMPLE_DIR / "example_train_0.jsonl.zst").read_bytes(), max_output_size=1 << 30)
    sample = [json.loads(line) for line in raw.decode().splitlines()]
    root.mkdir(parents=True, exist_ok=True)
    for start in range(0, docs, per_file):
        lines = []
        for i in range(start, min(start + per_file, docs)):
            record = sample[i % len(sample)]
            parts = record["text"].split("\n")
            random.Random(i).shuffle(parts)
            lines.append(json.dumps({"text": "\n".join(parts), "meta": record["meta"]}))
        (root / f"part-{start // per_file:05d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor(level=1).compress("\n".join(lines).encode() + b"\n"))
    return root


def engine_args(args) -> dict:
    kwargs = {"dtype": "float32" if args.cpu else "bfloat16", "max_num_seqs": args.max_num_seqs,
              "max_model_len": args.max_model_len, "seed": 0}
    if args.cpu:
        kwargs.update(enforce_eager=True, enable_chunked_prefill=False, distributed_executor_backend="uni")
    if args.dummy:
        kwargs["load_format"] = "dummy"
    if args.gpu_memory_utilization:
        kwargs["gpu_memory_utilization"] = args.gpu_memory_utilization
    for item in args.vllm_arg:  # e.g. kv_cache_dtype=fp8: what it takes to get a figure, given to both sides
        key, value = item.split("=", 1)
        try:
            kwargs[key] = json.loads(value)
        except ValueError:
            kwargs[key] = value
    return kwargs


def build_requests(args, work: Path) -> list[dict]:
    """What a build with these settings sends, made by the build's own code (an HTTP engine renders; no server)."""
    from engine_saturation import requests_of_a_build

    from paraphrase_pipe.config import BuildConfig

    options = {"model": args.model, "endpoints": ["http://127.0.0.1:9"], "max_model_len": args.max_model_len,
               **({"max_tokens": args.max_tokens} if args.max_tokens else {})}
    config = BuildConfig(chunk=args.chunk, tokenizer=args.tokenizer, limit=args.docs or None, engine="openai", engine_options=options,
                         **({"input": [str(args.input)]} if args.input else {}))
    payloads = requests_of_a_build(config, options)
    (work / "requests.json").write_text(json.dumps(payloads))
    return payloads


def direct_side(args) -> None:
    """One fresh engine driven the way vLLM's own `vllm bench throughput` drives it, every request at once: `LLM.generate`
    (`--direct generate`), or `AsyncLLM` with one task per request (`--direct async`, its `--async-engine`); prints
    one JSON line. For `generate`, the seconds its driver spent adding the requests (render + add, one by one, while
    the engine core already steps on the first ones) are in the line, so a slow direct side says where it lost."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    payloads = json.loads(Path(args.requests).read_text())
    prompts = [TokensPrompt(prompt_token_ids=p["prompt"]) for p in payloads]
    params = [SamplingParams(temperature=p["temperature"], top_p=p["top_p"], max_tokens=p["max_tokens"], seed=p["seed"],
                             output_kind=RequestOutputKind.FINAL_ONLY) for p in payloads]
    if args.direct == "async":
        import asyncio

        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        engine = AsyncLLM.from_engine_args(AsyncEngineArgs(model=args.model, **engine_args(args)))

        async def one(index: int) -> int:
            async for out in engine.generate(prompts[index], params[index], request_id=str(index)):
                last = out
            return len(last.outputs[0].token_ids)

        async def everything() -> list[int]:
            return await asyncio.gather(*(one(i) for i in range(len(prompts))))

        started = time.perf_counter()
        tokens, added_s = sum(asyncio.run(everything())), None
        window = time.perf_counter() - started
        max_num_seqs = engine.vllm_config.scheduler_config.max_num_seqs
        engine.shutdown()
    else:
        from vllm import LLM

        llm = LLM(model=args.model, **engine_args(args))
        engine, last_add = llm.llm_engine, [0.0]
        add_request = engine.add_request

        def timed_add(*a, **k):  # the instance attribute LLM.generate calls: one clock read per request
            try:
                return add_request(*a, **k)
            finally:
                last_add[0] = time.perf_counter()

        engine.add_request = timed_add
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        window = time.perf_counter() - started
        tokens, added_s = sum(len(o.outputs[0].token_ids) for o in outputs), last_add[0] - started
        max_num_seqs = engine.vllm_config.scheduler_config.max_num_seqs
    print("RESULT " + json.dumps({"output_tokens": tokens, "window_s": window, "output_tok_s": tokens / window,
                                  "driver": args.direct, "added_s": added_s, "max_num_seqs": max_num_seqs}), flush=True)


def warm_up(args, work: Path, payloads: list[dict] | None) -> None:
    """One untimed engine of each side over the same requests cut to `--warmup` new tokens each. The first engine of
    a configuration on a machine fills vLLM's torch.compile cache and Triton's JIT cache (both per machine), and its
    window ran 10-25% slower in every GPU session, whichever side it was. In 2026-12-03's 125M rounds, after the
    direct warm-up alone, the first timed build still started in 59-64 s against 36-37 s and generated at
    0.86-0.90x, though vLLM's compile hash leaves out what differs (the seed; the stats switch is not in it). Why is
    not profiled; with a warm-up of each side no timed engine is the first of its kind."""
    started = time.perf_counter()
    if payloads is not None:
        (work / "warmup.json").write_text(json.dumps([{**p, "max_tokens": min(p["max_tokens"], args.warmup)} for p in payloads]))
        got = run_direct(args, work, "warmup.json")
        print(f"warm-up, direct: {got['output_tokens']:,} tokens in {got['window_s']:.1f} s ({time.perf_counter() - started:.0f} s "
              "with the engine's start), not counted", flush=True)
    started = time.perf_counter()
    short = argparse.Namespace(**{**vars(args), "max_tokens": min(args.max_tokens or args.warmup, args.warmup)})
    got = run_build(short, work, "warmup")
    print(f"warm-up, build: {got['output_tokens']:,} tokens in {got['window_s']:.1f} s ({time.perf_counter() - started:.0f} s "
          "with the engine's start), not counted", flush=True)


def run_direct(args, work: Path, requests: str = "requests.json") -> dict:
    cmd = [sys.executable, __file__, "--side", "direct", "--requests", str(work / requests), "--model", args.model,
           "--max-num-seqs", str(args.max_num_seqs), "--max-model-len", str(args.max_model_len)]
    cmd += ["--cpu"] * args.cpu + ["--dummy"] * args.dummy + [f"--vllm-arg={item}" for item in args.vllm_arg]
    cmd += ["--direct", args.direct]
    if args.gpu_memory_utilization:
        cmd += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    line = next((l for l in done.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"direct side failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}")
    return json.loads(line[len("RESULT "):])


def build_flags(args, work: Path, recipe: str = "recipe.yaml") -> list[str]:
    """The options `build` and `plan` share: the same input, recipe, engine and engine arguments."""
    kwargs = engine_args(args)
    extra = {k: kwargs.pop(k) for k in list(kwargs) if k in ("load_format", "enable_chunked_prefill", "distributed_executor_backend",
                                                             *(item.split("=", 1)[0] for item in args.vllm_arg))}
    cmd = ["--recipe", str(work / recipe), "--chunk", str(args.chunk), "--tokenizer", args.tokenizer, "--engine", "vllm",
           "--model", args.model, "--max-model-len", str(kwargs.pop("max_model_len")), "--workers", str(args.workers),
           "-E", "top_p=0.95"]
    cmd += ["--limit", str(args.docs)] if args.docs else []
    cmd += ["--input", str(args.input)] if args.input else []
    kwargs.pop("seed")
    for key, value in kwargs.items():
        cmd += ["-E", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
    if args.max_tokens:
        cmd += ["-E", f"max_tokens={args.max_tokens}"]
    if args.cpu:
        cmd += ["-E", "num_gpus=0"]
    cmd += ["-E", "engine_args=" + json.dumps(extra)]
    return cmd


def cli(*command: str, cpu: bool) -> subprocess.CompletedProcess:
    """The command's stderr (progress lines every 15 s, errors) goes straight to ours: a run cut by a time limit
    still shows how far it got."""
    env = {**os.environ, **({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if cpu else {})}
    return subprocess.run([sys.executable, "-m", "paraphrase_pipe.cli", *command], stdout=subprocess.PIPE, text=True, cwd=REPO, env=env)


def run_build(args, work: Path, index: int | str, recipe: str = "recipe.yaml") -> dict:
    """One whole build in a fresh process; its manifest's engine window, start-up and wall clock."""
    out = work / f"out-{index}"
    started = time.perf_counter()
    done = cli("build", "-o", str(out), "--no-progress", "--log-every", "15", *build_flags(args, work, recipe), cpu=args.cpu)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"build failed (its log is above):\n{done.stdout[-3000:]}")
    print_vllm_facts(done.stdout)
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    shutil.rmtree(out, ignore_errors=True)
    window = run["engine_window"]
    after_start = wall - window.get("start_s", 0.0)
    return {**window, "wall_s": wall, "chunks": run.get("chunks"), "accepted": run.get("accepted"),
            "end_to_end_tok_s": window["output_tokens"] / wall, "after_start_tok_s": window["output_tokens"] / after_start}


VLLM_FACTS = re.compile(r"KV cache size|Available KV cache|Maximum concurrency|attention backend|Using \w+ backend|preempt|"
                        r"Model Runner|cudagraph|Graph capturing finished|Model loading took|Loading weights took|"
                        r"torch.compile take|Compiling a graph|init engine|kv_cache_dtype|fp8", re.IGNORECASE)


def print_vllm_facts(log: str, limit: int = 30) -> None:
    """The lines of vLLM's start-up log that explain a rate or a start (KV-cache size and concurrency, the attention
    backend, the model runner, preemptions; model load, compile and graph-capture seconds, which tell a first
    engine's cold caches from a warm one's), which leave with the build's captured stdout otherwise."""
    facts = list(dict.fromkeys(line.strip() for line in log.splitlines() if VLLM_FACTS.search(line)))
    for line in facts[:limit]:
        print(f"vllm: {line[:300]}", file=sys.stderr, flush=True)


def run_plan(args, work: Path) -> dict:
    """`paraphrase-pipe plan` with the build's own options, in a fresh process (its own engine)."""
    started = time.perf_counter()
    done = cli("plan", "--json", "--sample-chunks", str(args.plan_chunks), "--sample-docs", str(args.plan_docs),
               *build_flags(args, work), cpu=args.cpu)
    if done.returncode:
        sys.exit(f"plan failed (its log is above):\n{done.stdout[-3000:]}")
    text = done.stdout[done.stdout.rindex("\n{\n") + 1:] if not done.stdout.startswith("{") else done.stdout  # after vLLM's log
    return {**json.loads(text), "plan_wall_s": time.perf_counter() - started}


def scheduler(b: dict) -> str:
    """vLLM's own figures for the build's engine (SchedulerWatch): the steady rate while requests waited, the batch
    it really ran, the KV cache's peak."""
    c = b["engine_counter"]
    if c.get("saturated_tok_s") is None:
        return "vLLM: no interval with requests waiting"
    return (f"vLLM while requests waited: {c['saturated_tok_s']:,.0f} tok/s over {c['saturated_s']:.0f} s "
            f"({1e9 / c['saturated_tok_s'] / 3600:,.1f} GPU-hours per billion), running at most {c['max_running']}, "
            f"KV cache peak {c['kv_cache_peak']:.0%}")


def plan_check(planned: dict, build: dict) -> str:
    """plan's projection over the build it projected: chunks, output tokens, wall time (target within +-20%), and the
    two parts of the wall time: the engine's start and its steady rate (the build's while requests waited)."""
    steady = (build.get("engine_counter") or {}).get("saturated_tok_s") or build["output_tok_s"]
    pairs = {"chunks": (planned["chunks"], build["chunks"]), "output tokens": (planned["output_tokens"], build["output_tokens"]),
             "wall s": (planned["wall_hours"] * 3600, build["wall_s"]),
             "engine start s": (planned["engine_start_s"], build["start_s"]), "engine tok/s": (planned["output_tok_s"], steady)}
    return "plan / build: " + ", ".join(f"{name} {p:,.0f} / {b:,.0f} = {p / b:.2f}" for name, (p, b) in pairs.items()) + \
        f" (plan took {planned['plan_wall_s']:.0f} s on {planned['sample_chunks']} chunks, its rate over " \
        f"{planned.get('steady_s') or 0:.1f} s of them)" + trace_rates(planned.get("engine_trace") or [])


def trace_rates(trace: list[list[float]]) -> str:
    """The sample's output rate interval by interval while requests waited (from plan's `engine_trace`): an even
    rate with a slow first or last interval points at the sample's edges, an even slow one at the engine itself."""
    from paraphrase_pipe.engines.vllm_inprocess import waiting_intervals

    rates = [f"{(b[1] - a[1]) / (b[0] - a[0]):,.0f}" for a, b in waiting_intervals(trace) if b[0] > a[0]]
    return f"; its tok/s interval by interval while requests waited: {' '.join(rates)}" if rates else ""


def plan_against(args, work: Path) -> None:
    """`plan` alone, checked against the build an earlier call saved (--build-only JSON of the same options)."""
    build = json.loads(args.plan_against.read_text())["rounds"][0]["build"]
    planned = run_plan(args, work)
    print(plan_check(planned, build), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"plan": planned, "build": build, "model": args.shape or args.model}, indent=2))


def add_build_options(parser: argparse.ArgumentParser) -> None:
    """The options `build_flags` and `prepare` read: model, input, chunking, engine arguments, workers (also
    multi_engine_build.py's)."""
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
    parser.add_argument("--vllm-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="another vLLM engine argument for every engine (e.g. kv_cache_dtype=fp8); repeatable")
    parser.add_argument("--workers", type=int, default=8, help="the build's CPU workers")
    parser.add_argument("--docs-per-task", type=int, default=32, help="the build's task size (many task boundaries; 0: the build's default)")
    parser.add_argument("--corpus-docs", type=int, default=0, help="build on this many documents made from the sample "
                        "(its lines reshuffled per document: new prompts, the sample's lengths) instead of the sample")


def prepare(args, work: Path) -> None:
    """In `work`: the recipe (filters off, the task size), the input (--corpus-docs) and the model (--shape, or the
    tiny test model); sets args.input and args.model."""
    from engine_saturation import NO_FILTERS, filter_options

    task = f"docs_per_task: {args.docs_per_task}\n" if args.docs_per_task else ""
    (work / "recipe.yaml").write_text(NO_FILTERS + task)
    if args.beside_semantic:  # the same build with the semantic gate alone, in the CPU workers, on the GPU if there is one
        (work / "recipe-semantic.yaml").write_text(filter_options(semantic={"model": args.beside_semantic, "device": "auto"}) + task)
    args.input = write_corpus(work / "corpus", args.corpus_docs) if args.corpus_docs else None
    if args.shape:
        args.model = str(write_shape(work / f"llama-{args.shape}", args.shape, args.model_tokenizer_dir))
    elif args.model is None:
        from tests.engines.tiny_llm import build_tiny_llm

        args.model = str(build_tiny_llm(work / "tiny-llm"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", choices=("both", "direct"), default="both", help=argparse.SUPPRESS)
    parser.add_argument("--requests", help=argparse.SUPPRESS)
    add_build_options(parser)
    parser.add_argument("--plan", action="store_true", help="also run `plan` with the same options and compare it with the build")
    parser.add_argument("--plan-chunks", type=int, default=512, help="plan's --sample-chunks (at least the engine's batch)")
    parser.add_argument("--plan-docs", type=int, default=64, help="plan's --sample-docs")
    parser.add_argument("--plan-against", type=Path, metavar="JSON", help="run only `plan` and compare it with the build "
                        "in this earlier --build-only JSON of the same options (a build and its plan in two device calls)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--first-round", type=int, default=1, help="number of the first round (its order: odd rounds "
                        "run the direct side first, even ones the build): a device call too short for two rounds runs "
                        "the second alone with --rounds 1 --first-round 2")
    parser.add_argument("--direct", choices=("generate", "async"), default="generate", help="how the direct side drives "
                        "vLLM: LLM.generate, or AsyncLLM with one task per request (vllm bench throughput --async-engine)")
    parser.add_argument("--build-only", action="store_true", help="per-GPU throughput of the build alone (no direct side)")
    parser.add_argument("--beside-semantic", metavar="MODEL", help="with --build-only: each round runs the build twice, "
                        "filters off and the semantic gate (this sentence-transformers model) on the GPU beside vLLM, in "
                        "alternated order: does filtering slow generation or the build?")
    parser.add_argument("--warmup", type=int, default=0, metavar="TOKENS", help="first run one untimed engine of each side over "
                        "the same requests with this many new tokens each (compiles the kernels every timed engine uses)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    if args.side == "direct":
        return direct_side(args)

    work = Path(tempfile.mkdtemp(prefix="saturation-inprocess-"))
    prepare(args, work)
    rounds, planned = [], None
    try:
        if args.plan_against:
            return plan_against(args, work)
        payloads = build_requests(args, work) if not args.build_only else None
        if args.warmup:
            warm_up(args, work, payloads)
        if args.plan:
            planned = run_plan(args, work)
        for index in range(args.first_round - 1, args.first_round - 1 + args.rounds):
            order = ("direct", "build") if index % 2 == 0 else ("build", "direct")
            if args.build_only:
                order = ("build", "semantic")[::1 if index % 2 == 0 else -1] if args.beside_semantic else ("build",)
            got = {side: (run_direct(args, work) if side == "direct" else
                          run_build(args, work, index, "recipe-semantic.yaml" if side == "semantic" else "recipe.yaml"))
                   for side in order}
            rounds.append(got)
            if args.json:  # after every round: a run cut by a time limit keeps the rounds it finished
                args.json.write_text(json.dumps({"chunk": args.chunk, "partial": True, "rounds": rounds, "plan": planned,
                                                 "model": args.shape or args.model}, indent=2))
            b = got["build"]
            if "semantic" in got:
                f = got["semantic"]
                print(f"round {index + 1} ({' then '.join(order)}): filters off {b['output_tok_s']:,.0f} tok/s over the window, "
                      f"whole build {b['wall_s']:.1f} s | semantic gate beside vLLM {f['output_tok_s']:,.0f} tok/s, whole build "
                      f"{f['wall_s']:.1f} s ({f['chunks']:,} rows, {f['accepted']:,} accepted) | generation ratio "
                      f"{f['output_tok_s'] / b['output_tok_s']:.3f}, whole-build ratio {b['wall_s'] / f['wall_s']:.3f}; "
                      f"filters off: {scheduler(b)}; semantic: {scheduler(f)}", flush=True)
                continue
            if args.build_only:
                print(f"round {index + 1}: build {b['requests']:,} requests, {b['output_tokens']:,} tok in {b['window_s']:.1f} s "
                      f"= {b['output_tok_s']:,.0f} tok/s over the generation window = {1e9 / b['output_tok_s'] / 3600:,.1f} "
                      f"GPU-hours per billion output tokens; in flight {b['mean_in_flight']:.0f} (vLLM's counter "
                      f"{b['engine_counter']['mean_in_flight']:.0f}, full {b['engine_counter']['full_fraction']:.0%}, max_num_seqs "
                      f"{b['full_at']}); whole build {b['wall_s']:.1f} s = {b['end_to_end_tok_s']:,.0f} tok/s "
                      f"({b['end_to_end_tok_s'] / b['output_tok_s']:.3f} x the window); engine start {b.get('start_s', 0):.1f} s, "
                      f"after it {b['after_start_tok_s']:,.0f} tok/s ({b['after_start_tok_s'] / b['output_tok_s']:.3f} x); {scheduler(b)}", flush=True)
                continue
            d = got["direct"]
            added = f", requests added in the first {d['added_s']:.1f} s" if d.get("added_s") is not None else ""
            print(f"round {index + 1} ({' then '.join(order)}): direct ({d['driver']}) {d['output_tokens']:,} tok in "
                  f"{d['window_s']:.1f} s{added} = "
                  f"{d['output_tok_s']:,.0f} tok/s | build {b['output_tokens']:,} tok in {b['window_s']:.1f} s = "
                  f"{b['output_tok_s']:,.0f} tok/s (ratio {b['output_tok_s'] / d['output_tok_s']:.3f}); "
                  f"build in flight {b['mean_in_flight']:.0f} (vLLM's counter {b['engine_counter']['mean_in_flight']:.0f}, "
                  f"full {b['engine_counter']['full_fraction']:.0%} of the window, max_num_seqs {b['full_at']}); "
                  f"whole build {b['wall_s']:.1f} s = {b['end_to_end_tok_s']:,.0f} tok/s; {scheduler(b)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    mean = lambda side, key: sum(r[side][key] for r in rounds) / len(rounds)  # noqa: E731
    if planned:
        print(plan_check(planned, rounds[0]["build"]), flush=True)
    if args.beside_semantic:
        ratio = mean("semantic", "output_tok_s") / mean("build", "output_tok_s")
        print(f"semantic gate beside vLLM: generation {ratio:.3f} x the build without filters, whole build "
              f"{mean('build', 'wall_s') / mean('semantic', 'wall_s'):.3f} x (mean of {len(rounds)} rounds)")
    if args.build_only:
        if args.json:
            args.json.write_text(json.dumps({"requests": rounds[0]["build"]["requests"], "chunk": args.chunk, "rounds": rounds,
                                             "plan": planned, "model": args.shape or args.model}, indent=2))
        return
    ratio = mean("build", "output_tok_s") / mean("direct", "output_tok_s")
    print(f"{len(payloads)} requests, chunk {args.chunk}, max_num_seqs {args.max_num_seqs}: direct "
          f"{mean('direct', 'output_tok_s'):,.0f} tok/s, build (generation window) {mean('build', 'output_tok_s'):,.0f} tok/s "
          f"= {ratio:.3f} x direct (mean of {len(rounds)} rounds, target >= 0.95)")
    if args.json:
        args.json.write_text(json.dumps({"requests": len(payloads), "chunk": args.chunk, "max_num_seqs": args.max_num_seqs,
                                         "ratio": round(ratio, 3), "rounds": rounds, "plan": planned,
                                         "model": args.shape or args.model}, indent=2))


if __name__ == "__main__":
    main()
