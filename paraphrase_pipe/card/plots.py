"""`OUT/scores.png`: one histogram per score, before vs after filtering, with the gate's band."""
from __future__ import annotations

from pathlib import Path

import numpy as np


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
