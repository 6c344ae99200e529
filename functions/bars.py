"""The staff commands' progress on a terminal: tqdm bars on stderr, log lines written above them.

Two bars: the current unit of work (a workspace's rows, all tables together) and its current table.
Closing them ends the output with a newline, so whatever is written next starts on a line of its own.
Without a terminal there are no bars at all: stdout carries only the command's JSON summary.
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from collections.abc import Iterator, Mapping
from typing import IO, Any

from chalicelib.jobs.progress import Progress


def _tqdm() -> Any:
    from tqdm import tqdm  # type: ignore[import-untyped]  # lazily: only a terminal needs it (cold start)

    return tqdm


class Bars:
    """A `Progress` drawn as two tqdm bars (overall rows, current table's rows) on a terminal stream."""

    def __init__(self, stream: IO[str]) -> None:
        self._tqdm = _tqdm()
        self.stream = stream
        self._overall: Any = None
        self._table: Any = None
        self._totals: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._current: str | None = None

    def begin(self, label: str, totals: Mapping[str, int]) -> None:
        """Start a unit of work: the overall bar counts every row of `totals`."""
        self._totals, self._done, self._current = dict(totals), {}, None
        total = sum(self._totals.values())
        if self._overall is None:
            options = {"file": self.stream, "unit": "rows", "dynamic_ncols": True, "mininterval": 0.2}
            self._overall = self._tqdm(total=total, desc=label, position=0, leave=True, **options)
            self._table = self._tqdm(total=0, desc="", position=1, leave=False, **options)
            return
        self._overall.set_description(label, refresh=False)  # before reset(), which redraws
        self._overall.reset(total=total)

    def advance(self, table: str, done: int) -> None:
        """`done` rows of `table` so far: both bars move by what is new."""
        if self._overall is None:
            return
        if table != self._current:
            self._current = table
            names = list(self._totals)
            place = f"{names.index(table) + 1}/{len(names)}" if table in self._totals else "?"
            self._table.set_description(f"{table} ({place})", refresh=False)  # before reset(), which redraws
            self._table.reset(total=self._totals.get(table, done))
        step = done - self._done.get(table, 0)
        self._done[table] = done
        for bar in (self._table, self._overall):
            if bar.n + step > bar.total:
                bar.total = bar.n + step  # rows added since they were counted: a total is never overrun
            bar.update(step)

    def close(self) -> None:
        """Remove the table bar and leave the overall one, ending with a newline."""
        if self._overall is not None:
            self._table.close()
            self._overall.close()
            self._overall = self._table = None


class _AboveBars(io.TextIOBase):
    """A stream for log handlers that writes each line above the bars (tqdm.write) instead of into them."""

    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        """Clear the bars, write `text`, draw the bars again below it."""
        _tqdm().write(text, file=self._stream, end="")
        return len(text)

    def flush(self) -> None:
        """Flush the terminal stream."""
        self._stream.flush()


@contextlib.contextmanager
def progress_bars(stream: IO[str] | None = None) -> Iterator[Progress | None]:
    """Bars on `stream` (stderr) while it is a terminal, else None; log lines to it go above the bars."""
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield None
        return
    bars = Bars(stream)
    handlers = [h for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and h.stream is stream]
    above = _AboveBars(stream)
    for handler in handlers:
        handler.setStream(above)
    try:
        yield bars
    finally:
        bars.close()
        for handler in handlers:
            handler.setStream(stream)
