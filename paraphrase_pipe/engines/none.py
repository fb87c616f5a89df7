"""`none`: the engine that paraphrases nothing. The pipeline runs end to end without an LLM and yields the
original-only dataset (the paper's "original data" baseline)."""
from __future__ import annotations

from typing import Any

from paraphrase_pipe.engines.base import Generation


class NoParaphraseEngine:
    name = "none"
    placement = "worker"

    def __init__(self, **options: Any):
        if options:
            raise ValueError(f"engine 'none' takes no options, got {sorted(options)}")

    def identity(self) -> dict[str, Any]:
        return {"engine": "none"}

    def generate(self, chunks: list[dict[str, Any]]) -> list[Generation]:
        return [Generation(paraphrase=None, provenance={"engine": "none"}) for _ in chunks]

    def close(self) -> None:
        pass
