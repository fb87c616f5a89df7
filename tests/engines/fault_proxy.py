"""A small real HTTP server on 127.0.0.1 in front of a real vLLM server: forwards `/v1/*`, injects faults on a
schedule (503, 429, timeouts, dropped connections before or after the upstream answered), can hold requests
(to kill a client at a known point), checks an API key, and logs every request it sees."""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

Fault = str | None  # "503" | "429" | "timeout" | "drop" | "drop_after" | None


def prompt_key(body: dict) -> str:
    return hashlib.sha1(json.dumps(body.get("prompt")).encode()).hexdigest()[:16]


class FaultProxy:
    def __init__(self, upstream: str, schedule: Callable[[int], Fault] = lambda i: None, *, timeout_s: float = 3.0,
                 api_key: str | None = None, hold_after: int | None = None):
        self.upstream, self.schedule, self.timeout_s = upstream, schedule, timeout_s
        self.api_key, self.hold_after = api_key, hold_after
        self.log: list[dict] = []
        self.answered = 0
        self.held = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, timeout=60)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._release.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()

    def release(self) -> None:
        """Stop holding: held requests are dropped, later ones forwarded."""
        self.hold_after = None
        self._release.set()

    def forwarded(self, since: int = 0) -> list[str]:
        """Prompt keys of completion requests that reached the upstream (it generated, we paid)."""
        return [e["key"] for e in self.log[since:] if e["forwarded"]]

    def answered_keys(self, since: int = 0) -> list[str]:
        return [e["key"] for e in self.log[since:] if e["status"] == 200]

    def _handler(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if proxy.api_key and self.headers.get("Authorization") != f"Bearer {proxy.api_key}":
                    self._reply(401, json.dumps({"error": {"message": "invalid API key"}}).encode())
                    return False
                return True

            def do_GET(self):
                if self._authorized():
                    upstream = proxy._client.get(self.path)
                    self._reply(upstream.status_code, upstream.content)

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if not self._authorized():
                    return
                body = json.loads(raw)
                with proxy._lock:
                    index = len(proxy.log)
                    entry = {"key": prompt_key(body), "fault": proxy.schedule(index), "status": None, "forwarded": False, "t": time.time()}
                    proxy.log.append(entry)
                    hold = proxy.hold_after is not None and proxy.answered >= proxy.hold_after
                    proxy.held += hold
                if hold:
                    proxy._release.wait()
                    self.close_connection = True
                    return
                fault = entry["fault"]
                if fault in ("503", "429"):
                    entry["status"] = int(fault)
                    self._reply(int(fault), b'{"error": {"message": "injected"}}', {"Retry-After": "0"})
                    return
                if fault == "timeout":
                    time.sleep(proxy.timeout_s)
                if fault in ("timeout", "drop"):
                    self.close_connection = True  # no response at all: the client sees the connection close
                    return
                upstream = proxy._client.post(self.path, content=raw, headers={"Content-Type": "application/json"})
                entry["forwarded"] = True
                if fault == "drop_after":  # the server did the work, the answer is lost on the way
                    self.close_connection = True
                    return
                entry["status"] = upstream.status_code
                self._reply(upstream.status_code, upstream.content)
                if upstream.status_code == 200:
                    with proxy._lock:
                        proxy.answered += 1

        return Handler
