"""`paraphrase-pipe sweep RECIPE`: one build per point of a sweep recipe (the paper's chunk-size, dataset and
dataset-size comparisons), each a plain build with its own output directory, manifest and card.

A sweep recipe names a `base:` build recipe (path relative to the sweep file), optional `build:` overrides, an
`output:` template and `sweep:` — either a mapping of field -> values (every combination) or a list of named
override mappings. Overrides replace whole top-level fields (e.g. all of `engine_options`).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Optional

import typer
import yaml

from paraphrase_pipe.config import ConfigError, load_recipe
from paraphrase_pipe.console import app, console, fail, user_errors


def expand(recipe: str | Path) -> list[tuple[str, dict[str, Any]]]:
    """[(point name, build values)] in recipe order."""
    path = Path(recipe)
    if not path.is_file():
        raise ConfigError(f"sweep recipe not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "sweep" not in data or "output" not in data:
        raise ConfigError(f"{path} is not a sweep recipe (needs `sweep:` and `output:`; build recipes run with `build --recipe`)")
    base = load_recipe(path.parent / data["base"]) if data.get("base") else {}
    base.update(data.get("build") or {})
    sweep = data["sweep"]
    if isinstance(sweep, dict):
        points = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    elif isinstance(sweep, list) and all(isinstance(p, dict) for p in sweep):
        points = [dict(p) for p in sweep]
    else:
        raise ConfigError(f"{path}: `sweep:` must map fields to lists of values, or list override mappings")
    expanded = []
    for point in points:
        name = str(point.pop("name", "-".join(f"{k}{v}" for k, v in point.items())))
        try:
            output = data["output"].format(name=name, **point)
        except KeyError as exc:
            raise ConfigError(f"{path}: output template names {exc}, which the sweep does not set") from None
        expanded.append((name, {**base, **point, "output": output}))
    return expanded


@app.command("sweep")
def sweep_command(
    recipe: Path = typer.Argument(..., help="a sweep recipe from pipelines/ (e.g. pipelines/chunk-sweep.yaml)"),
    only: Optional[list[str]] = typer.Option(None, "--only", help="run only these points (repeatable)"),
    input: Optional[list[str]] = typer.Option(None, "--input", "-i", help="input files/dirs/globs for every point"),
    tokenizer: Optional[str] = typer.Option(None, help="override the recipe's tokenizer"),
    limit: Optional[int] = typer.Option(None, help="read at most this many input records per point"),
    dry_run: bool = typer.Option(False, "--dry-run", help="count documents/chunks/tokens per point, write nothing"),
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
