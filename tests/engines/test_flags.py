"""CLI flags -> engine and engine_options, and engine option validation."""
from __future__ import annotations

import pytest
import typer

from paraphrase_pipe.engines import EngineError, create_engine
from paraphrase_pipe.engines.flags import resolve_engine
from paraphrase_pipe.engines.vllm_args import as_cli_flags

NO_FLAGS = {"serve": False}


def test_the_engine_follows_from_the_flags():
    assert resolve_engine(None, {}, {"model": "m"}) == ("vllm", {"model": "m"})
    assert resolve_engine(None, {}, {"model": "m", "endpoint": ["http://h:1"]}) == ("openai", {"model": "m", "endpoints": ["http://h:1"]})
    assert resolve_engine(None, {}, {"model": "m", "serve": True})[0] == "vllm-serve"
    assert resolve_engine("openai", {}, {"model": "m", "serve": True})[0] == "vllm-serve"
    assert resolve_engine(None, {}, NO_FLAGS) == (None, None)  # nothing given: the recipe decides


def test_flags_override_the_recipe_key_by_key():
    recipe = {"engine": "vllm", "engine_options": {"model": "a", "max_num_seqs": 64, "tensor_parallel_size": 2}}
    engine, options = resolve_engine(None, recipe, {"model": "b", "tensor_parallel_size": 4,
                                                    "engine_option": ["max_num_seqs=128", "engine_args={enable_prefix_caching: false}"]})
    assert engine is None  # the recipe's engine stays
    assert options == {"model": "b", "max_num_seqs": 128, "tensor_parallel_size": 4, "engine_args": {"enable_prefix_caching": False}}


@pytest.mark.parametrize("engine, flags, message", [
    ("vllm", {"serve": True, "model": "m"}, "does not combine with --engine vllm"),
    ("none", {"model": "m"}, "engine 'none' takes no LLM options"),
    (None, {"engine_option": ["novalue"]}, "is not KEY=VALUE"),
    (None, {"engine_option": ["a=[1"]}, "not valid YAML"),
])
def test_contradictions_are_usage_errors(engine, flags, message):
    with pytest.raises(typer.BadParameter, match=message):
        resolve_engine(engine, {}, flags)


@pytest.mark.parametrize("name, options, message", [
    ("vllm", {}, "model: Field required"),
    ("vllm", {"model": "m", "max_num_seq": 3}, "max_num_seq: Extra inputs are not permitted"),
    ("openai", {"model": "m"}, "at least one --endpoint"),
    ("openai", {"model": "m", "endpoints": ["localhost:8000"]}, "is not an http"),
    ("vllm-serve", {"model": "m", "endpoints": ["http://h:1"]}, "--serve starts its own servers"),
    ("vllm", {"model": "m", "template": "nope"}, "prompt template 'nope' not found"),
    ("vllm", {"model": "m", "temperature": -1}, "temperature"),
])
def test_bad_engine_options_are_one_line_errors(name, options, message):
    with pytest.raises(EngineError, match=message):
        create_engine(name, options)


def test_engine_args_become_server_flags():
    assert as_cli_flags({"max_num_seqs": 8, "enforce_eager": True, "enable_prefix_caching": False, "x": None,
                         "override_generation_config": {"a": 1}}) == [
        "--max-num-seqs", "8", "--enforce-eager", "--no-enable-prefix-caching", "--override-generation-config", '{"a": 1}']


def test_identity_changes_with_what_changes_the_output_only():
    base = {"model": "m", "endpoints": ["http://h:1"]}
    ident = create_engine("openai", base).identity()
    assert create_engine("openai", {**base, "concurrency": 3, "endpoints": ["http://other:2"]}).identity() == ident
    assert create_engine("vllm", {"model": "m", "max_num_seqs": 7}).identity() == ident  # same generation, other engine
    for change in ({"temperature": 0.1}, {"seed": 1}, {"template": "wrap-wikipedia"}, {"max_tokens": 9}, {"revision": "r2"}):
        assert create_engine("openai", {**base, **change}).identity() != ident


def test_a_missing_api_key_variable_is_named_without_contacting_anyone(monkeypatch):
    monkeypatch.delenv("PP_UNSET_KEY", raising=False)
    engine = create_engine("openai", {"model": "m", "endpoints": ["http://h:1"], "api_key_env": "PP_UNSET_KEY"})
    with pytest.raises(EngineError, match="names 'PP_UNSET_KEY', but that environment variable is not set"):
        engine._headers()
    monkeypatch.setenv("PP_UNSET_KEY", "k")
    assert engine._headers() == {"Authorization": "Bearer k"}
