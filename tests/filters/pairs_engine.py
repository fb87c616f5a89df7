"""A paraphrase engine that answers with hand-written paraphrases (a JSON file: doc_id -> text), so a whole
`run_build` — filter, compose, shards, manifest, card — runs on real text pairs without an LLM."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from paraphrase_pipe.engines.base import Generation


class PairsEngine:
    name = "pairs"
    placement = "worker"

    def __init__(self, paraphrases_file: str):
        self.paraphrases = json.loads(Path(paraphrases_file).read_text())

    def identity(self) -> dict[str, Any]:
        return {"engine": "pairs", "model": "hand-written", "template": "fixture"}

    def generate(self, chunks: list[dict[str, Any]]) -> list[Generation]:
        return [
            Generation(paraphrase=self.paraphrases[c["doc_id"]], finish_reason="stop", provenance=self.identity())
            for c in chunks
        ]

    def close(self) -> None:
        pass
