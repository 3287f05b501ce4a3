"""Runs a use case in one unit of work, retried as a whole on serialization failures and deadlocks."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ledger.domain.errors import Conflict, InvalidRequest, ServiceUnavailable, TransactionConflict
from ledger.domain.idempotency import IdempotencyRecord, IdempotentRequest, RecordedResponse, check_idempotency_key
from ledger.domain.ports import UnitOfWork, UnitOfWorkFactory
from ledger.domain.transfers import LedgerRuleViolation

Result = TypeVar("Result")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6
    base_delay_seconds: float = 0.004
    max_delay_seconds: float = 0.2

    def delay(self, attempt: int, jitter: float) -> float:
        """Exponential backoff with full jitter (``jitter`` in [0, 1))."""
        backoff: float = min(self.max_delay_seconds, self.base_delay_seconds * 2.0 ** (attempt - 1))
        return backoff * jitter


class TransactionRunner:
    def __init__(
        self,
        uow_factory: UnitOfWorkFactory,
        retry_policy: RetryPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._uow_factory = uow_factory
        self._retry_policy = retry_policy or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter

    def run(self, work: Callable[[UnitOfWork], Result]) -> Result:
        """Runs ``work`` and commits; on a transaction conflict runs it again, a bounded number of times."""
        policy = self._retry_policy
        for attempt in range(1, policy.attempts + 1):
            try:
                with self._uow_factory() as uow:
                    result = work(uow)
                    uow.commit()
                    return result
            except TransactionConflict:
                if attempt == policy.attempts:
                    break
                self._sleep(policy.delay(attempt, self._jitter()))
        raise ServiceUnavailable(
            "the transaction kept conflicting with others; retry with the same Idempotency-Key",
            code="transaction_retries_exhausted",
        )

    def read(self, work: Callable[[UnitOfWork], Result]) -> Result:
        """Runs a read-only use case (no commit needed: leaving the unit of work rolls back)."""
        with self._uow_factory() as uow:
            return work(uow)

    def read_snapshot(self, work: Callable[[UnitOfWork], Result]) -> Result:
        """Runs a read-only use case that must see one consistent state from start to end (a verification, an
        export), whatever is committed meanwhile."""
        with self._uow_factory(snapshot=True) as uow:
            return work(uow)

    def run_idempotently(
        self, request: IdempotentRequest[Result], work: Callable[[UnitOfWork], Result]
    ) -> RecordedResponse:
        """Posts at most once per key, forever: the key, a fingerprint of the payload and the response are written in
        the same transaction as the work. A replay answers the recorded response. A refusal by a ledger rule is
        recorded (in a fresh transaction, so nothing the refused work did can slip in) and replayed like a success;
        anything else, such as a malformed request, records nothing."""
        check_idempotency_key(request.key)

        def succeed(uow: UnitOfWork) -> RecordedResponse:
            recorded = _claim(uow, request)
            if recorded is not None:
                return recorded
            response = request.render(work(uow))
            _record(uow, request, response)
            return response

        try:
            return self.run(succeed)
        except LedgerRuleViolation as refusal:
            return self.run(_refusal_recorder(request, refusal))


def _refusal_recorder(
    request: IdempotentRequest[Result], refusal: LedgerRuleViolation
) -> Callable[[UnitOfWork], RecordedResponse]:
    def record_refusal(uow: UnitOfWork) -> RecordedResponse:
        recorded = _claim(uow, request)
        if recorded is not None:
            return recorded
        response = request.render(refusal)
        _record(uow, request, response)
        return response

    return record_refusal


def _claim(uow: UnitOfWork, request: IdempotentRequest[Result]) -> RecordedResponse | None:
    """Takes the key for this transaction; returns the recorded response of an earlier request, if any."""
    if not uow.idempotency.try_claim(request.tenant_id, request.key):
        raise Conflict("a request with this Idempotency-Key is still being processed", code="idempotency_key_in_flight")
    existing = uow.idempotency.get(request.tenant_id, request.key)
    if existing is None:
        return None
    if existing.fingerprint != request.fingerprint:
        raise InvalidRequest("this Idempotency-Key was used with a different request", code="idempotency_key_reused")
    return existing.response


def _record(uow: UnitOfWork, request: IdempotentRequest[Result], response: RecordedResponse) -> None:
    uow.idempotency.add(
        IdempotencyRecord(
            tenant_id=request.tenant_id,
            key=request.key,
            fingerprint=request.fingerprint,
            response=response,
            recorded_at=uow.now(),
        )
    )
