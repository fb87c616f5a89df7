"""Tiny real models and a real (small, locally trained byte-level BPE) tokenizer for the evaluation tests.

- `copy_dir`: RecallLM with an unlimited window — copies any value from its context (recall 1.0);
- `blind_dir`: RecallLM that sees only the last 4 tokens — cannot recall anything (recall 0.0);
- `llama_dir`: a random-weight LlamaForCausalLM (attention, honours padding masks);
- `mamba_dir`: a random-weight MambaForCausalLM (recurrent; it masks padding out of its state);
- `gpt2_dir`: a random-weight GPT2LMHeadModel (absolute positions: left padding shifts them);
- `parallel_dir`: our parallel hybrid (`paraphrase_pipe.models` preset parallel-tiny), random weights.
Each is saved with its tokenizer, so it loads with `AutoModelForCausalLM.from_pretrained(dir)` like a real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from .recall_lm import save_recall_lm

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

FIXTURES = Path(__file__).parent / "fixtures"


def _corpus() -> list[str]:
    from paraphrase_pipe.evaluate import synthetic

    texts = [p.read_text(errors="ignore") for p in FIXTURES.rglob("*") if p.suffix in (".jsonl", ".txt", ".py")]
    return texts + [synthetic.FILLER * 3, " ".join(synthetic.FIRST + synthetic.LAST), "0123456789 " * 20]


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (no intra-op sync), above all on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_corpus(), vocab_size=512, min_frequency=2, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>",
                                  pad_token="<|endoftext|>")
    path = tmp_path_factory.mktemp("tokenizer")
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from paraphrase_pipe.evaluate.load import load_tokenizer

    return load_tokenizer(str(tokenizer_dir))


def _save(model, tokenizer, path: Path) -> Path:
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def copy_dir(tokenizer, tmp_path_factory) -> Path:
    return save_recall_lm(tokenizer, tmp_path_factory.mktemp("copy"), window=0)


@pytest.fixture(scope="session")
def blind_dir(tokenizer, tmp_path_factory) -> Path:
    return save_recall_lm(tokenizer, tmp_path_factory.mktemp("blind"), window=4)


@pytest.fixture(scope="session")
def llama_dir(tokenizer, tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return _save(LlamaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("llama"))


@pytest.fixture(scope="session")
def mamba_dir(tokenizer, tmp_path_factory) -> Path:
    from transformers import MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config = MambaConfig(vocab_size=len(tokenizer), hidden_size=64, state_size=8, num_hidden_layers=2,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return _save(MambaForCausalLM(config), tokenizer, tmp_path_factory.mktemp("mamba"))


@pytest.fixture(scope="session")
def gpt2_dir(tokenizer, tmp_path_factory) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=1024,
                        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return _save(GPT2LMHeadModel(config), tokenizer, tmp_path_factory.mktemp("gpt2"))


@pytest.fixture(scope="session")
def parallel_dir(tokenizer, tmp_path_factory) -> Path:
    from paraphrase_pipe.models import build_model

    torch.manual_seed(0)
    return _save(build_model("parallel-tiny", vocab_size=len(tokenizer)), tokenizer, tmp_path_factory.mktemp("par"))


@pytest.fixture(scope="session")
def load():
    """spec -> LoadedModel, cached: each tiny model is read from disk once per session."""
    from paraphrase_pipe.evaluate.load import load_model

    cache = {}

    def get(path: Path):
        if path not in cache:
            cache[path] = load_model(str(path), device="cpu", dtype="float32")
        return cache[path]

    return get
