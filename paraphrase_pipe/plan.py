"""`paraphrase-pipe plan`: what a build will cost, measured before it runs.

Reads a sample of the input (documents spread over the files), chunks it exactly as `build` would, runs the real
engine on a sample of those chunks and projects the whole job: chunks, tokens in/out, engine-hours, GPU-hours,
wall time (and cost with `--gpu-hour-cost`). The engine's throughput is measured on the sample's batch, which
is smaller than a full run's: on a GPU the projection errs on the slow side.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc


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

