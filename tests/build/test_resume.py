"""Exactly-once under kill -9, two builds meeting on one output, requeues: real processes on a real filesystem.

Every case ends with the same check: the output holds exactly the rows of an uninterrupted build, in the same
shard files byte for byte (shards are a function of their rows, and a resumed range splits into the same shards).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

import psutil
import pytest

from paraphrase_pipe.output.lock import LOCK_FILE

from .conftest import CLI, REPO, read_output, run_cli, sample_records, write_jsonl

ARGS = ["build", "--chunk", "64", "--tokenizer", "builtin:gpt2", "--shard-rows", "40", "--no-progress"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}


def committed_shards(out) -> int:
    """Shards committed so far: the driver's fsynced commit journal (manifest.json is a periodic snapshot)."""
    try:
        lines = (out / "_commits.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum('"list": "shards"' in line for line in lines)


def manifest(out) -> dict:
    return json.loads((out / "manifest.json").read_text())


def shard_files(out) -> set[tuple[str, str]]:
    data = manifest(out)
    return {(s["path"], s["sha256"]) for s in data["shards"] + data["rejected"]}


def start(out, *args: str, log=subprocess.PIPE, build_args=ARGS, env=ENV) -> subprocess.Popen:
    """A build in its own process group (so killpg takes its workers too); `log`: a file for long, chatty runs."""
    return subprocess.Popen([*CLI, *build_args, "-o", str(out), *args], cwd=REPO, env=env, start_new_session=True,
                            stdout=log, stderr=subprocess.STDOUT if log is not subprocess.PIPE else log, text=True)


def wait_for_shards(out, proc, n: int) -> None:
    deadline = time.time() + 120
    while committed_shards(out) < n and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "build finished before the test could act on it; make it longer"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "out"
    run_cli(*ARGS, "-o", str(out))
    return out


def assert_same_as(out, reference) -> None:
    got, expected = read_output(out), read_output(reference)
    counts = Counter(got["chunk_id"].to_pylist())
    assert max(counts.values()) == 1  # nothing duplicated
    assert set(counts) == set(expected["chunk_id"].to_pylist())  # nothing lost
    assert sorted(got["text"].to_pylist()) == sorted(expected["text"].to_pylist())
    assert shard_files(out) == shard_files(reference)  # byte-identical shards
    assert manifest(out)["counts"] == manifest(reference)["counts"]
    assert manifest(out)["status"] == "complete"
    assert not [p.name for p in out.rglob("*") if ".tmp-" in p.name]


def test_kill_9_then_resume_is_exactly_once(tmp_path, reference):
    out = tmp_path / "killed"
    proc = start(out, "--workers", "2")
    wait_for_shards(out, proc, 2)
    os.killpg(proc.pid, signal.SIGTERM)  # Slurm preempting the job: the lock record goes with the driver
    proc.wait()
    assert (out / LOCK_FILE).read_text() == "" and committed_shards(out) < len(manifest(reference)["shards"])

    proc = start(out, "--workers", "2")
    wait_for_shards(out, proc, 5)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-run
    proc.wait()
    partial = committed_shards(out)
    assert 5 <= partial < len(manifest(reference)["shards"])
    # the worst torn state too: a half-written journal line and a linked-but-unrecorded shard
    with open(out / "_commits.jsonl", "a") as journal:
        journal.write('{"path": "shards/torn')
    (out / "shards" / "orphan.arrow").write_bytes(b"not recorded")
    shown = run_cli("inspect", str(out), "--rows", "0")
    assert "interrupted" in shown.stdout  # status running, but no build holds the lock

    resumed = run_cli(*ARGS, "-o", str(out), "--workers", "1")  # another worker count
    assert "resumed: removed" in resumed.stderr
    assert_same_as(out, reference)
    assert "nothing to do" in run_cli(*ARGS, "-o", str(out)).stdout


def test_two_builds_into_one_output(tmp_path, reference):
    """Started together, exactly one runs; a third started mid-run is refused too; the winner's output is whole."""
    out = tmp_path / "shared"
    first, second = start(out), start(out)
    deadline = time.time() + 120
    while first.poll() is None and second.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # the refused one exits at once
    wait_for_shards(out, first if first.poll() is None else second, 3)
    third = start(out)
    third_out, third_err = third.communicate(timeout=120)
    results = [(p.wait(timeout=300), *p.communicate()) for p in (first, second)]
    codes = sorted(r[0] for r in results)
    assert codes == [0, 2], results
    refused = [r for r in results if r[0] == 2][0][2] + third_err
    assert third.returncode == 2
    for message in refused.split("error:")[1:]:
        assert "is in use by another build (pid" in message and socket.gethostname() in message
    assert "Traceback" not in refused
    assert_same_as(out, reference)


def test_lock_of_a_dead_process_is_taken_over_another_hosts_is_refused(tmp_path):
    out = tmp_path / "o"
    small = ["build", "--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "4", "--no-progress", "-o", str(out)]
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"host": socket.gethostname(), "pid": dead.pid, "since": "2026-01-01T00:00:00Z"}
    (out / LOCK_FILE).write_text(json.dumps(record))
    run_cli(*small)  # a kill -9'd build of this host: taken over
    assert (out / LOCK_FILE).read_text() == ""  # released at the end

    (out / LOCK_FILE).write_text(json.dumps({**record, "host": "node-17", "pid": 4242}))
    refused = run_cli(*small, "--overwrite", check=False)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "locked by a build on another host (pid 4242 on node-17" in refused.stderr and "--break-lock" in refused.stderr
    run_cli(*small, "--break-lock")

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from paraphrase_pipe.output.lock import OutputLock; "
                               "lock = OutputLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(out)],
                              stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert holder.stdout.readline().strip() == "held"
        busy = run_cli(*small, check=False)
        assert busy.returncode == 2 and f"in use by another build (pid {holder.pid} on {socket.gethostname()}" in busy.stderr
        assert f"in use by pid {holder.pid}" in " ".join(run_cli("inspect", str(out)).stdout.split())  # a wrapped title
    finally:
        holder.kill()
        holder.wait()
    assert "nothing to do" in run_cli(*small).stdout  # the holder died: its flock went with it


def test_missing_and_damaged_shards_are_found_and_rebuilt(tmp_path, reference):
    out = shutil.copytree(reference, tmp_path / "copy")
    assert "ok:" in run_cli("inspect", str(out), "--verify").stdout
    entries = manifest(out)["shards"]
    (out / entries[3]["path"]).unlink()
    damaged = out / entries[7]["path"]
    damaged.write_bytes(damaged.read_bytes()[:-100])
    bad = run_cli("inspect", str(out), "--verify", check=False)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert f"{entries[3]['path']}: listed in the manifest but missing" in bad.stderr
    assert f"{entries[7]['path']}: sha256 differs" in bad.stderr
    (out / "README.md").unlink()  # a kill between `complete` and the card

    rerun = run_cli(*ARGS, "-o", str(out))
    assert "repaired: 2 shard(s)" in rerun.stderr
    assert_same_as(out, reference)
    assert (out / "README.md").is_file()
    assert "ok:" in run_cli("inspect", str(out), "--verify").stdout


def test_changed_config_in_existing_output_is_refused(tmp_path):
    out = tmp_path / "o"
    run_cli("build", "--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), "--no-progress")
    proc = run_cli("build", "--chunk", "512", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), check=False)
    assert proc.returncode == 2
    assert "different configuration (changed: chunk)" in proc.stderr and "Traceback" not in proc.stderr
    run_cli("build", "--chunk", "512", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), "--overwrite", "--no-progress")
    assert json.loads((out / "manifest.json").read_text())["config"]["chunk"] == 512


def test_disk_full_is_one_line_and_resumable(tmp_path, reference):
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or 'not root'})")
    try:
        out = small / "out"
        full = run_cli(*ARGS, "-o", str(out), "--workers", "1", check=False)
        assert full.returncode == 2, full.stderr
        message = " ".join(full.stderr.split())  # one message (rich wraps it at the terminal width)
        assert "Traceback" not in message and message.startswith("error: no space left on device writing ")
        assert message.count("error:") == 1 and "MiB free" in message and message.endswith("re-run the same command to resume")
        # the failed run says so (the failed shard's temp file is gone, so the small manifest still fits)
        assert manifest(out)["status"] == "failed" and "no space left" in manifest(out)["error"]
        assert "failed: OutputFull: no space left" in " ".join(run_cli("inspect", str(out), "--rows", "0").stdout.split())
        moved = shutil.copytree(out, tmp_path / "moved")  # the user frees space, or moves the output
    finally:
        subprocess.run(["umount", str(small)], check=True)
    run_cli(*ARGS, "-o", str(moved))
    assert_same_as(moved, reference)


# ---- Ray and Dask local clusters: the same guarantees, their own processes killed ---------------------------------
# Small tasks (8 files of 8 documents) committing many small shards each, so that a kill finds work left and a
# task caught between two of its shard commits.
CLUSTER_ARGS = ["build", "--chunk", "64", "--tokenizer", "builtin:gpt2", "--shard-rows", "10", "--no-progress"]
# in the command line of a process running tasks (local: a process pool worker)
TASK_WORKER = {"ray": "ray::MapWorker(MapBatches(_Whole))", "dask": "dask worker [",
               "local": "-c from multiprocessing.spawn import spawn_main"}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("small") / "corpus"
    records = sample_records(64)
    for i in range(8):
        write_jsonl(root / f"part{i}.jsonl.zst", records[8 * i:8 * i + 8])
    return root


@pytest.fixture(scope="module")
def small_reference(tmp_path_factory, small_corpus):
    out = tmp_path_factory.mktemp("small-reference") / "out"
    run_cli(*CLUSTER_ARGS, "-i", str(small_corpus), "-o", str(out), "--workers", "1")
    return out


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        return [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_9(processes: list[psutil.Process]) -> None:
    """SIGKILL these processes (the build's own, listed while it ran) and reap them."""
    for victim in processes:
        try:
            victim.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


def unreported_shards(out) -> set[str]:
    """Shard files linked into place that the driver has not recorded (a task between two of its commits)."""
    listed = {s["path"] for s in manifest(out)["shards"]} if (out / "manifest.json").exists() else set()
    on_disk = {f"shards/{p.name}" for p in (out / "shards").glob("*.arrow")} if (out / "shards").exists() else set()
    try:
        journal = (out / "_commits.jsonl").read_text()
    except FileNotFoundError:
        journal = ""
    return {path for path in on_disk - listed if f'"path": "{path}"' not in journal}


def kill_workers_mid_task(out, proc, executor: str, ignore: set[str]) -> tuple[str, int, list[int]]:
    """Once a task has linked a shard it has not yet reported, SIGKILL every process that runs tasks; return that
    shard, its inode and the pids killed. Ray restarts the actor and retries the task, Dask's nanny restarts the
    worker and the scheduler reschedules it: the retry meets its own first attempt's shard file in place."""
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        caught = sorted(unreported_shards(out) - ignore)
        workers = [p for p in family(proc) if TASK_WORKER[executor] in _cmdline(p)] if caught else []
        if workers:
            inode = (out / caught[0]).stat().st_ino
            kill_9(workers)
            return caught[0], inode, [p.pid for p in workers]
        time.sleep(0.005)
    raise AssertionError("no task was caught between two shard commits; make the tasks longer")


def _cmdline(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())
    except psutil.Error:
        return ""


@pytest.mark.parametrize("executor, first, then", [("ray", 2, 1), ("dask", 1, 2)])
def test_cluster_build_kill_9_then_resume_with_other_workers_is_exactly_once(tmp_path, small_corpus, small_reference,
                                                                           executor, first, then):
    """A real `--executor ray|dask` build on its local cluster: the driver's process group SIGKILLed after some
    tasks committed, resumed with another worker count, whose cluster workers are SIGKILLed mid-task in turn (a
    real Ray / Dask task retry: the straggler case)."""
    pytest.importorskip({"ray": "ray.data", "dask": "dask.distributed"}[executor])
    out = tmp_path / "out"
    args = ["-i", str(small_corpus), "--executor", executor]
    seen: list[psutil.Process] = []
    proc = None
    try:
        with open(tmp_path / "killed.log", "w") as log:
            proc = start(out, *args, "--workers", str(first), log=log, build_args=CLUSTER_ARGS)
            wait_for_shards(out, proc, 1)
            seen = family(proc)
            os.killpg(proc.pid, signal.SIGKILL)  # the driver and every process of its cluster
            proc.wait()
        kill_9(seen)  # any that left the group (Ray's reaper) go with the driver; make sure
        assert 1 <= committed_shards(out) < len(manifest(small_reference)["shards"])

        with open(tmp_path / "resumed.log", "w") as log:
            proc = start(out, *args, "--workers", str(then), log=log, build_args=CLUSTER_ARGS)
            # the killed run's linked-but-unrecorded shards: swept at start, then written again under the same name
            straggler, inode, killed = kill_workers_mid_task(out, proc, executor, ignore=unreported_shards(out))
            seen = family(proc)
            assert proc.wait(timeout=300) == 0, (tmp_path / "resumed.log").read_text()[-4000:]
    finally:
        kill_9(seen + (family(proc) if proc else []))
    assert killed and straggler in {s["path"] for s in manifest(out)["shards"]}
    assert (out / straggler).stat().st_ino == inode  # the retried task's commit left the first attempt's file alone
    assert_same_as(out, small_reference)  # every chunk once, the uninterrupted build's shard files byte for byte
    assert "ok:" in run_cli("inspect", str(out), "--verify").stdout


@pytest.mark.parametrize("executor", ["local", "dask"])
def test_a_worker_killed_more_often_than_retried_stops_the_build_with_one_line(tmp_path, small_corpus, small_reference,
                                                                            executor):
    """A local pool cannot replace a dead worker; Dask gives up on a task after `allowed-failures` deaths (0 here):
    one line, `status: failed`, and re-running resumes."""
    pytest.importorskip({"local": "concurrent.futures", "dask": "dask.distributed"}[executor])
    out, log_path = tmp_path / "out", tmp_path / "build.log"
    args = ["-i", str(small_corpus), "--executor", executor]
    env = {**ENV, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0"}
    proc = None
    try:
        with open(log_path, "w") as log:
            proc = start(out, *args, "--workers", "2", log=log, build_args=CLUSTER_ARGS, env=env)
            kill_workers_mid_task(out, proc, executor, ignore=set())
            assert proc.wait(timeout=120) == 2
    finally:
        kill_9(family(proc) if proc else [])
    message = " ".join(log_path.read_text().split())
    assert "Traceback" not in message and message.count("error:") == 1, message[-3000:]
    assert "died" in message.split("error:")[1] and message.endswith("re-run the same command to resume")
    assert manifest(out)["status"] == "failed" and "WorkerLostError" in manifest(out)["error"]
    run_cli(*CLUSTER_ARGS, "-i", str(small_corpus), "-o", str(out), "--workers", "1")  # on any executor
    assert_same_as(out, small_reference)
