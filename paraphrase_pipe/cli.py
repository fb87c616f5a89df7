"""The `paraphrase-pipe` entry point: imports each area's command module, which registers its commands on the
shared `app` (`console.py`). Nothing imports this module; commands take their helpers from `console.py`."""
from __future__ import annotations

# isort: off - the import order is the order of `--help`
from paraphrase_pipe import build_command  # noqa: F401 - each module registers its commands: build, inspect
from paraphrase_pipe.train import command as train_command  # noqa: F401
from paraphrase_pipe import plan_command  # noqa: F401
from paraphrase_pipe.evaluate import command as evaluate_command  # noqa: F401
from paraphrase_pipe.analysis import command as analysis_command  # noqa: F401
from paraphrase_pipe import card_command, sweep_command  # noqa: F401
from paraphrase_pipe.console import app
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()


if __name__ == "__main__":
    main()
