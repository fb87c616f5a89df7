"""Synthetic recall, generated locally from a seed (no downloads), over a length sweep:

- `mqar` — multi-query associative recall (Zoology's MQAR as text): random keys with random values ("kvyt: 483"),
  then 16 of the keys again (fewer when fewer than 32 pairs fit), each to be completed with its value;
- `phonebook` — "Name Surname: 555-123-4567" lines, then one name to complete with its number
  (Jelassi et al., "Repeat After Me");
- `passkey` — a pass key hidden at a depth (0 = start, 1 = end) of repeated filler text, asked for at the end.

Every example is built from separately tokenized pieces, so a key or value has the same ids in the context and in
the query, and its whole sequence (answers included) is at most `length` tokens. Scoring (`accuracy`) is exact:
the answer counts when greedy decoding would reproduce it token for token (see `forced.py`). Example i of a task
at a length draws from `random.Random(f"{seed}/{task}/{length}/{i}")`: the same seed gives the same examples.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from dataclasses import dataclass, field

from paraphrase_pipe.evaluate.defaults import RECALL_LENGTHS, SYNTHETIC_EXAMPLES
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.forced import span_matches
from paraphrase_pipe.evaluate.report import Result
from paraphrase_pipe.evaluate.tokens import encode, special_prefix

DEPTHS = (0.0, 0.25, 0.5, 0.75, 1.0)
FILLER = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
FIRST = ("James Mary John Linda Robert Susan Michael Karen David Nancy William Lisa Richard Betty Joseph Sandra "
         "Thomas Ashley Charles Donna Daniel Emily Matthew Carol Anthony Helen Mark Laura Paul Ruth Steven Sharon "
         "Andrew Anna Kevin Julia Brian Grace George Alice").split()
LAST = ("Smith Johnson Brown Jones Garcia Miller Davis Wilson Anderson Taylor Thomas Moore Martin Jackson White "
        "Harris Clark Lewis Walker Hall Allen Young King Wright Scott Green Baker Adams Nelson Hill Campbell "
        "Mitchell Roberts Carter Phillips Evans Turner Parker Collins Stewart").split()


@dataclass
class Example:
    ids: list[int]
    spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) answer tokens
    position: float | None = None


class _Builder:
    """Appends separately tokenized pieces and records which of them are answers."""

    def __init__(self, tokenizer, cache: dict):
        self.tok, self.cache = tokenizer, cache
        self.ex = Example(special_prefix(tokenizer))

    def ids(self, text: str) -> list[int]:
        if text not in self.cache:
            self.cache[text] = encode(self.tok, text)
        return self.cache[text]

    def cost(self, *texts: str) -> int:
        return sum(len(self.ids(t)) for t in texts)

    def add(self, *texts: str, answer: str | None = None) -> None:
        for t in texts:
            self.ex.ids += self.ids(t)
        if answer is not None:
            start = len(self.ex.ids)
            self.ex.ids += self.ids(answer)
            self.ex.spans.append((start, len(self.ex.ids)))


def _fill_records(b: _Builder, length: int, draw, n_queries: int, rng: random.Random) -> None:
    """Key/value lines while they fit together with the queries that follow them: `n_queries` of the keys again
    (at most half of them, so short lengths still get a real haystack), each to be completed with its value."""
    pairs: dict[str, str] = {}
    worst = 0

    def queries(p: int) -> int:
        return min(n_queries, (p + 1) // 2)

    while True:
        key, value = draw()
        if key in pairs:
            continue
        line = b.cost(key, ":", value, "\n")
        worst = max(worst, line)
        if len(b.ex.ids) + line + queries(len(pairs) + 1) * worst > length:
            break
        pairs[key] = value
        b.add(key, ":", value, "\n")
    if not pairs:
        raise EvalError(f"length {length} is too short for even one key/value line")
    for key in rng.sample(sorted(pairs), queries(len(pairs))):
        b.add(key, ":", answer=pairs[key])
        b.add("\n")


def mqar(tokenizer, length: int, rng: random.Random, cache: dict, n_queries: int = 16) -> Example:
    b = _Builder(tokenizer, cache)
    b.add("Remember each key and its value.\n")

    def draw():
        return "".join(rng.choices(string.ascii_lowercase, k=4)), f" {rng.randrange(100, 1000)}"

    _fill_records(b, length, draw, n_queries, rng)
    return b.ex


def phonebook(tokenizer, length: int, rng: random.Random, cache: dict) -> Example:
    b = _Builder(tokenizer, cache)
    b.add("Phone book:\n")

    def draw():
        name = f"{rng.choice(FIRST)} {rng.choice(string.ascii_uppercase)}. {rng.choice(LAST)}"
        return name, f" {rng.randrange(200, 1000)}-{rng.randrange(100, 1000)}-{rng.randrange(1000, 10000)}"

    _fill_records(b, length, draw, 1, rng)
    return b.ex


def passkey(tokenizer, length: int, rng: random.Random, cache: dict, depth: float = 0.5) -> Example:
    b = _Builder(tokenizer, cache)
    key = f" {rng.randrange(10000, 100000)}"
    intro = "There is a pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n"
    needle = ("The pass key is", key, ". Remember it.", key, " is the pass key.\n")
    question = ("What is the pass key? The pass key is",)
    room = length - len(b.ex.ids) - b.cost(intro, *needle, *question, key)
    if room < 0:
        raise EvalError(f"length {length} is too short for the passkey prompt ({length - room} tokens)")
    filler = b.ids(FILLER) * (room // max(1, len(b.ids(FILLER))) + 1)
    before = round(depth * room)
    b.add(intro)
    b.ex.ids += filler[:before]
    b.add(*needle)
    b.ex.ids += filler[before:room]
    b.add(*question, answer=key)
    b.ex.position = depth
    return b.ex


def generate(task: str, tokenizer, length: int, n: int, seed: int = 0, cache: dict | None = None) -> list[Example]:
    """`n` examples of `task` at `length`; passkey spreads them evenly over `DEPTHS`."""
    cache = {} if cache is None else cache
    out = []
    for i in range(n):
        rng = random.Random(f"{seed}/{task}/{length}/{i}")
        if task == "passkey":
            out.append(passkey(tokenizer, length, rng, cache, depth=DEPTHS[i % len(DEPTHS)]))
        else:
            out.append(TASKS[task](tokenizer, length, rng, cache))
    return out


TASKS = {"mqar": mqar, "phonebook": phonebook, "passkey": passkey}


def evaluate_synthetic(model, tokenizer, model_name: str, tasks=tuple(TASKS), lengths=RECALL_LENGTHS,
                       n: int | None = None, seed: int = 0, batch_tokens: int = 32768) -> list[Result]:
    unknown = set(tasks) - set(TASKS)
    if unknown:
        raise EvalError(f"unknown synthetic task(s) {sorted(unknown)}; choose from {sorted(TASKS)}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    results, cache = [], {}
    for task in tasks:
        for length in lengths:
            examples = generate(task, tokenizer, length, n or SYNTHETIC_EXAMPLES[task], seed, cache)
            ok = span_matches(model, [e.ids for e in examples], [e.spans for e in examples], pad, batch_tokens)
            by_pos: dict[float, list[bool]] = defaultdict(list)
            for e, hits in zip(examples, ok):
                if e.position is not None:
                    by_pos[e.position] += hits
            flat = [h for hits in ok for h in hits]
            row = dict(model=model_name, suite="recall", task=task, length=length, metric="accuracy")
            results.append(Result(value=sum(flat) / len(flat), n=len(flat), **row))
            results += [Result(value=sum(h) / len(h), n=len(h), position=p, **row) for p, h in sorted(by_pos.items())]
    return results
