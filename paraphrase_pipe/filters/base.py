"""What every pairwise gate shares: a score per (original, paraphrase) pair, a band [min, max] on it, and the
reject reason for each side of the band. Gates are pydantic models so a recipe validates them up front and their
thresholds land in the config hash and the manifest."""
from __future__ import annotations

from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, model_validator


class FilterError(ValueError):
    """A gate that cannot run as configured: missing package, model that does not load (message is user-facing)."""


class Gate(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    enabled: bool = True
    min: float | None = None
    max: float | None = None

    name: ClassVar[str]
    column: ClassVar[str]  # the score the band applies to
    low_reason: ClassVar[str | None] = None  # reject reason when score < min
    high_reason: ClassVar[str | None] = None  # reject reason when score > max
    extra_columns: ClassVar[dict[str, pa.DataType]] = {}  # other columns `score` returns

    def output_columns(self) -> dict[str, pa.DataType]:
        return {self.column: pa.float64(), **self.extra_columns}

    @model_validator(mode="after")
    def _band(self) -> Gate:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"{self.name}: min {self.min} > max {self.max}")
        return self

    def score(self, originals: list[str], paraphrases: list[str], tokenizer) -> dict[str, np.ndarray]:
        """Score columns for these pairs; must contain `column` (NaN = not applicable, never rejected)."""
        raise NotImplementedError

    def judge(self, scores: np.ndarray) -> list[tuple[str, str] | None]:
        """(reason, detail) for each score outside the band, None inside it."""
        verdicts: list[tuple[str, str] | None] = []
        for s in scores:
            if self.min is not None and s < self.min:
                verdicts.append((self.low_reason or f"{self.name}_low", f"{self.column}={s:.4g} < min {self.min}"))
            elif self.max is not None and s > self.max:
                verdicts.append((self.high_reason or f"{self.name}_high", f"{self.column}={s:.4g} > max {self.max}"))
            else:
                verdicts.append(None)
        return verdicts


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_error(gate: str, what: str, name: str, exc: Exception) -> FilterError:
    """One readable line for a model that does not load (hub down, offline, bad path, missing package)."""
    if isinstance(exc, ImportError):
        return FilterError(f"{gate} gate needs `pip install 'paraphrase-pipe[filters]'` ({exc.name or exc} missing)")
    from paraphrase_pipe.hub import offline_hint

    return FilterError(f"{gate} gate: cannot load {what} {name!r}{offline_hint()}: {type(exc).__name__}: {exc}")
