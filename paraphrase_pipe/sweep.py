"""`paraphrase-pipe sweep RECIPE`: one build per point of a sweep recipe (the paper's chunk-size, dataset and
dataset-size comparisons), each a plain build with its own output directory, manifest and card.

A sweep recipe names a `base:` build recipe (path relative to the sweep file), optional `build:` overrides, an
`output:` template and `sweep:` — either a mapping of field -> values (every combination) or a list of named
override mappings. Overrides replace whole top-level fields (e.g. all of `engine_options`).
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import yaml

from paraphrase_pipe.config import ConfigError, load_recipe


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

