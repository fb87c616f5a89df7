"""Options and error handling shared by `paraphrase-pipe eval` and `paraphrase-pipe analyze`."""

from __future__ import annotations

import typer

from paraphrase_pipe.evaluate.defaults import SYNTHETIC_TASKS
from paraphrase_pipe.evaluate.errors import EvalError

MODEL = typer.Option(..., "--model", "-m", help="[NAME=]DIR | hub id | preset:NAME; repeat to compare")
TOKENIZER = typer.Option(None, help="tokenizer dir / hub id / builtin:gpt2 [default: the model's own]")
DEVICE = typer.Option("auto", help="auto | cpu | cuda | cuda:N")
DTYPE = typer.Option("auto", help="auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16")
SEED = typer.Option(0, help="seed of the synthetic tasks")


def report_or_fail(run, options: dict) -> None:
    """`run(**options)` and print the written files; a bad input is one red line and exit code 2."""
    try:
        paths = run(**options)
    except EvalError as exc:
        typer.secho(f"error: {exc}", err=True, fg="red")
        raise typer.Exit(2) from None
    for kind, path in paths.items():
        typer.echo(f"{kind}: {path}")


def names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def ints(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in names(text))
    except ValueError:
        raise EvalError(f"{option} {text!r}: expected comma-separated integers") from None
    if not values or min(values) <= 0:
        raise EvalError(f"{option} {text!r}: expected positive integers")
    return values


def synthetic_tasks(text: str, option: str) -> list[str]:
    tasks = names(text)
    bad = sorted(set(tasks) - set(SYNTHETIC_TASKS))
    if bad or not tasks:
        raise EvalError(f"{option}: unknown {bad}; choose from {', '.join(SYNTHETIC_TASKS)}")
    return tasks
