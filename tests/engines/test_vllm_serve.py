"""(c) `--serve`: the build starts its own vLLM server, restarts it when it dies mid-run, stops it at the end,
and fails fast with the server's own error when it cannot start."""
from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest

from paraphrase_pipe.engines import EngineError, create_engine

from .conftest import VLLM_CPU, build_cmd, comparable, rows

SERVE_CPU = [*VLLM_CPU, "-E", "servers=1"]


def _kill_server_at_first_request(serve_dir, stop: threading.Event, killed: list) -> None:
    """Once the managed server has answered its first completion, kill -9 it (and its engine process)."""
    log, pid_file = serve_dir / "server-0.log", serve_dir / "server-0.pid"
    while not stop.is_set():
        if log.exists() and pid_file.exists() and "POST /v1/completions" in log.read_text(errors="replace"):
            pid = int(pid_file.read_text())
            os.killpg(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.05)


def test_managed_server_build_survives_a_server_crash(inprocess_build, tiny_llm_dir, recipe, tmp_path):
    out = tmp_path / "out"
    stop, killed = threading.Event(), []
    watcher = threading.Thread(target=_kill_server_at_first_request, args=(out / "cache" / "serve", stop, killed), daemon=True)
    watcher.start()
    try:
        build_cmd(out, tiny_llm_dir, recipe, "--serve", *SERVE_CPU, "--concurrency", "2", "-E", "backoff_max=1", timeout=400)
    finally:
        stop.set()
    assert killed, "the server was never killed: the test did not exercise a restart"
    assert comparable(out) == comparable(inprocess_build)
    assert {json.loads(r["provenance"])["engine"] for r in rows(out, "shards")} == {"vllm-serve"}
    for pid in killed:  # the killed server is gone, and so is its successor (stopped at the end of the build)
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
    assert not (out / "cache").exists()


def test_a_server_that_cannot_start_fails_fast_with_its_own_error(tiny_llm_dir, tmp_path):
    engine = create_engine("vllm-serve", {"model": str(tiny_llm_dir), "dtype": "float32", "enforce_eager": True,
                                          "server_args": ["--max-num-seqs", "-3"]}, workdir=str(tmp_path))
    started = time.monotonic()
    with pytest.raises(EngineError) as failure:
        engine.generate([{"chunk_id": "c0", "original": "A short text to paraphrase."}])
    engine.close()
    message = str(failure.value)
    assert message.startswith("vLLM server 0 (GPUs none) exited with code 1 during start-up: ")
    assert "max_num_seqs | Input should be greater than or equal to 1" in message  # the server's own words
    assert f"full log: {tmp_path}/cache/serve/server-0.log" in message
    assert not engine.servers[0].alive() and time.monotonic() - started < 120


# A stand-in for `vllm serve` that does what the supervisor relies on: binds --port on 127.0.0.1 (failing with
# vLLM's own "Address already in use" when it is taken) and answers /health.
HEALTH_SERVER = """
import sys, http.server
port = int(sys.argv[sys.argv.index("--port") + 1])
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
"""


def test_a_server_whose_port_was_taken_before_it_bound_moves_to_a_free_one(tmp_path, monkeypatch):
    """free_port() picks a port and the server binds it seconds later: another process (a parallel build, a test
    worker) can take it in between. At start-up, before any client has the URL, the server gets a new port."""
    import socket
    import sys

    from paraphrase_pipe.engines import managed_server

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])  # the first pick is the port someone else now holds
    real_free_port = managed_server.free_port
    monkeypatch.setattr(managed_server, "free_port", lambda: next(ports, None) or real_free_port())
    server = managed_server.ServerProcess(0, [sys.executable, "-c", HEALTH_SERVER], [], tmp_path)
    try:
        assert server.port == taken.getsockname()[1]
        server.start()
        server.wait_healthy(30, may_move=True)
        assert server.port != taken.getsockname()[1] and server.url.endswith(f":{server.port}") and server.alive()
        assert "Address already in use" in server.log.read_text()  # the first start really failed on the port
    finally:
        server.stop()
        taken.close()

    restarted = managed_server.ServerProcess(1, [sys.executable, "-c", HEALTH_SERVER], [], tmp_path)
    with socket.socket() as held:  # a restart keeps its URL: the taken port is an error naming the cause
        held.bind(("127.0.0.1", restarted.port))
        held.listen()
        restarted.start()
        with pytest.raises(EngineError, match="Address already in use"):
            restarted.wait_healthy(30)
