"""The suite-wide canary scan: every password and API key a test makes is registered here, and the captured output
of every test phase (stdout, stderr, log records) is searched for them. A hit fails the run. (Under pytest-xdist
each worker scans what it registered; CI runs the suite in one process, where the scan sees everything.)"""

from __future__ import annotations

import threading
from collections.abc import Iterable


class SecretCanaries:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: set[str] = set()
        self.leaks: list[str] = []

    def register(self, value: str) -> None:
        # Short values would match by accident; every secret the suite makes is long.
        if len(value) >= 12:
            with self._lock:
                self._values.add(value)

    def scan(self, where: str, texts: Iterable[tuple[str, str]]) -> None:
        with self._lock:
            values = tuple(self._values)
        for section, text in texts:
            for value in values:
                if value in text:
                    self.leaks.append(f"{where} [{section}]: a registered secret ({value[:4]}...) appears")


canaries = SecretCanaries()
