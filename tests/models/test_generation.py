"""Hugging Face behaviour: generate with the recurrent/KV cache, save/load through the Auto classes."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from paraphrase_pipe.models import HybridForCausalLM
from paraphrase_pipe.models.cache import HybridCache

from .conftest import MAIN, VOCAB, make_model

NEW = 6


def full_forward_greedy(model, ids, n=NEW):
    for _ in range(n):
        nxt = model(ids, use_cache=False).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
    return ids


def stepwise_greedy(model, ids, n=NEW):
    cache = HybridCache()
    logits = model(ids, past_key_values=cache, use_cache=True).logits
    out = ids
    for _ in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        logits = model(nxt, past_key_values=cache, use_cache=True).logits
    return out


@pytest.mark.parametrize("variant", MAIN + ["parallel-xattn-q-attn"])
@torch.no_grad()
def test_generate_equals_stepwise_and_full_forward(variant):
    model = make_model(variant)
    ids = torch.randint(0, VOCAB, (2, 9))
    generated = model.generate(ids, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, stepwise_greedy(model, ids))
    assert torch.equal(generated, full_forward_greedy(model, ids))


@torch.no_grad()
def test_decode_logits_equal_full_forward_logits():
    model = make_model("sequential1")
    ids = torch.randint(0, VOCAB, (2, 12))
    cache = HybridCache()
    steps = [model(ids[:, :7], past_key_values=cache).logits]
    steps += [model(ids[:, t:t + 1], past_key_values=cache).logits for t in range(7, 12)]
    torch.testing.assert_close(torch.cat(steps, 1), model(ids, use_cache=False).logits, rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_generate_left_padded_batch_equals_single_prompts():
    model = make_model("parallel-xattn")
    short, long = torch.randint(1, VOCAB, (1, 5)), torch.randint(1, VOCAB, (1, 9))
    batch = torch.cat([torch.cat([torch.zeros(1, 4, dtype=torch.long), short], 1), long])
    mask = (torch.arange(9)[None] >= torch.tensor([[4], [0]])).long()
    out = model.generate(batch, attention_mask=mask, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(out[0, 4:], model.generate(short, max_new_tokens=NEW, do_sample=False, pad_token_id=0)[0])
    assert torch.equal(out[1], model.generate(long, max_new_tokens=NEW, do_sample=False, pad_token_id=0)[0])


@torch.no_grad()
def test_generate_after_packed_prompt_continues_the_last_document():
    model = make_model("mamba1")
    first, last = torch.randint(0, VOCAB, (1, 6)), torch.randint(0, VOCAB, (1, 5))
    seq_idx = torch.tensor([[0] * 6 + [1] * 5])
    out = model.generate(torch.cat([first, last], 1), seq_idx=seq_idx, max_new_tokens=NEW, do_sample=False,
                         pad_token_id=0)
    alone = model.generate(last, max_new_tokens=NEW, do_sample=False, pad_token_id=0)
    assert torch.equal(out[:, 11:], alone[:, 5:])


@pytest.mark.parametrize("variant", ["sequential1", "parallel-gate"])
def test_save_pretrained_from_pretrained_through_auto_classes(tmp_path, variant):
    model = make_model(variant, skip_branches=[])
    with torch.no_grad():  # make every parameter non-default, so a missed one shows
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).model_type == "paraphrase_hybrid"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HybridForCausalLM)
    drop = {"_name_or_path"}
    assert {k: v for k, v in loaded.config.to_dict().items() if k not in drop} == \
        {k: v for k, v in model.config.to_dict().items() if k not in drop}
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    x = torch.randint(0, VOCAB, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x).logits, model(x).logits, rtol=0, atol=0)
