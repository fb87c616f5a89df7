"""Fact coverage: the checkable content of a source chunk — its numbers (with their unit) and its names — must
survive in the paraphrase unchanged. A rewrite that drops or alters them teaches the trained model a wrong
association, and sentence embeddings barely notice either.

Facts, after normalisation:
- numbers: number words become digits first (`text2num`'s `alpha2digit`, so "twelve" = "12", "three kilometres"
  = "3 kilometres"; "one" and "two" stay words, being as often no count, but they keep a source's "1" / "2";
  "hundreds of thousands" is no number), thousands separators go ("1,200" = "1200", also with a no-break or thin
  space), scale words multiply ("2.5 million" = "$2.5m" = "2,500,000"), month names are month numbers ("24 October
  2022" = "2022-10-24"); the word after a number is its unit when `pint` knows it as a common unit ("3 km" = "3
  kilometres" = kilometer; "16 bit" = bit; "5 mph" = "5 miles per hour": a rate matches its first unit);
- names: what a paraphrase has no reason to reword — identifiers and symbols (`write_char`, `CTRL-W`, `E484`,
  `:qall`, `'shiftwidth'`), quoted literals of up to 3 words, and capitalised words that do not start a sentence
  (or a code comment) and never appear in lower case (`Unix`, `Pascal`, `PEP`); an acronym stands for the
  capitalised words it abbreviates ("WHO" = "World Health Organization", "U.S." = "United States"),
  "London-based" names London, titles ("Dr", "Prof") are no names. No NER model installs offline from PyPI
  (spaCy's models are not published there), so names are found by their form; on technical text these are the
  facts that matter.

Two gates share one extraction (cached per text): `facts` scores the share of source facts found in the
paraphrase (`facts_dropped` below its band), `fact_changes` the share of source facts replaced by a fact of the
same kind that the source does not have (`facts_changed` above its band). A source without facts gets no score
(NaN), so neither gate can reject it.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import ClassVar

import numpy as np

from paraphrase_pipe.filters.base import Gate, load_error

NUMBER = re.compile(r"(?<![\w.])(\d{1,3}(?:[,\u00a0\u2009\u202f]\d{3})+|\d+(?:\.\d+)?)(?![\w]|\.\d)(?:\s?(%)|[ \t]([^\W\d_]{2,}))?")
SCALES = {"thousand": 3, "million": 6, "billion": 9, "trillion": 12, "k": 3, "m": 6, "mn": 6, "bn": 9, "b": 9, "tn": 12}
# "2.5 million", and after a currency sign "$2.5m" / "€3bn" ("5m" alone is five metres)
SCALED = re.compile(r"(?<![\w.,])(\d{1,3}(?:,\d{3})+|\d+(?:\.\d+)?)\s?(thousand|million|billion|trillion)\b|(?<=[$€£¥])(\d+(?:\.\d+)?)\s?(k|mn?|bn?|tn)\b", re.I)
MONTHS = {m: i + 1 for i, m in enumerate(("January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November", "December"))}
MONTHS |= {m[:3]: i for m, i in MONTHS.items() if m != "May"} | {"Sept": 9}
MONTH = re.compile(r"\b(" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\b\.?")
ACRONYM_RUN = re.compile(r"[A-Z]\w*(?:[ \t]+(?:(?:of|for|the|on|de|&)[ \t]+)*[A-Z]\w*)+")
VAGUE = re.compile(r"\b((?:tens|dozens|hundreds|thousands|millions|billions|trillions)\b)", re.I)
SPELLED = {"1": "one", "2": "two"}  # alpha2digit leaves isolated numbers under 3 as words: they are often no count
TITLES = {"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr"}
QUOTED = re.compile(r"\"([^\"\n]{1,40})\"|(?<!\w)'([^'\n]{1,40})'(?!\w)|`([^`'\n]{1,40})[`']|“([^”\n]{1,40})”")
CODE = re.compile(r"(?<![\w])[:<]?[A-Za-z_][\w.-]*[\w>](?:\(\))?")
SENTENCE_START = re.compile(r"(?:^\s*|[.!?:\]][\"'”’)]*\s+|[(\t]|\n[\s*\d.)#/;>-]*)$")  # also a code comment's first word
UNIT_PREFIXES = {"", "kilo", "mega", "giga", "tera", "milli", "micro", "nano", "centi", "kibi", "mebi", "gibi", "tebi"}
UNIT_KINDS = {"[length]", "[mass]", "[time]", "[temperature]", "1 / [time]", "[length] / [time]", "[area]", "[volume]"}


@lru_cache(maxsize=1)
def _libraries():
    try:
        import pint
        from text_to_num import alpha2digit
    except ImportError as exc:
        raise load_error("facts", "number parser", "text2num / pint", exc) from None
    return alpha2digit, pint.UnitRegistry()


@lru_cache(maxsize=4096)
def unit_of(word: str) -> str | None:
    """The canonical unit a word names ("kilometres" -> "kilometer", "KiB" -> "kibibyte"), None for other words."""
    _, registry = _libraries()
    if word == "%":
        return "percent"
    try:
        parsed = registry.parse_unit_name(word)
    except Exception:  # noqa: BLE001 - pint raises several types for words it cannot read
        return None
    if len(parsed) != 1:
        return None
    prefix, name, _ = parsed[0]
    full = prefix + name
    if prefix not in UNIT_PREFIXES or (not prefix and len(word) <= 2 and word.islower()):
        return None  # "in" (inch), "are", "rm" (ronto-metre): words, not units
    spelled = word.lower() in (full, full + "s", full + "es") or (len(word) >= 6 and word.lower()[:6] == full[:6])
    if not (spelled or word == registry.get_symbol(full)):
        return None
    kind = str(registry.get_dimensionality(full))
    return full if kind in UNIT_KINDS or name in ("percent", "pixel", "css_pixel", "byte", "bit") else None  # pint: bytes are dimensionless


@dataclass(frozen=True)
class Facts:
    numbers: frozenset[tuple[str, str | None]]  # (value, unit)
    counts: Counter  # value -> how often it occurs (one "3" of three changed is a change)
    names: frozenset[str]  # casefolded
    text: str  # normalised text the facts were found in (casefolded, numbers as digits)
    acronyms: dict  # acronym (casefolded, no dots) -> the casefolded capitalised words it abbreviates here

    @property
    def size(self) -> int:
        return len(self.numbers) + len(self.names)


def _number(value: str) -> str:
    value = re.sub(r"[,\u00a0\u2009\u202f]", "", value)
    return value.rstrip("0").rstrip(".") if "." in value else value.lstrip("0") or "0"


@lru_cache(maxsize=2048)  # one batch's texts, for the second fact gate (~40 MB at 2,048-token chunks)
def extract(text: str, language: str = "en") -> Facts:
    """The facts of one text (see the module docstring)."""
    alpha2digit, _ = _libraries()
    text = SCALED.sub(_scaled, text)  # before alpha2digit, which reads "2.5 million" as "2.5 1000000"
    try:  # plural scale words are no number ("hundreds of thousands"; alpha2digit makes them "100 of 1000")
        text = "".join(piece if i % 2 else alpha2digit(piece, language) for i, piece in enumerate(VAGUE.split(text)))
    except Exception:  # noqa: BLE001 - an unsupported language leaves number words as words
        pass
    found = [(_number(m[1]), unit_of(m[2] or m[3]) if (m[2] or m[3]) else None) for m in NUMBER.finditer(text)]
    found += [(str(MONTHS[m[1]]), "month") for m in MONTH.finditer(text)]
    quoted = (q.strip() for m in QUOTED.finditer(text) for q in m.groups() if q and q.strip())
    names = {q.casefold() for q in quoted if len(q.split()) <= 3}  # longer: two unrelated quote marks
    lower = set(re.findall(r"\b[a-z]\w*", text))
    acronyms = {}
    for m in ACRONYM_RUN.finditer(text):
        capitalised = [w for w in m[0].split() if w[0].isupper()]
        for i in range(len(capitalised) - 1):  # every stretch: a sentence's first word may lead the run
            for j in range(i + 2, len(capitalised) + 1):
                acronyms["".join(w[0] for w in capitalised[i:j]).casefold()] = {w.casefold() for w in capitalised[i:j]}
    for m in CODE.finditer(text):
        token = m[0]
        if token in MONTHS or token.casefold() in TITLES:
            continue  # months are numbers (above); "Dr" or "Prof" is not the name
        if re.fullmatch(r"[A-Z][a-z]+(?:-[a-z]+)+", token):
            token = token.split("-")[0]  # "London-based" names London
        coded = "_" in token or token[0] in ":<" or token.endswith("()") or any(c.isdigit() for c in token) or any(c.isupper() for c in token[1:])
        # a capitalised word is a name when it does not start a sentence and the text never writes it in lower case
        named = token[0].isupper() and token.lower() not in lower and not SENTENCE_START.search(text[: m.start()][-8:])
        if coded or named:
            names.add(token.casefold())
    return Facts(frozenset(found), Counter(v for v, _ in found), frozenset(names), " ".join(text.casefold().split()), acronyms)


def _scaled(m: re.Match) -> str:
    value, scale = (m[1], m[2]) if m[1] else (m[3], m[4])
    return format((Decimal(value.replace(",", "")) * 10 ** SCALES[scale.lower()]).normalize(), "f")


def _same_unit(a: str | None, b: str | None) -> bool:
    """Units match when equal, when one side has none, or when one is a rate of the other ("mile_per_hour" and
    "mile": "5 miles per hour" reads its unit as the word after the number)."""
    return a == b or a is None or b is None or a.startswith(f"{b}_per_") or b.startswith(f"{a}_per_")


def _found(number: tuple[str, str | None], facts: Facts) -> bool:
    value, unit = number
    if any(v == value and _same_unit(u, unit) for v, u in facts.numbers):
        return True
    return value in SPELLED and re.search(rf"\b{SPELLED[value]}\b", facts.text) is not None  # "2 modes" = "two modes"


def _abbreviated(names: list[str], acronyms: dict, other: Facts) -> set[str]:
    """The names among `names` that the other text writes in the other form: an acronym of this text spelled out
    there, or this text's capitalised run abbreviated there."""
    covered = set()
    for acronym, words in acronyms.items():
        if len(acronym) >= 2 and acronym in {n.replace(".", "") for n in other.names}:
            covered |= words  # "World Health Organization" here, "WHO" there
    for name in names:
        spelled = other.acronyms.get(name.replace(".", ""))
        if spelled and all(w in other.text for w in spelled):
            covered.add(name)  # "WHO" here, "World Health Organization" there
    return {n for n in names if n in covered}


def compare(original: str, paraphrase: str, language: str = "en") -> tuple[float, float]:
    """(share of source facts found in the paraphrase, share replaced by new facts of the same kind); NaN, NaN
    when the source has none."""
    src, para = extract(original, language), extract(paraphrase, language)
    if not src.size:
        return float("nan"), float("nan")
    missing_numbers = [n for n in src.numbers if not _found(n, para)]
    missing_names = [n for n in src.names if n not in para.text]
    missing_names = [n for n in missing_names if n not in _abbreviated(missing_names, src.acronyms, para)]
    new_numbers = [n for n in para.numbers if not _found(n, src)]
    new_names = [n for n in para.names if n not in src.text]
    new_names = [n for n in new_names if n not in _abbreviated(new_names, para.acronyms, src)]
    found = src.size - len(missing_numbers) - len(missing_names)
    # a change: a source fact gone (numbers: also fewer occurrences, or another unit) where the paraphrase has
    # one the source lacks
    fewer = sum((src.counts - para.counts).values())
    more = sum((para.counts - src.counts).values())
    changed = max(min(fewer, more), min(len(missing_numbers), len(new_numbers))) + min(len(missing_names), len(new_names))
    return found / src.size, changed / src.size


class _FactGate(Gate):
    language: str = "en"  # number words read by alpha2digit (en, fr, es, de, pt, it, nl, da)

    index: ClassVar[int]

    def score(self, originals, paraphrases, tokenizer):
        pairs = [compare(o, p, self.language) for o, p in zip(originals, paraphrases)]
        return {self.column: np.asarray([pair[self.index] for pair in pairs], dtype=np.float64).reshape(len(pairs))}


class FactChangeGate(_FactGate):
    max: float | None = 0.04  # benchmarks/filter_calibration.py --calibrate

    name: ClassVar[str] = "fact_changes"
    column: ClassVar[str] = "score_facts_changed"
    high_reason: ClassVar[str] = "facts_changed"
    index: ClassVar[int] = 1


class FactCoverageGate(_FactGate):
    min: float | None = 0.96  # benchmarks/filter_calibration.py --calibrate

    name: ClassVar[str] = "facts"
    column: ClassVar[str] = "score_facts_kept"
    low_reason: ClassVar[str] = "facts_dropped"
    index: ClassVar[int] = 0
