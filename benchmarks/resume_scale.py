"""Resume planning at SlimPajama scale: what a restarted build does before its first task, on a synthetic output
of `--files` input files whose ranges hold `--committed` accepted rows and `--excluded` excluded records each
(`--sets` / `--sample-fraction` on SlimPajama excludes most records; every one is a dead-letter row in rejected/).
`--partial` files were in flight at the crash: their accepted rows are committed, their excluded records are not,
their range is not complete.

    python benchmarks/resume_scale.py --files 10000 --committed 1000 --excluded 10000 --modes after      # 10^7 / 10^8
    python benchmarks/resume_scale.py --files 1000 --committed 1000 --excluded 10000 --modes before after  # 1/10

Modes, each in a fresh process (wall time and peak RSS of that process):
- `before`: the previous resume (`committed_keys`): every listed shard read whole, every row key in one Python
  set, then the frozenset and the `pa.array` of it that each worker process built (and the pickle each got).
- `after`: this version: open the manifest (journal replay), check listed shards are present (`repair`), read the
  task plan back from `_tasks.json`, drop complete ranges, read the keys of partly committed ranges only.
The shards are real Arrow IPC files with the columns a build writes for such rows (sha256 fields are placeholders:
planning never hashes).
"""
from __future__ import annotations

import argparse
import json

import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

SHARD_ROWS = 4096
TEXT = "x" * 64  # a short training text: the old resume read it too


def _strings(prefix: pa.Array, index: pa.Array, sep: str) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(index, pa.string()), sep)


def _write(path: Path, table: pa.Table) -> int:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=1024)
    return path.stat().st_size


def _entry(path: str, size: int, table: pa.Table, rng: list, accepted: bool) -> dict:
    n = len(table)
    return {"path": path, "rows": n, "tokens": 16 * n if accepted else 0, "sha256": "0" * 64, "bytes": size,
            "documents": n, "chunks": n if accepted else 0, "reasons": {},
            "exclusions": {} if accepted else {"excluded_by_set": n}, "ranges": [[*rng, n]]}


def make_output(out: Path, files: int, committed: int, excluded: int, partial: int) -> None:
    from paraphrase_pipe.output.counts import count_entries
    from paraphrase_pipe.output.manifest import write_json_atomic

    (out / "shards").mkdir(parents=True)
    (out / "rejected").mkdir()
    shards, rejected, completed, tasks = [], [], [], []
    for f in range(files):
        name = f"chunk{f // 5000}/example_train_{f}.jsonl.zst"
        rng = [name, 0, None]
        tasks.append({"file": {"path": f"/data/slimpajama/{name}", "name": name, "format": "jsonl"},
                      "start": 0, "stop": None, "last": True, "records": None})
        in_flight = f >= files - partial
        total = committed + excluded
        index = pa.array(range(total), pa.int64())
        source = pa.array([name] * total)
        doc_ids = _strings(source, index, ":")
        keep = min(committed, SHARD_ROWS) if in_flight else committed  # an in-flight range: its first shard only
        acc = pa.table({"doc_id": doc_ids[:keep], "chunk_id": _strings(doc_ids[:keep], pa.array([0] * keep), "#"),
                        "source": source[:keep], "record_index": index[:keep], "chunk_index": pa.array([0] * keep, pa.int32()),
                        "n_tokens": pa.array([16] * keep, pa.int32()), "text": pa.array([TEXT] * keep)})
        for s in range(0, len(acc), SHARD_ROWS):
            piece, path = acc.slice(s, SHARD_ROWS), f"shards/f{f:06d}-{s:08d}.arrow"
            shards.append(_entry(path, _write(out / path, piece), piece, rng, True))
        if in_flight:
            continue
        exc = pa.table({"doc_id": doc_ids[committed:], "chunk_id": pa.nulls(excluded, pa.string()),
                        "source": source[committed:], "record_index": index[committed:],
                        "reject_stage": pa.array(["read"] * excluded), "reject_reason": pa.array(["excluded_by_set"] * excluded),
                        "reject_detail": pa.array(["set_name=RedPajamaC4"] * excluded)})
        for s in range(0, len(exc), SHARD_ROWS):
            piece, path = exc.slice(s, SHARD_ROWS), f"rejected/f{f:06d}-{s:08d}.arrow"
            rejected.append(_entry(path, _write(out / path, piece), piece, rng, False))
        completed.append(rng)
    data = {"schema_version": 1, "status": "running", "config_hash": "synthetic", "config": {}, "shards": shards,
            "rejected": rejected, "completed_ranges": completed}
    data["counts"] = count_entries(data)
    write_json_atomic(out / "manifest.json", data)
    stamps = [[t["file"]["name"], t["file"]["path"], "jsonl", None, None] for t in tasks]
    write_json_atomic(out / "_tasks.json", {"files": stamps, "tasks": tasks})


def plan_before(out: Path) -> dict:
    """The previous resume, as it was: Manifest.committed_keys + Pipeline's frozenset and per-process pa.array."""
    from paraphrase_pipe.schema import row_key

    data = json.loads((out / "manifest.json").read_text())
    keys: set[str] = set()
    for shard in data["shards"] + data["rejected"]:
        with pa.memory_map(str(out / shard["path"])) as source:
            table = pa.ipc.open_file(source).read_all()
        keys.update(row_key(table).to_pylist())
    committed = frozenset(keys)
    shipped = len(pickle.dumps(committed))  # the Pipeline each worker received carried the set
    ids = pa.array(list(committed), pa.string())  # Pipeline._committed_ids, built in every worker
    return {"keys": len(committed), "pickled_mb": round(shipped / 2**20, 1), "ids": len(ids)}


def plan_after(out: Path) -> dict:
    from paraphrase_pipe.output.manifest import BuildManifest
    from paraphrase_pipe.output.reader import load_manifest
    from paraphrase_pipe.output.resume import remaining_tasks
    from paraphrase_pipe.sources.tasks import Task

    manifest = BuildManifest(out, load_manifest(out / "manifest.json"))
    missing = manifest.repair()
    tasks = [Task.from_dict(t) for t in json.loads((out / "_tasks.json").read_text())["tasks"]]
    todo = remaining_tasks(manifest, tasks)
    return {"tasks": len(tasks), "tasks_left": len(todo), "missing": len(missing),
            "keys_held": sum(len(k) for k in manifest._accounted_keys.values())}


def measure(mode: str, out: Path) -> dict:
    started = time.perf_counter()
    result = (plan_before if mode == "before" else plan_after)(out)
    result.update(mode=mode, seconds=round(time.perf_counter() - started, 2),
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--committed", type=int, default=1_000, help="accepted rows per file")
    parser.add_argument("--excluded", type=int, default=10_000, help="excluded records per file")
    parser.add_argument("--partial", type=int, default=16, help="files in flight at the crash")
    parser.add_argument("--modes", nargs="+", default=["after"], choices=["before", "after"])
    parser.add_argument("--dir", type=Path, help="keep the synthetic output here (default: a temp dir, removed)")
    parser.add_argument("--measure", choices=["before", "after"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.dir)))
        return
    root = args.dir or Path(tempfile.mkdtemp(prefix="resume-scale-"))
    out = root / "out"
    try:
        if not (out / "manifest.json").exists():
            started = time.perf_counter()
            make_output(out, args.files, args.committed, args.excluded, args.partial)
            print(f"synthetic output: {args.files:,} files, {args.files * args.committed:,} committed rows, "
                  f"{(args.files - args.partial) * args.excluded:,} excluded records ({time.perf_counter() - started:.0f} s to write)",
                  flush=True)
        for mode in args.modes:
            proc = subprocess.run([sys.executable, __file__, "--measure", mode, "--dir", str(out)], capture_output=True, text=True)
            print(proc.stdout.strip() or proc.stderr[-2000:], flush=True)
    finally:
        if args.dir is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
