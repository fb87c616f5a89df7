"""Evaluation on the paper's three axes: memory recall (JRT/Based benchmarks + seeded synthetic tasks over a length
sweep), commonsense reasoning (lm-evaluation-harness) and long-context language modelling (perplexity by length and
by position). `paraphrase-pipe eval` drives them; each module also works on its own with any HF causal LM."""

from paraphrase_pipe.evaluate.errors import EvalError
from paraphrase_pipe.evaluate.report import Result, write_report

__all__ = ["EvalError", "Result", "write_report"]
