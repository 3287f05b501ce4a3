"""`ledger verify` and `ledger checkpoint`: operators' integrity commands (the CLI's wiring is in ledger.cli)."""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import structlog
import typer

from ledger.container import Container
from ledger.domain.errors import NotFound
from ledger.domain.ledger_checkpoints import Checkpoint, CheckpointRejected, open_checkpoint, sign_checkpoint
from ledger.domain.ledger_verification import LedgerVerificationService, VerificationReport, describe
from ledger.domain.model import Ledger
from ledger.infrastructure.checkpoint_store import CheckpointDirectory, CheckpointKeyUnavailable, load_checkpoint_key
from ledger.infrastructure.settings import LedgerSettings
from ledger.progress_printer import ProgressPrinter

EXIT_OK = 0
EXIT_NOT_FOUND = 2
EXIT_MISMATCH = 3
EXIT_NO_KEY = 4


def _ledgers(service: LedgerVerificationService, ledger_id: uuid.UUID | None) -> list[Ledger]:
    if ledger_id is None:
        return service.ledgers()
    return [service.find_ledger(ledger_id)]


def verify_ledgers(
    container: Container, settings: LedgerSettings, *, ledger_id: uuid.UUID | None, use_checkpoint: bool, as_json: bool
) -> int:
    log = structlog.get_logger("ledger.cli")
    service: LedgerVerificationService = container.ledger_verification_service()
    try:
        ledgers = _ledgers(service, ledger_id)
    except NotFound:
        log.error("ledger_not_found", ledger_id=str(ledger_id))
        return EXIT_NOT_FOUND
    directory = CheckpointDirectory(settings.checkpoint_directory)
    reports: list[dict[str, Any]] = []
    failed = 0
    for ledger in ledgers:
        checkpoint: Checkpoint | None = None
        checkpoint_problem: str | None = None
        found = directory.latest(ledger.id) if use_checkpoint else None
        if found is not None:
            path, document = found
            try:
                key = load_checkpoint_key(settings, create_embedded=False)
                if key is None:
                    raise CheckpointKeyUnavailable(
                        "a checkpoint exists but no key is configured (LEDGER_CHECKPOINT_KEY_FILE or "
                        "LEDGER_CHECKPOINT_KEY_SECRET_ID)"
                    )
                checkpoint = open_checkpoint(document, key.get_secret_value())
                if checkpoint.ledger_id != ledger.id or checkpoint.tenant_id != ledger.tenant_id:
                    raise CheckpointRejected("the checkpoint is for another ledger", code="checkpoint_mismatch")
            except (CheckpointKeyUnavailable, CheckpointRejected) as error:
                checkpoint_problem = f"{path}: {error}"
        report = service.verify(
            ledger.tenant_id, ledger.id, checkpoint=checkpoint, on_progress=ProgressPrinter(f"ledger {ledger.id}")
        )
        ok = report.ok and checkpoint_problem is None
        failed += 0 if ok else 1
        log_event = log.info if ok else log.error
        log_event(
            "ledger_verified" if ok else "ledger_verification_failed",
            ledger_id=str(ledger.id),
            accounts=report.accounts_checked,
            postings=report.postings_checked,
            findings=len(report.findings),
            checkpoint=None if checkpoint is None else checkpoint.created_at.isoformat(),
            checkpoint_problem=checkpoint_problem,
        )
        reports.append(_report_document(ledger, report, checkpoint_problem))
        if not as_json:
            _print_report(ledger, report, checkpoint_problem)
    if as_json:
        json.dump(reports, sys.stdout, indent=2)
        sys.stdout.write("\n")
    if not as_json:
        typer.echo(f"{len(ledgers)} ledger(s) verified, {failed} with findings")
    return EXIT_MISMATCH if failed else EXIT_OK


def _report_document(ledger: Ledger, report: VerificationReport, checkpoint_problem: str | None) -> dict[str, Any]:
    return {
        "ledger_id": str(ledger.id),
        "tenant_id": str(ledger.tenant_id),
        "ok": report.ok and checkpoint_problem is None,
        "accounts_checked": report.accounts_checked,
        "postings_checked": report.postings_checked,
        "checkpoint": None
        if report.checkpoint_created_at is None
        else {"created_at": report.checkpoint_created_at.isoformat(), "heads": report.checkpoint_heads_checked},
        "checkpoint_problem": checkpoint_problem,
        "findings": [
            {
                "kind": finding.kind.value,
                "detail": finding.detail,
                "account_id": None if finding.account_id is None else str(finding.account_id),
                "account_code": finding.account_code,
                "transfer_id": None if finding.transfer_id is None else str(finding.transfer_id),
                "account_version": finding.account_version,
            }
            for finding in report.findings
        ],
    }


def _print_report(ledger: Ledger, report: VerificationReport, checkpoint_problem: str | None) -> None:
    if report.checkpoint_created_at is not None:
        against = (
            f", checkpoint of {report.checkpoint_created_at.isoformat()} ({report.checkpoint_heads_checked} heads)"
        )
    else:
        against = ", no checkpoint"
    state = "OK" if report.ok and checkpoint_problem is None else "FAILED"
    typer.echo(
        f"ledger {ledger.id} ({ledger.name}): {report.accounts_checked} accounts, "
        f"{report.postings_checked} postings{against}: {state}"
    )
    if checkpoint_problem is not None:
        typer.echo(f"  checkpoint_rejected: {checkpoint_problem}")
    for line in describe(report.findings):
        typer.echo(f"  {line}")


def write_checkpoints(container: Container, settings: LedgerSettings, *, ledger_id: uuid.UUID | None) -> int:
    log = structlog.get_logger("ledger.cli")
    try:
        key = load_checkpoint_key(settings, create_embedded=True)
    except CheckpointKeyUnavailable as error:
        log.error("checkpoint_key_unavailable", reason=str(error))
        return EXIT_NO_KEY
    if key is None:
        log.error(
            "checkpoint_key_unavailable",
            reason="set LEDGER_CHECKPOINT_KEY_FILE or LEDGER_CHECKPOINT_KEY_SECRET_ID (a key outside the database)",
        )
        return EXIT_NO_KEY
    service: LedgerVerificationService = container.ledger_verification_service()
    try:
        ledgers = _ledgers(service, ledger_id)
    except NotFound:
        log.error("ledger_not_found", ledger_id=str(ledger_id))
        return EXIT_NOT_FOUND
    directory = CheckpointDirectory(settings.checkpoint_directory)
    for ledger in ledgers:
        _, heads = service.chain_heads(ledger.tenant_id, ledger.id)
        checkpoint = Checkpoint(
            tenant_id=ledger.tenant_id, ledger_id=ledger.id, created_at=datetime.now(UTC), heads=tuple(heads)
        )
        path = directory.save(ledger.id, checkpoint.created_at, sign_checkpoint(checkpoint, key.get_secret_value()))
        log.info("checkpoint_written", ledger_id=str(ledger.id), heads=len(heads), path=str(path))
        typer.echo(f"{path}  ledger={ledger.id}  heads={len(heads)}")
    return EXIT_OK
