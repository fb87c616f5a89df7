"""Units of work: a file, or a record range of a file. Partitioning never changes which rows a build produces
(ids do), only how the work spreads over workers."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import pyarrow as pa


from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.schema import DOCUMENT_SCHEMA
from paraphrase_pipe.sources import jsonl, tabular
from paraphrase_pipe.sources.files import SourceFile, unreadable_reason
from paraphrase_pipe.sources.records import RecordPolicy, from_line, from_mapping, reject

COUNT_FILES_UP_TO = 256  # count records (cheap pass) to split files when there are few of them


@dataclass(frozen=True)
class Task:
    file: SourceFile
    start: int = 0
    stop: int | None = None  # None: to the end of the file
    last: bool = True  # owns the end of the file (reports truncation)
    records: int | None = None  # records planned, when the planner counted the file

    @property
    def range(self) -> tuple[str, int, int | None]:
        """The unit of completion (`output/ranges.py`): which records of which input this task reads."""
        return (self.file.name, self.start, self.stop)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Task:
        return cls(SourceFile(**data["file"]), data["start"], data["stop"], data["last"], data.get("records"))


# Failures of a whole input file (or of the rest of it): a file-level dead-letter row, never a stopped build.
READ_ERRORS = (OSError, pa.ArrowException, ValueError, RecursionError)


def count_records(file: SourceFile) -> int:
    if file.format == "unreadable":
        return 0
    if file.format == "jsonl":
        return jsonl.count_lines(file.path)[0]
    if file.format == "parquet":
        return tabular.count_parquet(file.path)
    return tabular.count_hf_dataset(file.path)


def plan_tasks(files: list[SourceFile], config: BuildConfig) -> list[Task]:
    """Few files: count and split into `docs_per_task` ranges so every worker has work; `--limit` cuts here."""
    if len(files) > COUNT_FILES_UP_TO and config.limit is None:
        return [Task(f) for f in files]
    tasks: list[Task] = []
    remaining = config.limit
    for file in files:
        try:
            n = count_records(file)
        except READ_ERRORS:
            tasks.append(Task(file))  # reading it reports why, as a dead-letter row
            continue
        if remaining is not None:
            n, cut = min(n, remaining), n > remaining
            remaining -= n
        else:
            cut = False
        for start in range(0, n, config.docs_per_task):
            stop = min(start + config.docs_per_task, n)
            last = stop == n and not cut
            tasks.append(Task(file, start, None if last else stop, last, stop - start))
        if n == 0:
            tasks.append(Task(file, records=0))
        if remaining == 0:
            break
    return tasks


def read_task(task: Task, config: BuildConfig) -> pa.Table:
    """The task's documents (and dead-letter rows for its bad records) as a DOCUMENT_SCHEMA table."""
    policy = RecordPolicy(config.sets, config.sample_fraction, config.max_doc_chars, config.seed)
    file, rows = task.file, []
    try:
        if file.format == "unreadable":
            raise unreadable_reason(file.path)
        if file.format == "jsonl":
            for index, line in jsonl.iter_lines(file.path, task.start, task.stop):
                rows.append(from_line(file.name, index, line, policy))
        else:
            iterate = tabular.iter_parquet if file.format == "parquet" else tabular.iter_hf_dataset
            for index, record in iterate(file.path, task.start, task.stop):
                rows.append(from_mapping(file.name, index, record, tabular.raw_bytes(record), policy))
    except jsonl.TruncatedInput as exc:
        if task.last:  # the cut and the bytes of its incomplete line (replayable), at the index of that line
            rows.append(reject(file.name, exc.index, "truncated_input", str(exc), exc.tail or None))
    except READ_ERRORS as exc:
        index = rows[-1]["record_index"] + 1 if rows else task.start
        rows.append(reject(file.name, index, "unreadable_input",
                           f"{file.path} unreadable from record {index}: {type(exc).__name__}: {exc}", None))
    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
