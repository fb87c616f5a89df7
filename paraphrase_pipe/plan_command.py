"""`paraphrase-pipe plan`: the projection of `plan.py` as a table or JSON."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from paraphrase_pipe.console import app, console, err, fail, user_errors
from paraphrase_pipe.engines.flags import with_engine_flags
from paraphrase_pipe.plan import SAMPLE_BATCHES, Plan, make_plan


RATE_FROM = {"vllm_steady": "vLLM's rate while requests waited", "sample_wall": "the sample's wall clock"}


def plan_table(plan: Plan) -> Table:
    table = Table(title="plan (projected from a sample)")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    approx = "~" if plan.documents_estimated else ""
    rows = [
        ("input files", f"{plan.files:,}"),
        ("documents", f"{approx}{plan.documents:,}"),
        ("chunks (projected)", f"~{plan.chunks:,}"),
        ("source tokens (projected)", f"~{plan.source_tokens:,}"),
        ("sampled", f"{plan.sample_documents} documents, {plan.sample_chunks} chunks through the engine"),
    ]
    if plan.sample_chunks:
        rows += [
            ("prompt tokens / chunk", f"{plan.prompt_tokens_per_chunk:,.1f}"),
            ("output tokens / chunk", f"{plan.output_tokens_per_chunk:,.1f}"),
            ("output tokens (projected)", f"~{plan.output_tokens:,}"),
            ("start-up: engine, filters", f"{plan.engine_start_s:,.1f} s, {plan.cpu_start_s:,.1f} s"),
            ("engine output throughput", f"{plan.output_tok_s:,.0f} tok/s ({RATE_FROM.get(plan.output_tok_s_from, '')}"
                                         + (f", {plan.steady_s:,.1f} s of the sample)" if plan.output_tok_s_from == "vllm_steady" else ")")),
            *([("KV cache, batch limit", f"{plan.kv_cache_tokens:,} tokens, max_num_seqs {plan.max_num_seqs}")]
              if plan.kv_cache_tokens else []),
            ("engine-hours", f"{plan.engine_hours:,.2f}"),
            ("CPU stage core-hours", f"{plan.cpu_hours:,.2f} (over {plan.cpu_workers} workers)"),
            ("engines in parallel", str(plan.parallel_engines)),
            ("GPUs held", f"{plan.gpus:g}"),
            ("GPU-hours", f"{plan.gpu_hours:,.2f}"),
            ("wall time", f"{plan.wall_hours:,.2f} h"),
        ]
        rows += [(f"  rejected: {r}", f"{f:.1%}") for r, f in plan.rejected_fraction.items()]
    if plan.cost is not None:
        rows.append(("cost", f"{plan.cost:,.2f}"))
    for key, value in rows:
        table.add_row(key, value)
    return table


@app.command("plan")
@with_engine_flags
def plan_command(
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs (repeatable); default: bundled sample"),
    chunk: Optional[int] = typer.Option(None, help="chunk length in tokens \\[default: 2048]"),
    tokenizer: Optional[str] = typer.Option(None, help="trainer's tokenizer: hub id, local dir, or builtin:gpt2"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe from pipelines/; flags override it"),
    limit: Optional[int] = typer.Option(None, help="the build will read at most this many records"),
    engine: Optional[str] = typer.Option(None, help="paraphrase engine \\[default: none]"),
    executor: Optional[str] = typer.Option(None, help="local | ray | dask (for engines in parallel and GPUs held)"),
    workers: Optional[int] = typer.Option(None, help="CPU worker processes of the build \\[default: all cores]"),
    sample_docs: int = typer.Option(64, help="documents to read and chunk"),
    sample_chunks: int = typer.Option(128, help="chunks to paraphrase (use at least the engine's batch size)"),
    gpu_hour_cost: Optional[float] = typer.Option(None, help="price of one GPU-hour, to print the cost"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    engine_options: Optional[dict] = None,
) -> None:
    """Project GPU-hours, wall time and cost of a build from a measured sample."""
    from paraphrase_pipe.config import resolve_config

    try:
        config = resolve_config(recipe, input=input or None, chunk=chunk, tokenizer=tokenizer, limit=limit, engine=engine,
                                engine_options=engine_options, executor=executor, workers=workers, progress=False)
        result = make_plan(config, sample_docs=sample_docs, sample_chunks=sample_chunks, gpu_hour_cost=gpu_hour_cost)
    except user_errors() as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(asdict(result)))
    else:
        console.print(plan_table(result))
    if result.short_sample:
        err.print(f"note: {result.sample_chunks:,} sampled chunks are under {SAMPLE_BATCHES} x max_num_seqs "
                  f"({SAMPLE_BATCHES * result.max_num_seqs:,}): the engine rate rests on a few batches; raise "
                  "--sample-chunks (and --sample-docs, which bounds the chunks there are to pick)")
