"""Stand-in reference LM for `filter_throughput.py --reference-model` on a machine without hub access: a random-init
1.03B Llama (hidden 2048, 16 layers) with the real GPT-2 tokenizer, saved to DIR; then checks that the perplexity
gate's batched, right-padded CUDA scoring equals per-text model loss (fp32) and how far bf16 moves it.

    python3 benchmarks/filter_reference_check.py /tmp/ref      # needs a CUDA GPU
"""
import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from paraphrase_pipe.filters.perplexity import load_reference, mean_nll  # noqa: E402
from paraphrase_pipe.tokenizer import _gpt2_builtin  # noqa: E402


def build(out: Path) -> None:
    tokenizer = _gpt2_builtin()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                         num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=8192,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e9:.2f} B")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def check(out: Path) -> None:
    lines = (ROOT / "tests" / "filters" / "fixtures" / "pairs.jsonl").read_text().splitlines()
    texts = [json.loads(line)["paraphrase"] for line in lines][:12]
    model, tokenizer = load_reference(str(out), "cuda", "float32")
    batched = mean_nll(texts, model, tokenizer, 4096, 600)  # a small budget: several padded batches
    worst = 0.0
    for text, value in zip(texts, batched):
        ids = torch.tensor([tokenizer(text)["input_ids"]], device="cuda")
        with torch.inference_mode():
            reference = model(input_ids=ids, labels=ids).loss.item()
        worst = max(worst, abs(value - reference) / reference)
    print(f"fp32 cuda: batched vs per-text loss, max relative difference {worst:.2e}")
    bf16, bf16_tokenizer = load_reference(str(out), "cuda", "bfloat16")
    diff = abs(mean_nll(texts, bf16, bf16_tokenizer, 4096, 600) - batched) / batched
    print(f"bf16 vs fp32 mean NLL: max relative difference {diff.max():.2e}")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
    check(Path(sys.argv[1]))
