"""Fault run: clients post transfers while PostgreSQL is restarted and the service's connections are killed.

    python3 scripts/fault_run.py [--seconds 60] [--workers 8] [--restarts 3]

Sets up everything itself, on this machine only: an embedded PostgreSQL in a temporary directory, `ledger serve`
on a free loopback port, an admin key, a trust ledger with a bank and funded clients. Then WORKERS threads post
client transfers, disbursements and deposits, each with its own Idempotency-Key, retrying the same key on a 503 or a
connection error until acknowledged, while PostgreSQL is stopped and started RESTARTS times and the service's
backends are terminated between restarts. At the end the database and the API are checked: no acknowledged
transfer missing, none duplicated, every transfer balanced, no client below zero, serving again within 10 s of each
restart. Prints progress and a table of figures; exits 1 when an acceptance figure fails. Ctrl-C stops and cleans up.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# The scenario lives with the tests (the short run is part of the suite); make this checkout importable.
REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:
    sys.path.insert(0, str(REPOSITORY))

from tests.fault_scenario import FaultPlan, FaultRun  # noqa: E402


def main() -> int:
    defaults = FaultPlan()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=defaults.seconds, help="how long the load runs")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="client threads posting writes")
    parser.add_argument("--restarts", type=int, default=defaults.restarts, help="PostgreSQL restarts during the load")
    parser.add_argument(
        "--kills-per-gap",
        type=int,
        default=defaults.kills_per_gap,
        help="terminations of the service's backends between two restarts",
    )
    parser.add_argument(
        "--downtime", type=float, default=defaults.downtime_seconds, help="seconds PostgreSQL stays down per restart"
    )
    parser.add_argument("--clients", type=int, default=defaults.clients, help="client accounts in the trust ledger")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the random writes")
    arguments = parser.parse_args()
    if arguments.workers < 1 or arguments.clients < 2 or arguments.seconds <= 0 or arguments.restarts < 0:
        parser.error("need --workers >= 1, --clients >= 2, --seconds > 0 and --restarts >= 0")
    plan = FaultPlan(
        seconds=arguments.seconds,
        workers=arguments.workers,
        restarts=arguments.restarts,
        kills_per_gap=arguments.kills_per_gap,
        downtime_seconds=arguments.downtime,
        clients=arguments.clients,
        seed=arguments.seed,
    )
    try:
        figures = FaultRun(plan, progress=lambda line: print(line, flush=True)).run()
    except KeyboardInterrupt:
        print("interrupted: stopped the service and PostgreSQL, removed the temporary directory", file=sys.stderr)
        return 130
    print(figures.table())
    for sample in figures.unexpected_samples:
        print(f"unexpected: {sample}")
    failures = figures.failures()
    for failure in failures:
        print(f"FAILED: {failure}")
    print("FAULT RUN FAILED" if failures else "FAULT RUN PASSED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
