"""`paraphrase-pipe eval`: every suite on local data for two models in one run, compared in one table; results.json,
results.md and the PNG plots are written; bad input gives one clear line and exit code 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from .conftest import FIXTURES
from paraphrase_pipe.cli import app


def _invoke(*args: str):
    result = CliRunner().invoke(app, ["eval", *args])
    return result, result.output  # stdout and stderr together


def test_all_suites_two_models_one_table(copy_dir, blind_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(FIXTURES / "lm_eval")  # the local lm-eval task reads its data relative to the cwd
    out = tmp_path / "results"
    jrt = FIXTURES / "jrt"
    result, text = _invoke(
        "--model", f"copy={copy_dir}", "--model", f"blind={blind_dir}", "--suite", "all", "--out", str(out),
        "--device", "cpu", "--lengths", "160,256",
        "--recall-data", f"swde={jrt / 'based-swde-v2'}", "--recall-data", f"nq={jrt / 'nq.jsonl'}",
        "--synthetic-n", "2", "--commonsense-tasks", "recall_mc_local", "--lm-eval-include", str(FIXTURES / "lm_eval"),
        "--longctx-data", str(FIXTURES / "pg19"), "--longctx-lengths", "64,128", "--longctx-windows", "2")
    assert result.exit_code == 0, text
    doc = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in doc["models"]] == ["copy", "blind"]
    assert {(t["model"], t["suite"]) for t in doc["timings"]} == {
        (m, s) for m in ("copy", "blind") for s in ("jrt", "synthetic", "commonsense", "longctx")}
    rows = doc["results"]
    assert {r["task"] for r in rows} == {"swde", "nq", "mqar", "phonebook", "passkey", "recall_mc_local", "pg19"}
    assert all({"model", "suite", "task", "length", "metric", "value", "n"} <= r.keys() for r in rows)

    def value(model, task, length, metric):
        (r,) = [r for r in rows if (r["model"], r["task"], r["length"], r["metric"], r["position"])
                == (model, task, length, metric, None)]
        return r["value"]

    for task, metric in (("swde", "contains"), ("mqar", "accuracy"), ("passkey", "accuracy")):
        assert (value("copy", task, 256, metric), value("blind", task, 256, metric)) == (1.0, 0.0)
    table = (out / "results.md").read_text()
    assert table.splitlines()[0] == "| suite | task | length | position | metric | n | copy | blind |"
    assert "| recall | mqar | 256 |  | accuracy |" in table and "| 1 | 0 |" in table
    for suite in ("recall", "commonsense", "longctx"):
        png = out / f"{suite}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", suite
        import matplotlib.image

        assert matplotlib.image.imread(png).shape[0] > 100


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/model"], "no such model directory"),
    (["--model", "runs/no/final"], "runs/no/final: no such model directory"),  # relative, never a hub look-up
    (["--model", "x", "--suite", "everything"], "--suite 'everything'"),
    (["--model", "x", "--lengths", "512,abc"], "--lengths"),
    (["--model", "x", "--synthetic-tasks", "mqar,sudoku"], "unknown ['sudoku']"),
    (["--model", "x", "--recall-data", "swde"], "TASK=PATH_OR_HUB_ID"),
])
def test_bad_input_is_one_clear_line(args, message, tmp_path):
    result, text = _invoke(*args, "--out", str(tmp_path), "--device", "cpu")
    assert result.exit_code == 2 and message in text and "Traceback" not in text, text


def test_a_preset_gets_the_vocabulary_of_the_tokenizer(tmp_path):
    result, text = _invoke("--model", "rand=preset:mamba-tiny", "--tokenizer", "builtin:gpt2", "--suite", "synthetic",
                           "--synthetic-tasks", "passkey", "--synthetic-n", "1", "--lengths", "64", "--device", "cpu",
                           "--out", str(tmp_path))
    assert result.exit_code == 0, text
    (model,) = json.loads((tmp_path / "results.json").read_text())["models"]
    assert model["name"] == "rand" and model["class"] == "HybridForCausalLM"
