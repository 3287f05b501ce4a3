"""Long history: an account with 1,000 postings next to one with a million, and what that costs to read and check.

    python3 scripts/long_history.py [--postings 1000000] [--reads 2000] [--keep]

Sets up everything itself, on this machine only: an embedded PostgreSQL in a temporary directory (or in the
``work_dir`` given to ``run``), ``ledger migrate``, an admin key, a general ledger with a cash account, a SHORT
account and a LONG one. Then:

1. seeds through the product: ``TransferBatchService`` in this process (the container on the service role's secret
   file), atomic batches of 1,000 transfers, each debiting cash and crediting SHORT (1,000 transfers) or LONG
   (``postings`` transfers), so every posting is chained and counted as any API write would be;
2. serves the ledger (``ledger serve``) and reads both balances over HTTP (GET /v1/accounts/{id}), interleaved,
   after a warm-up: p50, p99 and mean per account and the LONG/SHORT ratios (target: 1M read <= 1.2x the 1k read);
3. runs ``ledger verify --ledger X`` and ``ledger export statement --account LONG`` as subprocesses, measuring their
   wall time and peak RSS (the child's own ``ru_maxrss`` from ``wait4``), checking they succeed, show progress on
   standard error and (for the export) write every line with the right running balance (target: peak RSS <= 200 MB).

``run`` returns every figure in a dict; run as a script it prints a table and exits 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

import httpx  # noqa: E402

from ledger.container import Container, build_container  # noqa: E402
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, LedgerKind  # noqa: E402
from ledger.domain.transfer_batches import MAX_BATCH_TRANSFERS, BatchMode  # noqa: E402
from ledger.domain.transfers import PostingDraft, Side, TransferDraft  # noqa: E402
from ledger.infrastructure.settings import LedgerSettings  # noqa: E402
from tests.fault_scenario import FaultPlan, RestartablePostgres, ServedLedger  # noqa: E402

Progress = Callable[[str], None]

TENANT = DEFAULT_TENANT_ID
ACTOR = "benchmark:long-history"
SHORT_POSTINGS = 1_000
PROGRESS_EVERY_SECONDS = 5.0
WARM_UP_READS = 200
READ_RATIO_TARGET = 1.2
PEAK_RSS_TARGET_MB = 200.0
COMMAND_TIMEOUT_SECONDS = 3_600.0
RSS_POLL_SECONDS = 0.02
# The fault run's serving settings (tight statement timeout, small pool) are for faults; the commands here run with
# the product's defaults, as an operator would run them.
FAULT_RUN_OVERRIDES = (
    "LEDGER_POOL_SIZE",
    "LEDGER_MAX_OVERFLOW",
    "LEDGER_POOL_TIMEOUT_SECONDS",
    "LEDGER_LOCK_TIMEOUT_MS",
    "LEDGER_STATEMENT_TIMEOUT_MS",
)


@dataclass(frozen=True)
class Books:
    ledger_id: uuid.UUID
    cash: uuid.UUID
    short: uuid.UUID
    long: uuid.UUID


def amount_of(number: int) -> int:
    """The amount of the account's ``number``-th deposit (from 0), in minor units: varied, never zero."""
    return 1 + number % 997


def expected_balance(postings: int) -> int:
    return sum(amount_of(number) for number in range(postings))


def open_books(container: Container) -> Books:
    ledger = container.ledger_service().open_ledger(
        TENANT, name=f"long history {uuid.uuid4().hex[:6]}", currency="USD", kind=LedgerKind.GENERAL
    )
    accounts = container.account_service()
    cash = accounts.open_account(
        TENANT, ledger.id, code="cash", name="Cash", kind=AccountKind.ASSET, prevent_overdraft=False
    )
    short = accounts.open_account(TENANT, ledger.id, code="short", name="Short history", kind=AccountKind.LIABILITY)
    long = accounts.open_account(TENANT, ledger.id, code="long", name="Long history", kind=AccountKind.LIABILITY)
    return Books(ledger.id, cash.id, short.id, long.id)


def deposits(books: Books, account_id: uuid.UUID, first: int, count: int) -> list[TransferDraft]:
    return [
        TransferDraft(
            ledger_id=books.ledger_id,
            postings=(
                PostingDraft(account_id=books.cash, side=Side.DEBIT, amount=amount_of(number)),
                PostingDraft(account_id=account_id, side=Side.CREDIT, amount=amount_of(number)),
            ),
            description=f"deposit {number + 1}",
        )
        for number in range(first, first + count)
    ]


def seed(container: Container, books: Books, postings: int, progress: Progress) -> dict[str, Any]:
    """Posts ``SHORT_POSTINGS`` deposits to SHORT and ``postings`` to LONG in atomic batches of 1,000, one after
    another: every batch locks cash and LONG, so more threads would only queue on those row locks (and, on a busy
    machine, run into the lock timeout)."""
    service = container.transfer_batch_service()
    plan = [
        (books.short, first, min(MAX_BATCH_TRANSFERS, SHORT_POSTINGS - first))
        for first in range(0, SHORT_POSTINGS, MAX_BATCH_TRANSFERS)
    ]
    plan += [
        (books.long, first, min(MAX_BATCH_TRANSFERS, postings - first))
        for first in range(0, postings, MAX_BATCH_TRANSFERS)
    ]
    total = SHORT_POSTINGS + postings
    done = 0
    started = last_report = time.monotonic()
    for account_id, first, count in plan:
        result = service.post_batch(
            TENANT, ACTOR, books.ledger_id, deposits(books, account_id, first, count), BatchMode.ATOMIC
        )
        if result.posted != count:
            raise RuntimeError(f"a seeding batch posted {result.posted} of {count}")
        done += count
        now = time.monotonic()
        if now - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = now
            rate = done / (now - started)
            progress(
                f"seeding: {done:,} of {total:,} transfers, {rate:,.0f}/s, about {(total - done) / rate:,.0f} s left"
            )
    seconds = time.monotonic() - started
    progress(f"seeding: {total:,} transfers in {seconds:,.1f} s ({total / seconds:,.0f}/s)")
    return {
        "seed_transfers": total,
        "seed_seconds": round(seconds, 2),
        "seed_transfers_per_second": round(total / seconds),
    }


def percentile(samples: list[float], share: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def read_latencies(base_url: str, token: str, books: Books, reads: int, balances: dict[str, int]) -> dict[str, Any]:
    """GET /v1/accounts/{id} for SHORT and LONG, alternating (so drift hits both alike), over one keep-alive
    connection, after a warm-up; each answer's posted balance is checked."""
    accounts = {"short": books.short, "long": books.long}
    samples: dict[str, list[float]] = {name: [] for name in accounts}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=10.0) as client:
        for round_number in range(WARM_UP_READS + reads):
            for name in sorted(accounts) if round_number % 2 else sorted(accounts, reverse=True):
                started = time.perf_counter()
                response = client.get(f"/v1/accounts/{accounts[name]}")
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"GET account {name}: {response.status_code} {response.text[:300]}")
                posted = response.json()["balances"]["posted"]
                if posted != balances[name]:
                    raise RuntimeError(f"account {name}: balance {posted}, expected {balances[name]}")
                if round_number >= WARM_UP_READS:
                    samples[name].append(elapsed * 1000.0)
    figures: dict[str, Any] = {"reads_per_account": reads}
    for name, values in samples.items():
        figures[name] = {
            "p50_ms": round(percentile(values, 0.50), 3),
            "p99_ms": round(percentile(values, 0.99), 3),
            "mean_ms": round(statistics.fmean(values), 3),
        }
    figures["ratio_p50"] = round(figures["long"]["p50_ms"] / figures["short"]["p50_ms"], 3)
    figures["ratio_mean"] = round(figures["long"]["mean_ms"] / figures["short"]["mean_ms"], 3)
    figures["ratio_p99"] = round(figures["long"]["p99_ms"] / figures["short"]["p99_ms"], 3)
    return figures


def peak_rss_mb(pid: int) -> float | None:
    """The process's resident high-water mark (VmHWM) since it started its program, in MB."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return None


def measured_command(arguments: list[str], environment: dict[str, str], log_dir: Path, name: str) -> dict[str, Any]:
    """Runs ``python -m ledger ARGUMENTS`` and returns its exit code, wall time, peak RSS and progress lines.

    The peak is the child's VmHWM, polled every few milliseconds until it exits (the server's memory is not counted,
    the command's is). Not ``ru_maxrss`` from ``wait4``: Linux carries the forking parent's high-water mark over
    into the child's, and this parent holds a container."""
    stdout_path, stderr_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    started = time.monotonic()
    peak = 0.0
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "ledger", *arguments],
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
        try:
            while process.poll() is None:
                if time.monotonic() - started > COMMAND_TIMEOUT_SECONDS:
                    process.kill()
                sample = peak_rss_mb(process.pid)
                if sample is not None:
                    peak = max(peak, sample)
                time.sleep(RSS_POLL_SECONDS)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    seconds = time.monotonic() - started
    errors = stderr_path.read_text(encoding="utf-8", errors="replace")
    progress_lines = [
        line for line in errors.splitlines() if " of " in line and ("postings" in line or "lines" in line)
    ]
    output = stdout_path.read_text(encoding="utf-8", errors="replace")
    return {
        "exit_code": process.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak, 1),
        "progress_lines": len(progress_lines),
        "last_progress": progress_lines[-1] if progress_lines else None,
        "report": [line for line in output.splitlines() if line.startswith("ledger ")],
    }


def check_export(path: Path, postings: int) -> dict[str, Any]:
    """Streams the exported CSV back: a header, one row per posting, versions 1..N in order, the last running
    balance the sum of the deposits."""
    import csv

    from ledger.report_formats import format_money
    from ledger.statement_export_commands import STATEMENT_COLUMNS

    rows = 0
    in_order = True
    last: list[str] = []
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream)
        header = next(reader)
        version_at = STATEMENT_COLUMNS.index("account_version")
        for row in reader:
            rows += 1
            in_order = in_order and int(row[version_at]) == rows
            last = row
    balance_ok = bool(last) and last[STATEMENT_COLUMNS.index("running_balance")] == format_money(
        expected_balance(postings), 2
    )
    return {
        "rows": rows,
        "header_ok": header == list(STATEMENT_COLUMNS),
        "versions_in_order": in_order,
        "final_balance_ok": balance_ok,
        "bytes": path.stat().st_size,
    }


def command_environment(served: ServedLedger, work_dir: Path) -> dict[str, str]:
    environment = {name: value for name, value in served.environment().items() if name not in FAULT_RUN_OVERRIDES}
    environment.update(LEDGER_LOG_LEVEL="INFO", LEDGER_CHECKPOINT_DIR=str(work_dir / "checkpoints"))
    return environment


def run(
    work_dir: Path,
    postings: int = 1_000_000,
    progress: Progress = print,
    *,
    reads: int = 2_000,
    keep_files: bool = False,
) -> dict[str, Any]:
    """Sets up, seeds, measures and checks, in ``work_dir`` (created if need be); returns every figure. The
    database and the export are removed at the end unless ``keep_files``."""
    if postings < MAX_BATCH_TRANSFERS:
        raise ValueError(f"postings must be at least {MAX_BATCH_TRANSFERS}")
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    # As root the wheel runs PostgreSQL as its own system user, which must traverse the directory's parents.
    work_dir.chmod(0o755)
    figures: dict[str, Any] = {"postings_short": SHORT_POSTINGS, "postings_long": postings}
    postgres = RestartablePostgres(work_dir)
    served: ServedLedger | None = None
    export_path = work_dir / "long-statement.csv"
    try:
        info = postgres.start()
        progress(f"PostgreSQL {info.server_version} started in {work_dir}")
        served = ServedLedger(info.secret_file, work_dir, FaultPlan(), info.owner_secret_file)
        served.run_command("migrate")
        token = served.create_admin_key()
        settings = LedgerSettings(_env_file=None, environment="test", secret_file=info.secret_file)  # type: ignore[call-arg]
        container = build_container(settings)
        try:
            books = open_books(container)
            progress(f"ledger {books.ledger_id}: SHORT {books.short}, LONG {books.long}")
            figures.update(seed(container, books, postings, progress))
        finally:
            container.shutdown_resources()
        figures["ledger_id"] = str(books.ledger_id)
        figures["long_account_id"] = str(books.long)

        served.start()
        served.wait_ready()
        progress(f"ledger serve ready on {served.base_url}: {reads:,} reads of each balance")
        balances = {"short": expected_balance(SHORT_POSTINGS), "long": expected_balance(postings)}
        figures["balance_read"] = read_latencies(served.base_url, token, books, reads, balances)
        served.stop()

        environment = command_environment(served, work_dir)
        progress(f"ledger verify --ledger {books.ledger_id}")
        verify = measured_command(["verify", "--ledger", str(books.ledger_id)], environment, work_dir, "verify")
        summary = verify.pop("report")
        verify["summary"] = summary[0] if summary else ""
        checked = re.search(r"([0-9]+) postings", verify["summary"])
        verify["postings_checked"] = int(checked.group(1)) if checked else None
        verify["ok"] = (
            verify["exit_code"] == 0
            and verify["summary"].endswith(": OK")
            and verify["postings_checked"] == 2 * (SHORT_POSTINGS + postings)
        )
        figures["verify"] = verify
        progress(f"verify: {verify}")

        progress(f"ledger export statement --account {books.long}")
        export = measured_command(
            ["export", "statement", "--account", str(books.long), "--output", str(export_path)],
            environment,
            work_dir,
            "export",
        )
        export.pop("report")
        if export["exit_code"] == 0:
            export.update(check_export(export_path, postings))
        export["ok"] = (
            export["exit_code"] == 0
            and export.get("rows") == postings
            and bool(export.get("versions_in_order"))
            and bool(export.get("final_balance_ok"))
        )
        figures["export"] = export
        progress(f"export: {export}")
        small_export = measured_command(
            ["export", "statement", "--account", str(books.short), "--output", str(work_dir / "short-statement.csv")],
            environment,
            work_dir,
            "export-short",
        )
        figures["export_short_peak_rss_mb"] = small_export["peak_rss_mb"]
        figures["targets"] = targets(figures)
        return figures
    finally:
        if served is not None:
            served.stop()
        postgres.shutdown()
        if not keep_files:
            shutil.rmtree(work_dir / "ledger-data", ignore_errors=True)
            export_path.unlink(missing_ok=True)


def targets(figures: dict[str, Any]) -> dict[str, bool]:
    read, verify, export = figures["balance_read"], figures["verify"], figures["export"]
    return {
        "balance read p50 1M <= 1.2x 1k": read["ratio_p50"] <= READ_RATIO_TARGET,
        "balance read mean 1M <= 1.2x 1k": read["ratio_mean"] <= READ_RATIO_TARGET,
        "verify succeeded with progress": bool(verify["ok"]) and verify["progress_lines"] > 0,
        "verify peak RSS <= 200 MB": verify["peak_rss_mb"] <= PEAK_RSS_TARGET_MB,
        "export complete with progress": bool(export["ok"]) and export["progress_lines"] > 0,
        "export peak RSS <= 200 MB": export["peak_rss_mb"] <= PEAK_RSS_TARGET_MB,
    }


def table(figures: dict[str, Any]) -> str:
    read, verify, export = figures["balance_read"], figures["verify"], figures["export"]
    rows: list[tuple[str, str]] = [
        ("postings: SHORT / LONG", f"{figures['postings_short']:,} / {figures['postings_long']:,}"),
        (
            "seeding (batches of 1,000)",
            f"{figures['seed_transfers']:,} transfers in {figures['seed_seconds']:,.1f} s "
            f"({figures['seed_transfers_per_second']:,}/s)",
        ),
        ("balance reads per account", f"{read['reads_per_account']:,} (HTTP GET /v1/accounts/{{id}})"),
    ]
    for name in ("short", "long"):
        numbers = read[name]
        rows.append(
            (
                f"  {name.upper()} p50 / p99 / mean",
                f"{numbers['p50_ms']:.3f} / {numbers['p99_ms']:.3f} / {numbers['mean_ms']:.3f} ms",
            )
        )
    rows += [
        (
            "  LONG/SHORT p50 / p99 / mean",
            f"{read['ratio_p50']:.2f} / {read['ratio_p99']:.2f} / {read['ratio_mean']:.2f}",
        ),
        (
            "ledger verify",
            f"exit {verify['exit_code']}, {verify['seconds']:,.1f} s, peak RSS {verify['peak_rss_mb']:.1f} MB, "
            f"{verify['progress_lines']} progress lines",
        ),
        ("  report", verify["summary"]),
        (
            "ledger export statement (LONG, CSV)",
            f"exit {export['exit_code']}, {export['seconds']:,.1f} s, peak RSS {export['peak_rss_mb']:.1f} MB, "
            f"{export['progress_lines']} progress lines",
        ),
        (
            "  rows / in order / final balance",
            f"{export.get('rows', 0):,} / {export.get('versions_in_order')} / {export.get('final_balance_ok')}"
            f" ({export.get('bytes', 0) / 1e6:,.1f} MB)",
        ),
        ("export of SHORT: peak RSS", f"{figures['export_short_peak_rss_mb']:.1f} MB (baseline)"),
    ]
    rows += [(f"target: {name}", "met" if met else "MISSED") for name, met in figures["targets"].items()]
    width = max(len(label) for label, _ in rows)
    lines = [f"{label.ljust(width)}  {value}" for label, value in rows]
    rule = "-" * max(len(line) for line in lines)
    return "\n".join([rule, *lines, rule])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postings", type=int, default=1_000_000, help="postings of the LONG account")
    parser.add_argument("--reads", type=int, default=2_000, help="timed balance reads of each account")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (database, export, logs)")
    arguments = parser.parse_args()
    if arguments.postings < MAX_BATCH_TRANSFERS or arguments.reads < 1:
        parser.error(f"need --postings >= {MAX_BATCH_TRANSFERS} and --reads >= 1")
    work_dir = Path(tempfile.mkdtemp(prefix="ledger-long-history-"))
    try:
        figures = run(
            work_dir,
            arguments.postings,
            lambda line: print(line, flush=True),
            reads=arguments.reads,
            keep_files=arguments.keep,
        )
    except KeyboardInterrupt:
        print("interrupted: stopped the service and PostgreSQL", file=sys.stderr)
        return 130
    finally:
        if not arguments.keep:
            shutil.rmtree(work_dir, ignore_errors=True)
    print(table(figures))
    if arguments.keep:
        print(f"kept {work_dir}")
    missed = [name for name, met in figures["targets"].items() if not met]
    print("LONG HISTORY: " + ("targets missed: " + ", ".join(missed) if missed else "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
