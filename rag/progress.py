"""Progress: what a long `rag index` run prints while it works.

`ProgressPrinter` is a `rag.index.Progress` callback: it receives (stage, done, total) and shows
the named phases (reading, chunking, embedding N of M with rate and time left, lexical index,
story groups). On a terminal one status line is redrawn; elsewhere (a log, a pipe) a line is
printed when a phase starts, every `every` seconds, and when it ends. A phase ends when
done == total > 0. It does not decide what the phases are: the indexer reports them.
"""

from __future__ import annotations

import time
from typing import TextIO

UNITS = {"reading": "files", "chunking": "articles", "embedding": "chunks", "repairing": "chunks",
         "MiniLM vectors": "chunks"}  # the full stage of a two-stage index (rag.index.FULL_PHASE)


class ProgressPrinter:
    """Show indexing phases on `stream` (a terminal status line, or a line every `every` seconds)."""

    def __init__(self, stream: TextIO, every: float = 10.0, tty: bool | None = None) -> None:
        self.stream = stream
        self.every = every
        self.tty = stream.isatty() if tty is None else tty
        self.started: dict[str, float] = {}  # active phases, when each started
        self.state: dict[str, tuple[int, int]] = {}
        self.last_shown = 0.0

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.monotonic()
        if total and done >= total and stage not in self.started:
            return  # said already
        new = stage not in self.started
        self.started.setdefault(stage, now)
        self.state[stage] = (done, total)
        if total and done >= total:  # the phase ended: a line that stays
            self._line(f"{self.describe(stage, done, total, now)} in {_duration(now - self.started.pop(stage))}")
            del self.state[stage]
            self.last_shown = now
        elif self.tty and (new or now - self.last_shown >= 0.2):
            self.stream.write("\r\x1b[K" + self.status(now))
            self.stream.flush()
            self.last_shown = now
        elif not self.tty and (new or now - self.last_shown >= self.every):
            self._line(self.status(now))
            self.last_shown = now

    def status(self, now: float) -> str:
        """Every active phase, most recent last."""
        return " · ".join(self.describe(s, d, t, now) for s, (d, t) in self.state.items())

    def describe(self, stage: str, done: int, total: int, now: float) -> str:
        unit = UNITS.get(stage, "")
        if not unit:
            return f"{stage}..." if not total or done < total else stage
        if not total:
            return f"{stage}: {done:,} {unit}"
        text = f"{stage}: {done:,} of {total:,} {unit}"
        elapsed = now - self.started.get(stage, now)
        if 0 < done < total and elapsed > 0:
            rate = done / elapsed
            text += f" ({100 * done // total}%, {rate:,.1f}/s, about {_duration((total - done) / rate)} left)"
        return text

    def clear(self) -> None:
        """End the status line (before printing something else)."""
        if self.tty and self.state:
            self.stream.write("\r\x1b[K")
            self.stream.flush()

    def _line(self, text: str) -> None:
        self.stream.write(("\r\x1b[K" if self.tty else "") + text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    """"4 s", "2 min 05 s", "1 h 03 min"."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
