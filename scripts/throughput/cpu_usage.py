"""How busy the machine and the server processes were during a run, from /proc (Linux)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuSnapshot:
    busy_ticks: int
    total_ticks: int
    process_ticks: int

    def busy_percent_since(self, earlier: CpuSnapshot) -> float:
        """Of all cores: 100 means every core was busy the whole time."""
        total = self.total_ticks - earlier.total_ticks
        return round(100.0 * (self.busy_ticks - earlier.busy_ticks) / total, 1) if total else 0.0

    def process_seconds_since(self, earlier: CpuSnapshot) -> float:
        return (self.process_ticks - earlier.process_ticks) / CLOCK_TICKS


def snapshot(pids: list[int] | tuple[int, ...] = ()) -> CpuSnapshot:
    fields = [int(value) for value in Path("/proc/stat").read_text(encoding="utf-8").splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return CpuSnapshot(busy_ticks=total - idle, total_ticks=total, process_ticks=sum(map(_process_ticks, pids)))


def _process_ticks(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        return 0
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime
