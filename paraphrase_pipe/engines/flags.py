"""The LLM engines' command-line flags, shared by `build` and `plan`, turned into `engine` + `engine_options`.

Flags override the recipe's `engine_options:` key by key. The engine follows from the flags when not named:
`--serve` -> vllm-serve, `--endpoint` -> openai, `--model` alone -> vllm (in-process).
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, Optional

import typer
import yaml

FLAGS: dict[str, tuple[Any, Any]] = {
    "model": (Optional[str], typer.Option(None, help="LLM: hub id or local dir (vllm, --serve); served model name (openai)")),
    "endpoint": (Optional[list[str]], typer.Option(None, "--endpoint", help="OpenAI-compatible server URL (repeatable; load-balanced)")),
    "serve": (bool, typer.Option(False, "--serve", help="start vLLM servers on this node (one per GPU / TP group) and use them")),
    "concurrency": (Optional[int], typer.Option(None, help="requests in flight at the servers for the whole build (openai, --serve; Ray/Dask workers split it) (default: 512; --serve: 2 x max_num_seqs per server)")),
    "tensor_parallel_size": (Optional[int], typer.Option(None, help="GPUs per engine/server (vllm, --serve) (default: 1)")),
    "replicas": (Optional[int], typer.Option(None, help="engine actors on Ray (vllm, --serve) (default: 1)")),
    "template": (Optional[str], typer.Option(None, help="prompt template: name in pipelines/prompts/ or a YAML path (default: faithful-paraphrase)")),
    "max_model_len": (Optional[int], typer.Option(None, help="model context length; longer prompts are rejected up front")),
    "temperature": (Optional[float], typer.Option(None, help="sampling temperature (default: 0.7)")),
    "api_key_env": (Optional[str], typer.Option(None, help="name of the environment variable holding the endpoints' API key")),
    "engine_option": (Optional[list[str]], typer.Option(None, "--engine-option", "-E", help="any engine option as KEY=VALUE (YAML value; repeatable)")),
}
_DIRECT = ("model", "concurrency", "tensor_parallel_size", "replicas", "template", "max_model_len", "temperature", "api_key_env")


def parse_pairs(pairs: list[str]) -> dict[str, Any]:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--engine-option")
        try:
            options[key.strip().replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise typer.BadParameter(f"{pair!r}: value is not valid YAML ({exc})", param_hint="--engine-option") from None
    return options


def resolve_engine(engine: str | None, recipe: dict[str, Any], flags: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """(engine, engine_options) after the flags; (None, None) keeps what the recipe says."""
    options = parse_pairs(flags.get("engine_option") or [])
    options.update({k: flags[k] for k in _DIRECT if flags.get(k) is not None})
    if flags.get("endpoint"):
        options["endpoints"] = list(flags["endpoint"])
    named = engine or recipe.get("engine")
    if flags.get("serve"):
        if named not in (None, "none", "openai", "vllm-serve") or (engine and engine not in ("openai", "vllm-serve")):
            raise typer.BadParameter(f"--serve uses the openai client against its own servers; it does not combine with --engine {named}")
        engine = "vllm-serve"
    elif engine is None and named in (None, "none") and options:
        engine = "openai" if "endpoints" in options else "vllm"
    if options and (engine or named) == "none":
        raise typer.BadParameter(f"engine 'none' takes no LLM options (got {', '.join(sorted(options))})")
    if not options:
        return engine, None
    return engine, {**(recipe.get("engine_options") or {}), **options}


def with_engine_flags(command):
    """Add the engine flags to a typer command; it receives `engine` and `engine_options` already resolved
    (it must take `engine`, `recipe` and `engine_options` parameters)."""
    signature = inspect.signature(command, eval_str=True)  # real types: typer reads them from the wrapper
    kept = [p for p in signature.parameters.values() if p.name != "engine_options"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
             for name, (kind, option) in FLAGS.items()]

    @functools.wraps(command)
    def wrapper(**kwargs):
        from paraphrase_pipe.config import ConfigError, load_recipe

        flags = {name: kwargs.pop(name) for name in FLAGS}
        try:
            recipe = load_recipe(kwargs.get("recipe"))
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint="--recipe") from None
        kwargs["engine"], engine_options = resolve_engine(kwargs.get("engine"), recipe, flags)
        return command(**kwargs, engine_options=engine_options)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
    wrapper.__annotations__ = {p.name: p.annotation for p in wrapper.__signature__.parameters.values()}
    return wrapper
