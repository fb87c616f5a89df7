"""Build output -> token arrays on disk: read the manifest, tokenize one text column of the Arrow shards once,
and cache the result next to the shards (keyed by tokenizer hash), memory-mapped for every later run.

Cache layout `OUT/tokenized/<tokenizer-hash>-<column>/`: `tokens.bin` (uint16 or uint32, each row's tokens
followed by EOS), `offsets.npy` (row i = tokens[offsets[i]:offsets[i+1]]), `doc_hash.npy` (uint64 of doc_id,
for the held-out split) and `meta.json` (the shard sha256s it was made from: a changed build rebuilds it).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from paraphrase_pipe.output.errors import ManifestError
from paraphrase_pipe.output.reader import MANIFEST, BuildOutput
from paraphrase_pipe.output.shards import sha256_file
from paraphrase_pipe.tokenizer import fingerprint, for_counting

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>", "<|eos|>")


class DataError(ValueError):
    """Bad or missing training data; the command prints it without a traceback."""


@dataclass(frozen=True)
class Source:
    """One build output directory and the column of it to train on."""

    path: Path
    column: str = "text"

    @classmethod
    def parse(cls, spec: str) -> "Source":
        """`DIR` or `DIR:column` (e.g. `out:original` for replay of the un-paraphrased chunks)."""
        head, sep, tail = spec.rpartition(":")
        if sep and tail.isidentifier() and not Path(spec).exists():
            return cls(Path(head), tail)
        return cls(Path(spec))

    def __str__(self) -> str:
        return f"{self.path}:{self.column}"


@dataclass(frozen=True)
class TokenizedSource:
    """Memory-mapped tokens of one source; rows are the build's samples, in manifest order."""

    tokens: np.ndarray
    offsets: np.ndarray
    doc_hash: np.ndarray

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


@dataclass(frozen=True)
class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the id that ends every document; `hash` names its cache."""

    backend: object
    eos_id: int

    @classmethod
    def wrap(cls, tok) -> "TextTokenizer":
        """Accept `paraphrase_pipe.tokenizer.load_tokenizer`'s result, a `tokenizers.Tokenizer` or an HF fast one."""
        backend = getattr(tok, "backend_tokenizer", None) or getattr(tok, "backend", tok)
        if not hasattr(backend, "encode_batch") or not hasattr(backend, "to_str"):
            raise DataError(f"unsupported tokenizer type {type(tok).__name__}: need a fast (Rust) tokenizer")
        eos = getattr(tok, "eos_token_id", None)
        if eos is None and getattr(tok, "eos_token", None):
            eos = backend.token_to_id(tok.eos_token)
        if eos is None:
            eos = next((backend.token_to_id(t) for t in EOS_CANDIDATES if backend.token_to_id(t) is not None), None)
        if eos is None:
            raise DataError(f"tokenizer has no end-of-text token (looked for {', '.join(EOS_CANDIDATES)})")
        return cls(for_counting(backend), int(eos))

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def hash(self) -> str:
        return fingerprint(self.backend)

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.backend.encode_batch(texts, add_special_tokens=False)]


def read_manifest(out: Path) -> dict:
    """The build's manifest (through the one build-output reader), checked far enough that later reads cannot fail
    obscurely."""
    if not (Path(out) / MANIFEST).is_file():
        raise DataError(f"{out} is not a build output: no {MANIFEST} (run `paraphrase-pipe build` first)")
    try:
        build = BuildOutput.open(out)
    except ManifestError as exc:
        raise DataError(str(exc)) from None
    if not build.entries("shards"):
        raise DataError(f"{out / MANIFEST} lists no shards (status: {build.status!r})")
    for path in build.missing("shards"):
        raise DataError(f"{out}: shard {path} listed in the manifest is missing")
    return build.manifest


def _doc_hash(doc_ids: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.blake2b(d.encode(), digest_size=8).digest(), "little")
                     for d in doc_ids], dtype=np.uint64)


def _tokenize_shards(out: Path, shards: list[dict], column: str, tok: TextTokenizer, dest: Path) -> None:
    dtype = np.uint16 if tok.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    offsets, hashes, total = [0], [], 0
    with open(dest / "tokens.bin", "wb") as f:
        for shard in shards:
            path = out / shard["path"]
            if shard.get("sha256") and sha256_file(path) != shard["sha256"]:
                raise DataError(f"{path}: sha256 differs from the manifest (corrupt or changed shard)")
            with pa.memory_map(str(path)) as mm:
                reader = pa.ipc.open_file(mm)
                if column not in reader.schema.names or "doc_id" not in reader.schema.names:
                    raise DataError(f"{path} has no `{column}`/`doc_id` column (columns: {reader.schema.names})")
                for i in range(reader.num_record_batches):
                    batch = reader.get_batch(i)
                    texts = batch.column(column).to_pylist()
                    ids = tok.encode([t or "" for t in texts])
                    rows = [row + [tok.eos_id] if text else [] for text, row in zip(texts, ids)]
                    lengths = np.fromiter(map(len, rows), np.int64, len(rows))
                    np.fromiter(itertools.chain.from_iterable(rows), dtype, int(lengths.sum())).tofile(f)
                    offsets.extend((total + np.cumsum(lengths)).tolist())
                    total += int(lengths.sum())
                    hashes.append(_doc_hash(batch.column("doc_id").to_pylist()))
    np.save(dest / "offsets.npy", np.asarray(offsets, dtype=np.int64))
    np.save(dest / "doc_hash.npy", np.concatenate(hashes) if hashes else np.zeros(0, np.uint64))
    (dest / "meta.json").write_text(json.dumps({"dtype": np.dtype(dtype).name, "tokens": total, "eos_id": tok.eos_id,
                                                "shards": [s.get("sha256") for s in shards]}))


def _open_cache(path: Path) -> TokenizedSource:
    meta = json.loads((path / "meta.json").read_text())
    tokens = (np.memmap(path / "tokens.bin", dtype=meta["dtype"], mode="r") if meta["tokens"]
              else np.zeros(0, dtype=meta["dtype"]))
    return TokenizedSource(tokens, np.load(path / "offsets.npy"), np.load(path / "doc_hash.npy"))


def cache_path(source: Source, tok: TextTokenizer, cache_dir: Path | None = None) -> Path:
    """Next to the shards by default; under `cache_dir` (keyed by the build's path) when given."""
    name = f"{tok.hash}-{source.column}"
    if cache_dir is None:
        return source.path / "tokenized" / name
    key = hashlib.sha256(str(source.path.resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir) / f"{source.path.name}-{key}" / name


def tokenize_source(source: Source, tok: TextTokenizer, cache_dir: Path | None = None) -> TokenizedSource:
    """Tokenize once (atomically: temp dir then rename) and memory-map; a stale cache is rebuilt."""
    manifest = read_manifest(source.path)
    shards = manifest["shards"]
    path = cache_path(source, tok, cache_dir)
    if (path / "meta.json").is_file():
        if json.loads((path / "meta.json").read_text())["shards"] == [s.get("sha256") for s in shards]:
            return _open_cache(path)
        shutil.rmtree(path, ignore_errors=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    except OSError as err:
        raise DataError(f"cannot write the token cache at {path.parent} ({err.strerror}); pass --cache-dir") from None
    try:
        _tokenize_shards(source.path, shards, source.column, tok, tmp)
        os.replace(tmp, path)
    except OSError:
        if not (path / "meta.json").is_file():  # not a concurrent writer that won the rename
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return _open_cache(path)


def held_out(doc_hash: np.ndarray, fraction: float) -> np.ndarray:
    """Deterministic document-level split: a doc's paraphrases and originals land on the same side."""
    return (doc_hash % np.uint64(1_000_000)) < np.uint64(round(fraction * 1_000_000))
