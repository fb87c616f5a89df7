"""Output cleaning: turn a raw completion into a paraphrase, or into a reject reason.

Chat models wrap answers in preambles ("Here is a paraphrased version:"), markdown fences and quotes; they
sometimes refuse or talk about the task instead of doing it; and a completion cut at `max_tokens` is not a whole
paraphrase. Phrases that also occur in the original chunk are never held against the paraphrase.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_LEAD = r"(?:(?:sure|certainly|of course|okay|ok|absolutely)\b[!,.]?\s*)?"
_PREAMBLE = re.compile(
    _LEAD + r"(?:"
    r"here(?:'s| is| are)\b[^\n:]{0,100}:"  # Here is a paraphrased version of the text:
    r"|(?:the\s+)?(?:paraphrased|rewritten|rephrased|revised)(?:\s+(?:text|version|passage|paragraph))?\s*:"
    r"|(?:paraphrase|rewrite|rephrasing)\s*:"
    r")[ \t]*\n?"
    r"|(?:sure|certainly|of course|okay|absolutely)[!.][ \t]*\n",
    re.IGNORECASE,
)
_FENCE = re.compile(r"\A```[\w+-]*[ \t]*\n(.*?)\n?```\Z", re.DOTALL)
_QUOTES = (('"', '"'), ("\u201c", "\u201d"), ("'", "'"), ("\u00ab", "\u00bb"))

_REFUSAL = re.compile(
    r"\A\W*(?:i(?:'m| am) sorry|i apologi[sz]e|i (?:cannot|can't|can not|won't|am unable to|'m unable to)|"
    r"as an ai\b|unfortunately,? i\b)",
    re.IGNORECASE,
)
_META = re.compile(
    r"(?:^|\n)\s*(?:note:|\(note:)|"
    r"\b(?:this|the above|my) (?:paraphrase|rewrite|rephrasing|paraphrased version)\b|"
    r"\bthe original (?:text|passage|paragraph)\b|"
    r"\bi (?:have|'ve) (?:paraphrased|rephrased|rewritten|kept|preserved|maintained)\b|"
    r"\blet me know if\b|\bi hope this helps\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Cleaned:
    text: str | None
    reason: str | None = None  # reject reason code, None when accepted
    detail: str | None = None


def strip_wrapping(text: str, original: str) -> str:
    """Remove preambles, a fence around the whole answer and quotes around the whole answer (unless the original
    itself is fenced/quoted). Repeats until nothing changes: answers nest them ("Sure!\\n```\\n\"...\"\\n```")."""
    text = text.strip()
    while True:
        before = text
        if not _PREAMBLE.match(original.lstrip()):
            text = _PREAMBLE.sub("", text, count=1).strip() if _PREAMBLE.match(text) else text
        fence = _FENCE.match(text)
        if fence and not original.lstrip().startswith("```"):
            text = fence.group(1).strip()
        for left, right in _QUOTES:
            only_pair = text.count(left) == 2 if left == right else text.count(left) == text.count(right) == 1
            if len(text) >= 2 and text[0] == left and text[-1] == right and only_pair and not original.strip().startswith(left):
                text = text[1:-1].strip()
        if text == before:
            return text


def _new_match(pattern: re.Pattern, text: str, original: str) -> re.Match | None:
    match = pattern.search(text)
    if match and pattern.search(original) is None:
        return match
    return None


def clean(text: str | None, finish_reason: str | None, original: str, *, on_truncated: str = "reject") -> Cleaned:
    """`on_truncated`: "reject" dead-letters completions cut at max_tokens ("truncated"); "keep" accepts them."""
    if finish_reason == "length" and on_truncated == "reject":
        return Cleaned(None, "truncated", "the completion hit max_tokens (finish_reason=length)")
    if _new_match(_REFUSAL, (text or "").strip(), original):
        return Cleaned(None, "refusal", (text or "").strip()[:200])
    body = strip_wrapping(text or "", original)
    if not body:
        return Cleaned(None, "empty", f"nothing left after cleaning (finish_reason={finish_reason})")
    if _new_match(_REFUSAL, body, original):
        return Cleaned(None, "refusal", body[:200])
    if meta := _new_match(_META, body, original):
        start = max(meta.start() - 60, 0)
        return Cleaned(None, "meta_commentary", f"…{body[start:meta.end() + 60]}…")
    return Cleaned(body)
