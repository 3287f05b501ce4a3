"""``ledger.testing`` as a downstream suite uses it: fixtures and a container factory on the in-memory adapters."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind
from ledger.testing import in_memory_container


def test_in_memory_container_runs_use_cases_without_a_database() -> None:
    container = in_memory_container()
    ledger = container.ledger_service().open_ledger(DEFAULT_TENANT_ID, name="Trust", currency="USD")
    account = container.account_service().open_account(
        DEFAULT_TENANT_ID, ledger.id, code="c1", name="Client", kind=AccountKind.CLIENT
    )
    assert container.account_service().get_account(DEFAULT_TENANT_ID, account.id) == account
    assert container.store_health().is_ready()


def test_fixtures_work_in_a_separate_downstream_suite(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["ledger.testing"]\n')
    (tmp_path / "test_downstream.py").write_text(
        textwrap.dedent(
            """
            def test_open_ledger_over_http(ledger_client):
                response = ledger_client.post(
                    "/v1/ledgers", json={"name": "Escrow", "currency": "EUR"}, headers={"Idempotency-Key": "k-1"}
                )
                assert response.status_code == 201
                assert ledger_client.get("/readyz").status_code == 200
                assert ledger_client.get(f"/v1/ledgers/{response.json()['id']}").json()["currency"] == "EUR"


            def test_container_fixture(ledger_container):
                assert ledger_container.store_health().startup_check().server_version == "in-memory"
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            # Its own base directory: a nested run must not touch (and re-tighten) the outer run's temporary tree.
            f"--basetemp={tmp_path / 'basetemp'}",
            str(tmp_path),
        ],
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed" in result.stdout
