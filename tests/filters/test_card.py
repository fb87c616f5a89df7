"""The data card and the output contract: real builds (CLI, and in-process with the fixture pairs through every
gate), the card renders, and `datasets.load_dataset(OUT)` reads the output directory."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from paraphrase_pipe.build import run_build
from paraphrase_pipe.card import source_license
from paraphrase_pipe.config import resolve_config
from paraphrase_pipe.engines import REGISTRY

from .conftest import TOK


def front_matter(out) -> dict:
    return yaml.safe_load((out / "README.md").read_text().split("---")[1])


def load(out, name: str | None = None):
    datasets = pytest.importorskip("datasets")
    return datasets.load_dataset(str(out), name, split="train", cache_dir=str(out.parent / "hf-cache"))


def test_cli_build_writes_a_card_that_datasets_loads(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "--chunk", "128", "--tokenizer", TOK, "--limit", "30", "-o", str(out), "--no-progress"]
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    manifest = json.loads((out / "manifest.json").read_text())
    meta = front_matter(out)
    assert meta["configs"][0]["data_files"] == [{"split": "train", "path": "shards/*.arrow"}]
    assert meta["license"] == "other" and meta["license_name"]  # the bundled sample's Vim + PSF licenses
    ds = load(out)
    assert ds.num_rows == manifest["counts"]["accepted"] > 0
    assert sum(ds["text_tokens"]) == manifest["counts"]["tokens"]  # the manifest counts training tokens
    card = (out / "README.md").read_text()
    assert f"| accepted samples | {ds.num_rows:,} |" in card and "no closeness filter ran" in card
    # `paraphrase-pipe card` regenerates the same card
    before = card
    (out / "README.md").unlink()
    subprocess.run([sys.executable, "-m", "paraphrase_pipe.cli", "card", str(out)], check=True, capture_output=True, env=env)
    assert (out / "README.md").read_text() == before
    bad = subprocess.run([sys.executable, "-m", "paraphrase_pipe.cli", "card", str(tmp_path)], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "no manifest.json" in bad.stderr and "Traceback" not in bad.stderr


def build_from_pairs(pairs: list[dict], root: Path, **overrides) -> Path:
    """A real run_build over documents made of the fixture's originals, paraphrased by the pairs engine: the
    faithful paraphrases in one input file, the non-paraphrases in another. Paths are relative to `root`."""
    paraphrases = {}
    (root / "sample-pairs").mkdir(parents=True, exist_ok=True)
    for name, group in (("good.jsonl", [p for p in pairs if p["kind"] == "paraphrase"]), ("bad.jsonl", [p for p in pairs if p["kind"] != "paraphrase"])):
        records = [{"text": p["original"], "meta": {"redpajama_set_name": "RedPajamaBook"}} for p in group]
        (root / "sample-pairs" / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        paraphrases.update({f"{name}:{i}": p["paraphrase"] for i, p in enumerate(group)})
    (root / "paraphrases.json").write_text(json.dumps(paraphrases))
    # the chunks come from the bundled sample: its licenses, in a dataset card the build inherits them from
    (root / "sample-pairs" / "README.md").write_text("---\nlicense: other\nlicense_name: vim-license-and-psf-2.0\n---\n")
    values = dict(input=["sample-pairs"], output="out", tokenizer=TOK, chunk=256, min_chunk_tokens=8, engine="pairs",
                  engine_options={"paraphrases_file": "paraphrases.json"}, layout="orig+para", workers=1, progress=False)
    cwd = os.getcwd()
    os.chdir(root)  # recipes use relative paths; the card shows them as given
    try:
        run_build(resolve_config(None, **{**values, **overrides}))
    finally:
        os.chdir(cwd)
    return root / "out"


@pytest.fixture(scope="module")
def pairs_build(pairs, tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(REGISTRY, "pairs", "tests.filters.pairs_engine:PairsEngine")
        return build_from_pairs(pairs, tmp_path_factory.mktemp("pairs-build")), pairs


def test_filtered_build_card_scores_drift_and_loading(pairs_build, tokenizer):
    out, pairs = pairs_build
    n_good = sum(p["kind"] == "paraphrase" for p in pairs)
    ds = load(out)
    assert ds.num_rows == n_good and set(ds["source"]) == {"good.jsonl"}
    for row in ds:
        assert row["text"] == row["original"] + "\n\n" + row["paraphrase"] and row["layout"] == "orig+para"
        assert row["score_semantic"] > 0.8
    rejected = load(out, "rejected")
    assert rejected.num_rows == len(pairs) - n_good
    assert set(rejected["reject_stage"]) == {"filter"}
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"]["rejects_by_reason"].values()) == len(pairs) - n_good
    assert manifest["config"]["filter_options"]["semantic"]["min"] == 0.8  # thresholds recorded

    assert front_matter(out)["license_name"] == "vim-license-and-psf-2.0"  # inherited from the input's card
    card = (out / "README.md").read_text()
    assert "![score histograms before and after filtering](scores.png)" in card
    assert (out / "scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for reason, n in manifest["counts"]["rejects_by_reason"].items():
        assert f"- `{reason}`: {n}" in card
    assert "| `score_semantic` | after | 16 |" in card
    assert "separator: \"\\n\\n\"" in card  # full resolved config, readable
    assert f"| accepted | {n_good} | bigram |" in card and "| rejected | 14 | unigram |" in card  # size-matched, with null
    # drift: per input shard and pooled over shards, against the originals of every paraphrased chunk
    from paraphrase_pipe.card import gather
    from paraphrase_pipe.card.divergence import Counts, js_divergence

    drift = gather(out)["drift"]
    assert json.loads((out / "drift.json").read_text()) == json.loads(json.dumps(drift))  # complete, machine-readable
    assert drift["per_source"]["bad.jsonl"]["accepted"] == 0 and drift["per_source"]["bad.jsonl"]["unigram"]["after"] is None
    good = drift["per_source"]["good.jsonl"]
    assert good["rows"] == good["accepted"] == n_good and good["bigram"]["before"] == good["bigram"]["after"]
    ids = lambda texts: [tokenizer.backend.encode(t, add_special_tokens=False).ids for t in texts]  # noqa: E731
    source = ids(list(ds["original"]) + list(rejected["original"]))
    for order, n in (("unigram", 1), ("bigram", 2)):
        after = js_divergence(Counts.of(ids(list(ds["paraphrase"])), n), Counts.of(source, n))
        before = js_divergence(Counts.of(ids(list(ds["paraphrase"]) + list(rejected["paraphrase"])), n), Counts.of(source, n))
        assert drift["overall"][order] == {"before": pytest.approx(before, abs=1e-6), "after": pytest.approx(after, abs=1e-6)}


def test_card_lists_the_largest_input_shards_and_points_to_drift_json(pairs_build, monkeypatch):
    from paraphrase_pipe.card import render as card

    out, _ = pairs_build
    monkeypatch.setattr(card, "DRIFT_ROWS", 1)
    text = card.write_card(out).read_text()
    monkeypatch.undo()
    card.write_card(out)  # leave the module's shared build as it was
    assert "| `bad.jsonl` |" not in text and "| `good.jsonl` | 16 | 16 |" in text
    assert "1 more input shards (the largest 1 are listed): every one is in `drift.json`." in text


@pytest.mark.parametrize("kinds", [("paraphrase",), ("near_copy", "unrelated", "truncated", "other_language")], ids=["no-rejects", "no-accepted"])
def test_card_configs_are_what_the_build_has(pairs, tmp_path, kinds):
    """`configs:` names only configs with rows (`datasets` cannot load an empty split, even from a zero-row Arrow
    file: "Instruction 'train' corresponds to no data"): a build without rejects has no `rejected` config, one with
    zero accepted rows no `train` split (a lone `rejected` config would be the default, and load_dataset(OUT,
    split="train") would return dead letters); each config that is listed loads, and the card says why a config or
    split is absent and how a script checks first."""
    datasets = pytest.importorskip("datasets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(REGISTRY, "pairs", "tests.filters.pairs_engine:PairsEngine")
        out = build_from_pairs([p for p in pairs if p["kind"] in kinds], tmp_path)
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    names = [c["config_name"] for c in front_matter(out)["configs"]]
    card = (out / "README.md").read_text()
    if kinds == ("paraphrase",):
        assert counts["rejected"] == 0 and names == ["default"]
        assert load(out).num_rows == counts["accepted"] > 0
        assert 'No "rejected" config: this build dead-lettered no rows (counts.rejected is 0' in card
        assert '"rejected" in datasets.get_dataset_config_names("out")' in card  # the name the build was given
        assert datasets.get_dataset_config_names(str(out)) == ["default"]  # the check the card gives
        with pytest.raises(ValueError, match="BuilderConfig 'rejected' not found"):  # the error the card names
            datasets.load_dataset(str(out), "rejected", split="train", cache_dir=str(tmp_path / "hf-cache"))
    else:
        assert counts["accepted"] == 0 and names == ["default", "rejected"]
        assert load(out, "rejected").num_rows == counts["rejected"] > 0
        assert "No train split: this build accepted no samples (counts.accepted is 0" in card
        with pytest.raises(ValueError, match='Unknown split "train"'):  # never dead letters as training data
            load(out)
        whole = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf-cache"))
        assert list(whole) == ["rejected"] and whole["rejected"].num_rows == counts["rejected"]
