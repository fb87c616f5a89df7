"""The commit protocol on a real build's files: a second report of a batch is a no-op, a straggler never changes a
recorded shard, a partly duplicate report is rewritten under a new name, a torn journal line is cut off."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from paraphrase_pipe.build import run_build
from paraphrase_pipe.config import BuildConfig
from paraphrase_pipe.output.journal import CommitJournal
from paraphrase_pipe.output.manifest import BuildManifest
from paraphrase_pipe.output.ranges import CompletedRanges, range_id
from paraphrase_pipe.output.reader import BuildOutput, load_manifest
from paraphrase_pipe.output.resume import TASK_PLAN, remaining_tasks
from paraphrase_pipe.output.shards import commit, sha256_file
from paraphrase_pipe.schema import RANGE_COLUMN, RANGE_ROWS_COLUMN
from paraphrase_pipe.sources import Task


@pytest.fixture
def built(tmp_path):
    out = tmp_path / "out"
    run_build(BuildConfig(tokenizer="builtin:gpt2", chunk=128, limit=12, shard_rows=25, output=str(out), progress=False))
    return out


def reopen(out) -> BuildManifest:
    return BuildManifest(out, load_manifest(out / "manifest.json"))


def resumed(out) -> tuple[BuildManifest, Task]:
    """The manifest as a resume after a crash sees it: its one range not yet marked complete."""
    manifest = reopen(out)
    manifest.completed = CompletedRanges()
    (task,) = [Task.from_dict(t) for t in json.loads((out / TASK_PLAN).read_text())["tasks"]]
    assert remaining_tasks(manifest, [task]) == [task]
    return manifest, task


def tagged(table: pa.Table, task: Task, total: int) -> pa.Table:
    """Rows as the pipeline hands them to the writer: tagged with their input range."""
    return table.append_column(RANGE_COLUMN, pa.array([range_id(*task.range)] * len(table))).append_column(
        RANGE_ROWS_COLUMN, pa.array([total] * len(table), pa.int64()))


def test_second_report_and_straggler_leave_the_recorded_shard_alone(built):
    manifest = reopen(built)
    entry = manifest.data["shards"][0]
    shard = built / entry["path"]
    table = BuildOutput.open(built).read(entry)

    again = commit(table, built, "shards")  # a retried task: same rows, same name
    assert again["path"] == entry["path"] and again["existed"] and again["sha256"] == entry["sha256"]
    assert manifest.record(again) is None
    # a straggler whose bytes differ (other provenance): the link refuses, the recorded bytes stand
    other = table.set_column(table.schema.get_field_index("provenance"), "provenance",
                             pa.array(['{"engine": "elsewhere"}'] * len(table)))
    late = commit(other, built, "shards")
    assert late["existed"] and late["sha256"] == entry["sha256"] == sha256_file(shard)
    assert manifest.record(late) is None
    assert [e["path"] for e in manifest.data["shards"]].count(entry["path"]) == 1
    assert BuildOutput.open(built).verify() == []


def test_a_partly_duplicate_report_is_rewritten_without_the_recorded_rows(built):
    manifest, task = resumed(built)
    first, second = manifest.data["shards"][:2]
    build = BuildOutput.open(built)
    a, b = build.read(first), build.read(second)
    total = sum(e["rows"] for e in manifest.entries()) + 3

    both = commit(tagged(pa.concat_tables([a, b]), task, total), built, "shards")  # another batching of recorded rows
    assert manifest.record(both) is None and not (built / both["path"]).exists()

    fresh = b.slice(0, 3)
    fresh = fresh.set_column(fresh.schema.get_field_index("chunk_id"), "chunk_id",
                             pc.binary_join_element_wise("new-", fresh["chunk_id"], ""))
    mixed = commit(tagged(pa.concat_tables([a, fresh]), task, total), built, "shards")
    entry = manifest.record(mixed)
    assert entry["rows"] == 3 and entry["path"] not in (first["path"], mixed["path"])
    assert not (built / mixed["path"]).exists()
    assert build.read(entry)["chunk_id"].to_pylist() == fresh["chunk_id"].to_pylist()
    for recorded in (first, second):
        assert sha256_file(built / recorded["path"]) == recorded["sha256"]
    assert manifest.completed.covers(task.range)  # every row of the range is recorded now (3 more than before)


def test_a_torn_journal_line_is_cut_off_on_open(tmp_path):
    journal = CommitJournal(tmp_path)
    journal.append({"path": "shards/a.arrow"})
    journal.append({"path": "shards/b.arrow"})
    whole = journal.path.read_bytes()
    with open(journal.path, "ab") as f:
        f.write(b'{"path": "shards/c.ar')  # a crash mid-write
    assert [e["path"] for e in journal.open()] == ["shards/a.arrow", "shards/b.arrow"]
    assert journal.path.read_bytes() == whole and journal.torn_bytes == 21
    journal.append({"path": "shards/d.arrow"})
    assert [e["path"] for e in CommitJournal(tmp_path).open()] == ["shards/a.arrow", "shards/b.arrow", "shards/d.arrow"]
    assert json.loads(journal.path.read_text().splitlines()[-1]) == {"path": "shards/d.arrow"}
