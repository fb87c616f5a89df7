"""Errors of the build output whose message is meant for the user (one line, no traceback)."""
from __future__ import annotations


class ManifestError(RuntimeError):
    """The output directory holds something this build must not touch, or cannot be read as a build output. The
    message is the problem, then the remedy (a caller with other options, like `sweep`, words its own)."""

    def __init__(self, problem: str, remedy: str = ""):
        super().__init__(f"{problem}; {remedy}" if remedy else problem)
        self.problem = problem


class OutputLocked(ManifestError):
    """Another build holds the output directory's lock."""


class OutputFull(ManifestError):
    """The filesystem of the output directory is full (the build's state stays resumable)."""


def full_disk(path, exc: OSError) -> OutputFull | None:
    """The one-line error for a write that failed because the filesystem is full (None for any other failure)."""
    import errno
    import shutil
    from pathlib import Path

    if exc.errno != errno.ENOSPC and "No space left" not in str(exc):
        return None
    path = Path(path)
    try:
        free = f"{shutil.disk_usage(path.parent).free / 2**20:,.1f} MiB free"
    except OSError:
        free = "free space unknown"
    return OutputFull(f"no space left on device writing {path} ({free}); free some space or move the output, "
                      "then re-run the same command to resume")
