"""What a run found: measurements, the issue's targets as ratios with PASS/FAIL, and the table, JSON and SVG."""

from __future__ import annotations

import html
import os
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
PEAK_RSS_LIMIT_BYTES = 150 * 1_000_000  # 150 MB, decimal (the stricter reading)
P99_LIMIT_MS = 25.0


@dataclass
class Measurement:
    """One line of the table: a throughput (transfers per second), maybe latencies, and the failures seen."""

    key: str
    label: str
    transfers_per_second: float
    errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    notes: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TargetCheck:
    name: str
    measured: float | None
    required: float
    unit: str
    at_most: bool = False

    @property
    def passed(self) -> bool:
        if self.measured is None:
            return False
        return self.measured <= self.required if self.at_most else self.measured >= self.required

    @property
    def verdict(self) -> str:
        if self.measured is None:
            return "n/a (FAIL)"
        return "PASS" if self.passed else "FAIL"


@dataclass
class BenchReport:
    measurements: dict[str, Measurement] = field(default_factory=dict)
    peak_rss_kib: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""
    elapsed_seconds: float = 0.0

    def add(self, measurement: Measurement) -> Measurement:
        self.measurements[measurement.key] = measurement
        return measurement

    def rate(self, key: str) -> float | None:
        found = self.measurements.get(key)
        return None if found is None else found.transfers_per_second

    def targets(self) -> list[TargetCheck]:
        def ratio(numerator: str, denominator: str) -> float | None:
            top, bottom = self.rate(numerator), self.rate(denominator)
            return None if top is None or not bottom else top / bottom

        open_loop = self.measurements.get("http_open_loop")
        peak = max(self.peak_rss_kib.values(), default=None)
        errors = sum(m.errors for m in self.measurements.values() if m.key.startswith("http"))
        return [
            TargetCheck("HTTP hot / raw-SQL hot 1/txn ceiling", ratio("http_hot", "raw_hot_1"), 1.0, "x"),
            TargetCheck(
                "HTTP uniform / raw-SQL uniform 1/txn ceiling", ratio("http_uniform", "raw_uniform_1"), 0.5, "x"
            ),
            TargetCheck("HTTP hot / HTTP uniform", ratio("http_hot", "http_uniform"), 0.8, "x"),
            TargetCheck(
                "batch endpoint / raw-SQL uniform 100/txn ceiling", ratio("http_batch", "raw_uniform_100"), 0.6, "x"
            ),
            TargetCheck(
                "p99 of single transfers at half the max (open loop)",
                None if open_loop is None else open_loop.p99_ms,
                P99_LIMIT_MS,
                "ms",
                at_most=True,
            ),
            TargetCheck(
                "peak RSS of one server process (VmHWM)",
                None if peak is None else peak * 1024 / 1_000_000,
                PEAK_RSS_LIMIT_BYTES / 1_000_000,
                "MB",
                at_most=True,
            ),
            TargetCheck("non-2xx answers during the HTTP runs", float(errors), 0.0, "", at_most=True),
            *self._long_history_targets(),
        ]

    def _long_history_targets(self) -> list[TargetCheck]:
        figures = self.extra.get("long_history")
        if not figures:
            return []
        read, verify, export = figures["balance_read"], figures["verify"], figures["export"]
        postings = f"{figures['postings_long']:,}"
        return [
            TargetCheck(f"balance read at {postings} / at 1,000 postings (mean)", read["ratio_mean"], 1.2, "x", True),
            TargetCheck(
                f"ledger verify peak RSS, {postings} postings (succeeded, progress shown)",
                verify["peak_rss_mb"] if verify["ok"] and verify["progress_lines"] else None,
                200.0,
                "MB",
                True,
            ),
            TargetCheck(
                f"statement export peak RSS, {postings} postings (complete, progress shown)",
                export["peak_rss_mb"] if export["ok"] and export["progress_lines"] else None,
                200.0,
                "MB",
                True,
            ),
        ]

    def table(self) -> str:
        rows = [("measurement", "transfers/s", "p50 ms", "p99 ms", "errors", "notes")]
        for m in self.measurements.values():
            rows.append(
                (
                    m.label,
                    f"{m.transfers_per_second:,.0f}",
                    _ms(m.p50_ms),
                    _ms(m.p99_ms),
                    str(m.errors) if not m.errors else f"{m.errors} !",
                    m.notes,
                )
            )
        lines = _columns(rows)
        if self.peak_rss_kib:
            lines.append("")
            lines.append(
                "peak RSS per server process (VmHWM): "
                + ", ".join(f"{name} {kib / 1024:.0f} MiB" for name, kib in self.peak_rss_kib.items())
            )
        checks = [("target", "measured", "required", "result")]
        for check in self.targets():
            measured = "-" if check.measured is None else f"{check.measured:,.2f}{check.unit}"
            required = f"{'<=' if check.at_most else '>='} {check.required:,.2f}{check.unit}"
            checks.append((check.name, measured, required, check.verdict))
        lines.append("")
        lines.extend(_columns(checks))
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "elapsed_seconds": round(self.elapsed_seconds, 1),
            "machine": self.machine,
            "settings": self.settings,
            "measurements": {key: asdict(m) for key, m in self.measurements.items()},
            "peak_rss_kib": self.peak_rss_kib,
            "targets": [{**asdict(check), "passed": check.passed} for check in self.targets()],
            **self.extra,
        }

    def svg(self) -> str:
        """Horizontal bars of transfers per second, one per measurement; hand-written SVG, no plotting library."""
        items = list(self.measurements.values())
        width, label_width, bar_height, gap, top = 960, 380, 22, 8, 50
        checks = self.targets()
        bars_end = top + len(items) * (bar_height + gap)
        height = bars_end + 50 + 18 * len(checks)
        scale_max = max((m.transfers_per_second for m in items), default=1.0) or 1.0
        room = width - label_width - 110
        parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="10" y="24" font-size="16" font-weight="bold">Trust Ledger throughput, transfers/s '
            f"({html.escape(self.started_at)})</text>",
        ]
        colours = {"raw": "#7f8c8d", "inproc": "#2e86c1", "http": "#28b463"}
        for index, m in enumerate(items):
            y = top + index * (bar_height + gap)
            length = max(1.0, room * m.transfers_per_second / scale_max)
            colour = next((c for prefix, c in colours.items() if m.key.startswith(prefix)), "#af7ac5")
            if m.errors:
                colour = "#e74c3c"
            parts += [
                f'<text x="{label_width - 8}" y="{y + bar_height - 6}" text-anchor="end">{html.escape(m.label)}</text>',
                f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="{bar_height}" fill="{colour}"/>',
                f'<text x="{label_width + length + 6:.1f}" y="{y + bar_height - 6}">'
                f"{m.transfers_per_second:,.0f}{' (errors)' if m.errors else ''}</text>",
            ]
        parts.append(
            f'<text x="10" y="{bars_end + 14}" fill="#555">grey: raw SQL (pgbench), blue: in-process services, '
            "green: HTTP API, red: a run with errors</text>"
        )
        for number, check in enumerate(checks):
            measured = "-" if check.measured is None else f"{check.measured:,.2f}{check.unit}"
            required = f"{'<=' if check.at_most else '>='} {check.required:,.2f}{check.unit}"
            colour = "#1e8449" if check.passed else "#c0392b"
            parts.append(
                f'<text x="10" y="{bars_end + 40 + 18 * number}" fill="{colour}">{check.verdict}: '
                f"{html.escape(check.name)}: {html.escape(measured)} (target {html.escape(required)})</text>"
            )
        parts.append("</svg>")
        return "\n".join(parts) + "\n"

    def write(self, directory: Path) -> tuple[Path, Path]:
        import json

        directory.mkdir(parents=True, exist_ok=True)
        json_path = directory / "bench.json"
        svg_path = directory / "bench.svg"
        json_path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n", encoding="utf-8")
        svg_path.write_text(self.svg(), encoding="utf-8")
        return json_path, svg_path


def machine_facts(server_version: str, data_directory: Path) -> dict[str, Any]:
    cpu_model = "unknown"
    memory_kib = 0
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    commit = subprocess.run(
        ["git", "-C", str(REPOSITORY), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_kib / 1024 / 1024, 1),
        "postgresql": server_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": commit or "unknown",
    }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for number, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i in {0, len(row) - 1} else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if number == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines
