"""Verification of a ledger's history: every account's posting chain, every balance counter, every entry's balance,
and, when a signed checkpoint is given, the chain heads it vouches for.

The database owner could recompute unkeyed chains after rewriting history; a checkpoint (chain heads signed with a
key held outside the database) is what catches that for every posting it covers.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from ledger.domain.errors import NotFound
from ledger.domain.ledger_checkpoints import ChainHead, Checkpoint
from ledger.domain.ledgers import MAX_PAGE_SIZE, every_account
from ledger.domain.model import Account, Ledger, NormalSide
from ledger.domain.ports import UnitOfWork
from ledger.domain.posting_chain import genesis_hash, next_chain_hash
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfers import Posting, Side, Transfer, chain_link

ProgressCallback = Callable[[int, int], None]
PROGRESS_EVERY_POSTINGS = 10_000


class FindingKind(enum.StrEnum):
    CHAIN_HASH_MISMATCH = "chain_hash_mismatch"
    POSTING_MISSING = "posting_missing"
    UNEXPECTED_POSTING = "unexpected_posting"
    BALANCE_AFTER_MISMATCH = "balance_after_mismatch"
    COUNTER_MISMATCH = "counter_mismatch"
    CHAIN_HEAD_MISMATCH = "chain_head_mismatch"
    UNBALANCED_ENTRY = "unbalanced_entry"
    CHECKPOINT_MISMATCH = "checkpoint_mismatch"
    CHECKPOINT_ACCOUNT_MISSING = "checkpoint_account_missing"


@dataclass(frozen=True, slots=True)
class Finding:
    kind: FindingKind
    detail: str
    account_id: uuid.UUID | None = None
    account_code: str | None = None
    transfer_id: uuid.UUID | None = None
    account_version: int | None = None


@dataclass(frozen=True, slots=True)
class VerificationReport:
    ledger_id: uuid.UUID
    tenant_id: uuid.UUID
    accounts_checked: int
    postings_checked: int
    findings: tuple[Finding, ...]
    checkpoint_created_at: datetime | None = None
    checkpoint_heads_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.findings


@dataclass
class _AccountChainState:
    """What the postings of one account add up to, walked in version order."""

    account: Account
    head: bytes
    version: int = 0
    debits: int = 0
    credits: int = 0
    last_transfer_id: uuid.UUID | None = None
    checkpoint: ChainHead | None = None
    checkpoint_seen: bool = False
    findings: list[Finding] = field(default_factory=list)

    def finding(self, kind: FindingKind, detail: str, transfer_id: uuid.UUID | None, version: int | None) -> None:
        self.findings.append(
            Finding(
                kind=kind,
                detail=detail,
                account_id=self.account.id,
                account_code=self.account.code,
                transfer_id=transfer_id,
                account_version=version,
            )
        )

    def balance(self) -> int:
        if self.account.normal_side is NormalSide.DEBIT:
            return self.debits - self.credits
        return self.credits - self.debits

    def walk(self, transfer: Transfer, posting: Posting) -> None:
        expected = self.version + 1
        if posting.account_version > expected:
            self.finding(
                FindingKind.POSTING_MISSING,
                f"postings {expected}..{posting.account_version - 1} of the account are missing",
                transfer.id,
                posting.account_version,
            )
        elif posting.account_version < expected:
            self.finding(
                FindingKind.UNEXPECTED_POSTING,
                f"a second posting with account version {posting.account_version}",
                transfer.id,
                posting.account_version,
            )
        self.version = posting.account_version
        if posting.side is Side.DEBIT:
            self.debits += posting.amount
        else:
            self.credits += posting.amount
        if posting.balance_after != self.balance():
            self.finding(
                FindingKind.BALANCE_AFTER_MISMATCH,
                f"balance after is {posting.balance_after}, the postings add up to {self.balance()}",
                transfer.id,
                posting.account_version,
            )
        recomputed = next_chain_hash(self.head, chain_link(transfer, posting))
        if posting.chain_hash != recomputed:
            self.finding(
                FindingKind.CHAIN_HASH_MISMATCH,
                "the posting or its entry was changed after it was written (its hash does not follow the chain)",
                transfer.id,
                posting.account_version,
            )
        if self.checkpoint is not None and posting.account_version == self.checkpoint.version:
            self.checkpoint_seen = True
            if recomputed != self.checkpoint.chain_head:
                self.finding(
                    FindingKind.CHECKPOINT_MISMATCH,
                    f"history up to version {posting.account_version} differs from the signed checkpoint",
                    transfer.id,
                    posting.account_version,
                )
        # Go on from the stored hash: one altered posting is one finding, not one per later posting.
        self.head = posting.chain_hash
        self.last_transfer_id = transfer.id

    def finish(self, open_pending: tuple[int, int], open_uncleared: int) -> None:
        account = self.account
        counters = (account.posted_debits, account.posted_credits, account.version)
        recomputed = (self.debits, self.credits, self.version)
        reserved = (account.pending_debits, account.pending_credits, account.uncleared_credits)
        if reserved != (*open_pending, open_uncleared):
            self.finding(
                FindingKind.COUNTER_MISMATCH,
                "the account row says pending debits/credits/uncleared "
                f"{reserved[0]}/{reserved[1]}/{reserved[2]}, its open pending transfers and holds add up to "
                f"{open_pending[0]}/{open_pending[1]}/{open_uncleared}",
                self.last_transfer_id,
                account.version,
            )
        if counters != recomputed:
            self.finding(
                FindingKind.COUNTER_MISMATCH,
                "the account row says debits/credits/version "
                f"{counters[0]}/{counters[1]}/{counters[2]}, its postings add up to "
                f"{recomputed[0]}/{recomputed[1]}/{recomputed[2]}",
                self.last_transfer_id,
                account.version,
            )
        stored_head = account.chain_head if account.chain_head is not None else genesis_hash(account.id)
        if stored_head != self.head:
            self.finding(
                FindingKind.CHAIN_HEAD_MISMATCH,
                "the account row's chain head is not the hash of its newest posting",
                self.last_transfer_id,
                account.version,
            )
        if self.checkpoint is not None and not self.checkpoint_seen:
            self.finding(
                FindingKind.CHECKPOINT_MISMATCH,
                f"the signed checkpoint vouches for version {self.checkpoint.version}, the account's postings end "
                f"at {self.version} (postings were removed)",
                self.last_transfer_id,
                self.checkpoint.version,
            )


class LedgerVerificationService:
    """Reads a ledger in one consistent snapshot, streaming its postings: memory grows with accounts, not postings."""

    def __init__(self, runner: TransactionRunner) -> None:
        self._runner = runner

    def verify(
        self,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        *,
        checkpoint: Checkpoint | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> VerificationReport:
        return self._runner.read_snapshot(
            lambda uow: self._verify(uow, tenant_id, ledger_id, checkpoint=checkpoint, on_progress=on_progress)
        )

    def ledgers(self, tenant_id: uuid.UUID | None = None) -> list[Ledger]:
        """Every ledger (of one tenant, or of all): what ``ledger verify`` walks without ``--ledger``."""

        def collect(uow: UnitOfWork) -> list[Ledger]:
            found: list[Ledger] = []
            after: uuid.UUID | None = None
            while True:
                page = uow.ledgers.list_all(tenant_id, after=after, limit=MAX_PAGE_SIZE)
                found.extend(page)
                if len(page) < MAX_PAGE_SIZE:
                    return found
                after = page[-1].id

        return self._runner.read(collect)

    def find_ledger(self, ledger_id: uuid.UUID) -> Ledger:
        """A ledger by id whatever its tenant (operators' commands only; the API stays tenant-scoped)."""

        def find(uow: UnitOfWork) -> Ledger:
            ledger = uow.ledgers.find_any_tenant(ledger_id)
            if ledger is None:
                raise NotFound("ledger not found", code="ledger_not_found")
            return ledger

        return self._runner.read(find)

    def chain_heads(self, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> tuple[Ledger, list[ChainHead]]:
        """The chain head of every account, read in one snapshot: what a checkpoint signs."""

        def read(uow: UnitOfWork) -> tuple[Ledger, list[ChainHead]]:
            ledger = _ledger(uow, tenant_id, ledger_id)
            return ledger, [
                ChainHead(
                    account_id=account.id,
                    version=account.version,
                    chain_head=account.chain_head or genesis_hash(account.id),
                )
                for account in every_account(uow, tenant_id, ledger_id)
                if account.version > 0
            ]

        return self._runner.read_snapshot(read)

    def _verify(
        self,
        uow: UnitOfWork,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        *,
        checkpoint: Checkpoint | None,
        on_progress: ProgressCallback | None,
    ) -> VerificationReport:
        _ledger(uow, tenant_id, ledger_id)
        signed_heads = {head.account_id: head for head in checkpoint.heads} if checkpoint is not None else {}
        states = {
            account.id: _AccountChainState(
                account=account, head=genesis_hash(account.id), checkpoint=signed_heads.get(account.id)
            )
            for account in every_account(uow, tenant_id, ledger_id)
        }
        total = uow.transfers.count_postings(tenant_id, ledger_id)
        findings: list[Finding] = []
        checked = 0
        for transfer, posting in uow.transfers.postings_in_chain_order(tenant_id, ledger_id):
            state = states.get(posting.account_id)
            if state is None:
                findings.append(
                    Finding(
                        kind=FindingKind.UNEXPECTED_POSTING,
                        detail="a posting to an account that is not in the ledger",
                        account_id=posting.account_id,
                        transfer_id=transfer.id,
                        account_version=posting.account_version,
                    )
                )
            else:
                state.walk(transfer, posting)
            checked += 1
            if on_progress is not None and checked % PROGRESS_EVERY_POSTINGS == 0:
                on_progress(checked, total)
        if on_progress is not None:
            on_progress(checked, total)
        open_pending = uow.pending_transfers.open_amounts(tenant_id, ledger_id)
        open_uncleared = uow.clearance_holds.open_amounts(tenant_id, ledger_id)
        for account_id, state in states.items():
            state.finish(open_pending.get(account_id, (0, 0)), open_uncleared.get(account_id, 0))
            findings.extend(state.findings)
        findings.extend(
            Finding(
                kind=FindingKind.UNBALANCED_ENTRY,
                detail=f"the entry's debits and credits differ by {difference}",
                transfer_id=transfer_id,
            )
            for transfer_id, difference in uow.transfers.unbalanced_transfers(tenant_id, ledger_id)
        )
        findings.extend(
            Finding(
                kind=FindingKind.CHECKPOINT_ACCOUNT_MISSING,
                detail="the signed checkpoint names an account the ledger no longer has",
                account_id=account_id,
                account_version=head.version,
            )
            for account_id, head in signed_heads.items()
            if account_id not in states
        )
        return VerificationReport(
            ledger_id=ledger_id,
            tenant_id=tenant_id,
            accounts_checked=len(states),
            postings_checked=checked,
            findings=tuple(findings),
            checkpoint_created_at=checkpoint.created_at if checkpoint is not None else None,
            checkpoint_heads_checked=len(signed_heads),
        )


def _ledger(uow: UnitOfWork, tenant_id: uuid.UUID, ledger_id: uuid.UUID) -> Ledger:
    ledger = uow.ledgers.get(tenant_id, ledger_id)
    if ledger is None:
        raise NotFound("ledger not found", code="ledger_not_found")
    return ledger


def describe(findings: Iterable[Finding]) -> list[str]:
    """One line per finding, for the CLI and logs."""
    lines = []
    for finding in findings:
        where = []
        if finding.account_code is not None:
            where.append(f"account {finding.account_code} ({finding.account_id})")
        elif finding.account_id is not None:
            where.append(f"account {finding.account_id}")
        if finding.transfer_id is not None:
            where.append(f"entry {finding.transfer_id}")
        if finding.account_version is not None:
            where.append(f"version {finding.account_version}")
        lines.append(f"{finding.kind.value}: {', '.join(where) or 'ledger'}: {finding.detail}")
    return lines
