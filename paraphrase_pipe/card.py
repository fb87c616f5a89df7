"""The data card: `OUT/README.md` in Hugging Face dataset-card format, rendered from `data_cards/template.md`.

Everything on it is read back from the output itself (manifest + shards), so `paraphrase-pipe card OUT` can
regenerate it at any time (`card_command.py`): YAML front matter with `configs:` (so `datasets.load_dataset(OUT)` works) and the
license inherited from the source, then source, tokenizer, engine, counts, rejects by reason, token statistics,
score distributions before/after filtering (+ `scores.png`), token-distribution drift (+ `drift.json`),
throughput and the full resolved config. Shards are read one at a time, so the card never needs the whole build in memory.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pydantic import ValidationError

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.filters.drift import Drift
from paraphrase_pipe.output.errors import ManifestError
from paraphrase_pipe.output.reader import MANIFEST, BuildOutput
from paraphrase_pipe.stages.filter import STAGE as FILTER_STAGE
from paraphrase_pipe.tokenizer import load_tokenizer

TEMPLATE = Path(__file__).resolve().parent.parent / "data_cards" / "template.md"
CARD, HISTOGRAM, DRIFT = "README.md", "scores.png", "drift.json"
DRIFT_ROWS = 20  # input shards listed on the card (largest first); drift.json has them all
# The bundled sample corpus (paraphrase_pipe/sample/make_sample.py): Vim manual + Python docs/stdlib.
SAMPLE_LICENSE = {"license": "other", "license_name": "vim-license-and-psf-2.0", "note": "bundled sample: Vim user manual (Vim license) and CPython docs/stdlib (PSF-2.0)"}
SIZES = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B")]


class CardError(ValueError):
    """An output directory the card cannot be made for (message is user-facing)."""


# ---- license -------------------------------------------------------------------------------------------------
def _front_matter(readme: Path) -> dict | None:
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def source_license(inputs: list[str]) -> dict:
    """The license of the source: the `license` of the nearest dataset card (README.md with YAML front matter)
    at or above each input — what a hub download of SlimPajama or any HF dataset carries."""
    if not inputs:
        return SAMPLE_LICENSE
    for item in inputs:
        path = Path(item.split("*")[0]).resolve()
        for directory in [path, *path.parents][:5]:
            readme = directory / CARD
            meta = _front_matter(readme) if readme.is_file() else None
            if meta is None:
                continue
            if meta.get("license"):
                found = {"license": meta["license"], "note": f"inherited from {os.path.relpath(readme)}"}
                found.update({k: meta[k] for k in ("license_name", "license_link") if meta.get(k)})
                return found
            name = meta.get("pretty_name", directory.name)
            return {"license": "other", "license_name": "same-as-source", "note": f"the terms of the source ({name}, {os.path.relpath(readme)}) apply; its card names no license"}
    return {"license": "unknown", "note": "no dataset card with a license was found next to the input; the source's terms apply"}


# ---- statistics ----------------------------------------------------------------------------------------------
def _quantiles(values: np.ndarray) -> dict:
    if not len(values):
        return {"n": 0, **{k: "—" for k in ("p5", "p25", "p50", "p75", "p95")}}
    qs = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {"n": len(values), **{k: round(float(v), 4) for k, v in zip(("p5", "p25", "p50", "p75", "p95"), qs)}}


def _token_stats(values: list[np.ndarray]) -> dict:
    v = np.concatenate(values) if values else np.zeros(0)
    if not len(v):
        return {"total": 0, "mean": "—", "p50": "—", "p95": "—", "max": "—"}
    return {"total": int(v.sum()), "mean": round(float(v.mean()), 1), "p50": int(np.quantile(v, 0.5)), "p95": int(np.quantile(v, 0.95)), "max": int(v.max())}


def _numbers(column: pa.ChunkedArray) -> np.ndarray:
    return pc.drop_null(column).to_numpy().astype(np.float64)


def _scored(table: pa.Table, kind: str) -> pa.Table:
    """Rows whose paraphrase reached the filter: accepted rows with a paraphrase, rows the filter rejected."""
    if kind == "shards":
        return table.filter(pc.is_valid(table["paraphrase"]))
    return table.filter(pc.fill_null(pc.equal(table["reject_stage"], FILTER_STAGE), False))


def measure_drift(build: BuildOutput, where: dict[str, list[tuple[str, dict]]], tokenizer) -> dict:
    """Drift per input shard (`where`: source -> the output shards holding its scored rows) and overall."""
    drift = Drift(tokenizer)
    for name, entries in sorted(where.items()):
        parts = []
        for kind, entry in entries:
            scored = _scored(build.read(entry), kind)
            mine = scored.filter(pc.equal(scored["source"], name)).select(["original", "paraphrase"])
            parts.append(mine.append_column("accepted", pa.array(np.full(len(mine), kind == "shards"))))
        drift.measure(name, pa.concat_tables(parts))
    return drift.report()


def gather(out: Path) -> dict:
    """Read the manifest and the shards (each once for the statistics, then per input shard for the drift);
    return the template's context."""
    try:
        build = BuildOutput.open(out)
    except ManifestError as exc:
        raise CardError(str(exc)) from None
    manifest, manifest_path = build.manifest, out / MANIFEST
    config = manifest["config"]
    try:
        options = FilterOptions(**config.get("filter_options", {}))
    except ValidationError as exc:
        raise CardError(f"{manifest_path}: filter_options this version cannot read ({exc.error_count()} problems; first: {exc.errors()[0]['msg']})") from None
    gates = [getattr(options, name) for name in type(options).model_fields] if config.get("engine") != "none" else []
    where: dict[str, list[tuple[str, dict]]] = {}
    scores: dict[str, dict[str, list]] = {}
    tokens: dict[str, list] = {"training text (`text_tokens`)": [], "original chunk (`n_tokens`)": []}
    layouts, sets, provenance = Counter(), Counter(), None
    for kind in ("shards", "rejected"):
        for entry, table in build.tables(kind):
            scored = _scored(table, kind)
            if kind == "shards":
                if "text_tokens" in table.column_names:
                    tokens["training text (`text_tokens`)"].append(_numbers(table["text_tokens"]))
                tokens["original chunk (`n_tokens`)"].append(_numbers(table["n_tokens"]))
                layouts.update(table["layout"].to_pylist())
                sets.update(s or "unknown" for s in table["set_name"].to_pylist())
                if provenance is None and len(table) and table["provenance"][0].is_valid:
                    provenance = json.loads(table["provenance"][0].as_py())
            for name in pc.unique(scored["source"]).to_pylist():
                where.setdefault(name, []).append((kind, entry))
            for name in (c for c in scored.column_names if c.startswith("score_")):
                stages = scores.setdefault(name, {"before": [], "after": []})
                values = _numbers(scored[name])
                stages["before"].append(values)
                if kind == "shards":
                    stages["after"].append(values)
    arrays = {name: {stage: np.concatenate(v) if v else np.zeros(0) for stage, v in stages.items()} for name, stages in scores.items()}
    runs = manifest.get("runs", [])
    elapsed = sum(r.get("elapsed_s", 0) for r in runs)
    gpu_hours = [r["gpu_hours"] for r in runs if r.get("gpu_hours") is not None]
    counts = manifest.get("counts", {})
    return {
        "manifest": manifest,
        "config": config,
        "counts": {**counts, "rejects_by_reason": counts.get("rejects_by_reason", {})},
        "source": {"input": ", ".join(config.get("input") or []) or "bundled sample corpus", "sets": ", ".join(config.get("sets") or []) or "all"},
        "license": {"license_name": None, **source_license(config.get("input") or [])},
        "sets": dict(sets.most_common()),
        "layouts": dict(layouts.most_common()),
        "provenance": provenance,
        "tokens": {name: _token_stats(v) for name, v in tokens.items()},
        "gates": [{"name": g.name, "enabled": g.enabled, "min": g.min, "max": g.max, "column": g.column} for g in gates],
        "score_arrays": arrays,
        "scores": {name: {stage: _quantiles(v) for stage, v in stages.items()} for name, stages in arrays.items()},
        "drift": measure_drift(build, where, load_tokenizer(config["tokenizer"])),
        "throughput": {
            "runs": len(runs),
            "elapsed_s": round(elapsed, 1),
            "executor": runs[-1].get("executor", "?") if runs else "?",
            "tokens_per_s": f"{counts.get('tokens', 0) / elapsed:,.0f}" if elapsed else "—",
            "gpu_hours": round(sum(gpu_hours), 3) if gpu_hours else manifest.get("gpu_hours", "not recorded (engine none or not measured)"),
        },
        "has_rejected": bool(manifest["rejected"]),
    }


# ---- rendering -----------------------------------------------------------------------------------------------
def plot_scores(arrays: dict[str, dict[str, np.ndarray]], gates: list[dict], path: Path) -> bool:
    """One histogram per score, before vs after filtering, with the gate's band. False when nothing was scored."""
    arrays = {name: stages for name, stages in arrays.items() if len(stages["before"])}
    if not arrays:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bands = {g["column"]: (g["min"], g["max"]) for g in gates if g["enabled"]}
    fig, axes = plt.subplots(1, len(arrays), figsize=(4 * len(arrays), 3.2), squeeze=False)
    for ax, (name, stages) in zip(axes[0], arrays.items()):
        bounds = [b for b in bands.get(name, ()) if b is not None]
        low, high = min(stages["before"].min(), *bounds), max(stages["before"].max(), *bounds)
        edges = np.linspace(low, high if high > low else low + 1, 31)  # the band stays in view
        ax.hist(stages["before"], bins=edges, alpha=0.5, label="before filtering")
        ax.hist(stages["after"], bins=edges, alpha=0.7, label="accepted")
        for bound in bounds:
            ax.axvline(bound, color="black", linestyle="--", linewidth=1)
        ax.set_title(name.removeprefix("score_"))
        ax.set_xlabel("score")
    axes[0][0].set_ylabel("rows")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def front_matter(ctx: dict) -> str:
    n = ctx["counts"].get("accepted", 0)
    configs = [{"config_name": "default", "default": True, "data_files": [{"split": "train", "path": "shards/*.arrow"}]}]
    if ctx["has_rejected"]:
        configs.append({"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/*.arrow"}]})
    meta = {k: ctx["license"][k] for k in ("license", "license_name", "license_link") if ctx["license"].get(k)}
    meta.update(
        pretty_name=ctx["title"],
        task_categories=["text-generation"],
        size_categories=[next((label for limit, label in SIZES if n < limit), "n>1B")],
        tags=["paraphrase", "synthetic", "continual-pretraining", "memory-recall", "paraphrase-pipe"],
        configs=configs,
    )
    return to_yaml(meta)


class _Dumper(yaml.SafeDumper):
    """Strings with line breaks (separators, prompts) as one double-quoted line with escapes."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style='"' if "\n" in v else None))


def to_yaml(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def render(ctx: dict, template: Path) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, finalize=lambda v: "—" if v is None else v)
    return env.from_string(template.read_text()).render(**ctx)


def write_card(out: Path, template: Path | None = None) -> Path:
    """Render OUT/README.md, OUT/drift.json and (when anything was scored) OUT/scores.png; return the card's path."""
    out = Path(out)
    template = Path(template) if template else TEMPLATE
    if not template.is_file():
        raise CardError(f"card template not found: {template} (pass --template, see data_cards/)")
    ctx = gather(out)
    config = ctx["config"]
    ctx["title"] = f"paraphrase-pipe {config['layout']}, chunk {config['chunk']}"
    ctx["out_name"] = str(out)
    ctx["histogram"] = HISTOGRAM if plot_scores(ctx["score_arrays"], ctx["gates"], out / HISTOGRAM) else None
    per_source = ctx["drift"]["per_source"]
    ctx["drift_shown"] = dict(sorted(per_source.items(), key=lambda kv: -kv[1]["rows"])[:DRIFT_ROWS])
    ctx["drift_hidden"] = len(per_source) - len(ctx["drift_shown"])
    (out / DRIFT).write_text(json.dumps(ctx["drift"], indent=1))
    ctx["front_matter"] = front_matter(ctx)
    ctx["config_yaml"] = to_yaml(config)
    path = out / CARD
    tmp = path.with_name(f".{CARD}.tmp-{os.getpid()}")  # atomic: a kill mid-write leaves the old card or none
    tmp.write_text(render(ctx, template))
    os.replace(tmp, path)
    return path

