"""Recall-intensive benchmarks in the JRT/Based format — SWDE, FDA, SQuAD-completion, TriviaQA, NQ, DROP — over a
context-length sweep: greedy decoding, stop at newline, up to 48 new tokens, case-insensitive contains-match.

Rows come in one of the two layouts of the published datasets, detected from the columns:
- `text` + `value` (SWDE, FDA, SQuAD): `text` is the prompt and ends where the answer starts; its last line or
  sentence (e.g. "Year:") is the question, everything before it the document;
- `context` + `question` + `answers` (TriviaQA, NQ, DROP): the prompt is the context, ". ", then the question,
  as the JRT tasks build it (TriviaQA's [PAR]/[DOC]/[TLE] markers removed).
At each length the document is cut before the question so that prompt ≤ length tokens; prompts already shorter are
left whole. Besides accuracy (`contains`), each length reports `answer_in_context` (how often the answer survived
the cut: the ceiling for any model) and `input_tokens` (mean prompt length).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from paraphrase_pipe.evaluate.data import read_rows
from paraphrase_pipe.evaluate.decode import greedy_generate
from paraphrase_pipe.evaluate.defaults import RECALL_LENGTHS
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.report import Result
from paraphrase_pipe.evaluate.tokens import encode, fit, special_prefix

MAX_NEW_TOKENS = 48
_MARKERS = re.compile(r"\[PAR\]|\[DOC\]|\[TLE\]")
_QUESTION_START = re.compile(r"(?:\n|[.?!]\s)(?=[^\n]*$)")  # after the last newline / sentence end


@dataclass(frozen=True)
class RecallItem:
    document: str
    question: str
    answers: tuple[str, ...]


def contains(prediction: str, answers) -> bool:
    """Case-insensitive: does any (non-empty) answer occur in the prediction."""
    text = prediction.lower()
    return any(a.strip() and a.strip().lower() in text for a in answers)


def to_item(row: dict, where: str = "row") -> RecallItem:
    if {"context", "question", "answers"} <= row.keys():
        context, question = _MARKERS.sub("", row["context"]).strip(), row["question"].strip()
        while question and context.lower().endswith(question.lower()):
            context = context[: -len(question)].rstrip()
        answers = [row["answers"]] if isinstance(row["answers"], str) else list(row["answers"])
        return RecallItem(context.strip(".").strip() + ".", " " + question, tuple(answers))
    if {"text", "value"} <= row.keys():
        text = row["text"].strip()
        m = list(_QUESTION_START.finditer(text))
        cut = m[-1].end() if m else 0
        return RecallItem(text[:cut], text[cut:], (str(row["value"]),))
    raise EvalError(f"{where}: columns {sorted(row)} are neither the JRT text layout (text, value) nor the QA layout "
                    "(context, question, answers)")


def load_items(source: str, split: str = "validation", limit: int | None = None) -> list[RecallItem]:
    rows = read_rows(source, split)
    if not rows:
        raise EvalError(f"{source}: no rows")
    return [to_item(r, f"{source} row {i}") for i, r in enumerate(rows[:limit])]


def evaluate_jrt(model, tokenizer, model_name: str, tasks: dict[str, str], lengths=RECALL_LENGTHS,
                 limit: int | None = None, batch_size: int = 8, split: str = "validation") -> list[Result]:
    """`tasks` maps a task name to its source (hub id or local path)."""
    results = []
    prefix = special_prefix(tokenizer)
    for task, source in tasks.items():
        items = load_items(source, split, limit)
        docs = [encode(tokenizer, it.document) for it in items]
        questions = [encode(tokenizer, it.question) for it in items]
        full = [len(prefix) + len(d) + len(q) for d, q in zip(docs, questions)]
        answers: dict[tuple[int, int], str] = {}  # (item, kept length): a prompt no length cuts is decoded once
        for length in lengths:
            prompts = [fit(prefix, d, q, length) for d, q in zip(docs, questions)]
            keys = [(i, min(length, f)) for i, f in enumerate(full)]
            todo = [i for i, k in enumerate(keys) if k not in answers]
            new = greedy_generate(model, tokenizer, [prompts[i] for i in todo], MAX_NEW_TOKENS, batch_size)
            answers.update((keys[i], text) for i, text in zip(todo, new))
            n = len(items)
            hits = sum(contains(answers[k], it.answers) for k, it in zip(keys, items))
            kept = sum(contains(tokenizer.decode(p), it.answers) for p, it in zip(prompts, items))
            row = dict(model=model_name, suite="recall", task=task, n=n, length=length)
            results += [Result(metric="contains", value=hits / n, **row),
                        Result(metric="answer_in_context", value=kept / n, **row),
                        Result(metric="input_tokens", value=sum(map(len, prompts)) / n, **row)]
    return results
