"""`paraphrase-pipe build` and `paraphrase-pipe inspect`: the command line of the build (`build.py` holds the work)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from paraphrase_pipe.console import app, console, err, fail, user_errors
from paraphrase_pipe.engines.flags import with_engine_flags


def summary_table(result) -> Table:
    """The final table of a build or a dry run."""
    c = result.counts
    table = Table(title="dry run (nothing written)" if result.dry_run else f"build → {result.out}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    labels = {"accepted": "chunks to paraphrase", "tokens": "tokens to paraphrase"} if result.sends_to_engine else {}
    for key in ("documents", "chunks", "accepted", "tokens", "rejected", "excluded"):
        if key in c:
            table.add_row(labels.get(key, key), f"{c[key]:,}")
    for reason, n in c.get("rejects_by_reason", {}).items():
        table.add_row(f"  rejected: {reason}", f"{n:,}")
    if result.elapsed_s:
        table.add_row("elapsed", f"{result.elapsed_s:.1f} s")
        table.add_row("tokens/s", f"{c.get('tokens', 0) / result.elapsed_s:,.0f}")
    return table


@app.command()
@with_engine_flags  # --model, --endpoint, --serve, ... -> engine, engine_options
def build(
    chunk: Optional[int] = typer.Option(None, help="chunk length in tokens (a maximum) \\[default: 2048]"),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs (repeatable) \\[default: the bundled sample]"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output directory \\[default: out]"),
    tokenizer: Optional[str] = typer.Option(None, help="trainer's tokenizer: hub id, local dir, or builtin:gpt2 \\[default: EleutherAI/gpt-neox-20b]"),
    executor: Optional[str] = typer.Option(None, help="local | ray | dask \\[default: local]"),
    workers: Optional[int] = typer.Option(None, help="worker processes (local) / CPUs (local Ray) \\[default: all cores]"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (e.g. auto, ray://host:10001)"),
    dask_scheduler: Optional[str] = typer.Option(None, help="join this Dask scheduler (e.g. tcp://host:8786) \\[default: a local cluster of --workers]"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe from pipelines/; flags override it"),
    limit: Optional[int] = typer.Option(None, help="read at most this many input records"),
    sets: Optional[list[str]] = typer.Option(None, "--sets", help="keep these redpajama_set_name values, or -Name to exclude (repeatable)"),
    sample_fraction: Optional[float] = typer.Option(None, help="keep this deterministic fraction of documents \\[default: 1.0]"),
    engine: Optional[str] = typer.Option(None, help="paraphrase engine: none | vllm | openai \\[default: none]"),
    shard_rows: Optional[int] = typer.Option(None, help="max rows per shard \\[default: 4096]"),
    layout: Optional[str] = typer.Option(None, help="sample text: orig+para | para+orig | para | orig | repeat \\[default: orig]"),
    mix: Optional[float] = typer.Option(None, help="fraction of samples that are original-only replay, 0-1 \\[default: 0]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="read and chunk as the build would; count what it would send, write nothing"),
    overwrite: bool = typer.Option(False, "--overwrite", help="discard an existing build with another configuration"),
    break_lock: bool = typer.Option(False, "--break-lock", help="take over OUT's lock held by a build on another host (only when that job is dead)"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar: progress lines every --log-every s instead"),
    log_every: Optional[float] = typer.Option(None, help="seconds between progress lines when there is no bar (a log, --no-progress); 0: none \\[default: 30]"),
    engine_options: Optional[dict] = None,  # from the engine flags (with_engine_flags)
) -> None:
    """Build paraphrase-augmented training shards."""
    from paraphrase_pipe.build import run_build
    from paraphrase_pipe.config import resolve_config

    try:
        config = resolve_config(
            recipe, chunk=chunk, input=input or None, output=output, tokenizer=tokenizer, executor=executor,
            workers=workers, ray_address=ray_address, dask_scheduler=dask_scheduler, limit=limit, sets=sets or None,
            sample_fraction=sample_fraction, engine=engine, engine_options=engine_options, shard_rows=shard_rows, layout=layout, mix=mix,
            progress=False if no_progress else None, log_every=log_every,
        )
        result = run_build(config, dry_run=dry_run, overwrite=overwrite, break_lock=break_lock)
    except user_errors() as exc:
        fail(str(exc))
    if result.repaired:
        err.print(f"repaired: {len(result.repaired)} shard(s) listed in the manifest were missing or damaged; their rows were rebuilt")
    if result.already_complete:
        if result.card_written:
            err.print(f"wrote the missing data card {result.out / 'README.md'}")
        console.print(f"[green]nothing to do:[/] {result.out} is already complete ({result.counts.get('accepted', 0):,} rows)")
        return
    if result.orphans_removed:
        err.print(f"resumed: removed {len(result.orphans_removed)} uncommitted file(s) from the previous run")
    console.print(summary_table(result))


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="a build output directory"),
    rows: int = typer.Option(3, help="sample rows to show"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest counts as JSON"),
    verify: bool = typer.Option(False, "--verify", help="check every listed shard: present, sha256, row and token counts"),
) -> None:
    """Show a build's manifest statistics and a few rows; --verify checks the files against the manifest."""
    from paraphrase_pipe.output.errors import ManifestError
    from paraphrase_pipe.output.lock import describe_holder, holder
    from paraphrase_pipe.output.reader import BuildOutput

    try:
        build = BuildOutput.open(out, schema_version=None)
    except ManifestError as exc:
        fail(str(exc))
    data = build.manifest
    if verify:
        problems = build.verify()
        for problem in problems:
            err.print(f"[bold red]bad:[/] {problem}", highlight=False)
        if problems:
            fail(f"{out}: {len(problems)} problem(s) found; re-run the build command to repair missing shards", code=1)
        n = len(build.entries("shards")) + len(build.entries("rejected"))
        console.print(f"[green]ok:[/] {out}: {n} shard(s) present, sha256 and counts match the manifest ({build.status})")
        return
    if as_json:
        console.print_json(data=build.counts)
        return
    status = build.status
    locked = holder(out)
    if locked:
        status += f", in use by {describe_holder(locked)}"
    elif status == "running":
        status = "interrupted (no build holds it; re-run to resume)"
    elif status == "failed":
        status += f": {data.get('error', '?')}"
    table = Table(title=f"{out} — {status}, schema v{data['schema_version']}, config {str(data.get('config_hash', '?'))[:12]}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    for key, value in build.counts.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else f"{value:,}")
    table.add_row("shards", str(len(build.entries("shards"))))
    table.add_row("rejected shards", str(len(build.entries("rejected"))))
    table.add_row("tokenizer", str((data.get("tokenizer") or {}).get("name", "?")))
    table.add_row("chunk", str(build.config.get("chunk")))
    console.print(table)
    shards = [e for e in build.entries("shards") if build.path_of(e).is_file()]
    if shards and rows:
        for row in build.read(shards[0]).slice(0, rows).to_pylist():
            text = (row.get("text") or "").replace("\n", " ")
            console.print(f"[bold]{row['sample_id'][:12]}[/] {row['doc_id']} #{row['chunk_index']} ({row['n_tokens']} tok): {text[:160]}…", highlight=False)
