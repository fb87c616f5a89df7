"""The data card: `OUT/README.md` in Hugging Face dataset-card format, rendered from `data_cards/template.md`.

Everything on it is read back from the output itself (manifest + shards), so `paraphrase-pipe card OUT` can
regenerate it at any time: YAML front matter with `configs:` (so `datasets.load_dataset(OUT)` works) and the
license inherited from the source, then source, tokenizer, engine, counts, rejects by reason, token statistics,
score distributions before/after filtering (+ `scores.png`), token-distribution drift (+ `drift.json`),
throughput and the full resolved config. Shards are read one at a time, so the card never needs the whole build in memory.

Parts: `license` (what the source's terms are), `statistics` (reading the output back), `divergence` (the
token-distribution measure of paraphrases against their sources, a corpus measure, not a filter), `plots`,
`render` (front matter, template, `write_card`), `command` (the CLI entry; nothing else here imports typer).
"""
from paraphrase_pipe.card.license import source_license
from paraphrase_pipe.card.render import write_card
from paraphrase_pipe.card.statistics import CardError, gather

__all__ = ["CardError", "gather", "source_license", "write_card"]
