"""What an engine said before it failed, for the one-line error the user sees.

vLLM reports the real cause of a failed start (out of KV-cache memory, CUDA OOM, a bad model) in a child process —
the API server, or the in-process engine's core — that writes it to stdout/stderr only; the parent hears just
"Engine core initialization failed". `tee_output` copies file descriptors 1 and 2 of this process, and of every
child it starts afterwards, into a log file as well; `error_excerpt` pulls the root cause out of a log, and
`start_failure` makes the one line a failed start reports.
"""
from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OOM = re.compile(r"out of memory|OutOfMemoryError|No available memory for the cache blocks|insufficient memory|"
                 r"memory .{0,60}on startup is less than desired", re.IGNORECASE)
LOG_RECORD = re.compile(r"^(?:\([\w-]+ pid=\d+\)|INFO|WARNING|ERROR|DEBUG|\[|\d{4}-\d\d-\d\d)")
# "(VllmWorker-0 pid=7) ERROR 12-01 11:42:12 [executor.py:953] ": the prefix of a vLLM log record
RECORD_PREFIX = re.compile(r"^(?:\([\w-]+ pid=\d+\)\s*)?(?:(?:INFO|WARNING|ERROR|DEBUG|CRITICAL)\s+[\d-]+\s+[\d:.]+\s+\[[^\]]*\]\s*)?")
TRACEBACK = re.compile(r"^(?:Traceback|File \"|The above exception|During handling|\^+$|~+)")
ERROR_LINE = re.compile(r"\b\w*(?:Error|Exception)\b:|out of memory|\bFATAL\b", re.IGNORECASE)
# vLLM's own wrappers around the real error ("Engine core initialization failed. See root cause above"): never the cause
WRAPPER = re.compile(r"root cause|initialization failed|failed to start|Failed core proc|died unexpectedly", re.IGNORECASE)


def _root_cause_line(lines: list[str]) -> int | None:
    """Index of the line that names the cause: the last out-of-memory line, else the last error line that is not
    one of vLLM's wrappers, else the last wrapper."""
    errors = [i for i, line in enumerate(lines) if ERROR_LINE.search(line)]
    causes = [i for i in errors if not WRAPPER.search(lines[i])]
    oom = [i for i in causes if OOM.search(lines[i])]
    return (oom or causes or errors or [None])[-1]


def error_excerpt(log: Path, lines: int = 400, start: int = 0) -> str:
    """The engine's own words: its last error line and the detail lines under it (or its last lines), and where
    the full log is. `start`: byte offset where the part of the log to read begins."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            tail = f.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {log})"
    cause = _root_cause_line(tail)
    if cause is None:
        body = [line.strip() for line in tail[-5:] if line.strip()]
    else:
        body = [RECORD_PREFIX.sub("", tail[cause].strip())]
        for line in tail[cause + 1:cause + 8]:  # e.g. the fields of a pydantic ValidationError
            line = line.strip()
            if not line or LOG_RECORD.match(line) or TRACEBACK.match(line):
                break
            if not line.startswith("For further information"):
                body.append(line)
    return f"{' | '.join(body)[-800:]} (full log: {log})"


def start_failure(exc: BaseException, log: Path, start: int = 0) -> str:
    """`ExcType: cause (full log: ...)` for an engine that failed to start in this process: the exception itself
    when it names the cause, the engine core's own error line from the log when it is one of vLLM's wrappers."""
    own = " | ".join(line.strip() for line in str(exc).splitlines()
                     if line.strip() and not line.strip().startswith("For further information"))
    if WRAPPER.search(own) or not own:
        return error_excerpt(log, start=start)
    return f"{type(exc).__name__}: {own[:800]} (full log: {log})"


@contextmanager
def tee_output(log: Path) -> Iterator[Path]:
    """Inside: fds 1 and 2 of this process also go to `log` — and for their whole life, those of the children started
    inside (vLLM's engine core and workers). On exit this process writes straight to its own fds again, so a
    terminal stays a terminal (progress bars), while the children keep writing through the tee."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sink = open(log, "ab", buffering=0)  # noqa: SIM115 - the pumps hold it until the children are gone
    restore: list[tuple[int, int]] = []
    try:
        for fd in (1, 2):
            target = os.dup(fd)
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            restore.append((fd, target))
            threading.Thread(target=_pump, args=(read_end, target, sink), name=f"tee-fd{fd}", daemon=True).start()
        yield log
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, target in restore:
            os.dup2(target, fd)


def _pump(read_end: int, target: int, sink) -> None:
    """Copy one pipe to its original fd and to the log until every writer (children included) has closed it."""
    while chunk := os.read(read_end, 65536):
        for write in (lambda: os.write(target, chunk), lambda: sink.write(chunk)):
            try:
                write()
            except (OSError, ValueError):
                pass
    os.close(read_end)
    os.close(target)
