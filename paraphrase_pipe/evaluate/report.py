"""What a researcher puts in a paper: `results.json` (every number with its task, length, metric and n), a Markdown
table that compares the models side by side, and PNG plots (recall and perplexity against context length, NLL
by token position, commonsense accuracy per task).
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path

RESULTS_VERSION = 1
_NOT_PLOTTED = {"input_tokens"}  # in the table, not worth a panel


@dataclass(frozen=True)
class Result:
    """One number. `length` is the input length in tokens (None: not swept); `position` is a needle depth (0-1) or
    the first token index of a position bucket (None: aggregated over positions)."""

    model: str
    suite: str
    task: str
    metric: str
    value: float
    n: int
    length: int | None = None
    position: float | None = None
    stderr: float | None = None


def write_report(results: list[Result], out: Path, meta: dict, plotter=None) -> dict[str, Path]:
    """Write results.json, results.md and the PNGs of `plotter(results, out)` (default: one per suite); return
    their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    doc = {"version": RESULTS_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **meta,
           "results": [asdict(r) for r in results]}
    paths["json"].write_text(json.dumps(doc, indent=2, allow_nan=True) + "\n")
    paths["markdown"].write_text(markdown_table(results))
    for name, png in (plotter or plot)(results, out).items():
        paths[f"plot_{name}"] = png
    return paths


def versions() -> dict[str, str]:
    """Versions a result depends on (and the GPU, if any)."""
    import torch

    found = {"python": platform.python_version()}
    for name in ("paraphrase-pipe", "torch", "transformers", "lm_eval", "datasets"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    if torch.cuda.is_available():
        found["gpu"] = torch.cuda.get_device_name()
    return found


def markdown_table(results: list[Result]) -> str:
    """One row per (suite, task, length, position, metric), one column per model; suites, tasks and metrics in
    first-seen order, lengths and positions ascending (None first)."""
    models = list(dict.fromkeys(r.model for r in results))
    cells: dict[tuple, dict[str, Result]] = defaultdict(dict)
    for r in results:
        cells[(r.suite, r.task, r.length, r.position, r.metric)][r.model] = r
    rank = {name: {v: i for i, v in enumerate(dict.fromkeys(getattr(r, name) for r in results))}
            for name in ("suite", "task", "metric")}

    def order(key):
        suite, task, length, position, metric = key
        return (rank["suite"][suite], rank["task"][task], -1 if length is None else length,
                -1 if position is None else position, rank["metric"][metric])

    cells = dict(sorted(cells.items(), key=lambda kv: order(kv[0])))
    lines = ["| suite | task | length | position | metric | n | " + " | ".join(models) + " |",
             "|---|---|---:|---:|---|---:|" + "---:|" * len(models)]
    for (suite, task, length, position, metric), row in cells.items():
        n = "/".join(sorted({str(r.n) for r in row.values()}, key=int))
        values = [_fmt(row[m]) if m in row else "–" for m in models]
        lines.append(f"| {suite} | {task} | {_blank(length)} | {_blank(position)} | {metric} | {n} | "
                     + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _fmt(r: Result) -> str:
    text = f"{r.value:.4g}" if math.isfinite(r.value) else str(r.value)
    return text + (f" ± {r.stderr:.2g}" if r.stderr is not None and math.isfinite(r.stderr) else "")


def _blank(value) -> str:
    return "" if value is None else f"{value:g}"


def plot(results: list[Result], out: Path) -> dict[str, Path]:
    """One figure per suite: a panel per (task, metric); lines over length (or position) per model, bars where a
    task has no length axis. Every number, plotted or not, is in results.json and results.md."""
    written = {}
    for suite in dict.fromkeys(r.suite for r in results):
        panels = _panels([r for r in results if r.suite == suite])
        fig, axes = panel_grid(len(panels))
        for ax, (title, (xlabel, series)) in zip(axes, panels.items()):
            _draw(ax, title, xlabel, series)
        written[suite] = save_figure(fig, out / f"{suite}.png")
    return written


def panel_grid(n: int, width: float = 5, height: float = 3.6, cols: int = 3):
    """A figure with `n` axes, `cols` to a row (matplotlib's headless backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = max(1, min(cols, n))
    rows = max(1, math.ceil(n / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat)[:n]


def save_figure(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _panels(results: list[Result]) -> dict[str, tuple[str, dict[str, list[tuple[float, float]]]]]:
    """{panel title: (x label, {model: [(x, y)]})}; the x axis is length when the task sweeps length, else the
    position (needle depth or token bucket, drawn at the longest length only), else none (a bar per model)."""
    longest: dict[tuple, int] = {}
    for r in results:
        if r.position is not None and r.length is not None:
            longest[(r.task, r.metric)] = max(r.length, longest.get((r.task, r.metric), r.length))
    panels: dict[str, tuple[str, dict]] = {}
    for r in results:
        if r.metric in _NOT_PLOTTED:
            continue
        if r.length is not None and r.position is None:
            title, xlabel, x = f"{r.task} · {r.metric}", "input tokens", r.length
        elif r.position is not None:
            if r.length is not None and r.length != longest[(r.task, r.metric)]:
                continue
            where = f" @ {r.length} tokens" if r.length is not None else ""
            title, xlabel, x = f"{r.task} · {r.metric} by position{where}", "position", r.position
        else:
            title, xlabel, x = f"{r.task} · {r.metric}", "", None
        panels.setdefault(title, (xlabel, defaultdict(list)))[1][r.model].append((x, r.value))
    return panels


def _draw(ax, title: str, xlabel: str, series: dict[str, list[tuple]]) -> None:
    ax.set_title(title, fontsize=9)
    if not xlabel:
        names = list(series)
        ax.bar(range(len(names)), [pts[0][1] for pts in series.values()], color=[f"C{i}" for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=20, fontsize=8)
        return
    for model, pts in series.items():
        xs, ys = zip(*sorted(pts))
        ax.plot(xs, ys, marker="o", label=model)
    if xlabel == "input tokens" and len({p[0] for pts in series.values() for p in pts}) > 1:
        ax.set_xscale("log", base=2)
    if "perplexity" in title:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel, fontsize=8)
    ax.legend(fontsize=7)
