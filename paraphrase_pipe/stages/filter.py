"""The filter stage: score each live paraphrase against its own source chunk with every enabled gate and
dead-letter the rows outside a gate's band (reject_stage `filter`, reason from the gate, detail with the score).

Every enabled gate adds its score columns to the whole table (null where a row was not scored: no paraphrase,
rejected earlier, or a gate that does not apply), so all shards of a build share one schema.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from paraphrase_pipe.filters import FilterOptions
from paraphrase_pipe.tokenizer import LoadedTokenizer

STAGE = "filter"


def _empty(kind: pa.DataType, n: int) -> np.ndarray:
    return np.full(n, np.nan) if pa.types.is_floating(kind) else np.full(n, None, dtype=object)


def filter_rows(rows: pa.Table, options: FilterOptions, tokenizer: LoadedTokenizer) -> pa.Table:
    gates = options.gates()
    if not gates:
        return rows
    n = len(rows)
    alive = np.flatnonzero(pc.and_(pc.is_null(rows["reject_reason"]), pc.is_valid(rows["paraphrase"])).to_numpy(zero_copy_only=False))
    originals = np.asarray(rows["original"].to_pylist(), dtype=object)
    paraphrases = np.asarray(rows["paraphrase"].to_pylist(), dtype=object)
    verdict: dict[int, tuple[str, str]] = {}
    types = {name: kind for gate in gates for name, kind in gate.output_columns().items()}
    columns = {name: _empty(kind, n) for name, kind in types.items()}
    for gate in gates:
        if not len(alive):
            break
        scores = gate.score(originals[alive].tolist(), paraphrases[alive].tolist(), tokenizer)
        for name, values in scores.items():
            columns[name][alive] = values
        keep = []
        for i, judged in zip(alive, gate.judge(scores[gate.column])):
            if judged is None:
                keep.append(i)
            else:
                verdict[int(i)] = judged
        alive = np.asarray(keep, dtype=np.int64)
    for name, values in columns.items():
        array = pa.array(values, type=types[name], from_pandas=True)
        rows = rows.set_column(rows.column_names.index(name), name, array) if name in rows.column_names else rows.append_column(name, array)
    return _reject(rows, verdict)


def _reject(rows: pa.Table, verdict: dict[int, tuple[str, str]]) -> pa.Table:
    if not verdict:
        return rows
    stage, reason, detail = (rows[c].to_pylist() for c in ("reject_stage", "reject_reason", "reject_detail"))
    for i, (why, how) in verdict.items():
        stage[i], reason[i], detail[i] = STAGE, why, how
    for name, values in (("reject_stage", stage), ("reject_reason", reason), ("reject_detail", detail)):
        rows = rows.set_column(rows.column_names.index(name), name, pa.array(values, pa.string()))
    return rows
