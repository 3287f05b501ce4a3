"""``ledger serve`` with several worker processes, as in production but on this machine; and their peak RSS."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from scripts.throughput.raw_sql import LOCK_TIMEOUT_MS, STATEMENT_TIMEOUT_MS
from tests.fault_scenario import FaultPlan, ServedLedger


@dataclass(frozen=True)
class ServeSettings:
    workers: int
    pool_size: int
    rate_limit_per_second: int = 1_000_000

    def environment(self) -> dict[str, str]:
        """The LEDGER_ variables the benchmark sets (everything else is the settings' default)."""
        return {
            "LEDGER_WORKERS": str(self.workers),
            "LEDGER_POOL_SIZE": str(self.pool_size),
            "LEDGER_MAX_OVERFLOW": "0",
            "LEDGER_POOL_TIMEOUT_SECONDS": "10",
            "LEDGER_LOCK_TIMEOUT_MS": str(LOCK_TIMEOUT_MS),
            "LEDGER_STATEMENT_TIMEOUT_MS": str(STATEMENT_TIMEOUT_MS),
            # API keys are checked on every request; only the per-key limit is raised out of the way.
            "LEDGER_RATE_LIMIT_PER_SECOND": str(self.rate_limit_per_second),
            "LEDGER_RATE_LIMIT_BURST": str(self.rate_limit_per_second),
            "LEDGER_LOG_LEVEL": "WARNING",
        }


class BenchServer(ServedLedger):
    """The fault run's served ledger (same subprocess handling), with the benchmark's settings."""

    def __init__(self, secret_file: Path, directory: Path, owner_secret_file: Path, settings: ServeSettings) -> None:
        super().__init__(
            secret_file,
            directory,
            FaultPlan(pool_size=settings.pool_size, lock_timeout_ms=LOCK_TIMEOUT_MS),
            owner_secret_file,
        )
        self.settings = settings

    def environment(self) -> dict[str, str]:
        environment = super().environment()
        environment.update(self.settings.environment())
        return environment

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (the serving process itself when it has no workers)."""
        process = self._process
        if process is None:
            return []
        return [pid for pid in _descendants(process.pid) if not _is_helper(pid)] or [process.pid]

    def worker_peak_rss_kib(self) -> dict[int, int]:
        """VmHWM of every worker process: the most resident memory each had at any moment."""
        peaks = {pid: _peak_rss_kib(pid) for pid in self.worker_pids()}
        return {pid: peak for pid, peak in peaks.items() if peak is not None}


def _descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text(encoding="utf-8").split()
        except OSError:
            continue
        for child in map(int, children):
            found.append(child)
            found.extend(_descendants(child))
    return found


def _is_helper(pid: int) -> bool:
    """multiprocessing's resource tracker is no server process."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return True
    return b"resource_tracker" in command


def _peak_rss_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return None
