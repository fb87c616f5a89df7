"""Block similarity and block/branch ablation: known answers on a two-block model (a lookup block and a no-op
block), cross-checks against Hugging Face's hidden states and our hybrids' own ablation, and the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from paraphrase_pipe.analysis.ablation import Unit, recall_drop, removed, units
from paraphrase_pipe.analysis.blocks import block_list, capture, skip_blocks
from paraphrase_pipe.analysis.similarity import block_similarity
from paraphrase_pipe.cli import app
from paraphrase_pipe.evaluate.synthetic import generate

from .layered_lm import save_layered


@pytest.fixture(scope="module")
def layered_dir(tokenizer, tmp_path_factory):
    return save_layered(tokenizer, tmp_path_factory.mktemp("layered"))


def test_known_answers_on_a_lookup_block_and_a_no_op_block(load, layered_dir, tokenizer):
    m = load(layered_dir)
    seqs = [e.ids for e in generate("phonebook", tokenizer, 160, 3)]
    sim = block_similarity(m.model, seqs, batch_tokens=200)
    assert sim.tokens == sum(map(len, seqs)) and sim.branches == {}
    assert sim.adjacent[1] == pytest.approx(1.0)  # the no-op block
    # the lookup block adds 20 x a one-hot in channels orthogonal to its input
    assert sim.adjacent[0] == pytest.approx(1 / math.sqrt(1 + 20.0 ** 2), rel=1e-5)
    assert sim.matrix[0][2] == pytest.approx(sim.adjacent[0]) and sim.matrix[1][0] == pytest.approx(sim.matrix[0][1])

    rows = recall_drop(m.model, tokenizer, "layered", tasks=("phonebook", "mqar"), length=160, n=3)
    got = {(r.task, r.metric, r.position): r.value for r in rows}
    assert got[("phonebook", "accuracy", None)] == 1.0 and got[("mqar", "accuracy", None)] == 1.0
    assert got[("phonebook", "drop", 0)] == 1.0 and got[("mqar", "drop", 0)] == 1.0  # recall lives in block 0
    assert got[("phonebook", "drop", 1)] == 0.0 and got[("mqar", "drop", 1)] == 0.0
    assert units(m.model) == [Unit(0), Unit(1)]  # no branches to remove in this model


def test_hooks_agree_with_hugging_face_hidden_states(load, llama_dir):
    model = load(llama_dir).model
    ids = torch.randint(1, 500, (2, 12), generator=torch.Generator().manual_seed(0))
    assert block_list(model) is model.model.layers
    with torch.no_grad(), capture(model) as states:
        reference = model(ids, output_hidden_states=True).hidden_states
    n = len(model.model.layers)
    for ours, theirs in zip(states[:n], reference[:n]):  # HF's last entry is after the final norm
        torch.testing.assert_close(ours, theirs)
    with torch.no_grad(), skip_blocks(model, [0, 1]), capture(model) as states:
        model(ids)
    torch.testing.assert_close(states[2], states[0])  # every block skipped: the stream is the embeddings


def test_hybrid_branches_and_ablation_match_the_models_own(load, parallel_dir, tokenizer):
    model = load(parallel_dir).model
    n = model.config.n_layer
    assert units(model) == [Unit(i) for i in range(n)] + [Unit(i, b) for i in range(n) for b in ("ssm", "attn")]
    ids = torch.tensor([e.ids[:64] for e in generate("mqar", tokenizer, 160, 2)])
    with torch.no_grad():
        for unit, config_field in ((Unit(1), {"layers": [1]}), (Unit(0, "attn"), {"branches": ["0.attn"]})):
            with removed(model, unit):
                ours = model(ids).logits
            with model.ablate(**config_field):
                theirs = model(ids).logits
            torch.testing.assert_close(ours, theirs)
            assert not torch.allclose(ours, model(ids).logits)  # the unit did matter
        branches = model.forward_hidden(ids)["branch_outputs"]
    sim = block_similarity(model, ids.tolist(), batch_tokens=64)
    for layer, out in branches.items():
        expected = torch.nn.functional.cosine_similarity(out["ssm"].flatten(0, 1), out["attn"].flatten(0, 1)).mean()
        assert sim.branches[layer] == pytest.approx(expected.item(), abs=1e-5)
    assert len(sim.adjacent) == n and all(-1 <= v <= 1 for v in sim.adjacent)


def test_analyze_command(layered_dir, parallel_dir, tmp_path):
    out = tmp_path / "analysis"
    result = CliRunner().invoke(app, ["analyze", "--model", f"layered={layered_dir}", "--model",
                                      f"parallel={parallel_dir}", "--tasks", "phonebook", "--length", "96", "--n",
                                      "1", "--device", "cpu", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    assert [(m["name"], m["block_kinds"]) for m in doc["models"]] == [("layered", "BB"), ("parallel", "PP")]
    assert len(doc["similarity_matrices"]["parallel"]) == 3
    drops = {(r["model"], r["metric"], r["position"]): r["value"] for r in doc["results"] if r["suite"] == "ablation"}
    assert drops[("layered", "drop", 0)] == 1.0 and ("parallel", "drop ssm branch", 1) in drops
    assert "| similarity | blocks | 96 | 1 | cosine(input, output) |" in (out / "results.md").read_text()
    for png in ("similarity.png", "ablation.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["analyze", "--model", str(layered_dir), "--tasks", "sudoku", "--out", str(out)])
    assert bad.exit_code == 2 and "unknown ['sudoku']" in bad.output
