"""What a running build shows: a bar on a terminal and, in a batch-job log (stderr not a terminal, or
`--no-progress`), one plain line every `log_every` seconds — documents, chunks, accepted/rejected, input and output
tok/s, ETA and the engine's requests in flight — so a long run is never silent until its final table."""
from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

BAR_REFRESH_S = 1.0
COUNTS = ("documents", "chunks", "tokens", "accepted", "rejected", "excluded", "generated_tokens", "engine_latency_s")


class BuildProgress:
    """Running totals of committed shards, shown as a bar (`bar=True`) or as periodic log lines (`log_every` > 0).

    `in_flight` reads the engine's requests in flight (None when the engine does not say)."""

    def __init__(self, console: Console, total_documents: int | None, *, bar: bool, log_every: float,
                 in_flight: Callable[[], int | None] = lambda: None):
        self.console, self.total, self.in_flight = console, total_documents, in_flight
        self.totals = dict.fromkeys(COUNTS, 0)
        self.reasons: Counter[str] = Counter()
        self.started = time.time()
        self._bar = Progress(
            TextColumn("[bold]build"), BarColumn(), MofNCompleteColumn(), TextColumn("docs"),
            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
            console=console, disable=not bar, transient=False,
        )
        self._task = self._bar.add_task("build", total=total_documents, rate="")
        self._bar_on = bar
        self._every = BAR_REFRESH_S if bar else log_every  # the bar's in-flight count / the log's lines
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="build-progress", daemon=True)

    def __enter__(self) -> BuildProgress:
        self.started = time.time()
        self._bar.start()
        if self._every > 0:
            self._ticker.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._ticker.is_alive():
            self._ticker.join()
        self._bar.stop()

    def add(self, meta: dict) -> None:
        """One committed shard's metadata (as the writer returns it)."""
        t = self.totals
        for key in ("documents", "chunks", "tokens", "excluded"):
            t[key] += meta[key]
        t["accepted" if meta["kind"] == "shards" else "rejected"] += meta["rows"] - meta["excluded"]
        t["generated_tokens"] += meta.get("generated_tokens", 0)
        t["engine_latency_s"] = round(t["engine_latency_s"] + meta.get("engine_latency_s", 0.0), 4)  # run statistics, not shard bytes
        self.reasons.update(meta.get("reasons", {}))
        if self.total is not None and t["documents"] > self.total:
            self.total = t["documents"]  # the planner's count can be short (a truncated .zst adds a dead-letter row)
        self._bar.update(self._task, completed=t["documents"], total=self.total, rate=self._rates())

    def counts(self) -> dict:
        """The totals with rejects by reason, shaped like a manifest's `counts`."""
        return {**self.totals, "rejects_by_reason": dict(sorted(self.reasons.items()))}

    def _rates(self) -> str:
        elapsed = max(time.time() - self.started, 1e-6)
        rate = f"{self.totals['tokens'] / elapsed:,.0f} tok/s"
        if self.totals["generated_tokens"]:  # the LLM's output rate: what GPU time buys
            rate += f" · out {self.totals['generated_tokens'] / elapsed:,.0f} tok/s"
        in_flight = self.in_flight()
        if in_flight is not None:
            rate += f" · {in_flight:,} in flight"
        return rate

    def line(self) -> str:
        """One log line of the current state."""
        t, elapsed = self.totals, max(time.time() - self.started, 1e-6)
        done = f"{t['documents']:,}/{self.total:,} documents ({t['documents'] / max(self.total, 1):.0%})" if self.total else f"{t['documents']:,} documents"
        parts = [done, f"{t['chunks']:,} chunks", f"accepted {t['accepted']:,}", f"rejected {t['rejected']:,}",
                 f"in {t['tokens'] / elapsed:,.0f} tok/s", f"out {t['generated_tokens'] / elapsed:,.0f} tok/s"]
        if self.total and t["documents"]:
            left = elapsed / t["documents"] * (self.total - t["documents"])
            parts.append(f"ETA {timedelta(seconds=round(left))}")
        else:
            parts.append("ETA ?")
        in_flight = self.in_flight()
        if in_flight is not None:
            parts.append(f"{in_flight:,} requests in flight")
        return f"progress {timedelta(seconds=round(elapsed))}: " + ", ".join(parts)

    def _tick(self) -> None:
        while not self._stop.wait(self._every):
            if self._bar_on:  # between commits the bar still shows the engine at work
                self._bar.update(self._task, rate=self._rates())
            else:
                self.console.print(self.line(), highlight=False, markup=False, soft_wrap=True)
