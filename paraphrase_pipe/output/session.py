"""One build's hold on its output directory: the lock first, then the manifest; on the way out a failure is written
down (status `failed` with the reason, so `inspect` and a rerun read the state right) and the lock let go.

SIGTERM (what Slurm sends before it kills a preempted job) clears the lock record before the process dies, so the
requeued job may start on any node without `--break-lock`.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from paraphrase_pipe.output.errors import ManifestError
from paraphrase_pipe.output.lock import OutputLock
from paraphrase_pipe.output.manifest import BuildManifest


class OutputSession:
    def __init__(self, out: Path, enabled: bool = True, break_lock: bool = False):
        self.lock = OutputLock(out, break_lock) if enabled else None
        self.manifest: BuildManifest | None = None
        self._previous_handler = None

    def open_manifest(self, *args: Any, **kwargs: Any) -> BuildManifest:
        """Lock OUT (before anything in it is read, swept or written), then open the build's manifest."""
        self.lock.acquire()
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self.manifest = BuildManifest.open(self.lock.path.parent, *args, **kwargs)
        return self.manifest

    def __enter__(self) -> OutputSession:
        return self

    def _on_sigterm(self, signum, frame) -> None:
        self.lock.release()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.lock is None:
            return
        try:
            if exc is not None and self.manifest is not None and not self.manifest.complete:
                try:
                    self.manifest.fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
                except (OSError, ManifestError):
                    pass  # e.g. the disk is full: the status stays `running`, the error is still reported
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
            self.lock.release()
