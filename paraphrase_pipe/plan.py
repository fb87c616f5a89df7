"""`paraphrase-pipe plan`: what a build will cost, measured before it runs.

Reads a sample of the input (documents spread over the files), chunks it exactly as `build` would, runs the real
engine on a sample of those chunks and projects the whole job: chunks, tokens in/out, engine-hours, GPU-hours,
wall time (and cost with `--gpu-hour-cost`). The engine's throughput is measured on the sample's batch, which
is smaller than a full run's: on a GPU the projection errs on the slow side.
"""
from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import typer

from paraphrase_pipe.engines.flags import with_engine_flags


@dataclass
class Plan:
    files: int
    documents: int
    documents_estimated: bool
    sample_documents: int
    chunks: int
    source_tokens: int
    sample_chunks: int
    prompt_tokens_per_chunk: float = 0.0
    output_tokens_per_chunk: float = 0.0
    rejected_fraction: dict[str, float] = field(default_factory=dict)
    engine_start_s: float = 0.0
    output_tok_s: float = 0.0
    engine_hours: float = 0.0
    parallel_engines: int = 1
    gpus: float = 0.0
    gpu_hours: float = 0.0
    wall_hours: float = 0.0
    cost: float | None = None


def _sample_tasks(tasks, want_docs: int):
    """Up to `want_docs` documents, spread evenly over the planned tasks (first records of each)."""
    from paraphrase_pipe.sources import Task

    step = max(len(tasks) // max(want_docs, 1), 1)
    chosen = tasks[::step][:want_docs]
    per_task = max(want_docs // max(len(chosen), 1), 1)
    picked = []
    for task in chosen:
        stop = task.start + per_task if task.stop is None else min(task.stop, task.start + per_task)
        picked.append(Task(task.file, task.start, stop, last=False))
    return picked


def _document_count(tasks) -> tuple[int, bool]:
    """Exact for up to COUNT_FILES_UP_TO open-ended files (a cheap counting pass, as the build's planner does);
    beyond that, the mean of 3 counted files x the number of files."""
    from paraphrase_pipe.sources.tasks import COUNT_FILES_UP_TO, count_records

    total = sum(t.records for t in tasks if t.records is not None)  # the planner counted these files already
    open_ended = [t for t in tasks if t.records is None]
    if len(open_ended) <= COUNT_FILES_UP_TO:
        return total + sum(count_records(t.file) - t.start for t in open_ended), False
    probe = open_ended[:: len(open_ended) // 3][:3]
    return total + round(sum(count_records(t.file) for t in probe) / len(probe) * len(open_ended)), True


def make_plan(config, *, sample_docs: int = 64, sample_chunks: int = 128, gpu_hour_cost: float | None = None) -> Plan:
    from paraphrase_pipe.engines import create_engine, engine_class, gpus_held
    from paraphrase_pipe.pipeline import Pipeline
    from paraphrase_pipe.sources import discover, plan_tasks
    from paraphrase_pipe.tokenizer import resolve_tokenizer

    files = discover(config.input)
    name, _ = resolve_tokenizer(config.tokenizer)
    config = config.model_copy(update={"tokenizer": name})
    tasks = plan_tasks(files, config)
    documents, estimated = _document_count(tasks)
    front = Pipeline(config.model_copy(update={"engine": "none", "engine_options": {}}), dry_run=True)
    sample = _sample_tasks(tasks, sample_docs)
    rows = pa.concat_tables([front.front(t) for t in sample])
    read = sum(t.stop - t.start for t in sample)
    live = rows.filter(pc.is_null(rows["reject_reason"]))
    scale = documents / max(read, 1)
    plan = Plan(files=len(files), documents=documents, documents_estimated=estimated, sample_documents=read,
                chunks=round(len(live) * scale), source_tokens=round((pc.sum(live["n_tokens"]).as_py() or 0) * scale),
                sample_chunks=0)
    if config.engine == "none" or not len(live):
        return plan

    step = max(len(live) // sample_chunks, 1)
    chunks = live.take(list(range(0, len(live), step))[:sample_chunks]).to_pylist()
    engine = create_engine(config.engine, config.engine_options)  # no workdir: a plan never uses the request cache
    try:
        started = time.perf_counter()
        engine.generate(chunks[:1])  # start-up + first request, kept out of the throughput
        plan.engine_start_s = time.perf_counter() - started
        started = time.perf_counter()
        answers = engine.generate(chunks)
        elapsed = time.perf_counter() - started
    finally:
        engine.close()
    sent = [a for a in answers if a.completion_tokens is not None]
    out_tokens = sum(a.completion_tokens for a in sent)
    plan.sample_chunks = len(chunks)
    plan.prompt_tokens_per_chunk = sum(a.prompt_tokens or 0 for a in sent) / max(len(sent), 1)
    plan.output_tokens_per_chunk = out_tokens / max(len(sent), 1)
    reasons = Counter(a.error for a in answers if a.error)
    plan.rejected_fraction = {r: round(n / len(answers), 4) for r, n in sorted(reasons.items())}
    plan.output_tok_s = out_tokens / max(elapsed, 1e-9)
    sent_chunks = plan.chunks * len(sent) / len(answers)
    plan.engine_hours = sent_chunks * plan.output_tokens_per_chunk / max(plan.output_tok_s, 1e-9) / 3600
    driver = engine_class(config.engine).placement == "driver"
    plan.parallel_engines = int(config.engine_options.get("replicas", 1)) if driver and config.executor == "ray" else 1
    plan.wall_hours = plan.engine_hours / plan.parallel_engines
    plan.gpus = gpus_held(config.engine, config.engine_options, config.executor)
    plan.gpu_hours = plan.wall_hours * plan.gpus
    if gpu_hour_cost is not None:
        plan.cost = plan.gpu_hours * gpu_hour_cost
    return plan


def _table(plan: Plan):
    from rich.table import Table

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
            ("engine start-up", f"{plan.engine_start_s:,.1f} s"),
            ("engine output throughput", f"{plan.output_tok_s:,.0f} tok/s"),
            ("engine-hours", f"{plan.engine_hours:,.2f}"),
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


@with_engine_flags
def plan(
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs (repeatable); default: bundled sample"),
    chunk: Optional[int] = typer.Option(None, help="chunk length in tokens (default: 2048)"),
    tokenizer: Optional[str] = typer.Option(None, help="trainer's tokenizer: hub id, local dir, or builtin:gpt2"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe from pipelines/; flags override it"),
    limit: Optional[int] = typer.Option(None, help="the build will read at most this many records"),
    engine: Optional[str] = typer.Option(None, help="paraphrase engine (default: none)"),
    executor: Optional[str] = typer.Option(None, help="local | ray | dask (for engines in parallel and GPUs held)"),
    sample_docs: int = typer.Option(64, help="documents to read and chunk"),
    sample_chunks: int = typer.Option(128, help="chunks to paraphrase (use at least the engine's batch size)"),
    gpu_hour_cost: Optional[float] = typer.Option(None, help="price of one GPU-hour, to print the cost"),
    as_json: bool = typer.Option(False, "--json", help="print the plan as JSON"),
    engine_options: Optional[dict] = None,
) -> None:
    """Project GPU-hours, wall time and cost of a build from a measured sample."""
    from paraphrase_pipe.cli import console, fail, user_errors
    from paraphrase_pipe.config import resolve_config

    try:
        config = resolve_config(recipe, input=input or None, chunk=chunk, tokenizer=tokenizer, limit=limit, engine=engine,
                                engine_options=engine_options, executor=executor, progress=False)
        result = make_plan(config, sample_docs=sample_docs, sample_chunks=sample_chunks, gpu_hour_cost=gpu_hour_cost)
    except user_errors() as exc:
        fail(str(exc))
    if as_json:
        console.print_json(json.dumps(asdict(result)))
    else:
        console.print(_table(result))
