"""The `paraphrase-pipe` command line. Each area registers its commands here; heavy imports stay inside them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from paraphrase_pipe.engines.flags import with_engine_flags

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def user_errors():
    """Exception types whose message is meant for the user: print one line, exit 2, no traceback."""
    from paraphrase_pipe.config import ConfigError
    from paraphrase_pipe.engines import EngineError
    from paraphrase_pipe.output.manifest import ManifestError
    from paraphrase_pipe.sources.files import SourceError
    from paraphrase_pipe.tokenizer import TokenizerError

    return (ConfigError, EngineError, ManifestError, SourceError, TokenizerError)


def _summary(result) -> Table:
    c = result.counts
    table = Table(title="dry run (nothing written)" if result.dry_run else f"build → {result.out}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    for key in ("documents", "chunks", "accepted", "tokens", "rejected", "excluded"):
        if key in c:
            table.add_row(key, f"{c[key]:,}")
    for reason, n in c.get("rejects_by_reason", {}).items():
        table.add_row(f"  rejected: {reason}", f"{n:,}")
    if result.elapsed_s:
        table.add_row("elapsed", f"{result.elapsed_s:.1f} s")
        table.add_row("tokens/s", f"{c.get('tokens', 0) / result.elapsed_s:,.0f}")
    return table


@app.command()
@with_engine_flags  # --model, --endpoint, --serve, ... -> engine, engine_options
def build(
    chunk: Optional[int] = typer.Option(None, help="chunk length in tokens [default: 2048]"),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs (repeatable); default: bundled sample"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="output directory [default: out]"),
    tokenizer: Optional[str] = typer.Option(None, help="trainer's tokenizer: hub id, local dir, or builtin:gpt2"),
    executor: Optional[str] = typer.Option(None, help="local | ray | dask"),
    workers: Optional[int] = typer.Option(None, help="worker processes (local) / CPUs (local Ray)"),
    ray_address: Optional[str] = typer.Option(None, help="join this Ray cluster (e.g. auto, ray://host:10001)"),
    dask_scheduler: Optional[str] = typer.Option(None, help="join this Dask scheduler (e.g. tcp://host:8786); default: a local cluster of --workers"),
    recipe: Optional[Path] = typer.Option(None, help="YAML recipe from pipelines/; flags override it"),
    limit: Optional[int] = typer.Option(None, help="read at most this many input records"),
    sets: Optional[list[str]] = typer.Option(None, "--sets", help="keep these redpajama_set_name values, or -Name to exclude (repeatable)"),
    sample_fraction: Optional[float] = typer.Option(None, help="keep this deterministic fraction of documents"),
    engine: Optional[str] = typer.Option(None, help="paraphrase engine [default: none]"),
    shard_rows: Optional[int] = typer.Option(None, help="max rows per shard"),
    layout: Optional[str] = typer.Option(None, help="sample text: orig+para | para+orig | para | orig | repeat [default: orig]"),
    mix: Optional[float] = typer.Option(None, help="fraction of samples that are original-only replay, 0-1 [default: 0]"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count documents/chunks/tokens, write nothing"),
    overwrite: bool = typer.Option(False, help="discard an existing build with another configuration"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bar (batch logs)"),
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
            progress=False if no_progress else None,
        )
        result = run_build(config, dry_run=dry_run, overwrite=overwrite)
    except user_errors() as exc:
        fail(str(exc))
    if result.already_complete:
        console.print(f"[green]nothing to do:[/] {result.out} is already complete ({result.counts.get('accepted', 0):,} rows)")
        return
    if result.orphans_removed:
        err.print(f"resumed: removed {len(result.orphans_removed)} uncommitted file(s) from the previous run")
    console.print(_summary(result))


@app.command()
def inspect(
    out: Path = typer.Argument(..., help="a build output directory"),
    rows: int = typer.Option(3, help="sample rows to show"),
    as_json: bool = typer.Option(False, "--json", help="print the manifest counts as JSON"),
) -> None:
    """Show a build's manifest statistics and a few rows."""
    import pyarrow as pa

    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        fail(f"{out} has no manifest.json (not a build output)")
    data = json.loads(manifest_path.read_text())
    if as_json:
        console.print_json(data=data["counts"])
        return
    table = Table(title=f"{out} — {data['status']}, schema v{data['schema_version']}, config {data['config_hash'][:12]}")
    table.add_column("", style="bold")
    table.add_column("value", justify="right")
    for key, value in data["counts"].items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else f"{value:,}")
    table.add_row("shards", str(len(data["shards"])))
    table.add_row("rejected shards", str(len(data["rejected"])))
    table.add_row("tokenizer", data.get("tokenizer", {}).get("name", "?"))
    table.add_row("chunk", str(data["config"].get("chunk")))
    console.print(table)
    if data["shards"] and rows:
        with pa.memory_map(str(out / data["shards"][0]["path"])) as source:
            sample = pa.ipc.open_file(source).read_all().slice(0, rows)
        for row in sample.to_pylist():
            text = (row.get("text") or "").replace("\n", " ")
            console.print(f"[bold]{row['sample_id'][:12]}[/] {row['doc_id']} #{row['chunk_index']} ({row['n_tokens']} tok): {text[:160]}…", highlight=False)


# Commands of the other areas register below (one line each).
app.command("train")(__import__("paraphrase_pipe.train.command", fromlist=["train"]).train)
app.command("plan")(__import__("paraphrase_pipe.plan", fromlist=["plan"]).plan)
app.command("eval")(__import__("paraphrase_pipe.evaluate.command", fromlist=["eval_command"]).eval_command)
app.command("analyze")(__import__("paraphrase_pipe.analysis.command", fromlist=["analyze_command"]).analyze_command)
app.command("card")(__import__("paraphrase_pipe.card.command", fromlist=["command"]).command)
app.command("sweep")(__import__("paraphrase_pipe.sweep", fromlist=["command"]).command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
