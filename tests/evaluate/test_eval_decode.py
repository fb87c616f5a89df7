"""Batched greedy decoding: stop at newline, and batched answers identical to one-at-a-time answers, whether the
batches mix lengths (left padding, when the probe finds it exact) or not."""

from __future__ import annotations

from paraphrase_pipe.evaluate.decode import batches, greedy_generate, padding_is_exact
from paraphrase_pipe.evaluate.tokens import encode


def test_copy_model_answers_up_to_the_newline(load, copy_dir, tokenizer):
    m = load(copy_dir)
    context = "alpha: 1234\nbeta: Ann Lee\ngamma: 55\n"
    prompts = [encode(tokenizer, context + q) for q in ("beta:", "alpha:", "gamma:")]
    assert greedy_generate(m.model, m.tokenizer, prompts) == [" Ann Lee", " 1234", " 55"]


def test_batches_keep_one_length_unless_padding_is_exact():
    lengths = [3, 5, 3, 5, 4]
    assert batches(lengths, 2, mix_lengths=False) == [[1, 3], [4], [0, 2]]
    assert batches(lengths, 2, mix_lengths=True) == [[1, 3], [4, 0], [2]]


def test_padding_probe(load, llama_dir, mamba_dir, gpt2_dir, copy_dir):
    assert padding_is_exact(load(llama_dir).model, 0)  # relative positions + attention mask
    assert padding_is_exact(load(mamba_dir).model, 0)  # HF Mamba zeroes padded steps out of its state
    assert padding_is_exact(load(copy_dir).model, 0)
    assert not padding_is_exact(load(gpt2_dir).model, 0)  # absolute positions shift under left padding


def test_batched_equals_one_at_a_time(load, llama_dir, mamba_dir, gpt2_dir, tokenizer):
    texts = ["The sky is", "Phone book:\nAnn B. Lee: 555-1234\nAnn B. Lee:", "The grass is green. The sun",
             "There and back", "Remember each key and its value.\nkvyt: 483\n"]
    prompts = [encode(tokenizer, t) for t in texts]
    for path in (llama_dir, mamba_dir, gpt2_dir):
        m = load(path)
        one_by_one = [greedy_generate(m.model, m.tokenizer, [p], max_new_tokens=4)[0] for p in prompts]
        assert greedy_generate(m.model, m.tokenizer, prompts, max_new_tokens=4, batch_size=4) == one_by_one
