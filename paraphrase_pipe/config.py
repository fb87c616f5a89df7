"""The resolved build configuration: recipe YAML, then CLI flags on top. Its hash identifies a build."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.ids import stable_hash
from paraphrase_pipe.redact import redact
from paraphrase_pipe.stages.compose import NEEDS_PARAPHRASE, ComposeOptions, Layout
from paraphrase_pipe.tokenizer import DEFAULT_TOKENIZER

# Fields that change where or how fast a build runs, never which rows it produces.
RUNTIME_FIELDS = frozenset({"output", "executor", "workers", "ray_address", "dask_scheduler", "progress", "log_every"})


class ConfigError(ValueError):
    """A recipe or flag combination that cannot run (message is user-facing)."""


class BuildConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # sources
    input: list[str] = Field(default_factory=list, description="files/dirs/globs; empty = bundled sample corpus")
    sets: list[str] = Field(default_factory=list, description="keep these redpajama_set_name values; '-Name' excludes")
    limit: int | None = Field(None, ge=1, description="read at most this many input records (in input order)")
    sample_fraction: float = Field(1.0, gt=0, le=1, description="keep a deterministic fraction of documents")
    max_doc_chars: int = Field(20_000_000, ge=1, description="longer documents are dead-lettered")
    # chunking
    chunk: int = Field(2048, ge=8, description="chunk length in tokens of `tokenizer`")
    tokenizer: str | None = Field(None, description=f"hub id / local dir / builtin:gpt2; None = {DEFAULT_TOKENIZER}")
    boundary_tolerance: float = Field(0.1, ge=0, lt=1, description="back off up to this fraction of `chunk` to end on a sentence/paragraph")
    tail: Literal["keep", "merge", "drop"] = "merge"
    min_chunk_tokens: int = Field(64, ge=1, description="shorter pieces are merged into the previous chunk or dead-lettered")
    # paraphrasing
    engine: str = "none"
    engine_options: dict[str, Any] = Field(default_factory=dict)
    # composition
    layout: Layout = "orig"
    mix: float = Field(0.0, ge=0, le=1, description="fraction of samples that are original-only replay (by chunk-id hash)")
    compose_options: ComposeOptions = Field(default_factory=ComposeOptions)
    filter_options: FilterOptions = Field(default_factory=FilterOptions)
    # output
    output: str = "out"
    shard_rows: int = Field(4096, ge=1, description="max rows per output shard")
    docs_per_task: int = Field(256, ge=1, description="documents per unit of work when inputs are split")
    seed: int = 0
    # execution (not part of the config hash)
    executor: Literal["local", "ray", "dask"] = "local"
    workers: int | None = Field(None, ge=1, description="local: processes (default: all cores); ray/dask: parallelism cap (default: the cluster)")
    ray_address: str | None = None
    dask_scheduler: str | None = None
    progress: bool = True
    log_every: float = Field(30.0, ge=0, description="seconds between progress lines in a log (no terminal, or no bar); 0: none")

    @field_validator("sets")
    @classmethod
    def _sets(cls, value: list[str]) -> list[str]:
        keep = [s for s in value if not s.startswith("-")]
        if keep and len(keep) != len(value):
            raise ValueError("--sets takes either names to keep or '-Name' exclusions, not both")
        return value

    @model_validator(mode="after")
    def _layout_needs_engine(self) -> BuildConfig:
        if self.engine == "none" and self.layout in NEEDS_PARAPHRASE:
            raise ValueError(f"layout {self.layout!r} needs paraphrases; engine 'none' makes none (use --layout orig or repeat, or pick an engine)")
        if self.engine == "none" and self.engine_options:
            raise ValueError(f"engine 'none' takes no engine_options (got {', '.join(sorted(map(str, self.engine_options)))}); "
                             "name an engine, or drop them")
        return self

    def data_fields(self) -> dict[str, Any]:
        """What the manifest and the card record (credentials in endpoint URLs hidden)."""
        return redact(self.model_dump(exclude=RUNTIME_FIELDS))

    def config_hash(self, engine_identity: dict[str, Any] | None = None) -> str:
        """What determines the rows. Engine options count only through the engine's identity (model, template,
        sampling) when it is given, so endpoints, concurrency or replicas may change between restarts."""
        data = self.data_fields()
        if engine_identity is not None:
            data["engine_options"] = engine_identity
        return stable_hash(data)


def load_recipe(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"recipe {path} is not a text (UTF-8 YAML) file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of build options")
    build = data.get("build", data)
    if not isinstance(build, dict):
        raise ConfigError(f"recipe {path}: `build:` must be a mapping of build options, not a {type(build).__name__}")
    return build


def resolve_config(recipe: str | Path | None = None, **overrides: Any) -> BuildConfig:
    """Recipe values first, then every flag the user actually gave (None means 'not given')."""
    values = load_recipe(recipe)
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return BuildConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"invalid build configuration: {problems}") from None


def _problem(error: dict) -> str:
    """One pydantic error as `field: message`; a check of the whole config has no field (and no "Value error, ")."""
    message = error["msg"].removeprefix("Value error, ")
    where = ".".join(map(str, error["loc"]))
    return f"{where}: {message}" if where else message
