"""Recall drop when one block — or, in a parallel hybrid, one branch of a block — is removed: the paper's test of
which layers carry memory recall.

A removed block passes its input through unchanged (`blocks.skip_blocks`, any model); a block with a removed branch
outputs its kept branch alone, bypassing the merge (the model's own `ablate(branches=...)`, our parallel hybrids):
one definition for every merge, so branch drops compare across merges (zeros fed to a cross-attention merge
would leave a uniform average of the values, to a gate or norm-mean half the kept branch). Recall is the synthetic
suite (`evaluate.synthetic`: exact answers, seeded, no downloads) at one length; each unit's row is the baseline
accuracy minus the accuracy without that unit, per task.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from paraphrase_pipe.analysis.blocks import block_kinds, skip_blocks
from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.report import Result
from paraphrase_pipe.evaluate.synthetic import evaluate_synthetic


@dataclass(frozen=True)
class Unit:
    layer: int
    branch: str | None = None  # "ssm" | "attn" for one branch of a parallel block, None for the whole block

    @property
    def metric(self) -> str:
        return "drop" if self.branch is None else f"drop {self.branch} branch"


def units(model, branches: bool = True) -> list[Unit]:
    """Every block, then both branches of every parallel ("P") block when the model can remove them."""
    kinds = block_kinds(model)
    out = [Unit(i) for i in range(len(kinds))]
    if branches and hasattr(model, "ablate"):
        out += [Unit(i, b) for i, k in enumerate(kinds) if k == "P" for b in ("ssm", "attn")]
    return out


@contextmanager
def removed(model, unit: Unit):
    if unit.branch is None:
        with skip_blocks(model, [unit.layer]):
            yield model
    elif hasattr(model, "ablate"):
        with model.ablate(branches=[f"{unit.layer}.{unit.branch}"]):
            yield model
    else:
        raise EvalError(f"{type(model).__name__} cannot remove a branch (no `ablate`)")


def _accuracy(model, tokenizer, name, tasks, length, n, seed, batch_tokens) -> dict[str, Result]:
    rows = evaluate_synthetic(model, tokenizer, name, tasks, (length,), n, seed, batch_tokens)
    return {r.task: r for r in rows if r.position is None}


def recall_drop(model, tokenizer, name: str, tasks=("mqar", "phonebook", "passkey"), length: int = 1024,
                n: int = 20, seed: int = 0, batch_tokens: int = 32768, branches: bool = True) -> list[Result]:
    """Baseline `accuracy` per task (position None), then per unit its `drop` (position = the block index)."""
    base = _accuracy(model, tokenizer, name, tasks, length, n, seed, batch_tokens)
    results = [Result(model=name, suite="ablation", task=t, metric="accuracy", value=r.value, n=r.n, length=length)
               for t, r in base.items()]
    for unit in units(model, branches):
        with removed(model, unit):
            without = _accuracy(model, tokenizer, name, tasks, length, n, seed, batch_tokens)
        results += [Result(model=name, suite="ablation", task=t, metric=unit.metric, value=base[t].value - r.value,
                           n=r.n, length=length, position=unit.layer) for t, r in without.items()]
    return results
