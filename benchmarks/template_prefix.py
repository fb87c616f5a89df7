"""How many prompt tokens every request of a build shares: the rendered prompt's prefix before the chunk's text,
per bundled template. vLLM's prefix caching (on by default) computes it once; the rest of each prompt is new.

    .venv/bin/python benchmarks/template_prefix.py --model-tokenizer ../shared/gpu/vllm/tok --chunk 2048
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from paraphrase_pipe.engines.prompts import PromptRenderer, available_templates, load_model_tokenizer, load_template  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-tokenizer", required=True, help="the model's tokenizer (hub id or dir with its chat template)")
    parser.add_argument("--chunk", type=int, default=2048, help="source tokens per chunk, for the prompt's length")
    args = parser.parse_args()
    tokenizer = load_model_tokenizer(args.model_tokenizer, None)
    # two unrelated sources: their prompts agree exactly on the template's shared part
    texts = ["The committee met on Tuesday to review the budget. " * 4, "Photosynthesis converts light into chemical energy. " * 4]
    for name in available_templates():
        renderer = PromptRenderer(tokenizer, load_template(name))
        prompts = renderer.render_many(texts)
        shared = len(os.path.commonprefix(prompts))  # element-wise on any sequences
        around = len(prompts[0]) - renderer.count_many(texts[:1])[0]  # template tokens around the source text
        prompt = args.chunk + around
        print(f"{name}: {shared} shared prefix tokens; {around} template tokens in all; a chunk-{args.chunk} prompt is "
              f"~{prompt:,} tokens, of which the shared prefix is {shared / prompt:.1%}")


if __name__ == "__main__":
    main()
