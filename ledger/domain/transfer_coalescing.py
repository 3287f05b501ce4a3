"""The coalescing writer: concurrent single-transfer requests of one process share one database transaction.

Every deposit and disbursement of a trust ledger touches the one trust bank account, and its row lock lets one
transaction through at a time. Grouping the requests waiting for that lock into one transaction turns one commit per
transfer into one commit per group, so the hot account is no longer a queue of single commits.

How a request goes through:

1. The request thread checks what needs no state (the draft, the actor, the Idempotency-Key) and queues the
   transfer; a malformed request is refused at once and never joins a group.
2. A writer thread takes the first queued transfer, then collects more until the group is full or ``max_wait`` has
   passed since it took the first, and runs the group in one unit of work:
   claims every Idempotency-Key with one statement and reads the recorded responses with another; locks every
   account of the group once, in the one global order (tenant, then account id); applies the drafts one after
   another with the pure ``apply_transfer`` to the evolving account states (so each account's chain runs through
   the group in order); and writes the entries, postings, accounts and idempotency records with a few statements.
3. A refusal (insufficient funds, a closed account, a locked period...) is decided by the pure domain function
   before anything is written, so it refuses that one transfer only: its 422 is recorded for its key, and the
   others of the group commit.
4. Each request thread is woken with its own result only after the group's commit has returned.

The traps, and the way around each:

- One SQL error aborts the whole transaction, and a savepoint per item could overflow PostgreSQL's subtransaction
  cache. So nothing in a group is refused by the database: every rule is checked in the pure function, and after an
  unexpected error every transfer of the group is run again on its own, by its own request thread, through the
  ordinary single-transfer path (its Idempotency-Key makes that safe: nothing of the failed group committed).
- The same Idempotency-Key twice in one group would record it twice: the second goes through the single path after
  the group has committed, and so gets the first one's recorded response (or ``idempotency_key_reused``).
- Each waiting request holds a thread of the API's pool: the pool must be larger than a group (the settings check).
- A database outage or a lock timeout fails the whole group with the same 503 each request would have had; those are
  not re-run one by one (that would wait out the same timeout once per transfer). The client retries with its key.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol

from ledger.domain.errors import Conflict, DomainError, InvalidRequest, ServiceUnavailable
from ledger.domain.idempotency import IdempotencyRecord, IdempotentRequest, RecordedResponse, check_idempotency_key
from ledger.domain.ledgers import require_ledger
from ledger.domain.model import Account, Ledger
from ledger.domain.ports import UnitOfWork
from ledger.domain.reconciliation import period_locked_refusal
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import TransferService, check_actor, ledger_today
from ledger.domain.transfers import (
    MAX_METADATA_BYTES,
    LedgerRuleViolation,
    Transfer,
    TransferDraft,
    apply_transfer,
    sorted_account_ids,
    validate_draft,
)
from ledger.domain.trust_operations import TrustOperation, TrustService, trust_operation_draft

DEFAULT_MAX_GROUP = 32
DEFAULT_MAX_WAIT_SECONDS = 0.002
DEFAULT_WRITER_THREADS = 2
# A request never waits for ever: past this its outcome is unknown (503; the retry with its key tells).
MAX_WAIT_FOR_OUTCOME_SECONDS = 120.0

TenantKey = tuple[uuid.UUID, str]


def outcome_unknown() -> ServiceUnavailable:
    """What a request answers when its transfer's outcome did not come within MAX_WAIT_FOR_OUTCOME_SECONDS."""
    return ServiceUnavailable(
        "the transfer's outcome is not known yet; retry with the same Idempotency-Key", code="transfer_outcome_unknown"
    )


class _RunSingly(Exception):
    """Told to a request whose transfer must go through the single-transfer path instead of its group."""


@dataclass(eq=False)
class _QueuedTransfer:
    """A transfer waiting for its group: a draft, or a cleared trust operation whose draft the group works out."""

    tenant_id: uuid.UUID
    actor: str
    draft: TransferDraft | None
    operation: TrustOperation | None
    request: IdempotentRequest[Transfer] | None
    on_done: Callable[[], None] | None = None
    transfer_id: uuid.UUID = field(default_factory=uuid.uuid4)
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Transfer | RecordedResponse | None = None
    error: BaseException | None = None

    @property
    def tenant_key(self) -> TenantKey | None:
        return (self.tenant_id, self.request.key) if self.request is not None else None

    def resolve(self, outcome: Transfer | RecordedResponse) -> None:
        self.outcome = outcome
        self._finish()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self._finish()

    def _finish(self) -> None:
        self.done.set()
        if self.on_done is not None:
            self.on_done()


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A write handed to a writer without waiting for it (what an event loop does). Once ``on_done`` has been
    called, ``outcome()`` gives the recorded response or raises the refusal. When ``blocking()`` is true it still
    has database work to do (the single-transfer path) and belongs in a thread, not on the event loop."""

    outcome: Callable[[], RecordedResponse]
    blocking: Callable[[], bool]


@dataclass(frozen=True, slots=True)
class CoalescingStatistics:
    """Counts since the writer started: how many groups, how many transfers went through them, the largest group,
    and how many transfers were sent to the single path (duplicate keys, or a group that failed unexpectedly)."""

    groups: int
    grouped_transfers: int
    largest_group: int
    run_singly: int


class TransferWriter(Protocol):
    """Posts single transfers and trust operations: one transaction each, or grouped (the coalescing writer)."""

    def post(self, tenant_id: uuid.UUID, actor: str, draft: TransferDraft) -> Transfer: ...

    def post_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, draft: TransferDraft
    ) -> RecordedResponse: ...

    def execute_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, operation: TrustOperation
    ) -> RecordedResponse: ...

    def enqueue_transfer(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        draft: TransferDraft,
        on_done: Callable[[], None],
    ) -> PendingWrite: ...

    def enqueue_operation(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        operation: TrustOperation,
        on_done: Callable[[], None],
    ) -> PendingWrite: ...

    def close(self) -> None: ...


class DirectTransferWriter:
    """One transaction per transfer: the writer when coalescing is switched off."""

    def __init__(
        self, transfer_service: TransferService, trust_service: TrustService, runner: TransactionRunner
    ) -> None:
        self._transfer_service = transfer_service
        self._trust_service = trust_service
        self._runner = runner

    def post(self, tenant_id: uuid.UUID, actor: str, draft: TransferDraft) -> Transfer:
        return self._transfer_service.post_transfer(tenant_id, actor, draft)

    def post_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, draft: TransferDraft
    ) -> RecordedResponse:
        return self._runner.run_idempotently(
            request, self._transfer_service.post_transfer_command(tenant_id, actor, draft)
        )

    def execute_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, operation: TrustOperation
    ) -> RecordedResponse:
        return self._runner.run_idempotently(request, self._trust_service.command(tenant_id, actor, operation))

    def enqueue_transfer(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        draft: TransferDraft,
        on_done: Callable[[], None],
    ) -> PendingWrite:
        """Nothing to wait for: the whole write happens when the outcome is asked for, in the caller's thread."""
        command = self._transfer_service.post_transfer_command(tenant_id, actor, draft)
        on_done()
        return PendingWrite(lambda: self._runner.run_idempotently(request, command), lambda: True)

    def enqueue_operation(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        operation: TrustOperation,
        on_done: Callable[[], None],
    ) -> PendingWrite:
        command = self._trust_service.command(tenant_id, actor, operation)
        on_done()
        return PendingWrite(lambda: self._runner.run_idempotently(request, command), lambda: True)

    def close(self) -> None:
        return None


class CoalescingTransferWriter(DirectTransferWriter):
    def __init__(
        self,
        transfer_service: TransferService,
        trust_service: TrustService,
        runner: TransactionRunner,
        *,
        max_group: int = DEFAULT_MAX_GROUP,
        max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
        writer_threads: int = DEFAULT_WRITER_THREADS,
        max_metadata_bytes: int = MAX_METADATA_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(transfer_service, trust_service, runner)
        if max_group < 1 or writer_threads < 1 or max_wait_seconds < 0:
            raise ValueError("a group holds at least one transfer, with at least one writer and a wait >= 0")
        self._max_group = max_group
        self._max_wait_seconds = max_wait_seconds
        self._writer_threads = writer_threads
        self._max_metadata_bytes = max_metadata_bytes
        self._clock = clock
        self._queue: queue.SimpleQueue[_QueuedTransfer | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._state_lock = threading.Lock()
        self._groups = self._grouped = self._largest = self._singly = 0

    # -- what request threads call --------------------------------------------------------------------------------

    def post(self, tenant_id: uuid.UUID, actor: str, draft: TransferDraft) -> Transfer:
        validate_draft(draft, max_metadata_bytes=self._max_metadata_bytes)
        check_actor(actor)
        outcome = self._submit(_QueuedTransfer(tenant_id, actor, draft, None, None))
        assert isinstance(outcome, Transfer)
        return outcome

    def post_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, draft: TransferDraft
    ) -> RecordedResponse:
        check_idempotency_key(request.key)
        validate_draft(draft, max_metadata_bytes=self._max_metadata_bytes)
        check_actor(actor)
        outcome = self._submit(_QueuedTransfer(tenant_id, actor, draft, None, request))
        assert isinstance(outcome, RecordedResponse)
        return outcome

    def execute_idempotently(
        self, request: IdempotentRequest[Transfer], tenant_id: uuid.UUID, actor: str, operation: TrustOperation
    ) -> RecordedResponse:
        """A trust operation (deposit, disbursement, fee...). An uncleared deposit also places a hold: it goes
        through the single path, in a transaction of its own."""
        if not operation.cleared:
            return super().execute_idempotently(request, tenant_id, actor, operation)
        check_idempotency_key(request.key)
        self._trust_service.check_operation(actor, operation)
        outcome = self._submit(_QueuedTransfer(tenant_id, actor, None, operation, request))
        assert isinstance(outcome, RecordedResponse)
        return outcome

    def enqueue_transfer(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        draft: TransferDraft,
        on_done: Callable[[], None],
    ) -> PendingWrite:
        check_idempotency_key(request.key)
        validate_draft(draft, max_metadata_bytes=self._max_metadata_bytes)
        check_actor(actor)
        return self._pending(self._enqueue(_QueuedTransfer(tenant_id, actor, draft, None, request, on_done)))

    def enqueue_operation(
        self,
        request: IdempotentRequest[Transfer],
        tenant_id: uuid.UUID,
        actor: str,
        operation: TrustOperation,
        on_done: Callable[[], None],
    ) -> PendingWrite:
        if not operation.cleared:
            return super().enqueue_operation(request, tenant_id, actor, operation, on_done)
        check_idempotency_key(request.key)
        self._trust_service.check_operation(actor, operation)
        return self._pending(self._enqueue(_QueuedTransfer(tenant_id, actor, None, operation, request, on_done)))

    def _pending(self, queued: _QueuedTransfer) -> PendingWrite:
        def outcome() -> RecordedResponse:
            recorded = self._outcome(queued)
            assert isinstance(recorded, RecordedResponse)
            return recorded

        return PendingWrite(outcome, lambda: isinstance(queued.error, _RunSingly))

    def statistics(self) -> CoalescingStatistics:
        with self._state_lock:
            return CoalescingStatistics(self._groups, self._grouped, self._largest, self._singly)

    def close(self) -> None:
        """Stops the writer threads once the transfers queued so far are written. A later post starts new ones (a
        test client or a restarted app may use the same container again)."""
        with self._state_lock:
            stopping_queue, threads = self._queue, self._threads
            self._queue, self._threads = queue.SimpleQueue(), []
        for _ in threads:
            stopping_queue.put(None)
        for thread in threads:
            thread.join(timeout=30)

    def _submit(self, queued: _QueuedTransfer) -> Transfer | RecordedResponse:
        self._enqueue(queued)
        if not queued.done.wait(MAX_WAIT_FOR_OUTCOME_SECONDS):
            raise outcome_unknown()
        return self._outcome(queued)

    def _enqueue(self, queued: _QueuedTransfer) -> _QueuedTransfer:
        with self._state_lock:
            # Queued under the lock that ``close`` takes: every transfer queued before its stop signals is written.
            self._start_writers()
            self._queue.put(queued)
        return queued

    def _outcome(self, queued: _QueuedTransfer) -> Transfer | RecordedResponse:
        if isinstance(queued.error, _RunSingly):
            return self._post_singly(queued)
        if queued.error is not None:
            raise queued.error
        assert queued.outcome is not None
        return queued.outcome

    def _post_singly(self, queued: _QueuedTransfer) -> Transfer | RecordedResponse:
        if queued.operation is not None:
            assert queued.request is not None
            return super().execute_idempotently(queued.request, queued.tenant_id, queued.actor, queued.operation)
        assert queued.draft is not None
        if queued.request is None:
            return super().post(queued.tenant_id, queued.actor, queued.draft)
        return super().post_idempotently(queued.request, queued.tenant_id, queued.actor, queued.draft)

    def _start_writers(self) -> None:
        """Started on first use, so a process that never posts has no writer threads (called under the lock)."""
        while len(self._threads) < self._writer_threads:
            thread = threading.Thread(
                target=self._write_groups,
                args=(self._queue,),
                name=f"transfer-writer-{len(self._threads)}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    # -- the writer threads ---------------------------------------------------------------------------------------

    def _write_groups(self, transfers: queue.SimpleQueue[_QueuedTransfer | None]) -> None:
        while True:
            first = transfers.get()
            if first is None:
                return
            group = [first]
            stopping = self._collect(transfers, group)
            try:
                self._write_group(group)
            except BaseException as error:  # never leave a request waiting, whatever happened
                for queued in group:
                    if not queued.done.is_set():
                        queued.fail(error)
            if stopping:
                return

    def _collect(self, transfers: queue.SimpleQueue[_QueuedTransfer | None], group: list[_QueuedTransfer]) -> bool:
        """Adds queued transfers until the group is full or the wait is over; True when told to stop meanwhile."""
        deadline = self._clock() + self._max_wait_seconds
        while len(group) < self._max_group:
            try:
                queued = transfers.get_nowait()
            except queue.Empty:
                remaining = deadline - self._clock()
                if remaining <= 0:
                    return False
                try:
                    queued = transfers.get(timeout=remaining)
                except queue.Empty:
                    return False
            if queued is None:
                return True
            group.append(queued)
        return False

    def _write_group(self, group: list[_QueuedTransfer]) -> None:
        in_group, later = _split_duplicate_keys(group)
        try:
            outcomes = self._runner.run(lambda uow: _write_in_unit_of_work(uow, in_group))
        except ServiceUnavailable as unavailable:
            # The database is out of reach or a lock timed out: every transfer would fail the same way on its own.
            for queued in in_group:
                queued.fail(unavailable)
        except Exception:  # unexpected: each transfer tries again alone, so only a bad one fails
            later = group
        else:
            for queued, outcome in zip(in_group, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    queued.fail(outcome)
                else:
                    queued.resolve(outcome)
        with self._state_lock:
            self._groups += 1
            self._grouped += len(group) - len(later)
            self._largest = max(self._largest, len(group))
            self._singly += len(later)
        for queued in later:
            queued.fail(_RunSingly())


def _split_duplicate_keys(group: Sequence[_QueuedTransfer]) -> tuple[list[_QueuedTransfer], list[_QueuedTransfer]]:
    seen: set[TenantKey] = set()
    first: list[_QueuedTransfer] = []
    repeated: list[_QueuedTransfer] = []
    for queued in group:
        tenant_key = queued.tenant_key
        if tenant_key is not None and tenant_key in seen:
            repeated.append(queued)
            continue
        if tenant_key is not None:
            seen.add(tenant_key)
        first.append(queued)
    return first, repeated


Outcome = Transfer | RecordedResponse | DomainError


def _write_in_unit_of_work(uow: UnitOfWork, group: Sequence[_QueuedTransfer]) -> list[Outcome]:
    """One unit of work for the whole group: the outcome of each transfer, in order. Raises only on the unexpected;
    every refusal is an outcome, decided before anything is written."""
    outcomes: dict[int, Outcome] = {}
    live = _replay_or_claim(uow, group, outcomes)
    drafts = _drafts(uow, group, live, outcomes)
    ledgers = _ledgers(uow, group, drafts, outcomes)
    live = [index for index in live if index not in outcomes]
    states_by_tenant = _lock_accounts(uow, [(group[index].tenant_id, drafts[index]) for index in live])
    recorded_at = uow.now()
    locked_through = _locked_periods(uow, group, drafts, live, ledgers, recorded_at)
    posted: list[Transfer] = []
    records: list[IdempotencyRecord] = []
    for index, refused in list(outcomes.items()):
        if isinstance(refused, LedgerRuleViolation):
            outcomes[index] = _refusal(records, group[index], refused, recorded_at)
    for index in live:
        queued, draft = group[index], drafts[index]
        ledger = ledgers[(queued.tenant_id, draft.ledger_id)]
        states = states_by_tenant[queued.tenant_id]
        try:
            today = ledger_today(ledger, recorded_at)
            effective_date = draft.effective_date or today
            if effective_date > today:
                raise InvalidRequest("the effective date is in the future", code="effective_date_in_future")
            refusal = period_locked_refusal(effective_date, locked_through.get((queued.tenant_id, ledger.id)))
            if refusal is not None:
                raise LedgerRuleViolation(refusal, code="period_locked")
            transfer, updated = apply_transfer(
                ledger,
                states,
                draft,
                transfer_id=queued.transfer_id,
                actor=queued.actor,
                recorded_at=recorded_at,
                effective_date=effective_date,
            )
        except LedgerRuleViolation as violation:
            outcomes[index] = _refusal(records, queued, violation, recorded_at)
            continue
        except DomainError as error:  # malformed against the state (an unknown account...): nothing recorded
            outcomes[index] = error
            continue
        states.update(updated)
        posted.append(transfer)
        outcomes[index] = (
            transfer if queued.request is None else _record(records, queued.request, transfer, recorded_at)
        )
    if posted:
        uow.transfers.add_many(posted)
        touched = sorted(
            {(transfer.tenant_id, posting.account_id) for transfer in posted for posting in transfer.postings}
        )
        uow.accounts.save([states_by_tenant[tenant_id][account_id] for tenant_id, account_id in touched])
    if records:
        uow.idempotency.add_many(records)
    return [outcomes[index] for index in range(len(group))]


def _replay_or_claim(uow: UnitOfWork, group: Sequence[_QueuedTransfer], outcomes: dict[int, Outcome]) -> list[int]:
    """Claims every key of the group; an earlier request's response is replayed. The indexes left to write."""
    keys = [queued.tenant_key for queued in group if queued.tenant_key is not None]
    claimed = uow.idempotency.try_claim_many(keys) if keys else set()
    recorded = uow.idempotency.get_many(sorted(claimed)) if claimed else {}
    live: list[int] = []
    for index, queued in enumerate(group):
        tenant_key = queued.tenant_key
        if tenant_key is None or queued.request is None:
            live.append(index)
        elif tenant_key not in claimed:
            outcomes[index] = Conflict(
                "a request with this Idempotency-Key is still being processed", code="idempotency_key_in_flight"
            )
        elif tenant_key in recorded:
            existing = recorded[tenant_key]
            if existing.fingerprint != queued.request.fingerprint:
                outcomes[index] = InvalidRequest(
                    "this Idempotency-Key was used with a different request", code="idempotency_key_reused"
                )
            else:
                outcomes[index] = existing.response
        else:
            live.append(index)
    return live


def _drafts(
    uow: UnitOfWork, group: Sequence[_QueuedTransfer], live: Sequence[int], outcomes: dict[int, Outcome]
) -> dict[int, TransferDraft]:
    """The draft of each live transfer; a trust operation's accounts are found by their role (a refusal then is
    that operation's outcome)."""
    drafts: dict[int, TransferDraft] = {}
    for index in live:
        queued = group[index]
        if queued.draft is not None:
            drafts[index] = queued.draft
            continue
        assert queued.operation is not None
        try:
            drafts[index] = trust_operation_draft(uow, queued.tenant_id, queued.operation)
        except DomainError as error:  # a ledger rule's refusal is recorded once the group's clock is read
            outcomes[index] = error
    return drafts


def _ledgers(
    uow: UnitOfWork, group: Sequence[_QueuedTransfer], drafts: dict[int, TransferDraft], outcomes: dict[int, Outcome]
) -> dict[tuple[uuid.UUID, uuid.UUID], Ledger]:
    """Each ledger the live transfers name, read once; a transfer naming an unknown ledger is refused."""
    found: dict[tuple[uuid.UUID, uuid.UUID], Ledger] = {}
    missing: dict[tuple[uuid.UUID, uuid.UUID], DomainError] = {}
    for index, draft in drafts.items():
        queued = group[index]
        wanted = (queued.tenant_id, draft.ledger_id)
        if wanted not in found and wanted not in missing:
            try:
                found[wanted] = require_ledger(uow, *wanted)
            except DomainError as error:
                missing[wanted] = error
        if wanted in missing:
            outcomes[index] = missing[wanted]
    return found


def _lock_accounts(
    uow: UnitOfWork, tenant_drafts: Sequence[tuple[uuid.UUID, TransferDraft]]
) -> dict[uuid.UUID, dict[uuid.UUID, Account]]:
    """Locks every account once, tenant by tenant in id order, then account id order: the one global order, so two
    groups never deadlock. States are kept per tenant, so a draft can only ever see its own tenant's accounts."""
    by_tenant: dict[uuid.UUID, list[TransferDraft]] = {}
    for tenant_id, draft in tenant_drafts:
        by_tenant.setdefault(tenant_id, []).append(draft)
    return {
        tenant_id: dict(uow.accounts.lock(tenant_id, sorted_account_ids(drafts)))
        for tenant_id, drafts in sorted(by_tenant.items())
    }


def _locked_periods(
    uow: UnitOfWork,
    group: Sequence[_QueuedTransfer],
    drafts: dict[int, TransferDraft],
    live: Sequence[int],
    ledgers: dict[tuple[uuid.UUID, uuid.UUID], Ledger],
    recorded_at: datetime,
) -> dict[tuple[uuid.UUID, uuid.UUID], date | None]:
    """The signed-off date of each ledger with a back-dated transfer in the group (only those can be locked)."""
    wanted: set[tuple[uuid.UUID, uuid.UUID]] = set()
    for index in live:
        ledger_key = (group[index].tenant_id, drafts[index].ledger_id)
        effective_date = drafts[index].effective_date
        if effective_date is not None and effective_date < ledger_today(ledgers[ledger_key], recorded_at):
            wanted.add(ledger_key)
    return {
        (tenant_id, ledger_id): uow.period_locks.locked_through(tenant_id, ledger_id) for tenant_id, ledger_id in wanted
    }


def _refusal(
    records: list[IdempotencyRecord],
    queued: _QueuedTransfer,
    violation: LedgerRuleViolation,
    recorded_at: datetime,
) -> Outcome:
    """A refusal by a ledger rule: recorded for its key (written with the group) and replayed like a success."""
    if queued.request is None:
        return violation
    return _record(records, queued.request, violation, recorded_at)


def _record(
    records: list[IdempotencyRecord],
    request: IdempotentRequest[Transfer],
    outcome: Transfer | LedgerRuleViolation,
    recorded_at: datetime,
) -> RecordedResponse:
    response = request.render(outcome)
    records.append(
        IdempotencyRecord(
            tenant_id=request.tenant_id,
            key=request.key,
            fingerprint=request.fingerprint,
            response=response,
            recorded_at=recorded_at,
        )
    )
    return response
