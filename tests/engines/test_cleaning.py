"""Output cleaning on the kinds of answers chat models really give."""
from __future__ import annotations

import pytest

from paraphrase_pipe.engines.cleaning import clean

ORIGINAL = "The river rose two metres overnight, and the town closed the old bridge at dawn."
PARA = "Overnight the river climbed by two metres, so at dawn the town shut the old bridge."


@pytest.mark.parametrize("raw", [
    PARA,
    f"Here is a paraphrased version:\n{PARA}",
    f"Here's a paraphrased version of the text:\n\n{PARA}",
    f"Sure! Here is the paraphrase: {PARA}",
    f"Certainly.\n{PARA}",
    f"Paraphrased text:\n{PARA}",
    f'"{PARA}"',
    f"\u201c{PARA}\u201d",
    f"```\n{PARA}\n```",
    f"```text\n{PARA}\n```",
    f'Sure! Here is the rewritten passage:\n```\n"{PARA}"\n```',
])
def test_wrappers_are_stripped_to_the_bare_paraphrase(raw):
    result = clean(raw, "stop", ORIGINAL)
    assert (result.text, result.reason) == (PARA, None)


def test_text_that_merely_contains_quotes_or_colons_is_untouched():
    raw = 'He said "stop" twice: once at noon, once at dusk. "Why?" she asked.'
    assert clean(raw, "stop", ORIGINAL).text == raw


@pytest.mark.parametrize("raw", [
    "I'm sorry, but I can't help with that request.",
    "I cannot paraphrase this content.",
    "As an AI language model, I do not rewrite personal data.",
    "Here is a paraphrased version:\nI apologize, but this text is too garbled to paraphrase.",
])
def test_refusals_are_dead_lettered(raw):
    result = clean(raw, "stop", ORIGINAL)
    assert result.text is None and result.reason == "refusal"


@pytest.mark.parametrize("raw", [
    f"{PARA}\n\nNote: I have kept every number from the original text.",
    f"{PARA} I hope this helps!",
    f"{PARA}\nLet me know if you want a shorter version.",
    f"In this paraphrase, the meaning is preserved. {PARA}",
])
def test_meta_commentary_is_dead_lettered_with_the_offending_words(raw):
    result = clean(raw, "stop", ORIGINAL)
    assert result.reason == "meta_commentary" and result.text is None
    assert len(result.detail) < 200


def test_phrases_that_the_original_itself_contains_are_not_held_against_it():
    original = "Note: the original text of the treaty was lost. I'm sorry to say the copy is all we have."
    para = "Note: the treaty's original text is gone. I'm sorry to say only the copy survives."
    assert clean(para, "stop", original).text == para


def test_truncated_completions_follow_the_policy():
    assert clean(PARA, "length", ORIGINAL).reason == "truncated"
    assert clean(PARA, "length", ORIGINAL, on_truncated="keep").text == PARA


@pytest.mark.parametrize("raw", ["", "   ", "Here is a paraphrased version:\n", '""'])
def test_nothing_left_is_empty(raw):
    assert clean(raw, "stop", ORIGINAL).reason == "empty"
