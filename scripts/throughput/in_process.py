"""Our service in-process: threads posting single transfers through the container's domain services (no HTTP).

Uses ``container.transfer_writer().post(tenant_id, actor, draft)``: the coalescing writer (concurrent single transfers
share one transaction) unless LEDGER_COALESCING_ENABLED=false, which gives one transaction per transfer.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.container import Container
from ledger.domain.transfers import Transfer, TransferDraft
from scripts.throughput.workload import ACTOR, BenchLedger, transfer_draft

Post = Callable[[TransferDraft], Transfer]


@dataclass
class InProcessResult:
    name: str
    writer: str
    threads: int
    seconds: float
    posted: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def transfers_per_second(self) -> float:
        return self.posted / self.seconds if self.seconds else 0.0


def transfer_writer(container: Container, ledger: BenchLedger) -> tuple[str, Post]:
    """(name of what posts, how to post one draft)."""
    writer = container.transfer_writer()
    return type(writer).__name__, lambda draft: writer.post(ledger.tenant_id, ACTOR, draft)


def run_in_process(
    container: Container, ledger: BenchLedger, *, name: str, hot: bool, threads: int, seconds: float, seed: int
) -> InProcessResult:
    writer, post = transfer_writer(container, ledger)
    result = InProcessResult(name=name, writer=writer, threads=threads, seconds=seconds)
    lock = threading.Lock()
    start = threading.Barrier(threads + 1)
    ends = [0.0]

    def work(index: int) -> None:
        rng = random.Random(seed * 1_000 + index)
        posted = 0
        errors: Counter[str] = Counter()
        latencies: list[float] = []
        start.wait()
        while (began := time.monotonic()) < ends[0]:
            try:
                post(transfer_draft(ledger, rng, hot))
                posted += 1
                latencies.append((time.monotonic() - began) * 1000)
            except Exception as error:
                errors[f"{type(error).__name__}: {getattr(error, 'code', '')}"] += 1
        with lock:
            result.posted += posted
            result.errors.update(errors)
            result.latencies_ms.extend(latencies)

    workers = [threading.Thread(target=work, args=(index,), name=f"bench-{index}") for index in range(threads)]
    for worker in workers:
        worker.start()
    ends[0] = time.monotonic() + seconds
    start.wait()
    for worker in workers:
        worker.join()
    return result
