"""Exactly-once under kill -9: a killed build, resumed (even with another worker count), holds every chunk once."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import Counter

from .conftest import CLI, REPO, read_output, run_cli

ARGS = ["build", "--chunk", "64", "--tokenizer", "builtin:gpt2", "--shard-rows", "40", "--no-progress"]


def committed_shards(out) -> int:
    """Shards committed so far: the driver's fsynced commit journal (manifest.json is a periodic snapshot)."""
    try:
        lines = (out / "_commits.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum('"list": "shards"' in line for line in lines)


def test_kill_9_then_resume_is_exactly_once(tmp_path):
    reference = tmp_path / "reference"
    run_cli(*ARGS, "-o", str(reference))
    expected = read_output(reference)

    out = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([*CLI, *ARGS, "-o", str(out), "--workers", "2"], cwd=REPO, env=env, start_new_session=True)
    deadline = time.time() + 120
    while committed_shards(out) < 5 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "build finished before it could be killed; make it longer"
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its pool workers, mid-run
    proc.wait()
    partial = committed_shards(out)
    assert 5 <= partial < len(json.loads((reference / "manifest.json").read_text())["shards"])
    # simulate the worst torn state too: a half-written journal line and a renamed-but-unrecorded shard
    with open(out / "_commits.jsonl", "a") as journal:
        journal.write('{"path": "shards/torn')
    (out / "shards" / "orphan.arrow").write_bytes(b"not recorded")

    resumed = run_cli(*ARGS, "-o", str(out), "--workers", "1")  # another worker count
    assert "resumed: removed" in resumed.stderr
    got = read_output(out)
    counts = Counter(got["chunk_id"].to_pylist())
    assert max(counts.values()) == 1  # nothing duplicated
    assert set(counts) == set(expected["chunk_id"].to_pylist())  # nothing lost
    assert sorted(got["text"].to_pylist()) == sorted(expected["text"].to_pylist())
    leftovers = [p.name for p in out.rglob("*") if ".tmp-" in p.name]
    assert not leftovers
    # the manifest's counts, grown shard by shard across the crash, equal the uninterrupted build's
    counts_of = lambda d: json.loads((d / "manifest.json").read_text())["counts"]  # noqa: E731
    assert counts_of(out) == counts_of(reference)

    again = run_cli(*ARGS, "-o", str(out))
    assert "nothing to do" in again.stdout


def test_changed_config_in_existing_output_is_refused(tmp_path):
    out = tmp_path / "o"
    run_cli("build", "--chunk", "256", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), "--no-progress")
    proc = run_cli("build", "--chunk", "512", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), check=False)
    assert proc.returncode == 2
    assert "different configuration (changed: chunk)" in proc.stderr and "Traceback" not in proc.stderr
    run_cli("build", "--chunk", "512", "--tokenizer", "builtin:gpt2", "--limit", "5", "-o", str(out), "--overwrite", "--no-progress")
    assert json.loads((out / "manifest.json").read_text())["config"]["chunk"] == 512
