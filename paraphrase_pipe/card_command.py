"""`paraphrase-pipe card OUT`: (re)generate a build's data card (`card.py` makes it)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from paraphrase_pipe.console import app, console, fail


@app.command("card")
def card_command(
    out: Path = typer.Argument(..., help="a build output directory"),
    template: Optional[Path] = typer.Option(None, help="card template \\[default: data_cards/template.md]"),
) -> None:
    """(Re)generate a build's data card: OUT/README.md and OUT/scores.png."""
    from paraphrase_pipe.card import CardError, write_card

    try:
        path = write_card(out, template)
    except CardError as exc:
        fail(str(exc))
    console.print(f"card → {path}")
