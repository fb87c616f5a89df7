"""What every command shares: the `app` each command module registers itself on, the consoles, and the one-line
error exit. Library modules never import this; commands import it instead of the CLI entry point."""
from __future__ import annotations

import typer
from rich.console import Console

from paraphrase_pipe import __version__

HELP = ("Turn SlimPajama into paraphrase-augmented training data with vLLM, then train and evaluate Mamba and "
        "Mamba-attention hybrid models on it (arXiv 2510.26912).")

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP, pretty_exceptions_enable=False)
console = Console()
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        console.print(f"paraphrase-pipe {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version and exit")) -> None:
    pass


def fail(message: str, code: int = 2) -> None:
    from paraphrase_pipe.redact import redact  # no credential in a URL ever reaches the terminal

    err.print(f"[bold red]error:[/] {redact(message)}", highlight=False)
    raise typer.Exit(code)


def user_errors():
    """Exception types whose message is meant for the user: print one line, exit 2, no traceback."""
    from paraphrase_pipe.config import ConfigError
    from paraphrase_pipe.engines import EngineError
    from paraphrase_pipe.executors import WorkerLostError
    from paraphrase_pipe.output.manifest import ManifestError
    from paraphrase_pipe.sources.files import SourceError
    from paraphrase_pipe.tokenizer import TokenizerError

    return (ConfigError, EngineError, ManifestError, SourceError, TokenizerError, WorkerLostError)
