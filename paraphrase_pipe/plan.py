"""`paraphrase-pipe plan`: what a build will cost, measured before it runs.

Reads a sample of the input (short windows of documents spread over every file and over offsets inside them),
chunks it exactly as `build` would, then runs the whole pipeline on a sample of those chunks — the real engine,
the filters, composition and shard writing into a scratch directory — timing each part, and projects the job:
chunks, tokens in/out, engine-hours, GPU-hours, wall time (and cost with `--gpu-hour-cost`). Start-up (engine,
filter models) is measured on a first chunk and counted once. The engine's throughput is vLLM's own steady rate
over the sample when it had one (`steady_rate`), else the sample's wall clock.
"""
from __future__ import annotations

import bisect
import itertools
import json
import math
import os
import tempfile
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
    output_tokens: int = 0  # projected, over the chunks the engine answers
    rejected_fraction: dict[str, float] = field(default_factory=dict)
    engine_start_s: float = 0.0
    cpu_start_s: float = 0.0  # filter models, tokenizers
    output_tok_s: float = 0.0
    output_tok_s_from: str = ""  # "vllm_steady" (vLLM's rate while requests waited) or "sample_wall"
    steady_s: float | None = None  # seconds of the sample in which requests waited in vLLM (the steady rate's base)
    engine_trace: list[list[float]] = field(default_factory=list)  # vLLM's per-second figures over the sample
    max_num_seqs: int | None = None  # the engine's batch limit (in-process vLLM)
    kv_cache_tokens: int | None = None  # the engine's KV cache, in tokens (blocks x block size)
    engine_hours: float = 0.0
    cpu_hours: float = 0.0  # read + chunk + filters + compose + commit, one core's worth
    cpu_workers: int = 1
    parallel_engines: int = 1
    gpus: float = 0.0
    gpu_hours: float = 0.0
    wall_hours: float = 0.0
    cost: float | None = None

    @property
    def short_sample(self) -> bool:
        """Fewer sampled chunks than SAMPLE_BATCHES full batches: the steady rate then rests on a few request
        lifetimes, with the first batch's prefill and the last one's admission inside them (on an H200, 3 batches
        read 0.59x the rate of the 102,698-request build they projected)."""
        return bool(self.max_num_seqs) and self.sample_chunks < SAMPLE_BATCHES * self.max_num_seqs


SAMPLE_BATCHES = 4  # full engine batches the sample should hold (`--sample-chunks` >= 4 x max_num_seqs)
WINDOW = 4  # documents read in a row: short windows, many places
STEADY_MIN_S = 2.0  # seconds of the sample with requests waiting in vLLM before its steady rate is trusted


def steady_rate(counter: dict | None) -> float | None:
    """vLLM's output rate over the sample's seconds in which requests waited (the in-process engine's
    `engine_counter`, `SchedulerWatch`), given at least STEADY_MIN_S of them: the rate a long build runs at. The
    sample's wall clock also holds what a long build spreads over hours (its first batch in lockstep, its last one
    draining, prompts rendered before the first request): on an H200 it read 0.29x the rate of the 102,698-request
    build it projected (benchmarks/README.md, `plan` at scale)."""
    if not counter or (counter.get("saturated_s") or 0) < STEADY_MIN_S or not counter.get("saturated_tok_s"):
        return None
    return float(counter["saturated_tok_s"])


def _sample_tasks(tasks, want_docs: int, per_file: float):
    """About `want_docs` documents in windows of WINDOW, spread evenly over every planned document: across files
    and across offsets inside them (the first records of a file are no more typical than its middle).
    `per_file`: documents of a file the planner did not count (the estimate of `_document_count`)."""
    from paraphrase_pipe.sources import Task

    sizes = [t.records if t.records is not None else max(round(per_file) - t.start, 1) for t in tasks]
    ends = list(itertools.accumulate(sizes))
    windows = max(math.ceil(min(want_docs, ends[-1]) / WINDOW), 1)
    picked = []
    for j in range(windows):
        at = (j + 0.5) * ends[-1] / windows  # the window's centre, in planned-document order
        i = min(bisect.bisect_right(ends, at), len(tasks) - 1)
        task, size = tasks[i], sizes[i]
        offset = min(max(int(at - (ends[i] - size)) - WINDOW // 2, 0), max(size - WINDOW, 0))
        start = task.start + offset
        stop = start + min(WINDOW, size)
        picked.append(Task(task.file, start, stop if task.stop is None else min(stop, task.stop), last=False))
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


def _line_offsets(tasks) -> dict[str, list[int]] | None:
    """For JSON-lines inputs the planner counted: each file's cumulative line bytes (one more pass over the input).
    Bytes are what chunks and tokens follow — documents are heavy-tailed (on the bundled sample the chunks of one
    document vary by 1.4x their mean), so projecting from the sample's bytes is far tighter than from its
    document count. None for other formats or uncounted files."""
    from paraphrase_pipe.sources import jsonl

    if any(t.records is None or t.file.format != "jsonl" for t in tasks):
        return None
    offsets = {}
    for path in dict.fromkeys(t.file.path for t in tasks):
        offsets[path] = [0, *itertools.accumulate(len(line) for line in jsonl.iter_physical_lines(path))]
    return offsets


def _bytes(tasks, offsets: dict[str, list[int]]) -> int:
    total = 0
    for t in tasks:
        ends = offsets[t.file.path]
        total += ends[min(t.stop if t.stop is not None else len(ends) - 1, len(ends) - 1)] - ends[min(t.start, len(ends) - 1)]
    return total


def _load_gates(config, text: str) -> None:
    """Score one pair with every enabled gate: each loads its model (embedder, reference LM) as in a build's worker."""
    from paraphrase_pipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(config.tokenizer)
    for gate in config.filter_options.gates() if config.engine != "none" else []:
        gate.score([text], [text], tokenizer)


def make_plan(config, *, sample_docs: int = 64, sample_chunks: int = 128, gpu_hour_cost: float | None = None) -> Plan:
    from paraphrase_pipe.engines import create_engine, engine_class, gpus_held
    from paraphrase_pipe.output.manifest import ACCEPTED_DIR, REJECTED_DIR
    from paraphrase_pipe.pipeline import Pipeline
    from paraphrase_pipe.sources import discover, plan_tasks
    from paraphrase_pipe.tokenizer import resolve_tokenizer

    files = discover(config.input)
    name, _ = resolve_tokenizer(config.tokenizer)
    config = config.model_copy(update={"tokenizer": name})
    tasks = plan_tasks(files, config)
    documents, estimated = _document_count(tasks)
    front = Pipeline(config.model_copy(update={"engine": "none", "engine_options": {}}), dry_run=True)
    sample = _sample_tasks(tasks, sample_docs, documents / max(len(files), 1))
    started = time.perf_counter()
    rows = pa.concat_tables([front.front(t) for t in sample])
    front_s = time.perf_counter() - started
    read = pc.count_distinct(rows["doc_id"]).as_py()
    live = rows.filter(pc.is_null(rows["reject_reason"]))
    offsets = _line_offsets(tasks)
    scale = _bytes(tasks, offsets) / max(_bytes(sample, offsets), 1) if offsets else documents / max(read, 1)
    plan = Plan(files=len(files), documents=documents, documents_estimated=estimated, sample_documents=read,
                chunks=round(len(live) * scale), source_tokens=round((pc.sum(live["n_tokens"]).as_py() or 0) * scale),
                sample_chunks=0, cpu_workers=config.workers or os.cpu_count() or 1)
    if not len(live):
        return plan

    picks = min(sample_chunks, len(live))
    chunks = live.take([i * len(live) // picks for i in range(picks)])  # evenly over every sampled document
    with tempfile.TemporaryDirectory(prefix="paraphrase-pipe-plan-") as scratch:  # the commit writes real shards
        for kind in (ACCEPTED_DIR, REJECTED_DIR):
            (Path(scratch) / kind).mkdir()
        pipeline = Pipeline(config.model_copy(update={"output": scratch}))
        engine = create_engine(config.engine, config.engine_options)  # no workdir: a plan never uses the request cache
        try:
            identity = engine.identity()
            # start-up + the first chunk, counted once: the engine's, then the filter models' (in a build they load
            # at the same time, the engine in the driver and the filters in the CPU workers)
            started = time.perf_counter()
            first = pipeline.middle(chunks.slice(0, 1), engine)
            plan.engine_start_s = time.perf_counter() - started
            started = time.perf_counter()
            _load_gates(config, chunks["original"][0].as_py())
            pipeline.back(first, identity)
            plan.cpu_start_s = time.perf_counter() - started
            started = time.perf_counter()
            answered = pipeline.middle(chunks, engine)
            engine_s = time.perf_counter() - started
            started = time.perf_counter()
            pipeline.back(answered, identity)
            back_s = time.perf_counter() - started
        finally:
            engine.close()
    per_chunk_cpu = front_s / len(live) + back_s / len(chunks)
    plan.sample_chunks = len(chunks)
    plan.cpu_hours = plan.chunks * per_chunk_cpu / 3600
    if config.engine == "none":
        plan.wall_hours = (plan.engine_start_s + plan.cpu_start_s) / 3600 + plan.cpu_hours / plan.cpu_workers
        return plan

    sent = answered.filter(pc.is_valid(answered["completion_tokens"]))
    out_tokens = pc.sum(sent["completion_tokens"]).as_py() or 0
    plan.prompt_tokens_per_chunk = (pc.sum(sent["prompt_tokens"]).as_py() or 0) / max(len(sent), 1)
    plan.output_tokens_per_chunk = out_tokens / max(len(sent), 1)
    reasons = Counter(r for r in answered["reject_reason"].to_pylist() if r)
    plan.rejected_fraction = {r: round(n / len(answered), 4) for r, n in sorted(reasons.items())}
    plan.output_tokens = round(plan.chunks * out_tokens / len(answered))
    stats = engine.stats() if hasattr(engine, "stats") else {}
    counter = stats.get("engine_counter") or {}
    plan.kv_cache_tokens = counter.get("kv_cache_tokens")  # in-process vLLM's, as is then full_at: its max_num_seqs
    plan.max_num_seqs = stats.get("full_at") if plan.kv_cache_tokens else None
    steady = steady_rate(counter)
    plan.steady_s = counter.get("saturated_s")
    plan.engine_trace = engine.scheduler_trace() if hasattr(engine, "scheduler_trace") else []
    plan.output_tok_s_from = "vllm_steady" if steady else "sample_wall"
    plan.output_tok_s = steady or out_tokens / max(engine_s, 1e-9)
    plan.engine_hours = (plan.output_tokens / steady if steady else plan.chunks * engine_s / len(chunks)) / 3600
    driver = engine_class(config.engine).placement == "driver"
    plan.parallel_engines = int(config.engine_options.get("replicas", 1)) if driver and config.executor == "ray" else 1
    plan.gpus = gpus_held(config.engine, config.engine_options, config.executor)
    engine_wall, cpu_wall = plan.engine_hours / plan.parallel_engines, plan.cpu_hours / plan.cpu_workers
    # An engine on GPUs (or on servers elsewhere) runs beside the CPU stages; one on this machine's CPU shares its cores.
    on_cpu_here = driver and not plan.gpus
    start_h = max(plan.engine_start_s, plan.cpu_start_s) / 3600
    plan.wall_hours = start_h + (engine_wall + cpu_wall if on_cpu_here else max(engine_wall, cpu_wall))
    plan.gpu_hours = plan.wall_hours * plan.gpus
    if gpu_hour_cost is not None:
        plan.cost = plan.gpu_hours * gpu_hour_cost
    return plan

