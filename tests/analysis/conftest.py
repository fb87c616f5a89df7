"""The evaluation tests' tiny models and tokenizer, shared with the analysis tests."""

from tests.evaluate.conftest import (  # noqa: F401 - pytest fixtures
    llama_dir, load, one_thread, parallel_dir, tokenizer, tokenizer_dir)
