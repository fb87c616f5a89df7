"""The license a build inherits from its source: the `license` of the nearest dataset card at or above the input."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

CARD = "README.md"
# The bundled sample corpus (paraphrase_pipe/sample/make_sample.py): Vim manual + Python docs/stdlib.
SAMPLE_LICENSE = {"license": "other", "license_name": "vim-license-and-psf-2.0", "note": "bundled sample: Vim user manual (Vim license) and CPython docs/stdlib (PSF-2.0)"}


def _front_matter(readme: Path) -> dict | None:
    text = readme.read_text(errors="replace")
    if not text.startswith("---"):
        return None
    try:
        data = yaml.safe_load(text.split("---", 2)[1])
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def source_license(inputs: list[str]) -> dict:
    """The license of the source: the `license` of the nearest dataset card (README.md with YAML front matter)
    at or above each input — what a hub download of SlimPajama or any HF dataset carries."""
    if not inputs:
        return SAMPLE_LICENSE
    for item in inputs:
        path = Path(item.split("*")[0]).resolve()
        for directory in [path, *path.parents][:5]:
            readme = directory / CARD
            meta = _front_matter(readme) if readme.is_file() else None
            if meta is None:
                continue
            if meta.get("license"):
                found = {"license": meta["license"], "note": f"inherited from {os.path.relpath(readme)}"}
                found.update({k: meta[k] for k in ("license_name", "license_link") if meta.get(k)})
                return found
            name = meta.get("pretty_name", directory.name)
            return {"license": "other", "license_name": "same-as-source", "note": f"the terms of the source ({name}, {os.path.relpath(readme)}) apply; its card names no license"}
    return {"license": "unknown", "note": "no dataset card with a license was found next to the input; the source's terms apply"}
