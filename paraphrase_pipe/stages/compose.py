"""Training-sample composition: the `text` column trainers read, built from the original and its paraphrase.

Layouts (what one sample's text is):
  orig+para  original, separator, paraphrase      (the paper's pairing: the model relates a text to its rewrite)
  para+orig  paraphrase, separator, original
  para       paraphrase only
  orig       original only                        (the baseline; also every replay sample)
  repeat     original, separator, original        (controls for "seeing the text twice" without a rewrite)
`mix` turns that fraction of samples into original-only replay samples, chosen by a hash of the chunk id (same
rows whatever the executor or worker count). `text_tokens` counts the composed text with the build tokenizer, so
the manifest counts training tokens. Original, paraphrase and scores stay in their own columns.
"""
from __future__ import annotations

from typing import Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from paraphrase_pipe.ids import sample_id, stable_hash
from paraphrase_pipe.schema import rejoin, split_live
from paraphrase_pipe.tokenizer import LoadedTokenizer

Layout = Literal["orig+para", "para+orig", "para", "orig", "repeat"]
PARTS: dict[str, tuple[str, ...]] = {
    "orig+para": ("original", "paraphrase"),
    "para+orig": ("paraphrase", "original"),
    "para": ("paraphrase",),
    "orig": ("original",),
    "repeat": ("original", "original"),
}
NEEDS_PARAPHRASE = frozenset(name for name, parts in PARTS.items() if "paraphrase" in parts)
REPLAY_LAYOUT = "orig"


class ComposeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    separator: str = "\n\n"  # between the two parts of orig+para, para+orig and repeat


def compose_text(row: dict, layout: str, separator: str) -> str:
    return separator.join(row[part] for part in PARTS[layout])


def is_replay(chunk: str, mix: float, seed: int) -> bool:
    """Deterministic by id: a uniform number in [0, 1) from the chunk id's hash, below `mix`."""
    return mix > 0 and int(stable_hash(chunk, "replay", seed, size=8), 16) / 2**64 < mix


def compose_rows(rows: pa.Table, generation: dict, *, layout: Layout, tokenizer: LoadedTokenizer, mix: float = 0.0,
                 seed: int = 0, options: ComposeOptions | None = None) -> pa.Table:
    """Add `layout`, `text`, `sample_id` and `text_tokens` to the live rows; `generation` (the engine's identity)
    is part of every sample id."""
    separator = (options or ComposeOptions()).separator
    live, rest = split_live(rows)
    for row in live:
        row_layout = REPLAY_LAYOUT if is_replay(row["chunk_id"], mix, seed) else layout
        if row_layout in NEEDS_PARAPHRASE and row["paraphrase"] is None:
            row.update(reject_stage="compose", reject_reason="no_paraphrase", reject_detail=f"layout {row_layout} needs a paraphrase")
            continue
        row["layout"] = row_layout
        row["text"] = compose_text(row, row_layout, separator)
        row["sample_id"] = sample_id(row["chunk_id"], layout=row_layout, generation=generation)
    # `orig` text is the chunk itself, whose exact count the chunker already has: only other layouts re-tokenize
    composed = [row for row in live if row["reject_reason"] is None and row["layout"] != "orig"]
    counts = dict(zip(map(id, composed), tokenizer.count([row["text"] for row in composed])))
    for row in live:
        if row["reject_reason"] is not None:
            row["text_tokens"] = None
        else:
            row["text_tokens"] = row["n_tokens"] if row["layout"] == "orig" else counts[id(row)]
    schema = rows.schema.append(pa.field("text_tokens", pa.int32())) if "text_tokens" not in rows.column_names else rows.schema
    return rejoin(live, rest, schema, rows)
