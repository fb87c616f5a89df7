"""How many requests a second can the build feed an engine? The pipeline's own ceiling, engine cost taken out.

A whole `paraphrase-pipe build` (read, chunk, render prompts, feed, answer bookkeeping, request cache, filter,
compose, commit) runs against an engine that answers every request the moment it gets it (`InstantEngine` below:
an instrument for this measurement, not a test double of vLLM; it returns a fixed paraphrase of 8 tokens). The
build's engine window then measures the pipeline alone: requests/s it can hand in and take back. A real engine
generating at R output tokens/s with T tokens per answer needs R / T requests/s from the pipeline (1.7B at chunk
512 on an H200: ~25,000 / 650 = ~40 requests/s; 8B at chunk 2048: ~3), so the ceiling says how far from
starving the engine the CPU side is, on this machine, with --workers CPU workers.

    python benchmarks/pipeline_ceiling.py --docs 900 --chunk 128 --workers 2 --rounds 2 [--baseline DIR]

`--baseline DIR` runs the same build from another checkout (e.g. `git worktree add /tmp/base cae330b`) in
alternated order, for an A/B of a change: same corpus, same machine, the ratio of requests/s.
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
sys.path.insert(0, str(REPO / "benchmarks"))

ENGINE = '''"""The instant engine of benchmarks/pipeline_ceiling.py (importable by the build's spawned workers too)."""
from paraphrase_pipe.engines import REGISTRY
from paraphrase_pipe.engines.llm import Completion, LLMEngine

REGISTRY["instant"] = "sitecustomize:InstantEngine"


class InstantEngine(LLMEngine):
    name = "instant"
    placement = "driver"

    def _complete(self, requests, on_done):
        done = []
        for request in requests:
            completion = Completion(text="A paraphrase of eight tokens, no more.", finish_reason="stop",
                                    prompt_tokens=len(request.prompt), completion_tokens=8, latency_s=0.0)
            on_done(request, completion)
            done.append(completion)
        return done
'''


def build(code: Path, work: Path, args, index: int) -> dict:
    out = work / f"out-{index}"
    env = {**os.environ, "PYTHONPATH": f"{work / 'engine'}{os.pathsep}{code}", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "-o", str(out), "--recipe", str(work / "recipe.yaml"),
           "--input", str(work / "corpus"), "--chunk", str(args.chunk), "--tokenizer", "builtin:gpt2", "--engine", "instant",
           "--model", str(work / "model"), "--workers", str(args.workers), "--no-progress", "--log-every", "0"]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    wall = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"build failed ({code}):\n{done.stderr[-4000:]}")
    run = json.loads((out / "manifest.json").read_text())["runs"][-1]
    shutil.rmtree(out)
    window = run["engine_window"]
    return {"requests": window["requests"], "window_s": window["window_s"], "requests_per_s": window["requests"] / window["window_s"],
            "mean_in_flight": window["mean_in_flight"], "target_in_flight": window["target_in_flight"], "wall_s": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=900, help="documents (the sample's, lines reshuffled per document)")
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--baseline", type=Path, help="another checkout to compare with (alternated order)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from engine_saturation import NO_FILTERS
    from engine_saturation_inprocess import write_corpus

    from tests.engines.tiny_llm import build_tiny_llm

    work = Path(tempfile.mkdtemp(prefix="pipeline-ceiling-"))
    try:
        (work / "engine").mkdir()
        (work / "engine" / "sitecustomize.py").write_text(ENGINE)
        (work / "recipe.yaml").write_text(NO_FILTERS)
        write_corpus(work / "corpus", args.docs)
        build_tiny_llm(work / "model")  # only its tokenizer and chat template are used
        sides = {"this": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
        rounds = []
        for index in range(args.rounds):
            order = list(sides) if index % 2 == 0 else list(reversed(sides))
            got = {side: build(sides[side], work, args, index) for side in order}
            rounds.append(got)
            line = " | ".join(f"{side}: {r['requests']:,} requests in {r['window_s']:.1f} s = {r['requests_per_s']:,.0f}/s "
                              f"(in flight {r['mean_in_flight']:.0f} of {r['target_in_flight']})" for side, r in got.items())
            print(f"round {index + 1} ({' then '.join(order)}): {line}", flush=True)
        mean = {side: sum(r[side]["requests_per_s"] for r in rounds) / len(rounds) for side in sides}
        summary = f"chunk {args.chunk}, {args.workers} workers: this {mean['this']:,.0f} requests/s"
        if args.baseline:
            summary += f", baseline {mean['baseline']:,.0f} requests/s = {mean['this'] / mean['baseline']:.2f}x (mean of {len(rounds)} rounds)"
        print(summary)
        if args.json:
            args.json.write_text(json.dumps({"chunk": args.chunk, "workers": args.workers, "rounds": rounds, "mean_requests_per_s": mean}, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
