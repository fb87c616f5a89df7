"""Regenerate data_cards/example/ (README.md, scores.png, drift.json): a real filtered build of the test fixture's 30 pairs
(16 hand-written paraphrases, 14 non-paraphrases) through every default gate, layout orig+para.
Run from the repository root: .venv/bin/python data_cards/make_example.py"""
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paraphrase_pipe.engines import REGISTRY  # noqa: E402
from tests.filters.conftest import load_pairs  # noqa: E402
from tests.filters.test_card import build_from_pairs  # noqa: E402

REGISTRY["pairs"] = "tests.filters.pairs_engine:PairsEngine"
with tempfile.TemporaryDirectory() as tmp:
    out = build_from_pairs(load_pairs(), Path(tmp))
    target = ROOT / "data_cards" / "example"
    target.mkdir(exist_ok=True)
    for name in ("README.md", "scores.png", "drift.json"):
        shutil.copy(out / name, target / name)
print(f"wrote {target}")
