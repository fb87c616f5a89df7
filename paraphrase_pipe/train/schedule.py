"""Learning rate as a pure function of the step: re-warm, then cosine or warmup-stable-decay to a floor.

Continual training starts from a model whose optimizer state is gone, so the LR is re-warmed from zero;
being a pure function of the step, the schedule needs no state of its own to resume exactly.
"""
from __future__ import annotations

import math


def lr_at(step: int, total: int, lr: float, warmup: int, schedule: str = "cosine", min_ratio: float = 0.1,
          decay_fraction: float = 0.2) -> float:
    """LR for optimizer step `step` (0-based) of `total`."""
    floor = lr * min_ratio
    if step < warmup:
        return lr * (step + 1) / warmup
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
        return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay_steps = max(1, min(total - warmup, round(decay_fraction * total)))  # the run's last share
        decay_start = total - decay_steps
        if step < decay_start:
            return lr
        progress = min(1.0, (step - decay_start + 1) / decay_steps)
        return floor + (lr - floor) * (1 - progress)
    raise ValueError(f"unknown schedule {schedule!r} (cosine | wsd | constant)")
