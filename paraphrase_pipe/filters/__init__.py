"""Pairwise closeness gates (paraphrase vs its own source chunk), one per module, and their options.

`FilterOptions` is the typed `filter_options` of a build: one entry per gate, each with `enabled`, a band
`min`/`max` on its score and its own settings. Gates run cheapest first; a row rejected by one is not scored by
the later ones. Corpus-level drift (`drift.py`) is measured on the output, not gated.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from paraphrase_pipe.filters.base import FilterError, Gate
from paraphrase_pipe.filters.language import LanguageGate
from paraphrase_pipe.filters.length import LengthGate
from paraphrase_pipe.filters.lexical import LexicalGate
from paraphrase_pipe.filters.perplexity import PerplexityGate
from paraphrase_pipe.filters.semantic import SemanticGate


class FilterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: LengthGate = Field(default_factory=LengthGate)
    lexical: LexicalGate = Field(default_factory=LexicalGate)
    language: LanguageGate = Field(default_factory=LanguageGate)
    semantic: SemanticGate = Field(default_factory=SemanticGate)
    perplexity: PerplexityGate = Field(default_factory=PerplexityGate)

    def gates(self) -> list[Gate]:
        """The enabled gates, in run order (cheap to expensive)."""
        return [gate for name in type(self).model_fields if (gate := getattr(self, name)).enabled]


__all__ = ["FilterError", "FilterOptions", "Gate"]
