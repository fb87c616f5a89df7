"""Sample composition: each layout yields exactly the expected text, replay samples are chosen by id, and
`text_tokens` is the exact token count of the composed text."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow as pa
import pytest

from paraphrase_pipe.config import BuildConfig, ConfigError, resolve_config
from paraphrase_pipe.stages.compose import compose_rows
from paraphrase_pipe.tokenizer import load_tokenizer

from .conftest import TOK, rows_table

ORIGINAL = "Vim will open the GUI window and no longer use the terminal."
PARAPHRASE = "Vim then opens the GUI window and stops using the terminal."


def compose(layout: str, rows: pa.Table | None = None, **cfg) -> list[dict]:
    config = BuildConfig(tokenizer=TOK, engine="vllm", layout=layout, **cfg)
    rows = rows if rows is not None else rows_table([{"doc_id": "d", "kind": "paraphrase", "original": ORIGINAL, "paraphrase": PARAPHRASE}])
    return compose_rows(rows, {"engine": "test"}, layout=config.layout, tokenizer=load_tokenizer(config.tokenizer), mix=config.mix,
                        seed=config.seed, options=config.compose_options).to_pylist()


@pytest.mark.parametrize(
    "layout, expected",
    [
        ("orig+para", ORIGINAL + "\n\n" + PARAPHRASE),
        ("para+orig", PARAPHRASE + "\n\n" + ORIGINAL),
        ("para", PARAPHRASE),
        ("orig", ORIGINAL),
        ("repeat", ORIGINAL + "\n\n" + ORIGINAL),
    ],
)
def test_layouts_produce_the_exact_text(layout, expected, tokenizer):
    [row] = compose(layout)
    assert row["text"] == expected and row["layout"] == layout
    assert row["original"] == ORIGINAL and row["paraphrase"] == PARAPHRASE  # sources keep their own columns
    assert row["text_tokens"] == len(tokenizer.backend.encode(expected, add_special_tokens=False).ids)


def test_separator_is_configurable():
    [row] = compose("orig+para", compose_options={"separator": "\n<|paraphrase|>\n"})
    assert row["text"] == f"{ORIGINAL}\n<|paraphrase|>\n{PARAPHRASE}"


def test_mix_replays_originals_deterministically_by_id(pairs):
    table = rows_table(pairs * 20)  # 600 distinct chunk ids
    first = compose("orig+para", table, mix=0.3)
    again = compose("orig+para", table.take(list(reversed(range(len(table))))), mix=0.3)
    replay = {r["chunk_id"] for r in first if r["layout"] == "orig"}
    assert replay == {r["chunk_id"] for r in again if r["layout"] == "orig"}  # order/worker independent
    assert 0.24 < len(replay) / len(first) < 0.36
    for row in first:
        assert row["text"] == (row["original"] if row["layout"] == "orig" else row["original"] + "\n\n" + row["paraphrase"])
    assert len({r["sample_id"] for r in first}) == len(first)
    assert not any(r["layout"] == "orig" for r in compose("orig+para", table, mix=0.0))


def test_rows_without_paraphrase_cannot_take_a_paraphrase_layout(pairs):
    table = rows_table(pairs[:2])
    table = table.set_column(table.column_names.index("paraphrase"), "paraphrase", pa.array([None, pairs[1]["paraphrase"]], pa.string()))
    out = compose("para", table)
    assert [r["reject_reason"] for r in out] == ["no_paraphrase", None]
    assert out[0]["text_tokens"] is None and out[1]["text_tokens"] > 0
    with pytest.raises(ConfigError, match="needs paraphrases; engine 'none'"):
        resolve_config(layout="orig+para")
    with pytest.raises(ConfigError, match="layout"):
        resolve_config(layout="orig+paraphrase", engine="vllm")


def test_build_flags_layout_and_mix(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    cli = [sys.executable, "-m", "paraphrase_pipe.cli", "build", "--chunk", "128", "--tokenizer", TOK, "--limit", "8", "--workers", "1", "--no-progress"]
    subprocess.run([*cli, "-o", str(tmp_path / "out"), "--layout", "repeat", "--mix", "0.5"], check=True, capture_output=True, env=env)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["config"]["layout"], manifest["config"]["mix"]) == ("repeat", 0.5)
    rows = pa.concat_tables([pa.ipc.open_file(tmp_path / "out" / s["path"]).read_all() for s in manifest["shards"]]).to_pylist()
    layouts = {r["layout"] for r in rows}
    assert layouts == {"repeat", "orig"} and sum(r["text_tokens"] for r in rows) == manifest["counts"]["tokens"]
    bad = subprocess.run([*cli, "-o", str(tmp_path / "bad"), "--layout", "orig+para"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "needs paraphrases" in bad.stderr and "Traceback" not in bad.stderr
