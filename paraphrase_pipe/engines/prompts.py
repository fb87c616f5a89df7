"""Versioned prompt templates (`pipelines/prompts/*.yaml`), rendered through the model's own chat template to token
ids, and the `max_tokens` rule.

Both LLM engines render prompts here, client-side, so the same chunk gives byte-identical prompt tokens whether it
goes to an in-process engine or to a server — and the prompt length is known before anything is sent (chunks that
would not fit the model's context are rejected up front).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from paraphrase_pipe.engines import EngineError
from paraphrase_pipe.ids import stable_hash

PROMPTS_DIR = Path(__file__).resolve().parents[2] / "pipelines" / "prompts"
DEFAULT_TEMPLATE = "faithful-paraphrase"
PLACEHOLDER = "{text}"


@dataclass(frozen=True)
class Template:
    id: str
    version: int
    user: str
    system: str | None = None
    description: str = ""

    @cached_property
    def hash(self) -> str:
        """Only what reaches the model counts: editing a comment or the description keeps every sample_id."""
        return stable_hash(self.id, self.version, self.system, self.user)

    def messages(self, text: str) -> list[dict[str, str]]:
        user = {"role": "user", "content": self.user.replace(PLACEHOLDER, text)}
        return [{"role": "system", "content": self.system}, user] if self.system else [user]

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "version": self.version, "hash": self.hash}


def template_path(name: str) -> Path:
    """A name from pipelines/prompts/ (`faithful-paraphrase`) or a path to a YAML file."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    return PROMPTS_DIR / f"{name}.yaml"


def available_templates() -> list[str]:
    return sorted(p.stem for p in PROMPTS_DIR.glob("*.yaml"))


def load_template(name: str) -> Template:
    path = template_path(name)
    if not path.is_file():
        raise EngineError(f"prompt template {name!r} not found ({path}); available: {', '.join(available_templates())}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise EngineError(f"prompt template {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("user"), str) or PLACEHOLDER not in data["user"]:
        raise EngineError(f"prompt template {path} needs a `user` string containing {PLACEHOLDER}")
    unknown = set(data) - {"id", "version", "user", "system", "description"}
    if unknown:
        raise EngineError(f"prompt template {path} has unknown keys: {', '.join(sorted(unknown))}")
    return Template(id=str(data.get("id", path.stem)), version=int(data.get("version", 1)), user=data["user"],
                    system=data.get("system"), description=str(data.get("description", "")))


def max_new_tokens(source_tokens: int, ratio: float, margin: int, cap: int | None = None) -> int:
    """A paraphrase is about as long as its source: allow `ratio` × the source's model tokens + `margin`."""
    budget = math.ceil(source_tokens * ratio) + margin
    return min(budget, cap) if cap else budget


def load_model_tokenizer(name: str, revision: str | None = None):
    """The model's own Hugging Face tokenizer (local dir or hub id): it owns the chat template."""
    from transformers import AutoTokenizer

    from paraphrase_pipe.tokenizer import check_hub

    check_hub(name)  # unreachable: offline at once, not a minute of retries
    try:
        return AutoTokenizer.from_pretrained(name, revision=revision)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        raise EngineError(f"cannot load the tokenizer of model {name!r}: {type(exc).__name__}: {exc}") from None


class PromptRenderer:
    """template + the model's chat template -> prompt token ids. Models without a chat template (base models) get
    the plain concatenation `system\\n\\nuser\\n\\n`; templates that refuse a system role get it merged into the user turn."""

    def __init__(self, tokenizer, template: Template):
        self.tokenizer, self.template = tokenizer, template
        self.chat_template = getattr(tokenizer, "chat_template", None)

    def render_text(self, text: str) -> str:
        messages = self.template.messages(text)
        if not self.chat_template:
            return "\n\n".join(m["content"] for m in messages) + "\n\n"
        try:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # noqa: BLE001 - jinja raises TemplateError for "system role not supported"
            if len(messages) == 1:
                raise
            merged = [{"role": "user", "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}]
            return self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)

    def render(self, text: str) -> list[int]:
        return self.render_many([text])[0]

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def render_many(self, texts: list[str]) -> list[list[int]]:
        """Prompt ids of many chunks in one batch call (the Rust tokenizer encodes them in parallel, off the GIL: the
        driver renders for an engine that answers a thousand requests a second). The chat template already spells
        out BOS and friends as text: do not add them twice."""
        return self._encode([self.render_text(text) for text in texts])

    def count_many(self, texts: list[str]) -> list[int]:
        return [len(ids) for ids in self._encode(texts)]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
