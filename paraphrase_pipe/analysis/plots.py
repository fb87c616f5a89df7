"""Figures of `paraphrase-pipe analyze`: similarity across depth (per-block curve, one heat map per model) and the
recall drop per removed block or branch (bars per block, one group per model)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from paraphrase_pipe.evaluate.report import Result, panel_grid, save_figure


def analysis_plots(results: list[Result], out: Path, matrices: dict[str, list[list[float]]]) -> dict[str, Path]:
    from matplotlib.ticker import MaxNLocator

    written = {}
    curves = _series([r for r in results if r.suite == "similarity"])
    if curves or matrices:
        fig, axes = panel_grid(len(curves) + len(matrices))
        for ax, (title, series) in zip(axes, curves.items()):
            for model, pts in series.items():
                ax.plot(*zip(*sorted(pts)), marker="o", label=model)
            ax.set(title=title, xlabel="block", ylim=(min(0.0, ax.get_ylim()[0]), 1.02))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
        for ax, (model, matrix) in zip(axes[len(curves):], matrices.items()):
            image = ax.imshow(matrix, vmin=-1, vmax=1, cmap="RdBu_r", origin="lower")
            ax.set(title=f"{model}: cosine between residual states", xlabel="state (0 = input of block 0)",
                   ylabel="state")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            fig.colorbar(image, ax=ax)
        written["similarity"] = save_figure(fig, out / "similarity.png")
    drops = _series([r for r in results if r.suite == "ablation" and r.position is not None])
    if drops:
        fig, axes = panel_grid(len(drops))
        for ax, (title, series) in zip(axes, drops.items()):
            width = 0.8 / len(series)
            for k, (model, pts) in enumerate(series.items()):
                xs, ys = zip(*sorted(pts))
                ax.bar([x + (k - (len(series) - 1) / 2) * width for x in xs], ys, width=width, label=model)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set(title=f"{title}: accuracy lost without the block", xlabel="block", ylabel="recall drop")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
        written["ablation"] = save_figure(fig, out / "ablation.png")
    return written


def _series(results: list[Result]) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """{"task · metric": {model: [(block, value)]}}"""
    panels: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        panels[f"{r.task} · {r.metric}"][r.model].append((r.position, r.value))
    return panels
