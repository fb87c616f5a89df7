"""What a running build shows: a bar on a terminal and, in a batch-job log (stderr not a terminal, or
`--no-progress`), one plain line every `log_every` seconds — documents, chunks, input and output tok/s, ETA and the
engine's requests in flight, then what is committed — so a long run is never silent until its final table.

Two counts, kept apart: *done* moves as the engine answers, inside running tasks (`output/running.py`: the same
files on every executor); *committed* is what the manifest lists, what a resume would keep. A range leaves *running*
the moment a shard of it is committed, so done never counts a row twice; when the build ends, done == committed.
"""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

BAR_REFRESH_S = 1.0
READ_EVERY_S = 5.0  # in a log, running work is read at least this often (between lines it is kept, not lost)
COUNTS = ("documents", "chunks", "tokens", "accepted", "rejected", "excluded", "generated_tokens", "engine_latency_s")
DONE = ("documents", "chunks", "source_tokens", "generated_tokens")  # what running tasks report as they go
Running = Callable[[], dict[str, dict[str, int]]]  # input range -> its DONE counts so far, in every process


class BuildProgress:
    """Running totals of committed shards plus the work done inside running tasks, shown as a bar (`bar=True`) or as
    periodic log lines (`log_every` > 0), and a last line when the build ends.

    `in_flight` reads the engine's requests in flight (None when the engine does not say); `running` reads the work
    of tasks not committed yet (None: committed shards only)."""

    def __init__(self, console: Console, total_documents: int | None, *, bar: bool, log_every: float,
                 in_flight: Callable[[], int | None] = lambda: None, running: Running | None = None):
        self.console, self.total, self.in_flight, self.running = console, total_documents, in_flight, running
        self.totals = dict.fromkeys(COUNTS, 0)  # committed (the manifest's run record)
        self.committed_source_tokens = 0
        self.reasons: Counter[str] = Counter()
        self._running: dict[str, dict[str, int]] = {}  # ranges not committed yet: the most they reported
        self._settled: set[str] = set()  # ranges with a committed shard: the committed counts stand for them
        self._most: dict[str, int] = {}  # the most done shown so far
        self._over = False
        self._lock = threading.Lock()
        self.started = time.time()
        self._bar = Progress(
            TextColumn("[bold]build"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not bar, transient=False,
        )
        self._task = self._bar.add_task("build", total=total_documents, rate="")
        self._bar_on = bar
        self._every = BAR_REFRESH_S if bar else log_every  # the bar's refresh / the log's lines
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="build-progress", daemon=True)

    def __enter__(self) -> BuildProgress:
        self.started = time.time()
        self._bar.start()
        if self._every > 0:
            self._ticker.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        with self._lock:
            self._running.clear()  # the build is over: what did not commit is not done; done == committed
            self._over = True
        self._show()
        self._bar.stop()
        if exc_type is None and not self._bar_on and self._every > 0:  # the job log's last word: done == committed
            self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)

    def settle(self, ranges: Iterable[str]) -> None:
        """A shard of these input ranges is being committed: from now on the committed counts stand for them."""
        with self._lock:
            for rid in ranges:
                self._settled.add(rid)
                self._running.pop(rid, None)

    def add(self, meta: dict) -> None:
        """One committed shard's metadata (as the writer returns it)."""
        with self._lock:
            t = self.totals
            for key in ("documents", "chunks", "tokens", "excluded"):
                t[key] += meta[key]
            t["accepted" if meta["kind"] == "shards" else "rejected"] += meta["rows"] - meta["excluded"]
            t["generated_tokens"] += meta.get("generated_tokens", 0)
            t["engine_latency_s"] = round(t["engine_latency_s"] + meta.get("engine_latency_s", 0.0), 4)  # run statistics, not shard bytes
            self.committed_source_tokens += meta.get("source_tokens", 0)
            self.reasons.update(meta.get("reasons", {}))
            if self.total is not None and t["documents"] > self.total:
                self.total = t["documents"]  # the planner's count can be short (a truncated .zst adds a dead-letter row)
        self._show()

    def counts(self) -> dict:
        """The committed totals with rejects by reason, shaped like a manifest's `counts`."""
        return {**self.totals, "rejects_by_reason": dict(sorted(self.reasons.items()))}

    def done(self) -> dict[str, int]:
        """Committed plus the work inside running tasks, never more documents than the total. A task's shards commit
        one by one, each retiring its range's running counts, so until the build ends this is the most done so far:
        answered work does not go back. When it ends (running cleared), done is exactly what was committed."""
        with self._lock:
            t = self.totals
            done = {"documents": t["documents"], "chunks": t["chunks"], "source_tokens": self.committed_source_tokens,
                    "generated_tokens": t["generated_tokens"]}
            for counts in self._running.values():
                for key in DONE:
                    done[key] += counts.get(key, 0)
            if self.total is not None:  # (the total grows with the committed documents, never below them)
                done["documents"] = min(done["documents"], self.total)
            if self._over:
                return done
            self._most = {key: max(self._most.get(key, 0), done[key]) for key in DONE}
            return dict(self._most)

    def refresh(self) -> None:
        """Read the running tasks' reports (kept per range until a shard of it commits)."""
        if self.running is None:
            return
        reports = self.running()
        with self._lock:
            for rid, counts in reports.items():
                if rid in self._settled:
                    continue
                kept = self._running.setdefault(rid, dict.fromkeys(DONE, 0))
                for key in DONE:
                    kept[key] = max(kept[key], counts.get(key, 0))

    def _show(self) -> None:
        self._bar.update(self._task, completed=self.done()["documents"], total=self.total, rate=self._rates())

    def _rates(self) -> str:
        elapsed, done = max(time.time() - self.started, 1e-6), self.done()
        rate = f"{done['source_tokens'] / elapsed:,.0f} tok/s"
        if done["generated_tokens"]:  # the LLM's output rate: what GPU time buys
            rate += f" · out {done['generated_tokens'] / elapsed:,.0f} tok/s"
        in_flight = self.in_flight()
        if in_flight is not None:
            rate += f" · {in_flight:,} in flight"
        return rate

    def line(self) -> str:
        """One log line of the current state: done (with running tasks), then committed."""
        t, done, elapsed = self.totals, self.done(), max(time.time() - self.started, 1e-6)
        docs = done["documents"]
        head = f"{docs:,}/{self.total:,} documents ({docs / max(self.total, 1):.0%})" if self.total else f"{docs:,} documents"
        parts = [head, f"{done['chunks']:,} chunks",
                 f"in {done['source_tokens'] / elapsed:,.0f} tok/s", f"out {done['generated_tokens'] / elapsed:,.0f} tok/s"]
        if self.total and docs:
            parts.append(f"ETA {timedelta(seconds=round(elapsed / docs * max(self.total - docs, 0)))}")
        else:
            parts.append("ETA ?")
        in_flight = self.in_flight()
        if in_flight is not None:
            parts.append(f"{in_flight:,} requests in flight")
        committed = (f"committed {t['documents']:,} documents, {t['chunks']:,} chunks, "
                     f"accepted {t['accepted']:,}, rejected {t['rejected']:,}")
        return f"progress {timedelta(seconds=round(elapsed))}: " + ", ".join(parts) + "; " + committed

    def _tick(self) -> None:
        wait = self._every if self._bar_on else min(self._every, READ_EVERY_S)
        last_line = time.monotonic()
        while not self._stop.wait(wait):
            self.refresh()
            if self._bar_on:  # between commits the bar moves with the running tasks and shows the engine at work
                self._show()
            elif time.monotonic() - last_line >= self._every - wait / 2:
                last_line = time.monotonic()
                self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)
