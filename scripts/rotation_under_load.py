"""Rotate the database password under load and count the failed requests (there must be none).

    python3 scripts/rotation_under_load.py [--seconds 60] [--interval 10] [--workers 4]

Sets everything up itself: a moto server standing in for AWS Secrets Manager, an embedded PostgreSQL in a temporary
directory, a migrated database with a login role and its clone, a secret holding the role's credentials, and the
service (in this process, served by uvicorn) reading that secret, with connections recycled every second and a
short secret cache so that new logins happen all the time. Workers post transfers over HTTP while the password is
rotated every interval as AWS's rotation Lambdas do it: single user in the first half, alternating users in the
second. Prints progress and a final table; exits non-zero on any failed request or rotation.
Needs the dev extra (moto[server], httpx).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ledger.infrastructure.structured_logging import configure_logging
from tests.rotation_load_driver import LoadPlan, run_rotation_under_load, standalone_infrastructure


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="how long the load runs")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between rotations")
    parser.add_argument("--workers", type=int, default=4, help="threads posting transfers")
    parser.add_argument("--secret-ttl", type=float, default=2.0, help="the service's secret cache TTL, seconds")
    arguments = parser.parse_args()
    if arguments.interval <= 0 or arguments.seconds < arguments.interval or arguments.workers < 1:
        parser.error("need --seconds >= --interval > 0 and --workers >= 1")
    plan = LoadPlan(
        seconds=arguments.seconds,
        interval_seconds=arguments.interval,
        workers=arguments.workers,
        secret_cache_ttl_seconds=arguments.secret_ttl,
    )
    # The run configures the service itself: LEDGER_* variables of the shell must not reach its settings.
    for name in [name for name in os.environ if name.startswith("LEDGER_")]:
        del os.environ[name]
    configure_logging("WARNING", "console")
    schedule = ", ".join(f"{moment:g}s {strategy}" for moment, strategy in plan.schedule())
    print(f"rotations planned: {schedule}", flush=True)
    with standalone_infrastructure() as infrastructure:
        report = run_rotation_under_load(
            infrastructure.admin, infrastructure.endpoint_url, plan, on_progress=lambda line: print(line, flush=True)
        )
    print()
    print(report.table())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
