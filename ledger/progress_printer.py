"""Progress of a long operator command on standard error, at most about once a second: a verification or an export
of a long history shows it is alive, how far it got and how fast it goes."""

from __future__ import annotations

import time
from collections.abc import Callable

import typer


class ProgressPrinter:
    """Call it with (done, total) as often as is convenient; it prints only when about a second has passed since
    the last line, and always for the last step (``done >= total``)."""

    def __init__(
        self,
        label: str,
        *,
        unit: str = "postings",
        clock: Callable[[], float] = time.monotonic,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self._label = label
        self._unit = unit
        self._clock = clock
        self._echo = echo or (lambda line: typer.echo(line, err=True))
        self._started = clock()
        self._last = self._started

    def __call__(self, done: int, total: int) -> None:
        now = self._clock()
        if done < total and now - self._last < 1.0:
            return
        self._last = now
        share = f" ({100 * done // total}%)" if total else ""
        elapsed = now - self._started
        rate = f", {done / elapsed:,.0f} {self._unit}/s" if elapsed > 0 else ""
        self._echo(f"{self._label}: {done:,} of {total:,} {self._unit}{share}{rate}")
