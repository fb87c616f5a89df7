"""Records from Parquet files and local Hugging Face dataset directories (`save_to_disk` output)."""
from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq


def _rows(table_batches, start: int, stop: int | None) -> Iterator[tuple[int, dict[str, Any]]]:
    index = 0
    for batch in table_batches:
        n = batch.num_rows
        lo, hi = max(start - index, 0), n if stop is None else min(stop - index, n)
        if lo < hi:
            for offset, row in enumerate(batch.slice(lo, hi - lo).to_pylist()):
                yield index + lo + offset, row
        index += n
        if stop is not None and index >= stop:
            return


def iter_parquet(path: str, start: int = 0, stop: int | None = None):
    return _rows(pq.ParquetFile(path).iter_batches(batch_size=1024), start, stop)


def count_parquet(path: str) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _load_hf(path: str):
    from datasets import DatasetDict, load_from_disk

    dataset = load_from_disk(path)
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"] if "train" in dataset else dataset[next(iter(dataset))]
    return dataset


def iter_hf_dataset(path: str, start: int = 0, stop: int | None = None):
    table = _load_hf(path).data.table
    return _rows(table.to_batches(max_chunksize=1024), start, stop)


def count_hf_dataset(path: str) -> int:
    return len(_load_hf(path))


def raw_bytes(row: dict[str, Any]) -> bytes:
    text = json.dumps(row, ensure_ascii=False, default=str)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: the escaped form is still the same JSON
        return json.dumps(row, default=str).encode()
