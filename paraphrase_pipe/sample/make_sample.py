"""Rebuild the bundled sample corpus (kept for provenance; the package ships its output).

Real, redistributable English text found on a Debian + CPython machine, written in SlimPajama's exact
record format (`{"text": ..., "meta": {"redpajama_set_name": ...}}`, zstd-compressed JSON lines):
  * Vim user manual sections (Vim license)            -> RedPajamaBook   (a book-length manual)
  * Python Language Reference topics (pydoc_data, PSF) -> RedPajamaWikipedia (reference prose)
  * CPython standard-library modules (PSF)            -> RedPajamaGithub (source code)
Run: python paraphrase_pipe/sample/make_sample.py
"""
import json
import random
import re
import sys
from pathlib import Path

import zstandard

VIM_DOCS = Path("/usr/share/vim/vim90/doc")
STDLIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
OUT = Path(__file__).with_name("example_train_0.jsonl.zst")


def vim_sections():
    for path in sorted(VIM_DOCS.glob("usr_[0-9]*.txt")):
        parts = re.split(r"\n={20,}\n", path.read_text(encoding="utf-8"))
        for part in parts[1:]:
            text = part.split("\n" + "-" * 20)[0].strip()
            if len(text) > 400:
                yield text, "RedPajamaBook"


def reference_topics():
    from pydoc_data.topics import topics

    for key in sorted(topics):
        if len(topics[key]) > 400:
            yield topics[key].strip(), "RedPajamaWikipedia"


def stdlib_modules(n=40):
    files = sorted(p for p in STDLIB.glob("*.py") if 3_000 < p.stat().st_size < 16_000)
    for path in files[:n]:
        yield path.read_text(encoding="utf-8"), "RedPajamaGithub"


def main():
    records = [*vim_sections(), *reference_topics(), *stdlib_modules()]
    random.Random(0).shuffle(records)
    lines = [json.dumps({"text": t, "meta": {"redpajama_set_name": s}}, ensure_ascii=False) for t, s in records]
    OUT.write_bytes(zstandard.ZstdCompressor(level=19).compress(("\n".join(lines) + "\n").encode()))
    print(f"{len(records)} documents -> {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
