"""Pairwise closeness gates (paraphrase vs its own source chunk), one per module, and their options.

Gates that catch a paraphrase that lost or altered content (omissions, changed numbers and names) sit beside
those for closeness: `lexical.RecallGate`, `facts`, `sections`.

`FilterOptions` is the typed `filter_options` of a build: one entry per gate, each with `enabled`, a band
`min`/`max` on its score and its own settings. Gates run cheapest first; a row rejected by one is not scored by
the later ones. Corpus-level drift (`drift.py`) is measured on the output, not gated.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from paraphrase_pipe.filters.base import FilterError, Gate
from paraphrase_pipe.filters.facts import FactChangeGate, FactCoverageGate
from paraphrase_pipe.filters.language import LanguageGate
from paraphrase_pipe.filters.length import LengthGate
from paraphrase_pipe.filters.lexical import LexicalGate, RecallGate
from paraphrase_pipe.filters.perplexity import PerplexityGate
from paraphrase_pipe.filters.sections import SectionGate
from paraphrase_pipe.filters.semantic import SemanticGate


class FilterOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    length: LengthGate = Field(default_factory=LengthGate)
    lexical: LexicalGate = Field(default_factory=LexicalGate)
    recall: RecallGate = Field(default_factory=RecallGate)
    language: LanguageGate = Field(default_factory=LanguageGate)
    fact_changes: FactChangeGate = Field(default_factory=FactChangeGate)
    facts: FactCoverageGate = Field(default_factory=FactCoverageGate)
    semantic: SemanticGate = Field(default_factory=SemanticGate)
    sections: SectionGate = Field(default_factory=SectionGate)
    perplexity: PerplexityGate = Field(default_factory=PerplexityGate)

    def gates(self) -> list[Gate]:
        """The enabled gates, in run order (cheap to expensive)."""
        return [gate for name in type(self).model_fields if (gate := getattr(self, name)).enabled]


__all__ = ["FilterError", "FilterOptions", "Gate"]
