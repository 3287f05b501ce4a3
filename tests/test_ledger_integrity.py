"""Tamper evidence: posting chains, balance counters and signed checkpoints, checked by `ledger verify`.

Each tamper is done directly in SQL as the owner of the tables (who can switch the history guards off), on a
ledger of its own, and must be caught by `ledger verify` (a real subprocess), naming the account and the entry.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg2
import pytest

from ledger.container import Container
from ledger.domain.ledger_verification import FindingKind
from ledger.domain.model import DEFAULT_TENANT_ID, AccountKind, Ledger, NormalSide
from ledger.domain.posting_chain import genesis_hash, next_chain_hash, posting_link_bytes
from ledger.domain.transfers import PostingDraft, Side, Transfer, TransferDraft
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind
from ledger.infrastructure.database_credentials import DatabaseCredentials
from ledger.infrastructure.embedded_postgres import write_private_file

TENANT = DEFAULT_TENANT_ID
ACTOR = "test:integrity"
EXIT_MISMATCH = 3


@dataclass
class Activity:
    ledger: Ledger
    bank: uuid.UUID
    firm: uuid.UUID
    alice: uuid.UUID
    bob: uuid.UUID
    deposit_alice: Transfer
    disbursement: Transfer
    client_transfer: Transfer
    metadata_transfer: Transfer


def record_activity(container: Container) -> Activity:
    """A small month of trust activity, with a reversal and metadata numbers that jsonb normalizes."""
    ledgers, accounts = container.ledger_service(), container.account_service()
    trust, transfers = container.trust_service(), container.transfer_service()
    ledger = ledgers.open_ledger(TENANT, name=f"integrity {uuid.uuid4().hex[:6]}", currency="USD")
    bank = accounts.open_account(TENANT, ledger.id, code="bank", name="Trust bank", kind=AccountKind.BANK)
    firm = accounts.open_account(TENANT, ledger.id, code="firm", name="Firm funds", kind=AccountKind.FIRM_FUNDS)
    alice = accounts.open_account(TENANT, ledger.id, code="c-alice", name="Alice", kind=AccountKind.CLIENT)
    bob = accounts.open_account(TENANT, ledger.id, code="c-bob", name="Bob", kind=AccountKind.CLIENT)

    def operate(kind: TrustOperationKind, amount: int, **accounts_: uuid.UUID) -> Transfer:
        return trust.execute(
            TENANT, ACTOR, TrustOperation(kind=kind, ledger_id=ledger.id, amount=amount, description=kind, **accounts_)
        )

    operate(TrustOperationKind.FIRM_DEPOSIT, 10_00)
    deposit_alice = operate(TrustOperationKind.DEPOSIT, 10_000_00, client_account_id=alice.id)
    operate(TrustOperationKind.DEPOSIT, 5_000_00, client_account_id=bob.id)
    disbursement = operate(TrustOperationKind.DISBURSEMENT, 1_000_00, client_account_id=alice.id)
    client_transfer = operate(
        TrustOperationKind.CLIENT_TRANSFER, 500_00, client_account_id=alice.id, to_client_account_id=bob.id
    )
    operate(TrustOperationKind.EARNED_FEE, 250_00, client_account_id=bob.id)
    operate(TrustOperationKind.BANK_CHARGE, 5_00)
    transfers.reverse_transfer(TENANT, ACTOR, disbursement.id)
    metadata_transfer = transfers.post_transfer(
        TENANT,
        ACTOR,
        TransferDraft(
            ledger_id=ledger.id,
            postings=(
                PostingDraft(account_id=bob.id, side=Side.DEBIT, amount=1_00),
                PostingDraft(account_id=alice.id, side=Side.CREDIT, amount=1_00),
            ),
            description="numbers jsonb rewrites ",
            metadata={"ratio": 100.0, "big": 1e20, "zero": -0.0, "tenth": 0.1, "nested": {"n": [1, 2.50, True]}},
        ),
    )
    return Activity(
        ledger, bank.id, firm.id, alice.id, bob.id, deposit_alice, disbursement, client_transfer, metadata_transfer
    )


def test_untouched_history_verifies_on_both_adapters(any_container: Container) -> None:
    activity = record_activity(any_container)
    report = any_container.ledger_verification_service().verify(TENANT, activity.ledger.id)
    assert report.findings == ()
    assert report.ok
    assert report.accounts_checked == 4
    assert report.postings_checked == 2 * 9


def test_in_memory_counter_edit_is_caught_like_on_postgres(memory_container: Container) -> None:
    activity = record_activity(memory_container)
    store = memory_container.in_memory_store()
    with store.lock:
        store.accounts[activity.alice] = replace(store.accounts[activity.alice], posted_credits=1)
    report = memory_container.ledger_verification_service().verify(TENANT, activity.ledger.id)
    assert [(finding.kind, finding.account_id) for finding in report.findings] == [
        (FindingKind.COUNTER_MISMATCH, activity.alice)
    ]


def test_progress_is_reported_up_to_the_total(pg_container: Container) -> None:
    activity = record_activity(pg_container)
    seen: list[tuple[int, int]] = []
    pg_container.ledger_verification_service().verify(
        TENANT, activity.ledger.id, on_progress=lambda done, total: seen.append((done, total))
    )
    assert seen[-1] == (18, 18)


# --- tampering as the owner, caught by `ledger verify` ------------------------------------------------------------


@pytest.fixture
def owner_credentials(owner_database: DatabaseCredentials) -> DatabaseCredentials:
    """Who owns the history tables (and may switch their guards off); the service role cannot touch history."""
    return owner_database


@contextmanager
def as_owner(owner: DatabaseCredentials) -> Iterator[Any]:
    """One transaction as the table owner with the user triggers (the history guards) off, as an attacker with
    the owner's password would do it."""
    connection = psycopg2.connect(**owner.connect_parameters())
    try:
        with connection.cursor() as cursor:
            for table in ("postings", "transfers", "accounts"):
                cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            yield cursor
            for table in ("postings", "transfers", "accounts"):
                cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        connection.commit()
    finally:
        connection.close()


@dataclass
class VerifyCommand:
    environment: dict[str, str]
    checkpoint_dir: Path

    def run(self, *arguments: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ledger", *arguments],
            env=self.environment,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def verify(self, ledger_id: uuid.UUID, *options: str) -> tuple[int, dict[str, Any]]:
        completed = self.run("verify", "--ledger", str(ledger_id), "--json", *options)
        assert completed.returncode in (0, EXIT_MISMATCH), completed.stderr
        reports = json.loads(completed.stdout)
        assert len(reports) == 1
        report: dict[str, Any] = reports[0]
        return completed.returncode, report


@pytest.fixture
def ledger_command(service_database: DatabaseCredentials, tmp_path: Path) -> VerifyCommand:
    secret_file = tmp_path / "secrets" / "service.json"
    write_private_file(secret_file, json.dumps(service_database.to_document()))
    key_file = tmp_path / "secrets" / "checkpoint.key"
    write_private_file(key_file, secrets.token_hex(32))
    environment = {name: value for name, value in os.environ.items() if not name.startswith("LEDGER_")}
    environment.update(
        LEDGER_ENVIRONMENT="test",
        LEDGER_SECRET_FILE=str(secret_file),
        LEDGER_CHECKPOINT_KEY_FILE=str(key_file),
        LEDGER_CHECKPOINT_DIR=str(tmp_path / "checkpoints"),
        LEDGER_LOG_FORMAT="json",
    )
    return VerifyCommand(environment, tmp_path / "checkpoints")


def posting_id(cursor: Any, transfer_id: uuid.UUID, account_id: uuid.UUID) -> int:
    cursor.execute(
        "SELECT id FROM postings WHERE transfer_id = %s AND account_id = %s", (str(transfer_id), str(account_id))
    )
    found: int = cursor.fetchone()[0]
    return found


def findings_of(report: dict[str, Any]) -> list[tuple[str, str | None, str | None]]:
    return [(item["kind"], item["account_id"], item["transfer_id"]) for item in report["findings"]]


def assert_names(report: dict[str, Any], kind: FindingKind, account_id: uuid.UUID, transfer_id: uuid.UUID) -> None:
    """Some finding of ``kind`` names the account, and some finding names the entry."""
    findings = findings_of(report)
    assert any(item[0] == kind.value and item[1] == str(account_id) for item in findings), findings
    assert any(item[2] == str(transfer_id) for item in findings), findings
    assert report["ok"] is False


def test_clean_ledger_verifies_and_exits_zero(pg_container: Container, ledger_command: VerifyCommand) -> None:
    activity = record_activity(pg_container)
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == 0
    assert report["ok"] is True
    assert report["postings_checked"] == 18


def test_changed_amount_is_caught(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    with as_owner(owner_credentials) as cursor:
        target = posting_id(cursor, activity.client_transfer.id, activity.bob)
        cursor.execute("UPDATE postings SET amount = amount + 100 WHERE id = %s", (target,))
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert_names(report, FindingKind.CHAIN_HASH_MISMATCH, activity.bob, activity.client_transfer.id)


def test_deleted_posting_is_caught(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    with as_owner(owner_credentials) as cursor:
        cursor.execute(
            "DELETE FROM postings WHERE id = %s", (posting_id(cursor, activity.deposit_alice.id, activity.alice),)
        )
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert_names(report, FindingKind.POSTING_MISSING, activity.alice, activity.deposit_alice.id)
    assert (FindingKind.UNBALANCED_ENTRY.value, None, str(activity.deposit_alice.id)) in findings_of(report)


def test_inserted_posting_is_caught(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    with as_owner(owner_credentials) as cursor:
        # An extra credit to Alice inside an existing entry, with the next version and a plausible hash.
        cursor.execute(
            "SELECT version, posted_credits - posted_debits FROM accounts WHERE id = %s", (str(activity.alice),)
        )
        version, balance = cursor.fetchone()
        cursor.execute(
            "INSERT INTO postings (tenant_id, ledger_id, transfer_id, account_id, side, amount, account_version,"
            " balance_after, effective_date, recorded_at, chain_hash)"
            " SELECT tenant_id, ledger_id, id, %s, 'credit', 700, %s, %s, effective_date, recorded_at, %s"
            " FROM transfers WHERE id = %s",
            (
                str(activity.alice),
                version + 1,
                balance + 700,
                secrets.token_bytes(32),
                str(activity.client_transfer.id),
            ),
        )
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert_names(report, FindingKind.CHAIN_HASH_MISMATCH, activity.alice, activity.client_transfer.id)
    assert (FindingKind.UNBALANCED_ENTRY.value, None, str(activity.client_transfer.id)) in findings_of(report)


def test_edited_balance_counter_is_caught(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    with as_owner(owner_credentials) as cursor:
        cursor.execute(
            "UPDATE accounts SET posted_credits = posted_credits + 100000 WHERE id = %s", (str(activity.bob),)
        )
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    findings = findings_of(report)
    assert [item[:2] for item in findings] == [(FindingKind.COUNTER_MISMATCH.value, str(activity.bob))]
    assert findings[0][2] == str(activity.metadata_transfer.id)  # the account's newest entry


def test_edited_entry_header_is_caught_on_every_leg(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    with as_owner(owner_credentials) as cursor:
        cursor.execute("UPDATE transfers SET description = 'harmless' WHERE id = %s", (str(activity.disbursement.id),))
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert sorted(findings_of(report)) == sorted(
        (FindingKind.CHAIN_HASH_MISMATCH.value, str(account), str(activity.disbursement.id))
        for account in (activity.alice, activity.bank)
    )


def recompute_chains(cursor: Any, account_ids: list[uuid.UUID]) -> None:
    """What an owner who knows the (public) chain format does to hide a rewrite: every balance-after, every hash
    and every counter recomputed from the altered postings."""
    for account_id in account_ids:
        cursor.execute("SELECT normal_side FROM accounts WHERE id = %s", (str(account_id),))
        normal_side = NormalSide(cursor.fetchone()[0])
        cursor.execute(
            "SELECT p.id, p.tenant_id, p.ledger_id, p.account_version, p.side, p.amount, t.id, t.kind,"
            " t.description, t.metadata, t.effective_date, t.recorded_at, t.actor, t.reverses_transfer_id"
            " FROM postings p JOIN transfers t ON t.id = p.transfer_id WHERE p.account_id = %s"
            " ORDER BY p.account_version",
            (str(account_id),),
        )
        head, debits, credits = genesis_hash(account_id), 0, 0
        for row in cursor.fetchall():
            debits += row[5] if row[4] == "debit" else 0
            credits += row[5] if row[4] == "credit" else 0
            balance = debits - credits if normal_side is NormalSide.DEBIT else credits - debits
            head = next_chain_hash(
                head,
                posting_link_bytes(
                    tenant_id=uuid.UUID(row[1]),
                    ledger_id=uuid.UUID(row[2]),
                    account_id=account_id,
                    account_version=row[3],
                    side=row[4],
                    amount=row[5],
                    balance_after=balance,
                    transfer_id=uuid.UUID(row[6]),
                    transfer_kind=row[7],
                    description=row[8],
                    metadata=row[9],
                    effective_date=row[10],
                    recorded_at=row[11],
                    actor=row[12],
                    reverses_transfer_id=None if row[13] is None else uuid.UUID(row[13]),
                ),
            )
            cursor.execute(
                "UPDATE postings SET balance_after = %s, chain_hash = %s WHERE id = %s", (balance, head, row[0])
            )
        cursor.execute(
            "UPDATE accounts SET posted_debits = %s, posted_credits = %s, chain_head = %s WHERE id = %s",
            (debits, credits, head, str(account_id)),
        )


def test_rewritten_chain_with_recomputed_hashes_is_caught_by_the_signed_checkpoint(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    written = ledger_command.run("checkpoint", "--ledger", str(activity.ledger.id))
    assert written.returncode == 0, written.stderr
    with as_owner(owner_credentials) as cursor:
        # Shrink Alice's deposit on both legs (the entry still balances), then recompute everything.
        cursor.execute(
            "UPDATE postings SET amount = amount - 1000 WHERE transfer_id = %s", (str(activity.deposit_alice.id),)
        )
        recompute_chains(cursor, [activity.bank, activity.alice])

    # Unkeyed chains alone cannot see it: the owner recomputed them.
    code, report = ledger_command.verify(activity.ledger.id, "--no-checkpoint")
    assert (code, report["findings"]) == (0, [])

    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert report["checkpoint"]["heads"] == 4
    mismatched = sorted(item[1] for item in findings_of(report) if item[0] == FindingKind.CHECKPOINT_MISMATCH.value)
    assert mismatched == sorted([str(activity.bank), str(activity.alice)])
    assert all(item[2] is not None for item in findings_of(report))


def test_a_forged_checkpoint_is_refused(
    pg_container: Container, owner_credentials: DatabaseCredentials, ledger_command: VerifyCommand
) -> None:
    activity = record_activity(pg_container)
    assert ledger_command.run("checkpoint", "--ledger", str(activity.ledger.id)).returncode == 0
    [path] = (ledger_command.checkpoint_dir / str(activity.ledger.id)).glob("*.json")
    document = json.loads(path.read_text())
    document["heads"][0]["version"] += 1
    path.write_text(json.dumps(document))
    code, report = ledger_command.verify(activity.ledger.id)
    assert code == EXIT_MISMATCH
    assert "checkpoint_signature_invalid" in report["checkpoint_problem"] or "signature" in report["checkpoint_problem"]


def test_verification_over_the_api(pg_container: Container) -> None:
    from ledger.api.app import create_app
    from tests.http_clients import AuthorizedTestClient

    activity = record_activity(pg_container)
    with AuthorizedTestClient(create_app(pg_container)) as client:
        response = client.get(f"/v1/ledgers/{activity.ledger.id}/verification")
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["ok"], body["postings_checked"], body["findings"]) == (True, 18, [])
        missing = client.get(f"/v1/ledgers/{uuid.uuid4()}/verification")
        assert missing.status_code == 404
        assert missing.json()["code"] == "ledger_not_found"
