"""`paraphrase-pipe sweep RECIPE`: every point of a sweep recipe (`sweep.py` expands it) as a plain build."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from paraphrase_pipe.config import ConfigError
from paraphrase_pipe.console import app, console, fail, user_errors
from paraphrase_pipe.sweep import expand


@app.command("sweep")
def sweep_command(
    recipe: Path = typer.Argument(..., help="a sweep recipe from pipelines/ (e.g. pipelines/chunk-sweep.yaml)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these points (repeatable)"),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs for every point"),
    tokenizer: Optional[str] = typer.Option(None, help="override the recipe's tokenizer"),
    limit: Optional[int] = typer.Option(None, help="read at most this many input records per point"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count what each point would chunk and send, write nothing"),
    no_progress: bool = typer.Option(False, "--no-progress", help="no progress bars: progress lines every --log-every s instead"),
    log_every: Optional[float] = typer.Option(None, help="seconds between progress lines when there is no bar; 0: none \\[default: 30]"),
) -> None:
    """Run every build of a sweep recipe (chunk sizes, comparison datasets, dataset sizes)."""
    from paraphrase_pipe.build import run_build
    from paraphrase_pipe.build_command import summary_table
    from paraphrase_pipe.config import resolve_config
    from paraphrase_pipe.output.manifest import ManifestError

    try:
        points = expand(recipe)
        unknown = set(only or []) - {name for name, _ in points}
        if unknown:
            raise ConfigError(f"no sweep point named {', '.join(sorted(unknown))}; points: {', '.join(n for n, _ in points)}")
        for name, values in points:
            if only and name not in only:
                continue
            console.print(f"[bold]sweep point {name}[/] → {values['output']}")
            config = resolve_config(None, **{**values, "input": input or values.get("input"), "tokenizer": tokenizer or values.get("tokenizer"),
                                             "limit": limit or values.get("limit"), "progress": False if no_progress else None, "log_every": log_every})
            try:
                result = run_build(config, dry_run=dry_run)
            except ManifestError as exc:  # its remedy names build's --output/--overwrite, which sweep has not
                raise ManifestError(f"sweep point {name}: {exc.problem}", f"remove {values['output']}, or change `output:` in {recipe}") from None
            console.print(summary_table(result))
    except user_errors() as exc:
        fail(str(exc))
