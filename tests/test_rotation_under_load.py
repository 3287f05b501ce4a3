"""Rotation under load, the short version of ``scripts/rotation_under_load.py``: four workers post transfers over
HTTP for 20 s while the password is rotated every 2 s, single user for the first 10 s and alternating users for the
last 10 s, with connections recycled every second so that new logins happen all the time. Not one request may fail.
"""

from __future__ import annotations

import time

import pytest

from tests.postgres_admin import PostgresAdmin
from tests.rotation_load_driver import LoadPlan, Strategy, alternate_username, run_rotation_under_load

pytestmark = pytest.mark.slow

PLAN = LoadPlan(seconds=20.0, interval_seconds=2.0, workers=4)
# The run itself takes 20 s; the rest is set-up and a shared, busy machine.
WALL_CLOCK_BOUND_SECONDS = 90.0


def test_no_request_fails_while_the_password_rotates_under_load(
    postgres_admin: PostgresAdmin, moto_endpoint: str
) -> None:
    if not postgres_admin.refuses_wrong_passwords():
        pytest.skip("this PostgreSQL trusts every login, so a rotated password changes nothing")
    started = time.monotonic()

    report = run_rotation_under_load(postgres_admin, moto_endpoint, PLAN)

    print(report.table())  # the figures, for whoever reads the test log
    assert report.failures == 0, report.failure_samples
    assert report.rotation_errors == []
    assert report.rule_refusals == 0
    assert report.balance_mismatches == []
    assert report.requests >= 50 * PLAN.workers, "the workers hardly posted anything"

    # Every planned rotation happened: five of each strategy, each with a new password.
    assert report.rotations_done(Strategy.SINGLE_USER) == 5
    assert report.rotations_done(Strategy.ALTERNATING_USERS) == 5
    assert [record.strategy for record in report.rotations] == [strategy for _, strategy in PLAN.schedule()]
    for record in report.rotations:
        assert record.installed.password != record.replaced.password
        if record.strategy is Strategy.SINGLE_USER:
            assert record.installed.username == record.replaced.username
        else:
            assert record.installed.username == alternate_username(record.replaced.username)
    # The server refuses every password a single-user rotation replaced; the secret's final one logs in.
    assert report.old_single_user_passwords_refused == 5
    assert report.final_login_works

    # New logins all the time, well beyond what the pool holds, and refused ones re-read the secret.
    assert report.connections_opened >= 10 * report.pool_capacity
    assert report.credential_refreshes >= 1
    # Each single-user rotation had to be read from the store before any new login could succeed.
    assert report.get_secret_value_calls >= report.rotations_done(Strategy.SINGLE_USER)
    assert report.passed
    assert time.monotonic() - started < WALL_CLOCK_BOUND_SECONDS
