"""What the card reports, read back from the output (manifest + shards, one shard at a time): counts, token
statistics, score distributions before/after filtering, and the rows the divergence measure needs."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import ValidationError

from paraphrase_pipe.card.divergence import TokenDivergence
from paraphrase_pipe.card.license import source_license
from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.output.errors import ManifestError
from paraphrase_pipe.output.reader import MANIFEST, BuildOutput
from paraphrase_pipe.stages.filter import STAGE as FILTER_STAGE
from paraphrase_pipe.tokenizer import load_tokenizer


class CardError(ValueError):
    """An output directory the card cannot be made for (message is user-facing)."""


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
    drift = TokenDivergence(tokenizer)
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
        "has_accepted": any(entry.get("rows", 1) for entry in manifest["shards"]),
        "has_rejected": any(entry.get("rows", 1) for entry in manifest["rejected"]),
    }
