"""Process trees read from /proc (no psutil on the GPU machines): what the benchmarks that kill -9 an engine or a
training rank use to find it, and to stop what they started."""
from __future__ import annotations

import os
import signal
from pathlib import Path


def parents() -> dict[int, int]:
    """pid -> parent pid of every live process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            found[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return found


def children(pid: int) -> list[int]:
    return [child for child, ppid in parents().items() if ppid == pid]


def descendants(root: int) -> list[tuple[int, str]]:
    """(pid, command line) of every live descendant of `root`."""
    parent = parents()
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid:
                try:
                    cmd = (Path("/proc") / str(child) / "cmdline").read_bytes()
                except OSError:
                    continue  # exited meanwhile
                found.append((child, cmd.replace(b"\0", b" ").decode(errors="replace").strip()))
                frontier.append(child)
    return found


def kill_pids(pids) -> None:
    """SIGKILL each, ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
