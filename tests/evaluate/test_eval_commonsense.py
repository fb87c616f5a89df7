"""lm-eval integration, offline: a local task YAML over local data, scored through lm-eval's own HF wrapper. The
task is built so the answer is known: a copying model gets 1.0, a model that cannot read the context 0.0."""

from __future__ import annotations

import json

from .conftest import FIXTURES
from paraphrase_pipe.evaluate.commonsense import evaluate_commonsense, to_results

TASKS = FIXTURES / "lm_eval"


def test_fixture_distractors_are_shorter(tokenizer):
    """The premise of the 0.0 below: without the context every extra token costs, so the distractor wins."""
    for row in map(json.loads, (TASKS / "recall_mc.jsonl").read_text().splitlines()):
        gold, other = row["choices"][row["label"]], row["choices"][1 - row["label"]]
        assert len(tokenizer(" " + other)["input_ids"]) < len(tokenizer(" " + gold)["input_ids"])


def test_local_task_through_lm_eval(load, copy_dir, blind_dir, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # the YAML's data_files path is relative to its folder, not to where we run
    scores = {}
    for name, path in (("copy", copy_dir), ("blind", blind_dir)):
        m = load(path)
        results = evaluate_commonsense(m.model, m.tokenizer, name, tasks=("recall_mc_local",), batch_size=2,
                                       include_path=str(TASKS))
        (acc,) = [r for r in results if r.metric == "acc"]
        assert (acc.suite, acc.task, acc.n) == ("commonsense", "recall_mc_local", 4)
        assert acc.stderr is not None
        scores[name] = acc.value
    assert scores == {"copy": 1.0, "blind": 0.0}


def test_lm_eval_results_block_to_rows():
    out = {"results": {"piqa": {"alias": "piqa", "acc,none": 0.7, "acc_stderr,none": 0.01, "acc_norm,none": 0.71,
                                "acc_norm_stderr,none": "N/A"}},
           "n-samples": {"piqa": {"original": 1838, "effective": 100}}}
    rows = to_results(out, "m")
    assert [(r.metric, r.value, r.n, r.stderr) for r in rows] == [("acc", 0.7, 100, 0.01),
                                                                  ("acc_norm", 0.71, 100, None)]
