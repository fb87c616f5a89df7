"""Throughput of the whole CPU path (read .jsonl.zst -> chunk -> engine `none` -> compose -> commit Arrow shards)
against raw `tokenizers` batch encoding of the same text, in the same process.

    .venv/bin/python benchmarks/pipeline_cpu.py [--copies 6] [--chunk 2048] [--workers 1 2]

Prints docs/s and tokens/s for each, and the ratio pipeline / raw tokenizer (target >= 0.8 on one worker).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import zstandard

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.sources.files import SAMPLE_DIR
from paraphrase_pipe.tokenizer import load_tokenizer


def make_corpus(root: Path, copies: int) -> list[str]:
    """`copies` files, each the bundled sample: a realistic SlimPajama-shaped input of `copies * 332` documents."""
    raw = (SAMPLE_DIR / "example_train_0.jsonl.zst").read_bytes()
    for i in range(copies):
        (root / f"example_train_{i}.jsonl.zst").write_bytes(raw)
    lines = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 30).decode().splitlines()
    return [json.loads(line)["text"] for line in lines] * copies


def raw_tokenizer(texts: list[str], name: str, batch: int) -> tuple[float, int]:
    tok = load_tokenizer(name).backend
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), batch):
        tokens += sum(len(e.ids) for e in tok.encode_batch(texts[i : i + batch], add_special_tokens=False))
    return time.perf_counter() - start, tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=6)
    parser.add_argument("--chunk", type=int, default=2048)
    parser.add_argument("--tokenizer", default="builtin:gpt2")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--executor", default="local")
    parser.add_argument("--rounds", type=int, default=3, help="alternate raw/pipeline runs, report medians")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "in"
        root.mkdir()
        texts = make_corpus(root, args.copies)
        raw_tokenizer(texts[:64], args.tokenizer, 256)  # warm-up: load + first batch
        raw_times, times = [], {w: [] for w in args.workers}
        for r in range(args.rounds):  # alternate, so background load hits both sides alike
            raw_s, raw_tokens = raw_tokenizer(texts, args.tokenizer, 256)
            raw_times.append(raw_s)
            for workers in args.workers:
                config = BuildConfig(
                    input=[str(root)], output=str(Path(tmp) / f"out{workers}-{r}"), chunk=args.chunk,
                    tokenizer=args.tokenizer, workers=workers, executor=args.executor, progress=False,
                )
                start = time.perf_counter()
                result = run_build(config)
                times[workers].append(time.perf_counter() - start)
                assert result.counts["documents"] == len(texts)
                tokens = result.counts["tokens"]
        raw_s = statistics.median(raw_times)
        rows = [("raw tokenizers.encode_batch", len(texts) / raw_s, raw_tokens / raw_s, 1.0)]
        for workers, samples in times.items():
            elapsed = statistics.median(samples)
            rows.append((f"pipeline {args.executor} x{workers}", len(texts) / elapsed, tokens / elapsed, (tokens / elapsed) / (raw_tokens / raw_s)))

    print(f"\n{len(texts)} documents, {raw_tokens:,} tokens, chunk {args.chunk}, {os.cpu_count()} CPUs")
    print(f"{'path':<32}{'docs/s':>10}{'tokens/s':>14}{'ratio':>8}")
    for name, dps, tps, ratio in rows:
        print(f"{name:<32}{dps:>10,.0f}{tps:>14,.0f}{ratio:>8.2f}")


if __name__ == "__main__":
    main()
