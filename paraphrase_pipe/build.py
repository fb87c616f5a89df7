"""`paraphrase-pipe build`: plan, run on an executor, commit shard by shard, finish the manifest.

Restartable by construction: the build holds OUT's lock; the manifest lists committed shards and complete input
ranges, which the next run skips without reading them; orphans of a crash are deleted, listed shards that went
missing are rebuilt, and a finished build is a no-op (found before any tokenizer or engine loads; it writes a
missing data card).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.console import Console

from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.engines import create_engine, gpus_held
from paraphrase_pipe.engines.request_cache import discard as discard_request_cache
from paraphrase_pipe.executors import get_executor
from paraphrase_pipe.output.lock import holder
from paraphrase_pipe.output.manifest import MANIFEST, BuildManifest
from paraphrase_pipe.output.sweep import is_damaged
from paraphrase_pipe.output.resume import planned_tasks, remaining_tasks
from paraphrase_pipe.output.running import clear_running, read_running
from paraphrase_pipe.output.session import OutputSession
from paraphrase_pipe.pipeline import Pipeline
from paraphrase_pipe.progress import BuildProgress
from paraphrase_pipe.sources import discover
from paraphrase_pipe.tokenizer import LoadedTokenizer, load_tokenizer, resolve_tokenizer

CARD = "README.md"  # card.CARD, named here so a `nothing to do` rerun imports no card code (numpy, the filters)


@dataclass
class BuildResult:
    out: Path
    already_complete: bool = False
    dry_run: bool = False
    sends_to_engine: bool = False  # a dry run of a build with an LLM: accepted/tokens are what it would send
    counts: dict = field(default_factory=dict)
    shards_written: int = 0
    elapsed_s: float = 0.0
    orphans_removed: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # listed shards found missing, rebuilt by this run
    card_written: bool = False


def run_build(config: BuildConfig, *, dry_run: bool = False, overwrite: bool = False, break_lock: bool = False,
              console: Console | None = None) -> BuildResult:
    console = console or Console(stderr=True)
    if not (dry_run or overwrite or break_lock) and (counts := finished_counts(config)) is not None:
        return BuildResult(out=Path(config.output), already_complete=True, counts=counts)
    with OutputSession(Path(config.output), enabled=not dry_run, break_lock=break_lock) as session:
        return _build(config, session, dry_run=dry_run, overwrite=overwrite, console=console)


def _build(config: BuildConfig, session: OutputSession, *, dry_run: bool, overwrite: bool, console: Console) -> BuildResult:
    out = Path(config.output)
    files = discover(config.input)
    config, warning = choose_tokenizer(config, console)
    tokenizer = load_tokenizer(config.tokenizer)  # fail fast on a bad name, before any work
    identity = engine_identity(config)  # likewise bad engine options
    result = BuildResult(out=out, dry_run=dry_run, sends_to_engine=dry_run and config.engine != "none")

    manifest = None
    if dry_run:
        tasks = planned_tasks(None, files, config)
    else:
        manifest = open_manifest(session, config, identity, tokenizer, warning, overwrite)
        result.repaired = manifest.repair()
        if manifest.complete:
            result.already_complete, result.counts = True, manifest.data["counts"]
            result.card_written = ensure_card(out, console)
            return result
        manifest.start()
        result.orphans_removed = manifest.remove_orphans()
        tasks = remaining_tasks(manifest, planned_tasks(out, files, config))
    pipeline = Pipeline(dry_run_config(config) if dry_run else config, dry_run=dry_run)
    bar = config.progress and console.is_terminal
    running = None
    if pipeline.progress_dir is not None:
        clear_running(pipeline.progress_dir)
        running = partial(read_running, pipeline.progress_dir)
    with BuildProgress(console, planned_records(tasks), bar=bar, log_every=config.log_every,
                       in_flight=pipeline.requests_in_flight, running=running) as progress:

        def on_shard(meta: dict) -> None:
            progress.settle(meta.get("keys", ()))  # its rows are committed (or were already): no longer running
            if manifest is not None and manifest.record(meta) is None:
                return  # every row of it was already committed (a retried batch)
            meta.pop("keys", None)
            meta.pop("range_rows", None)
            result.shards_written += 1
            progress.add(meta)

        engine_stats = get_executor(config.executor)(pipeline, tasks, on_shard)

    result.elapsed_s = time.time() - progress.started
    if manifest is None:
        result.counts = progress.counts()
        return result
    manifest.remove_orphans()  # temp/unlisted files of workers killed mid-write (their work was re-run)
    manifest.finish(run_record(config, result.elapsed_s, progress.totals, engine_stats))
    discard_request_cache(out)  # every cached answer is in a committed shard now
    result.card_written = ensure_card(out, console, rewrite=True)
    result.counts = manifest.data["counts"]
    return result


# ---- the parts of a build, in the order it runs them ----------------------------------------------------------
def finished_counts(config: BuildConfig) -> dict | None:
    """The counts of a finished, intact build of this configuration in `config.output`, found without taking the
    lock, loading a tokenizer or importing transformers: a `nothing to do` rerun takes a second. With no tokenizer
    given, the one the build recorded is the one meant. A build with a listed file missing or damaged, or no data
    card, takes the full path (which repairs it), and so does an output another build holds (an `--overwrite` or a
    repair under way): the lock refuses it there, naming the holder."""
    out = Path(config.output)
    if holder(out) is not None:
        return None
    try:
        data = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("config"), dict):
        return None
    recorded = data["config"].get("tokenizer")
    if data.get("status") != "complete" or config.tokenizer not in (None, recorded) or not (out / CARD).is_file():
        return None
    candidate = config.model_copy(update={"tokenizer": recorded})
    if candidate.config_hash(engine_identity(candidate)) != data.get("config_hash"):
        return None
    listed = [e for kind in ("shards", "rejected") for e in data.get(kind) or [] if isinstance(e, dict)]
    if any(is_damaged(out, e) for e in listed):
        return None
    return data.get("counts", {})


def choose_tokenizer(config: BuildConfig, console: Console) -> tuple[BuildConfig, str | None]:
    """The tokenizer the build uses, fallback included; the manifest and the config hash record the real one."""
    name, warning = resolve_tokenizer(config.tokenizer)
    if warning:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    return config.model_copy(update={"tokenizer": name}), warning


def engine_identity(config: BuildConfig) -> dict:
    """What the engine contributes to the config hash; building one also checks its options (constructors are cheap)."""
    probe = create_engine(config.engine, config.engine_options)
    try:
        return probe.identity()
    finally:
        probe.close()


def open_manifest(session: OutputSession, config: BuildConfig, identity: dict, tokenizer: LoadedTokenizer,
                  warning: str | None, overwrite: bool) -> BuildManifest:
    """Lock OUT, then open its manifest (the session records a failure in it on the way out)."""
    extra = {"tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint}, "engine": config.engine,
             "warnings": [warning] if warning else []}
    return session.open_manifest(config.data_fields(), config.config_hash(identity), extra, overwrite=overwrite)


def dry_run_config(config: BuildConfig) -> BuildConfig:
    """What a dry run executes: the real build's reading and chunking. With an LLM engine, no engine and the `orig`
    layout instead, so every chunk the real build would send is counted (as accepted, with its source tokens)
    rather than rejected for want of a paraphrase."""
    if config.engine == "none":
        return config
    return config.model_copy(update={"engine": "none", "engine_options": {}, "layout": "orig", "mix": 0.0})


def planned_records(tasks) -> int | None:
    """The progress total: known when the planner counted every file."""
    if any(t.records is None for t in tasks):
        return None
    return sum(t.records for t in tasks)


def run_record(config: BuildConfig, elapsed_s: float, totals: dict, engine_window: dict | None = None) -> dict:
    """This run's entry in the manifest's `runs`: wall time, where it ran, GPU-hours = wall time x GPUs held, and the
    engines' generation window (requests, output tok/s, how full they were kept) from the executor: one engine's
    `stats()` (local), or the combination of every engine's (`engines.llm.combined_stats`: Ray actors, Dask workers)."""
    gpus = gpus_held(config.engine, config.engine_options, config.executor)
    return {"elapsed_s": round(elapsed_s, 3), "executor": config.executor, "workers": config.workers,
            "gpus": gpus, "gpu_hours": round(gpus * elapsed_s / 3600, 4), **totals,
            **({"engine_window": engine_window} if engine_window else {})}


def ensure_card(out: Path, console: Console, rewrite: bool = False) -> bool:
    """The data card is part of completion: written at the end, and by a rerun that finds it missing. A build whose
    card cannot be made is still a complete build."""
    from paraphrase_pipe.card import CardError, write_card  # matplotlib, jinja2: only when a build finishes

    if not rewrite and (out / CARD).is_file():
        return False
    try:
        write_card(out)
    except CardError as exc:
        console.print(f"[yellow]no data card:[/] {exc}")
        return False
    return True
