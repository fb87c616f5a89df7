"""`paraphrase-pipe build`: plan, run on an executor, commit shard by shard, finish the manifest.

Restartable by construction: the build holds OUT's lock; the manifest lists committed shards and complete input
ranges, which the next run skips without reading them; orphans of a crash are deleted, listed shards that went
missing are rebuilt, and a finished build is a no-op (it writes a missing data card).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from paraphrase_pipe.card import CARD, CardError, write_card
from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.engines import create_engine, gpus_held
from paraphrase_pipe.engines.request_cache import discard as discard_request_cache
from paraphrase_pipe.executors import get_executor
from paraphrase_pipe.output.resume import planned_tasks, remaining_tasks
from paraphrase_pipe.output.session import OutputSession
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.sources import discover
from paraphrase_pipe.tokenizer import load_tokenizer, resolve_tokenizer


@dataclass
class BuildResult:
    out: Path
    already_complete: bool = False
    dry_run: bool = False
    counts: dict = field(default_factory=dict)
    shards_written: int = 0
    elapsed_s: float = 0.0
    orphans_removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # listed shards found missing, rebuilt by this run
    card_written: bool = False


def _planned_records(tasks) -> int | None:
    """The progress bar's total: known when the planner counted every file."""
    if any(t.records is None for t in tasks):
        return None
    return sum(t.records for t in tasks)


def run_build(config: BuildConfig, *, dry_run: bool = False, overwrite: bool = False, break_lock: bool = False,
              console: Console | None = None) -> BuildResult:
    with OutputSession(Path(config.output), enabled=not dry_run, break_lock=break_lock) as session:
        return _build(config, session, dry_run=dry_run, overwrite=overwrite, console=console or Console(stderr=True))


def _build(config: BuildConfig, session: OutputSession, *, dry_run: bool, overwrite: bool, console: Console) -> BuildResult:
    files = discover(config.input)
    name, warning = resolve_tokenizer(config.tokenizer)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    config = config.model_copy(update={"tokenizer": name})  # the manifest and the hash record the real one
    tokenizer = load_tokenizer(name)  # fail fast on a bad name, before any work
    probe = create_engine(config.engine, config.engine_options)  # likewise bad engine options (constructors are cheap)
    identity = probe.identity()
    probe.close()
    out = Path(config.output)
    result = BuildResult(out=out, dry_run=dry_run)

    manifest = None
    if dry_run:
        tasks = planned_tasks(None, files, config)
    else:
        extra = {"tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint}, "engine": config.engine,
                 "warnings": [warning] if warning else []}
        manifest = session.open_manifest(config.data_fields(), config.config_hash(identity), extra, overwrite=overwrite)
        result.repaired = manifest.repair()
        if manifest.complete:
            result.already_complete, result.counts = True, manifest.data["counts"]
            result.card_written = ensure_card(out, console)
            return result
        manifest.start()
        result.orphans_removed = manifest.remove_orphans()
        tasks = remaining_tasks(manifest, planned_tasks(out, files, config))
    run_config = config.model_copy(update={"engine": "none", "engine_options": {}}) if dry_run else config
    pipeline = Pipeline(run_config, dry_run=dry_run)
    total = _planned_records(tasks)
    started = time.time()
    totals = {"documents": 0, "chunks": 0, "tokens": 0, "accepted": 0, "rejected": 0, "excluded": 0, "generated_tokens": 0,
              "engine_latency_s": 0.0}

    with Progress(
        TextColumn("[bold]build"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, disable=not config.progress, transient=False,
    ) as progress:
        bar = progress.add_task("build", total=total, rate="")

        def on_shard(meta: dict) -> None:
            if manifest is not None:
                entry = manifest.record(meta)
                if entry is None:
                    return
            else:
                meta.pop("keys", None)
                meta.pop("range_rows", None)
            result.shards_written += 1
            totals["documents"] += meta["documents"]
            totals["chunks"] += meta["chunks"]
            totals["tokens"] += meta["tokens"]
            totals["accepted" if meta["kind"] == "shards" else "rejected"] += meta["rows"] - meta["excluded"]
            totals["excluded"] += meta["excluded"]
            totals["generated_tokens"] += meta.get("generated_tokens", 0)
            totals["engine_latency_s"] = round(totals["engine_latency_s"] + meta.get("engine_latency_s", 0.0), 4)
            elapsed = max(time.time() - started, 1e-6)
            rate = f"{totals['tokens'] / elapsed:,.0f} tok/s"
            if totals["generated_tokens"]:  # the LLM's output rate: what GPU time buys
                rate += f" · out {totals['generated_tokens'] / elapsed:,.0f} tok/s"
            progress.update(bar, advance=meta["documents"], rate=rate)

        get_executor(config.executor)(pipeline, tasks, on_shard)

    result.elapsed_s = time.time() - started
    if manifest is not None:
        manifest.remove_orphans()  # temp/unlisted files of workers killed mid-write (their work was re-run)
        gpus = gpus_held(config.engine, config.engine_options, config.executor)  # GPU-hours = wall time x GPUs held
        manifest.finish({"elapsed_s": round(result.elapsed_s, 3), "executor": config.executor, "workers": config.workers,
                         "gpus": gpus, "gpu_hours": round(gpus * result.elapsed_s / 3600, 4), **totals})
        discard_request_cache(out)  # every cached answer is in a committed shard now
        result.card_written = ensure_card(out, console, rewrite=True)
        result.counts = manifest.data["counts"]
    else:
        result.counts = totals
    return result


def ensure_card(out: Path, console: Console, rewrite: bool = False) -> bool:
    """The data card is part of completion: written at the end, and by a rerun that finds it missing."""
    if not rewrite and (out / CARD).is_file():
        return False
    try:
        write_card(out)
    except CardError as exc:
        console.print(f"[yellow]no data card:[/] {exc}")
        return False
    return True
