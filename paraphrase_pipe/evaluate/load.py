"""The models to compare: `--model [NAME=]SPEC`, SPEC a local directory or hub id (any Hugging Face causal LM,
loaded with `AutoModelForCausalLM`; our hybrids register with the Auto classes on import) or `preset:NAME` (a
randomly initialised model of `paraphrase_pipe.models`, for speed runs). NAME labels the model's column.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass
from pathlib import Path

import torch

from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.hub import missing_local_path, offline_hint


@dataclass
class LoadedModel:
    name: str
    spec: str
    model: torch.nn.Module
    tokenizer: object

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def describe(self) -> dict:
        """The model's entry in a report's `models` list."""
        first = next(self.model.parameters())
        return {"name": self.name, "spec": self.spec, "n_params": self.n_params, "class": type(self.model).__name__,
                "dtype": str(first.dtype), "device": str(first.device)}


def split_spec(spec: str) -> tuple[str, str]:
    """'name=path' -> (name, path); 'path' -> (its last path part, path)."""
    name, sep, path = spec.partition("=")
    if sep and name and "/" not in name:
        return name, path
    return spec.rstrip("/").rsplit("/", 1)[-1].removeprefix("preset:"), spec


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device}: no CUDA device here")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise EvalError(f"--dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


def load_tokenizer(spec: str):
    """A transformers tokenizer (generation and lm-eval need one), with a pad token."""
    if spec.startswith("builtin:"):
        from transformers import PreTrainedTokenizerFast

        from paraphrase_pipe.tokenizer import TokenizerError
        from paraphrase_pipe.tokenizer import load_tokenizer as load_backend

        try:
            loaded = load_backend(spec)
        except TokenizerError as exc:
            raise EvalError(str(exc)) from None
        tok = PreTrainedTokenizerFast(tokenizer_object=loaded.backend, eos_token=loaded.eos_token or "<|endoftext|>")
    else:
        from transformers import AutoTokenizer

        if missing_local_path(spec):
            raise EvalError(f"{spec}: no such tokenizer directory")
        try:
            tok = AutoTokenizer.from_pretrained(spec)
        except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
            raise EvalError(f"cannot load a tokenizer from {spec!r}{offline_hint()}: {type(exc).__name__}: {exc}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(spec: str, device: str = "auto", dtype: str = "auto", tokenizer: str | None = None) -> LoadedModel:
    name, path = split_spec(spec)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if path.startswith("preset:"):
        if tokenizer is None:
            raise EvalError(f"{spec}: a preset has no tokenizer; pass --tokenizer (e.g. builtin:gpt2)")
        tok = load_tokenizer(tokenizer)
        model = _preset(path.removeprefix("preset:"), vocab_size=len(tok))  # sized to the tokenizer, as `train` does
    else:
        model = _pretrained(path, dt)
        tok = load_tokenizer(tokenizer or path)
    model = model.to(device=dev, dtype=dt).eval()
    vocab = _vocab_size(model)
    if vocab and len(tok) > vocab:
        raise EvalError(f"{spec}: the tokenizer has {len(tok)} tokens but the model only {vocab} embeddings "
                        "(pass the model's own tokenizer with --tokenizer)")
    return LoadedModel(name, spec, model, tok)


def for_each_model(specs: list[str], device: str, dtype: str, tokenizer: str | None, fn) -> list[dict]:
    """Loads the models one at a time, calls `fn(loaded)` on each and frees it before the next one; returns their
    descriptions. Names must differ: they label the columns of the report."""
    described: list[dict] = []
    for spec in specs:
        loaded = load_model(spec, device, dtype, tokenizer)
        if loaded.name in {d["name"] for d in described}:
            raise EvalError(f"two models are named {loaded.name!r}: label them with --model NAME=SPEC")
        described.append(loaded.describe())
        fn(loaded)
        del loaded
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return described


def _vocab_size(model) -> int | None:
    try:
        embedding = model.get_input_embeddings()
    except NotImplementedError:  # a model without an embedding table
        embedding = None
    return getattr(embedding, "num_embeddings", None) or getattr(model.config, "vocab_size", None)


def _pretrained(path: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    _register_ours()
    if missing_local_path(path):
        raise EvalError(f"{path}: no such model directory")
    try:
        return AutoModelForCausalLM.from_pretrained(str(Path(path).expanduser()) if Path(path).expanduser().is_dir()
                                                    else path, dtype=dtype)
    except Exception as exc:  # noqa: BLE001 - transformers raises many types; the user needs one message
        raise EvalError(f"cannot load model {path!r}{offline_hint()}: {type(exc).__name__}: {exc}") from None


def _preset(name: str, vocab_size: int):
    _register_ours()
    try:
        from paraphrase_pipe.models import PRESETS, build_model
    except ImportError as exc:
        raise EvalError(f"preset:{name} needs paraphrase_pipe.models ({exc})") from None
    if name not in PRESETS:
        raise EvalError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return build_model(name, vocab_size=vocab_size)


def _register_ours() -> None:
    try:
        import paraphrase_pipe.models  # noqa: F401 - registers HybridConfig / HybridForCausalLM with the Auto classes
    except ModuleNotFoundError as exc:
        if exc.name != "paraphrase_pipe.models":
            raise
