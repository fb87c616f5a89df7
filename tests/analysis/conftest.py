"""The evaluation tests' tiny models and tokenizer, shared with the analysis tests."""

from tests.evaluate.conftest import load, llama_dir, parallel_dir, tokenizer, tokenizer_dir  # noqa: F401 - fixtures
