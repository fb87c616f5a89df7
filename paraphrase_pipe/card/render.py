"""Rendering `OUT/README.md`: YAML front matter (license, `configs:` for `datasets.load_dataset`), the Jinja
template `data_cards/template.md`, and `OUT/drift.json` / `OUT/scores.png` beside it."""
from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from paraphrase_pipe.card.license import CARD
from paraphrase_pipe.card.plots import plot_scores
from paraphrase_pipe.card.statistics import CardError, gather

TEMPLATE = Path(__file__).resolve().parents[2] / "data_cards" / "template.md"
HISTOGRAM, DRIFT = "scores.png", "drift.json"
DRIFT_ROWS = 20  # input shards listed on the card (largest first); drift.json has them all
SIZES = [(1e3, "n<1K"), (1e4, "1K<n<10K"), (1e5, "10K<n<100K"), (1e6, "100K<n<1M"), (1e7, "1M<n<10M"), (1e8, "10M<n<100M"), (1e9, "100M<n<1B")]


def front_matter(ctx: dict) -> str:
    n = ctx["counts"].get("accepted", 0)
    # Only what has rows: `datasets` cannot load an empty split, and a default config with no files breaks every
    # config. With no accepted rows the default config holds a `rejected` split and no `train`: a lone `rejected`
    # config would be the default, and load_dataset(OUT, split="train") would hand out dead letters to train on.
    configs = []
    if ctx["has_accepted"]:
        configs.append({"config_name": "default", "default": True, "data_files": [{"split": "train", "path": "shards/*.arrow"}]})
    elif ctx["has_rejected"]:
        configs.append({"config_name": "default", "default": True, "data_files": [{"split": "rejected", "path": "rejected/*.arrow"}]})
    if ctx["has_rejected"]:
        configs.append({"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected/*.arrow"}]})
    meta = {k: ctx["license"][k] for k in ("license", "license_name", "license_link") if ctx["license"].get(k)}
    meta.update(
        pretty_name=ctx["title"],
        task_categories=["text-generation"],
        size_categories=[next((label for limit, label in SIZES if n < limit), "n>1B")],
        tags=["paraphrase", "synthetic", "continual-pretraining", "memory-recall", "paraphrase-pipe"],
        configs=configs,
    )
    return to_yaml(meta)


class _Dumper(yaml.SafeDumper):
    """Strings with line breaks (separators, prompts) as one double-quoted line with escapes."""


_Dumper.add_representer(str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style='"' if "\n" in v else None))


def to_yaml(data) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


def render(ctx: dict, template: Path) -> str:
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, finalize=lambda v: "—" if v is None else v)
    return env.from_string(template.read_text()).render(**ctx)


def write_card(out: Path, template: Path | None = None) -> Path:
    """Render OUT/README.md, OUT/drift.json and (when anything was scored) OUT/scores.png; return the card's path."""
    out = Path(out)
    template = Path(template) if template else TEMPLATE
    if not template.is_file():
        raise CardError(f"card template not found: {template} (pass --template, see data_cards/)")
    ctx = gather(out)
    config = ctx["config"]
    ctx["title"] = f"paraphrase-pipe {config['layout']}, chunk {config['chunk']}"
    ctx["out_name"] = str(out)
    ctx["histogram"] = HISTOGRAM if plot_scores(ctx["score_arrays"], ctx["gates"], out / HISTOGRAM) else None
    per_source = ctx["drift"]["per_source"]
    ctx["drift_shown"] = dict(sorted(per_source.items(), key=lambda kv: -kv[1]["rows"])[:DRIFT_ROWS])
    ctx["drift_hidden"] = len(per_source) - len(ctx["drift_shown"])
    (out / DRIFT).write_text(json.dumps(ctx["drift"], indent=1))
    ctx["front_matter"] = front_matter(ctx)
    ctx["config_yaml"] = to_yaml(config)
    path = out / CARD
    tmp = path.with_name(f".{CARD}.tmp-{os.getpid()}")  # atomic: a kill mid-write leaves the old card or none
    tmp.write_text(render(ctx, template))
    os.replace(tmp, path)
    return path
