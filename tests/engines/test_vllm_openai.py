"""(b) The `openai` client against a real vLLM server on 127.0.0.1, directly (on Ray and Dask) and through a
fault-injecting proxy:
retries survive 503/429/timeouts/dropped connections with the identical rows, a killed build resumes without
paying twice for any answered request, dead endpoints stop the build with one clear error."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time

import pytest

from .conftest import build_cmd, build_popen, comparable, engine_window, rows
from .fault_proxy import FaultProxy

FAST_RETRY = ["-E", "backoff_base=0.05", "-E", "backoff_max=0.5"]


@pytest.mark.parametrize("executor, where", [("ray", "actor"), ("dask", "worker")])
def test_openai_client_against_a_real_server_reproduces_the_inprocess_rows(executor, where, vllm_server, inprocess_build,
                                                                           tiny_llm_dir, recipe, tmp_path):
    """On a real local Ray / Dask cluster of two workers, each with its own client of the server, four tasks (the
    local executor's client: the tests below). The manifest's engine_window lists each worker's engine (Ray starts
    both task actors; a Dask worker makes its engine at its first task) and their answers add up to the shards'."""
    pytest.importorskip({"ray": "ray.data", "dask": "dask.distributed"}[executor])
    tasks = tmp_path / "tasks.yaml"
    tasks.write_text(recipe.read_text() + "docs_per_task: 4\n")
    out = tmp_path / "out"
    before = vllm_server.requests_done()
    build_cmd(out, tiny_llm_dir, tasks, "--endpoint", vllm_server.url, "--concurrency", "8", "--executor", executor,
              "--workers", "2")
    assert comparable(out) == comparable(inprocess_build)  # same prompts, same per-chunk seeds, same answers
    provenance = [json.loads(r["provenance"]) for r in rows(out, "shards")]
    assert {p["engine"] for p in provenance} == {"openai"} and {p["server"] for p in provenance} == {vllm_server.url}
    sent = sum(1 for r in rows(out) if r["completion_tokens"] is not None)
    assert vllm_server.requests_done() - before == sent  # one request per chunk that fits, none for overflowing ones
    engines = engine_window(out, where)["engines"]
    assert {e["engine"] for e in engines} == {"openai"}
    assert len(engines) == 2 if executor == "ray" else 1 <= len(engines) <= 2, engines


def _faults(i: int):
    return {0: "503", 1: "drop", 3: "429", 4: "timeout", 6: "drop_after", 9: "503", 10: "503", 11: "503"}.get(i) or (
        "503" if i % 7 == 5 else "drop" if i % 11 == 2 else None)


def test_retries_with_backoff_survive_injected_faults_with_identical_rows(vllm_server, inprocess_build, tiny_llm_dir, recipe, tmp_path):
    secret = "sk-test-not-a-real-key-1234"
    proxy = FaultProxy(vllm_server.url, _faults, timeout_s=3, api_key=secret)
    out = tmp_path / "out"
    try:
        proc = build_cmd(out, tiny_llm_dir, recipe, "--endpoint", proxy.url, "--concurrency", "4", "--api-key-env", "PP_TEST_KEY",
                         "-E", "request_timeout=1.5", *FAST_RETRY, env={"PP_TEST_KEY": secret})
    finally:
        proxy.close()
    assert comparable(out) == comparable(inprocess_build)
    injected = {e["fault"] for e in proxy.log if e["fault"]}
    assert injected == {"503", "429", "drop", "timeout", "drop_after"}
    assert len(proxy.log) > len(set(e["key"] for e in proxy.log))  # the same prompts came back after a fault
    # the API key reached the server but is written nowhere
    leaks = [p for p in out.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]
    assert not leaks and secret not in proc.stdout + proc.stderr


def test_kill_9_mid_run_then_resume_never_requests_an_answered_chunk_again(vllm_server, inprocess_build, tiny_llm_dir, recipe, tmp_path):
    out = tmp_path / "out"
    proxy = FaultProxy(vllm_server.url, hold_after=12)
    try:
        before = vllm_server.requests_done()
        proc = build_popen(out, tiny_llm_dir, recipe, "--endpoint", proxy.url, "--concurrency", "2", "--workers", "1")
        deadline = time.monotonic() + 120
        while proxy.held < 2:  # both request slots wait on held requests: every answer so far has been handled
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the build never reached the hold point"
            time.sleep(0.1)
        time.sleep(0.3)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        first_log = len(proxy.log)
        answered = set(proxy.answered_keys())
        assert len(answered) >= 12
        assert not json.loads((out / "manifest.json").read_text())["shards"], "nothing was committed before the kill"
        assert list((out / "cache" / "requests").glob("*.sqlite")), "answers wait in the request cache"
        run1 = vllm_server.requests_done() - before
        proxy.release()

        build_cmd(out, tiny_llm_dir, recipe, "--endpoint", proxy.url, "--concurrency", "2", "--workers", "1")
        again = proxy.forwarded(since=first_log)
        run2 = vllm_server.requests_done() - before - run1
    finally:
        proxy.close()
    assert not answered & set(again), "an answered chunk was requested again"
    assert run2 == len(again)  # the server's own metrics agree with the proxy's log
    sent = sum(1 for r in rows(out) if r["completion_tokens"] is not None)
    assert run1 + run2 == sent == len(answered) + len(again)  # every chunk generated exactly once over both runs
    assert comparable(out) == comparable(inprocess_build)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_all_endpoints_down_stops_with_one_clear_error(tiny_llm_dir, recipe, tmp_path):
    dead = [f"http://127.0.0.1:{_closed_port()}", f"http://127.0.0.1:{_closed_port()}"]
    started = time.monotonic()
    proc = build_cmd(tmp_path / "out", tiny_llm_dir, recipe, "--endpoint", dead[0], "--endpoint", dead[1],
                     "-E", "down_timeout=2", *FAST_RETRY, "--workers", "1", check=False)
    assert proc.returncode == 2, proc.stderr
    assert "every endpoint" in proc.stderr and "has failed for" in proc.stderr and "re-run the same command" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - started < 60


def test_a_rejected_api_key_stops_at_once(vllm_server, tiny_llm_dir, recipe, tmp_path):
    proxy = FaultProxy(vllm_server.url, api_key="right-key")
    try:
        proc = build_cmd(tmp_path / "out", tiny_llm_dir, recipe, "--endpoint", proxy.url, "--api-key-env", "PP_TEST_KEY",
                         "--workers", "1", env={"PP_TEST_KEY": "wrong-key"}, check=False)
    finally:
        proxy.close()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "answered HTTP 401 unauthorized (check the API key in api_key_env): invalid API key" in " ".join(proc.stderr.split())
    assert not any(e["forwarded"] for e in proxy.log) and "wrong-key" not in proc.stderr


PROGRESS = re.compile(r"^progress \S+: ([\d,]+)/16 documents \(\d+%\), ([\d,]+) chunks, .*; committed ([\d,]+) documents, "
                      r"([\d,]+) chunks, accepted ([\d,]+), rejected ([\d,]+)$")


@pytest.mark.parametrize("executor", ["local"])  # "dask" passes too (the reports then come from a worker process): +40 s
def test_progress_moves_inside_a_task_before_it_commits(executor, vllm_server, tiny_llm_dir, recipe, tmp_path):
    """One task of 63 chunks; the proxy holds every request after the 12th answer. The job log must show those
    answers as done while nothing is committed — read from the running tasks' reports — and end with
    done == committed == the manifest's counts."""
    out = tmp_path / "out"
    proxy = FaultProxy(vllm_server.url, hold_after=12)
    lines: list[str] = []
    try:
        proc = build_popen(out, tiny_llm_dir, recipe, "--endpoint", proxy.url, "--concurrency", "8", "--workers", "1",
                           "--executor", executor, "--log-every", "0.2", *FAST_RETRY)
        reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while proxy.held < 8:  # every request slot waits on a held request: 12 answers are in
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.1)
        deadline = time.monotonic() + 5  # a few of --log-every
        while not any((m := PROGRESS.match(line)) and int(m[2]) >= 12 for line in list(lines)):
            assert time.monotonic() < deadline, "no progress line counts the answers of the running task:\n" + "".join(lines[-5:])
            time.sleep(0.1)
        assert not json.loads((out / "manifest.json").read_text())["shards"]
        reports = [json.loads(p.read_text()) for p in (out / "cache" / "running").glob("*.json")]
        assert sum(c["chunks"] for r in reports for c in r.values()) >= 12
        proxy.release()
        assert proc.wait(120) == 0
        reader.join(10)
    finally:
        proxy.close()
    shown = [tuple(int(g.replace(",", "")) for g in m.groups()) for line in lines if (m := PROGRESS.match(line.rstrip()))]
    held = [s for s in shown if s[1] >= 12 and s[2] == 0]
    assert held, shown  # answers counted while nothing is committed yet
    assert [s[1] for s in shown] == sorted(s[1] for s in shown), shown  # done never goes back
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    final = (counts["documents"], counts["chunks"], counts["documents"], counts["chunks"], counts["accepted"], counts["rejected"])
    assert shown[-1] == final == (16, 63, 16, 63, counts["accepted"], counts["rejected"]), shown
    assert not (out / "cache").exists()
