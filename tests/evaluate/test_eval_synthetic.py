"""Synthetic recall: generators deterministic by seed and token-exact, and the accuracy metric on models whose right
answer is known; teacher-forced scoring agrees with real greedy decoding."""

from __future__ import annotations

import pytest

from paraphrase_pipe.evaluate.decode import greedy_generate
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.synthetic import DEPTHS, TASKS, evaluate_synthetic, generate

from .recall_lm import save_recall_lm


@pytest.mark.parametrize("task", TASKS)
def test_generators_are_deterministic_by_seed_and_fit_the_length(task, tokenizer):
    a = generate(task, tokenizer, 300, 5, seed=1)
    assert [e.ids for e in a] == [e.ids for e in generate(task, tokenizer, 300, 5, seed=1)]
    assert [e.ids for e in a] != [e.ids for e in generate(task, tokenizer, 300, 5, seed=2)]
    for e in a:
        assert 250 <= len(e.ids) <= 300  # filled up to the length, never past it
        for start, end in e.spans:
            answer = tokenizer.decode(e.ids[start:end])
            assert answer.strip() and answer in tokenizer.decode(e.ids[:start])  # the answer is in the context
    if task == "passkey":
        assert [e.position for e in a] == list(DEPTHS)
        assert all(len(e.ids) == 300 for e in a)
    if task == "mqar":
        assert all(len(e.spans) == 16 for e in generate(task, tokenizer, 1000, 2))


def test_too_short_a_length_is_a_clear_error(tokenizer):
    with pytest.raises(EvalError, match="too short"):
        generate("passkey", tokenizer, 20, 1)


def test_copy_model_scores_one_and_blind_model_zero(load, copy_dir, blind_dir):
    for path, expected in ((copy_dir, 1.0), (blind_dir, 0.0)):
        m = load(path)
        results = evaluate_synthetic(m.model, m.tokenizer, "m", lengths=(128, 320), n=5)
        assert {(r.task, r.length) for r in results} == {(t, n) for t in TASKS for n in (128, 320)}
        assert {r.value for r in results} == {expected}
        mqar = next(r for r in results if r.task == "mqar" and r.length == 320)
        assert mqar.n == sum(len(e.spans) for e in generate("mqar", m.tokenizer, 320, 5)) > 5  # every query counts


def test_recall_by_needle_depth(load, tokenizer, tmp_path):
    """A copier that sees the last 64 tokens finds the pass key only near the end of a 320-token prompt."""

    m = load(save_recall_lm(tokenizer, tmp_path / "w64", window=64))
    results = evaluate_synthetic(m.model, m.tokenizer, "w64", tasks=("passkey",), lengths=(320,), n=10)
    by_depth = {r.position: r.value for r in results if r.position is not None}
    assert by_depth[1.0] == 1.0 and by_depth[0.0] == 0.0
    overall = next(r for r in results if r.position is None)
    assert overall.value == pytest.approx(sum(by_depth.values()) / len(by_depth)) and overall.n == 10


def test_forced_scoring_equals_greedy_decoding(load, tokenizer, tmp_path, llama_dir):
    from paraphrase_pipe.evaluate.forced import span_matches

    examples = generate("phonebook", tokenizer, 160, 4) + generate("passkey", tokenizer, 160, 5)
    prompts = [e.ids[: e.spans[0][0]] for e in examples]
    answers = [tokenizer.decode(e.ids[slice(*e.spans[0])]) for e in examples]
    outcomes = {}
    for name, path in (("window40", save_recall_lm(tokenizer, tmp_path / "w40", window=40)), ("llama", llama_dir)):
        m = load(path)
        forced = [hits[0] for hits in span_matches(m.model, [e.ids for e in examples], [e.spans for e in examples])]
        decoded = greedy_generate(m.model, m.tokenizer, prompts, max_new_tokens=16)
        assert forced == [d.startswith(a) for d, a in zip(decoded, answers)], name
        outcomes[name] = forced
    assert 0 < sum(outcomes["window40"]) < len(examples)  # both outcomes were compared
