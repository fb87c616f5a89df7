"""Evaluation rows and texts, read from a Hugging Face dataset id or from local files in the same format.

Why one reader: the recall benchmarks and the long-context texts come from the same kinds of places (a hub dataset
id, a local parquet / jsonl / json / csv / Arrow file or folder, a `datasets.save_to_disk` folder, a
`paraphrase-pipe build` output, PG-19-style `.txt` books) and every bad path must fail with the same clear message.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa

from paraphrase_pipe.evaluate.errors import EvalError

_BUILDERS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
_ARROW = (".arrow", ".feather", ".ipc")


def read_rows(source: str, split: str = "validation") -> list[dict]:
    """All rows of `split` as dicts. Local files hold one split; a folder's files named after `split` win."""
    path = Path(source).expanduser()
    if path.is_file():
        return _read_files([path])
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _from_disk(path, split)
        files = sorted(p for p in path.rglob("*") if p.suffix in _BUILDERS or p.suffix in _ARROW)
        named = [p for p in files if split in p.name]
        if not files:
            raise EvalError(f"{path}: no .parquet/.jsonl/.json/.csv/.arrow files in this folder")
        return _read_files(named or files)
    if source.startswith((".", "/", "~")) or source.count("/") != 1 or path.suffix in (*_BUILDERS, *_ARROW):
        raise EvalError(f"{source}: no such file or folder (and not a hub id of the form owner/name)")
    return _from_hub(source, split)


def read_texts(source: str, column: str = "text", split: str = "test") -> list[str]:
    """Documents for perplexity: a build output (each document's original chunks joined in order), `.txt` files
    (one book each, as in PG-19's release), or any table with a `column` of text."""
    path = Path(source).expanduser()
    if (path / "manifest.json").is_file():
        return _build_documents(path)
    if path.is_file() and path.suffix == ".txt":
        return [path.read_text(errors="replace")]
    if path.is_dir() and not any(p.suffix in _BUILDERS or p.suffix in _ARROW for p in path.rglob("*")):
        books = sorted(path.rglob("*.txt"))
        if books:
            return [p.read_text(errors="replace") for p in books]
    rows = read_rows(source, split)
    if rows and column not in rows[0]:
        raise EvalError(f"{source}: no {column!r} column (columns: {sorted(rows[0])})")
    return [r[column] for r in rows if r[column]]


def _read_files(files: list[Path]) -> list[dict]:
    rows: list[dict] = []
    for f in files:
        try:
            rows.extend(_read_table(f).to_pylist())
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise EvalError(f"{f}: cannot read it as {f.suffix[1:]} ({exc})") from None
    return rows


def _read_table(path: Path) -> pa.Table:
    if path.suffix in _ARROW:
        with pa.memory_map(str(path)) as src:
            try:
                return pa.ipc.open_file(src).read_all()
            except pa.ArrowInvalid:
                src.seek(0)
                return pa.ipc.open_stream(src).read_all()
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path)
    if path.suffix == ".csv":
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    text = path.read_text()
    if path.suffix == ".json" and text.lstrip().startswith("["):
        return pa.Table.from_pylist(json.loads(text))
    return pa.Table.from_pylist([json.loads(line) for line in text.splitlines() if line.strip()])


def _from_disk(path: Path, split: str) -> list[dict]:
    import datasets

    data = datasets.load_from_disk(str(path))
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise EvalError(f"{path}: no split {split!r} (splits: {sorted(data)})")
        data = data[split]
    return data.to_list()


def _from_hub(name: str, split: str) -> list[dict]:
    import datasets

    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; the user needs one message
        from paraphrase_pipe.hub import offline_hint

        raise EvalError(f"cannot load dataset {name!r} split {split!r}{offline_hint('local files')}: "
                        f"{type(exc).__name__}: {exc}") from None


def _build_documents(out: Path) -> list[str]:
    from paraphrase_pipe.output.errors import ManifestError
    from paraphrase_pipe.output.reader import BuildOutput

    try:
        build = BuildOutput.open(out)
    except ManifestError as exc:
        raise EvalError(str(exc)) from None
    docs: dict[str, list[str]] = {}
    for _, table in build.tables("shards", columns=["doc_id", "original"]):
        seen: set[tuple[str, str]] = set()  # a chunk appears once per layout: keep its first row
        for doc_id, original in zip(*(table.column(c).to_pylist() for c in ("doc_id", "original"))):
            if (doc_id, original) not in seen:
                seen.add((doc_id, original))
                docs.setdefault(doc_id, []).append(original)
    if not docs:
        raise EvalError(f"{out}: the manifest lists no shards with text")
    return ["".join(parts) for parts in docs.values()]
