"""Token cache, packing with document boundaries, deterministic mixing: against brute-force references."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from paraphrase_pipe.tokenizer import load_tokenizer
from paraphrase_pipe.train.data import DataError, Source, TextTokenizer, held_out, read_manifest, tokenize_source
from paraphrase_pipe.train.packing import Mixture, PackedWindows, make_sample, rank_slice


@pytest.fixture(scope="module")
def tok() -> TextTokenizer:
    return TextTokenizer.wrap(load_tokenizer("builtin:gpt2"))


def _rows(build) -> list[dict]:
    out = []
    for shard in read_manifest(build)["shards"]:
        with pa.memory_map(str(build / shard["path"])) as mm:
            out += pa.ipc.open_file(mm).read_all().to_pylist()
    return out


def test_cache_holds_each_row_then_eos_and_is_reused(built, tok, tmp_path):
    src = Source(shutil.copytree(built, tmp_path / "b"))
    cached = tokenize_source(src, tok)
    rows = _rows(src.path)
    assert len(cached.offsets) == len(rows) + 1
    for i in (0, 7, len(rows) - 1):
        expected = tok.backend.encode(rows[i]["text"], add_special_tokens=False).ids + [tok.eos_id]
        assert cached.tokens[cached.offsets[i]:cached.offsets[i + 1]].tolist() == expected
    cache_dir = next((src.path / "tokenized").iterdir())
    assert cache_dir.name == f"{tok.hash}-text"
    stamp = (cache_dir / "tokens.bin").stat().st_mtime_ns
    tokenize_source(src, tok)
    assert (cache_dir / "tokens.bin").stat().st_mtime_ns == stamp  # reused, not rebuilt


def test_changed_build_rebuilds_cache_and_corrupt_shard_is_refused(built, tok, tmp_path):
    src = Source(shutil.copytree(built, tmp_path / "b"))
    before = tokenize_source(src, tok).offsets[-1]
    manifest = json.loads((src.path / "manifest.json").read_text())
    manifest["shards"] = manifest["shards"][:1]
    (src.path / "manifest.json").write_text(json.dumps(manifest))
    assert tokenize_source(src, tok).offsets[-1] < before
    shard = src.path / manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-9] + b"corrupted")
    shutil.rmtree(src.path / "tokenized")
    with pytest.raises(DataError, match="sha256 differs"):
        tokenize_source(src, tok)


@pytest.mark.parametrize("problem, message", [
    ("no_manifest", "no manifest.json"), ("schema", "schema_version"), ("missing_shard", "is missing"),
    ("column", "no `original2`"),
])
def test_bad_builds_give_clear_errors(built, tok, tmp_path, problem, message):
    out = shutil.copytree(built, tmp_path / "b")
    manifest = json.loads((out / "manifest.json").read_text())
    column = "text"
    if problem == "no_manifest":
        (out / "manifest.json").unlink()
    elif problem == "schema":
        (out / "manifest.json").write_text(json.dumps({**manifest, "schema_version": 99}))
    elif problem == "missing_shard":
        (out / manifest["shards"][0]["path"]).unlink()
    else:
        column = "original2"
    with pytest.raises(DataError, match=message):
        tokenize_source(Source(out, column), tok)


def test_source_spec_parses_column():
    assert Source.parse("out:original") == Source(__import__("pathlib").Path("out"), "original")
    assert Source.parse("runs/out").column == "text"


def _reference_stream(tokens, offsets, rows):
    stream = np.concatenate([tokens[offsets[r]:offsets[r + 1]] for r in rows])
    docs = np.concatenate([np.full(offsets[r + 1] - offsets[r], j) for j, r in enumerate(rows)])
    return stream, docs


def test_windows_tile_the_document_stream_with_boundaries():
    rng = np.random.default_rng(1)
    lengths = rng.integers(0, 40, size=50)  # includes empty rows (null text)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    tokens = rng.integers(0, 1000, size=offsets[-1])
    rows = np.flatnonzero(rng.random(50) < 0.8)
    packed = PackedWindows(tokens, offsets, rows, seq_len=16)
    stream, docs = _reference_stream(tokens, offsets, [r for r in rows if lengths[r]])
    assert len(packed) == (len(stream) - 1) // 16
    for k in range(len(packed)):
        toks, doc = packed.window(k)
        assert toks.tolist() == stream[k * 16:k * 16 + 17].tolist()
        ref = docs[k * 16:k * 16 + 17]
        assert doc.tolist() == (ref - ref[0]).tolist()
        sample = make_sample(toks, doc)
        crossing = ref[1:] != ref[:-1]
        assert (sample["targets"][crossing] == -100).all()
        assert sample["targets"][~crossing].tolist() == toks[1:][~crossing].tolist()
        assert sample["seq_idx"][0] == 0 and (np.diff(sample["seq_idx"]) >= 0).all()
    shuffled = PackedWindows(tokens, offsets, rows, seq_len=16, seed=3)
    again = PackedWindows(tokens, offsets, rows, seq_len=16, seed=3)
    assert shuffled.window(2)[0].tolist() == again.window(2)[0].tolist()
    assert shuffled.ends[-1] == len(stream) and len(shuffled) == len(packed)  # same documents, another order
    assert [shuffled.window(k)[0].tolist() for k in range(3)] != [packed.window(k)[0].tolist() for k in range(3)]


def _windows(n):
    offsets = np.arange(0, 8 * (n + 1), 8)
    return PackedWindows(np.arange(offsets[-1]), offsets, np.arange(n), seq_len=7)


def test_mixture_is_exact_deterministic_and_resumable():
    sources = [_windows(30), _windows(10)]
    mix = Mixture(sources, [0.75, 0.25], seed=5)
    picks = mix.draw(400)
    counts = np.bincount([s for s, _ in picks])
    assert counts.tolist() == [300, 100]
    first_epoch = [k for s, k in picks if s == 1][:len(sources[1])]
    assert sorted(first_epoch) == list(range(len(sources[1])))  # each epoch is a permutation
    fresh = Mixture(sources, [0.75, 0.25], seed=5)
    part = fresh.draw(123)
    resumed = Mixture(sources, [0.75, 0.25], seed=5)
    resumed.load_state_dict(fresh.state_dict())
    assert part + resumed.draw(277) == picks
    assert Mixture(sources, [0.75, 0.25], seed=6).draw(400) != picks


def test_rank_slices_reassemble_the_single_process_order():
    picks = list(range(24))
    single = rank_slice(picks, micro_batch=3, accum=8, rank=0, world=1)
    ddp = [rank_slice(picks, micro_batch=3, accum=2, rank=r, world=4) for r in range(4)]
    assert [mb for m in range(2) for r in range(4) for mb in [ddp[r][m]]] == single


def test_held_out_split_is_by_document():
    hashes = np.arange(0, 10_000_000, 997, dtype=np.uint64)
    share = held_out(hashes, 0.1).mean()
    assert 0.07 < share < 0.13
    assert not held_out(hashes, 0.0).any()


def test_target_counts_match_the_masked_samples():
    rng = np.random.default_rng(4)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(1, 30, size=40))])
    packed = PackedWindows(rng.integers(0, 99, size=offsets[-1]), offsets, np.arange(40), seq_len=12, seed=1)
    for k in range(len(packed)):
        assert packed.targets(k) == int((make_sample(*packed.window(k))["targets"] != -100).sum())
