"""What a run shows and leaves behind: a progress bar, `metrics.jsonl`, TensorBoard events, `loss.png`.

Written by rank 0 only. On resume the jsonl is cut back to the checkpoint's step, so the file always tells
the history of the weights on disk, never of steps that a crash threw away.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

METRICS = "metrics.jsonl"


def read_metrics(path: Path) -> list[dict]:
    if not Path(path).is_file():
        return []
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


class Metrics:
    def __init__(self, out: Path, total_steps: int, start_step: int, tensorboard: bool, progress: bool):
        self.path = Path(out) / METRICS
        kept = [r for r in read_metrics(self.path) if r["step"] <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(self.path, "a")
        self.tb = _tensorboard(Path(out) / "tensorboard", start_step) if tensorboard else None
        self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                            disable=not progress)
        self.task = self.bar.add_task("train", total=total_steps, completed=start_step, info="")
        self.bar.start()
        self.last = (time.perf_counter(), 0)

    def log(self, row: dict) -> None:
        """One row: step and tokens always; loss/lr/val_loss/... as measured. tok/s is derived here."""
        now = time.perf_counter()
        if "loss" in row:
            then, tokens = self.last
            row["tok_per_s"] = round((row["tokens"] - tokens) / max(now - then, 1e-9), 1)
            self.last = (now, row["tokens"])
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()
        if self.tb is not None:
            for key, value in row.items():
                if key not in ("step", "tokens") and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, row["step"])
        info = "  ".join(f"{k} {_fmt(row[k])}" for k in ("loss", "val_loss", "lr", "tok_per_s") if row.get(k))
        self.bar.update(self.task, completed=row["step"], info=info or self.bar.tasks[0].fields["info"])

    def start_clock(self, tokens: int) -> None:
        self.last = (time.perf_counter(), tokens)

    def close(self) -> None:
        self.bar.stop()
        self.file.close()
        if self.tb is not None:
            self.tb.close()


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) and abs(value) < 1e-2 else f"{value:,.4g}"


def _tensorboard(path: Path, start_step: int):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is in the `train` extra
        print("tensorboard is not installed (pip install 'paraphrase-pipe[train]'); metrics go to jsonl only")
        return None
    return SummaryWriter(str(path), purge_step=start_step + 1 if start_step else None)


def plot(metrics_path: Path, png: Path) -> Path:
    """Training and validation loss against tokens seen."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("loss", "-"), ("val_loss", "o-")):
        points = [(r["tokens"], r[key]) for r in rows if r.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=3)
    ax.set_xlabel("tokens")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png
