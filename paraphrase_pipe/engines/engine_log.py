"""What an engine said before it failed, for the one-line error the user sees.

vLLM reports the real cause of a failed start (out of KV-cache memory, CUDA OOM, a bad model) in a child process —
the API server, or the in-process engine's core — that writes it to stdout/stderr only; the parent hears just
"Engine core initialization failed". `tee_output` copies file descriptors 1 and 2 of this process, and of every
child it starts afterwards, into a log file as well, and `error_excerpt` pulls the last error line out of a log.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path

OOM = re.compile(r"out of memory|OutOfMemoryError|No available memory for the cache blocks|insufficient memory", re.IGNORECASE)
LOG_RECORD = re.compile(r"^(?:\(\w+ pid=\d+\)|INFO|WARNING|ERROR|DEBUG|\[|\d{4}-\d\d-\d\d)")
ERROR_LINE = re.compile(r"\b\w*(?:Error|Exception)\b:|out of memory|\bFATAL\b", re.IGNORECASE)


def error_excerpt(log: Path, lines: int = 400, start: int = 0) -> str:
    """The engine's own words: its last error line and the detail lines under it (or its last lines), and where
    the full log is. `start`: byte offset where the part of the log to read begins."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            tail = f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {log})"
    errors = [i for i, line in enumerate(tail) if ERROR_LINE.search(line)]
    if not errors:
        body = [line.strip() for line in tail[-5:] if line.strip()]
    else:
        body = [tail[errors[-1]].strip()]
        for line in tail[errors[-1] + 1:errors[-1] + 8]:  # e.g. the fields of a pydantic ValidationError
            if not line.strip() or LOG_RECORD.match(line.strip()):
                break
            if not line.strip().startswith("For further information"):
                body.append(line.strip())
    return f"{' | '.join(body)[-800:]} (full log: {log})"


_tees: dict[int, tuple] = {}  # fd -> (the pipe's (st_dev, st_ino), log) of this process's live tees


def tee_output(log: Path) -> Path:
    """From now on, everything written to fds 1 and 2 (this process and children started later) also goes to a log.

    vLLM's logger writes to stdout, tracebacks of its child processes go to stderr: both are wanted. Returns the
    log in use (the first asked for in this process). Idempotent while the fds are still our pipes; if somebody
    replaced one since (pytest's capture does), a new tee is put in front of the new one.
    """
    for fd in (1, 2):
        log = _tee(fd, log)
    return log


def _tee(fd: int, log: Path) -> Path:
    try:
        current = os.fstat(fd)
    except OSError:
        return log
    if fd in _tees and _tees[fd][0] == (current.st_dev, current.st_ino):
        return _tees[fd][1]
    log = next(iter(_tees.values()))[1] if _tees else log
    log.parent.mkdir(parents=True, exist_ok=True)
    target = os.dup(fd)
    read_end, write_end = os.pipe()
    os.dup2(write_end, fd)
    pipe = os.fstat(write_end)
    os.close(write_end)
    out = open(log, "ab", buffering=0)  # noqa: SIM115 - lives as long as the process

    def pump() -> None:  # daemon: children keep writing here after the engine started
        while chunk := os.read(read_end, 65536):
            for write in (lambda: os.write(target, chunk), lambda: out.write(chunk)):
                try:
                    write()
                except OSError:
                    pass

    threading.Thread(target=pump, name=f"tee-fd{fd}", daemon=True).start()
    _tees[fd] = ((pipe.st_dev, pipe.st_ino), log)
    return log
