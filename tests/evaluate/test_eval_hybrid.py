"""Our hybrids (`paraphrase_pipe.models`) through the evaluation: reloaded from a directory by the Auto classes,
built from a preset spec, decoded in mixed-length batches with their cache exactly as one at a time, scored by
teacher forcing exactly as by decoding, and their NLL equal to their own loss."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from .conftest import FIXTURES
from paraphrase_pipe.cli import app
from paraphrase_pipe.evaluate.decode import greedy_generate, padding_is_exact
from paraphrase_pipe.evaluate.forced import span_matches
from paraphrase_pipe.evaluate.longctx import token_nll
from paraphrase_pipe.evaluate.synthetic import generate
from paraphrase_pipe.evaluate.tokens import encode


def test_hybrid_decoding_scoring_and_nll(load, parallel_dir, tokenizer):
    m = load(parallel_dir)
    assert type(m.model).__name__ == "HybridForCausalLM"
    assert padding_is_exact(m.model, tokenizer.pad_token_id)  # its padding becomes a separate document
    prompts = [encode(tokenizer, t) for t in ("The sky is", "Phone book:\nAnn B. Lee: 555-1234\nAnn B. Lee:",
                                             "There and back")]
    one_by_one = [greedy_generate(m.model, m.tokenizer, [p], max_new_tokens=3)[0] for p in prompts]
    assert greedy_generate(m.model, m.tokenizer, prompts, max_new_tokens=3) == one_by_one

    examples = generate("phonebook", tokenizer, 128, 3)
    forced = [hits[0] for hits in span_matches(m.model, [e.ids for e in examples], [e.spans for e in examples])]
    answers = [tokenizer.decode(e.ids[slice(*e.spans[0])]) for e in examples]
    decoded = greedy_generate(m.model, m.tokenizer, [e.ids[: e.spans[0][0]] for e in examples], max_new_tokens=16)
    assert forced == [d.startswith(a) for d, a in zip(decoded, answers)]

    seqs = examples[0].ids[:48], examples[1].ids[:48]
    with torch.no_grad():
        loss = m.model(torch.tensor(seqs), labels=torch.tensor(seqs)).loss
    assert token_nll(m.model, list(seqs), chunk=16).mean().item() == pytest.approx(loss.item(), rel=1e-5)


def test_cli_with_a_hybrid_directory_and_a_preset(parallel_dir, tokenizer_dir, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "--model", f"parallel={parallel_dir}", "--model", "preset:mamba-tiny", "--tokenizer",
        str(tokenizer_dir), "--suite", "synthetic", "--suite", "longctx", "--synthetic-tasks", "mqar",
        "--synthetic-n", "2", "--lengths", "96", "--longctx-data", str(FIXTURES / "pg19"), "--longctx-lengths", "64",
        "--longctx-windows", "2", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [(m["name"], m["class"]) for m in doc["models"]] == [("parallel", "HybridForCausalLM"),
                                                                ("mamba-tiny", "HybridForCausalLM")]
    assert {(r["model"], r["task"]) for r in doc["results"]} == {(m, t) for m in ("parallel", "mamba-tiny")
                                                                 for t in ("mqar", "pg19")}
