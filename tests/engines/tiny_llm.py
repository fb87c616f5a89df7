"""A tiny random-weight Llama + a locally trained byte-level BPE with a chat template: loads in vLLM (CPU) and
transformers like a hub model, in about a second. Used by the engine tests and `benchmarks/engine_saturation.py`."""
from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build_tiny_llm(path: Path, *, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Save model + tokenizer to `path` (head_dim 64: vLLM's CPU attention needs it)."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from paraphrase_pipe.sources.files import SAMPLE_DIR

    import zstandard

    raw = zstandard.ZstdDecompressor().decompress((SAMPLE_DIR / "example_train_0.jsonl.zst").read_bytes(), max_output_size=1 << 30)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(raw.decode().splitlines()[:200], vocab_size=vocab_size, min_frequency=2,
                            special_tokens=["<s>", "</s>"], show_progress=False)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>", pad_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
