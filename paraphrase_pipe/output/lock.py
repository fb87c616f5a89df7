"""One build per output directory: an exclusive lock on `OUT/.paraphrase-pipe.lock`, taken before anything in OUT
is swept, rewritten or recorded, and held until the build (card included) is done.

The lock file holds the holder's host, pid, process start time and the time it took the lock, so a refusal can name
the holder. Two mechanisms guard it:
- `flock(2)` on the open file: the kernel (or the file server) releases it when the holder dies, even by kill -9.
  Local filesystems, NFSv4 and NFSv3 with lockd (Linux maps flock to byte-range locks there) and Lustre mounted with
  `-o flock` enforce it between hosts; NFS with `local_lock=flock|all` or `nolock`, and Lustre with `-o localflock`,
  only between processes of one host; where flock is refused outright the file record alone decides.
- the record: a record left by a process of *this* host that no longer runs (a kill -9, a node reboot) is stale and
  taken over; a record of *another* host is refused, because whether that process still runs cannot be checked
  from here (`--break-lock` takes it over: use it only when that job is known dead). A clean exit, an error or
  SIGTERM (Slurm preemption) clears the record, so a requeued job on another node starts without `--break-lock`.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from paraphrase_pipe.output.errors import OutputLocked

LOCK_FILE = ".paraphrase-pipe.lock"
NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot): tells a live holder from a reused pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(record: dict) -> bool:
    pid = int(record.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's live process
    started = record.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def describe_holder(record: dict) -> str:
    if not record:
        return "a build that is just starting"
    return f"pid {record.get('pid')} on {record.get('host')} since {record.get('since')}"


class OutputLock:
    def __init__(self, out: Path, break_lock: bool = False):
        self.path = Path(out) / LOCK_FILE
        self.break_lock = break_lock
        self.fd: int | None = None
        self.flock = False
        self.took_over: dict | None = None  # the stale record replaced, for the user's information

    def acquire(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.flock = True
            except BlockingIOError:
                raise OutputLocked(f"{self.path.parent} is in use by another build ({describe_holder(read_record(self.path))}); "
                                   "wait for it to finish, or use another --output") from None
            except OSError as exc:
                if exc.errno not in NO_FLOCK:
                    raise
            record = read_record(self.path)
            if record:
                self._may_take_over(record)
                self.took_over = record
            mine = {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
                    "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(mine).encode() + b"\n", 0)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def _may_take_over(self, record: dict) -> None:
        if self.break_lock:
            return
        holder = describe_holder(record)
        if record.get("host") != socket.gethostname():
            raise OutputLocked(f"{self.path.parent} is locked by a build on another host ({holder}); if that job is "
                               "dead, re-run with --break-lock")
        if _alive(record) and int(record.get("pid", 0)) != os.getpid():
            raise OutputLocked(f"{self.path.parent} is in use by another build ({holder}); wait for it to finish, "
                               "or use another --output")

    def release(self) -> None:
        """Clear the record and drop the lock. The file stays: unlinking it would let a waiter lock a dead inode."""
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
            os.fsync(self.fd)
        finally:
            os.close(self.fd)  # closing drops the flock
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def read_record(path: Path) -> dict:
    """The holder recorded in a lock file ({} when free or unreadable)."""
    try:
        text = Path(path).read_text().strip()
        record = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def holder(out: Path) -> dict | None:
    """Who holds OUT's lock now (for `inspect`): the record, when a live process still holds it, else None."""
    path = Path(out) / LOCK_FILE
    record = read_record(path)
    if not record:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return record
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return record  # held right now
    except OSError:
        pass
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        if record.get("host") == socket.gethostname() and not _alive(record):
            return None
    finally:
        os.close(fd)
    return record if record.get("host") != socket.gethostname() or _alive(record) else None
