"""Worker functions for the multi-process concurrency tests (importable, so the "spawn" start method can run them).

Every process builds its own container from a database URL string (the only thing passed in, besides plain values),
reports "ready" once its engine has connected, waits for the common start signal, does its work and puts one result
dictionary (plain, picklable values only) on the queue.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
import uuid
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from typing import Any

import sqlalchemy as sa
from pydantic import SecretStr

START_TIMEOUT_SECONDS = 120.0
# A pause between snapshots, so the reader does not take a whole core from the writers on a small machine.
READ_PAUSE_SECONDS = 0.02
_ISOLATION_SQL = "SELECT current_setting('transaction_isolation') || '/' || current_setting('transaction_read_only')"

# One snapshot of the ledger's asset accounts: how many, their sum, their minimum, and the whole vector.
SNAPSHOT_SQL = sa.text(
    "SELECT count(*), coalesce(sum(posted_debits - posted_credits), 0), min(posted_debits - posted_credits),"
    " array_agg(posted_debits - posted_credits ORDER BY id)"
    " FROM accounts WHERE ledger_id = CAST(:ledger_id AS uuid) AND kind = 'asset'"
)


def _container(database_url: str, pool_size: int, writer_threads: int = 1) -> Any:
    from ledger.container import build_container
    from ledger.infrastructure.settings import LedgerSettings

    settings = LedgerSettings(
        _env_file=None,  # type: ignore[call-arg]
        environment="test",
        database_url=SecretStr(database_url),
        pool_size=pool_size,
        max_overflow=0,
        coalescing_writer_threads=writer_threads,
    )
    return build_container(settings)


def _warm_up(container: Any) -> None:
    with container.database_engine().connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def _report_failure(queue: Queue[dict[str, Any]], role: str, index: int) -> None:
    queue.put({"role": role, "index": index, "fatal": traceback.format_exc()})


def transfer_worker(
    index: int,
    database_url: str,
    ledger_id: str,
    account_ids: list[str],
    threads: int,
    transfers_per_thread: int,
    max_amount: int,
    seed: int,
    go: Event,
    queue: Queue[dict[str, Any]],
) -> None:
    """``threads`` threads each post ``transfers_per_thread`` random transfers between random pairs of the accounts
    through the process's coalescing writer, which groups the concurrent ones into shared transactions."""
    container = None
    try:
        import ledger
        from ledger.domain.errors import ServiceUnavailable
        from ledger.domain.model import DEFAULT_TENANT_ID
        from ledger.domain.transfers import LedgerRuleViolation, PostingDraft, Side, TransferDraft

        container = _container(database_url, pool_size=2, writer_threads=2)
        writer = container.transfer_writer()
        _warm_up(container)
        queue.put({"role": "writer", "index": index, "ready": True})
        if not go.wait(START_TIMEOUT_SECONDS):
            raise TimeoutError("the start signal never came")

        ledger_uuid = uuid.UUID(ledger_id)
        accounts = [uuid.UUID(account_id) for account_id in account_ids]
        acknowledged: list[str] = []
        refusals: dict[str, int] = {}
        unavailable: list[str] = []
        unexpected: list[str] = []
        outcome_lock = threading.Lock()

        def post_transfers(thread_index: int) -> None:
            rng = random.Random(seed * 100 + thread_index)
            for _ in range(transfers_per_thread):
                source, target = rng.sample(accounts, 2)
                amount = rng.randint(1, max_amount)
                draft = TransferDraft(
                    ledger_id=ledger_uuid,
                    postings=(
                        # Asset accounts are debit-normal: the credit takes money out of ``source``.
                        PostingDraft(account_id=target, side=Side.DEBIT, amount=amount),
                        PostingDraft(account_id=source, side=Side.CREDIT, amount=amount),
                    ),
                    description=f"worker {index}.{thread_index}",
                )
                try:
                    transfer = writer.post(DEFAULT_TENANT_ID, f"concurrency-worker-{index}", draft)
                except LedgerRuleViolation as refusal:
                    with outcome_lock:
                        refusals[refusal.code] = refusals.get(refusal.code, 0) + 1
                except ServiceUnavailable as error:
                    with outcome_lock:
                        unavailable.append(error.code)
                except Exception as error:  # every surprise is reported to the test, which fails on it
                    with outcome_lock:
                        unexpected.append(f"{type(error).__name__}: {error}")
                else:
                    with outcome_lock:
                        acknowledged.append(str(transfer.id))

        started = time.perf_counter()
        workers = [threading.Thread(target=post_transfers, args=(number,)) for number in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        elapsed = time.perf_counter() - started
        statistics = writer.statistics()
        queue.put(
            {
                "role": "writer",
                "index": index,
                "acknowledged": acknowledged,
                "refusals": refusals,
                "unavailable": unavailable,
                "unexpected": unexpected,
                "elapsed": elapsed,
                "groups": statistics.groups,
                "largest_group": statistics.largest_group,
                "checked_out": container.database_engine().pool.checkedout(),
                "ledger_package": ledger.__file__,
            }
        )
    except BaseException:
        _report_failure(queue, "writer", index)
    finally:
        if container is not None:
            container.shutdown_resources()


def snapshot_reader(
    index: int,
    database_url: str,
    ledger_id: str,
    expected_accounts: int,
    expected_total: int,
    go: Event,
    stop: Event,
    max_seconds: float,
    queue: Queue[dict[str, Any]],
) -> None:
    """Reads every balance of the ledger's asset accounts in one REPEATABLE READ READ ONLY snapshot, repeatedly,
    until ``stop`` is set (or ``max_seconds`` pass), and reports every read that did not match."""
    container = None
    try:
        container = _container(database_url, pool_size=1)
        engine: sa.Engine = container.database_engine()
        _warm_up(container)
        queue.put({"role": "reader", "index": index, "ready": True})
        if not go.wait(START_TIMEOUT_SECONDS):
            raise TimeoutError("the start signal never came")

        reads = 0
        mismatches: list[str] = []
        negative_reads = 0
        isolation_seen: set[str] = set()
        distinct_snapshots: set[tuple[int, ...]] = set()
        deadline = time.monotonic() + max_seconds
        while time.monotonic() < deadline:
            finished = stop.is_set()  # one more read after the writers are done
            with engine.connect() as connection:
                connection.execution_options(isolation_level="REPEATABLE READ")
                with connection.begin():
                    connection.exec_driver_sql("SET TRANSACTION READ ONLY")
                    isolation = connection.exec_driver_sql(_ISOLATION_SQL).scalar_one()
                    isolation_seen.add(str(isolation))
                    count, total, minimum, balances = connection.execute(SNAPSHOT_SQL, {"ledger_id": ledger_id}).one()
            reads += 1
            distinct_snapshots.add(tuple(balances or ()))
            if count != expected_accounts or total != expected_total:
                mismatches.append(f"read {reads}: {count} accounts summing to {total}: {balances}")
            if minimum is not None and minimum < 0:
                negative_reads += 1
            if finished:
                break
            time.sleep(READ_PAUSE_SECONDS)
        queue.put(
            {
                "role": "reader",
                "index": index,
                "reads": reads,
                "mismatches": mismatches[:20],
                "mismatch_count": len(mismatches),
                "negative_reads": negative_reads,
                "isolation_seen": sorted(isolation_seen),
                "distinct_snapshots": len(distinct_snapshots),
                "stopped_by_signal": stop.is_set(),
                "checked_out": engine.pool.checkedout(),
            }
        )
    except BaseException:
        _report_failure(queue, "reader", index)
    finally:
        if container is not None:
            container.shutdown_resources()
