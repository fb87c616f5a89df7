"""Filter-stage throughput (rows/s): each gate alone, then the whole stage, on real paraphrase pairs.

Rows are the fixture's hand-written paraphrase pairs (tests/filters/fixtures/pairs.jsonl), joined k at a time in
the same order on both sides, so a row is a real ~`chunk`-token original with its real paraphrase and every gate
does its full work (all rows pass). The fact gates' per-text extraction cache (shared by `facts` and
`fact_changes` within a stage call) is cleared before every timed call, so repeated rows are not free. Models load once, outside the timings (as in a worker); each figure is the
median of `--repeats` runs.

    .venv/bin/python benchmarks/filter_throughput.py --rows 256 --chunk 128 2048
    python benchmarks/filter_throughput.py --device cuda --gates semantic perplexity --reference-model DIR
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import pyarrow as pa

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.filters.facts import extract
from paraphrase_pipe.schema import ROW_SCHEMA, conform
from paraphrase_pipe.stages.filter import filter_rows
from paraphrase_pipe.tokenizer import load_tokenizer

TOK = "builtin:gpt2"
FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "filters" / "fixtures" / "pairs.jsonl"


def pairs(chunk: int, n: int, tok) -> list[tuple[str, str]]:
    """n (original, paraphrase) rows of about `chunk` tokens each, from the fixture's faithful pairs."""
    good = [(p["original"], p["paraphrase"]) for p in map(json.loads, FIXTURE.read_text().splitlines()) if p["kind"] == "paraphrase"]
    per_pair = sum(tok.count([o for o, _ in good])) / len(good)
    k = max(1, round(chunk / per_pair))
    rows = []
    for i in range(n):
        picked = [good[(i + j) % len(good)] for j in range(k)]
        rows.append(("\n\n".join(o for o, _ in picked), "\n\n".join(p for _, p in picked)))
    return rows


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--chunk", type=int, nargs="+", default=[128, 2048])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="semantic / perplexity gates: cpu | cuda | auto")
    parser.add_argument("--gates", nargs="+", default=["length", "lexical", "language", "semantic"])
    parser.add_argument("--embedding-model", default=None, help="semantic gate model (default: all-MiniLM-L6-v2)")
    parser.add_argument("--reference-model", default=None, help="perplexity gate: HF causal LM dir or hub id")
    parser.add_argument("--batch-tokens", type=int, default=None, help="perplexity gate token budget per forward")
    args = parser.parse_args()
    tok = load_tokenizer(TOK)
    options = FilterOptions()
    for name in type(options).model_fields:
        getattr(options, name).enabled = name in args.gates
    options.semantic.device = options.sections.device = options.perplexity.device = args.device
    if args.embedding_model:
        options.semantic.model = args.embedding_model
    if args.reference_model:
        options.perplexity.model = args.reference_model
    if args.batch_tokens:
        options.perplexity.batch_tokens = args.batch_tokens
    gates = options.gates()
    for gate in gates:  # load models once, outside the timings
        gate.score(["warm up the model"], ["warm up the model"], tok)
    print(f"| chunk (tokens) | rows | {' | '.join(g.name for g in gates)} | whole stage | accepted |")
    print(f"|---:|---:|{'---:|' * (len(gates) + 2)}")
    for chunk in args.chunk:
        batch = pairs(chunk, args.rows, tok)
        originals, paraphrases = [o for o, _ in batch], [p for _, p in batch]
        per_gate = [len(batch) / median_seconds(lambda g=g: (extract.cache_clear(), g.score(originals, paraphrases, tok)), args.repeats) for g in gates]
        rows = conform(pa.Table.from_pylist([{"doc_id": f"b:{i}", "source": "bench", "record_index": i, "original": o, "paraphrase": p}
                                             for i, (o, p) in enumerate(batch)]), ROW_SCHEMA)
        stage = len(batch) / median_seconds(lambda: (extract.cache_clear(), filter_rows(rows, options, tok)), args.repeats)
        accepted = sum(r is None for r in filter_rows(rows, options, tok)["reject_reason"].to_pylist())
        mean_tokens = sum(tok.count(originals)) / len(batch)
        print(f"| {chunk} (mean {mean_tokens:,.0f}) | {len(batch)} | {' | '.join(f'{r:,.1f}' for r in per_gate)} | {stage:,.1f} | {accepted} |", flush=True)


if __name__ == "__main__":
    main()
