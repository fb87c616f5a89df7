"""`paraphrase-pipe card OUT`: the command line around `write_card` (the only part of the card that needs typer)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from paraphrase_pipe.card import CardError, write_card


def command(
    out: Path = typer.Argument(..., help="a build output directory"),
    template: Optional[Path] = typer.Option(None, help="card template [default: data_cards/template.md]"),
) -> None:
    """(Re)generate a build's data card: OUT/README.md and OUT/scores.png."""
    from paraphrase_pipe.cli import console, fail

    try:
        path = write_card(out, template)
    except CardError as exc:
        fail(str(exc))
    console.print(f"card → {path}")
