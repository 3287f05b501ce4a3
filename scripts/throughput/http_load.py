"""The external load generator: its own process, aiohttp, against a served ledger on this machine.

    API key in the environment (BENCH_API_KEY), everything else as arguments; prints one JSON object on stdout.

    python -m scripts.throughput.http_load --base-url http://127.0.0.1:PORT --ledger-id ID --namespace N \
        --mode closed|open|batch [--hot] --seconds S [--concurrency C] [--rate R] [--batch-size 100]

closed: C connections each posting a single transfer as soon as the previous one is answered (maximum throughput).
open: single transfers sent at a fixed rate R whatever the answers (open loop); a request's latency runs from its
scheduled send time, so a stall delays every request scheduled behind it (no coordinated omission).
batch: C connections posting independent batches of --batch-size transfers (counted in transfers).
Every request carries a unique Idempotency-Key. Requests sent during the first --warmup seconds are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from scripts.throughput.workload import ACCOUNTS, MAX_TRANSFER_AMOUNT, account_uuid, transfer_pair

REQUEST_TIMEOUT_SECONDS = 30.0
OPEN_LOOP_CONNECTIONS = 512


@dataclass
class LoadFigures:
    requests: int = 0
    ok: int = 0
    transfers: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)

    def record(self, status: str, latency_ms: float, transfers: int, sample: str = "") -> None:
        self.requests += 1
        self.statuses[status] += 1
        self.latencies_ms.append(latency_ms)
        if status.startswith("2"):
            self.ok += 1
            self.transfers += transfers
        elif status not in self.samples:
            self.samples[status] = sample[:300]


class Load:
    def __init__(self, arguments: argparse.Namespace) -> None:
        self.arguments = arguments
        self.token = os.environ["BENCH_API_KEY"]
        self.rng = random.Random(arguments.seed)
        self.prefix = f"{arguments.mode}-{'hot' if arguments.hot else 'uniform'}-{uuid.uuid4().hex[:12]}"
        self.sequence = 0
        self.answered = 0  # warm-up included
        self.figures = LoadFigures()
        self.counting_from = 0.0
        self.ends = 0.0

    def key(self) -> str:
        self.sequence += 1
        return f"{self.prefix}-{self.sequence}"

    def postings(self, debited: int, credited: int) -> list[dict[str, Any]]:
        amount = self.rng.randint(1, MAX_TRANSFER_AMOUNT)
        namespace = self.arguments.namespace
        return [
            {"account_id": str(account_uuid(namespace, debited)), "side": "debit", "amount": amount},
            {"account_id": str(account_uuid(namespace, credited)), "side": "credit", "amount": amount},
        ]

    def single(self) -> tuple[str, dict[str, Any], int]:
        debited, credited = transfer_pair(self.rng, self.arguments.hot, self.arguments.accounts)
        body = {
            "ledger_id": self.arguments.ledger_id,
            "postings": self.postings(debited, credited),
            "description": "bench",
        }
        return "/v1/transfers", body, 1

    def batch(self) -> tuple[str, dict[str, Any], int]:
        size = self.arguments.batch_size
        transfers = [
            {
                "postings": self.postings(*transfer_pair(self.rng, self.arguments.hot, self.arguments.accounts)),
                "description": "bench",
            }
            for _ in range(size)
        ]
        path = f"/v1/ledgers/{self.arguments.ledger_id}/transfers/batch"
        return path, {"mode": "independent", "transfers": transfers}, size

    async def send(self, session: aiohttp.ClientSession, scheduled: float) -> None:
        path, body, transfers = self.batch() if self.arguments.mode == "batch" else self.single()
        headers = {"Idempotency-Key": self.key()}
        sample = ""
        try:
            async with session.post(path, json=body, headers=headers) as response:
                text = await response.text()
                status = str(response.status)
                if response.status == 201 and self.arguments.mode == "batch":
                    refused = int(json.loads(text).get("refused", 0))
                    transfers -= refused
                    if refused:
                        self.figures.statuses["batch items refused"] += refused
                if not status.startswith("2"):
                    sample = text
        except (aiohttp.ClientError, TimeoutError) as error:
            status, sample = type(error).__name__, str(error)
        self.answered += 1
        if scheduled >= self.counting_from:
            self.figures.record(status, (time.monotonic() - scheduled) * 1000, transfers, sample)

    async def closed_loop(self, session: aiohttp.ClientSession) -> None:
        async def connection() -> None:
            while (now := time.monotonic()) < self.ends:
                await self.send(session, now)

        await asyncio.gather(*(connection() for _ in range(self.arguments.concurrency)))

    async def open_loop(self, session: aiohttp.ClientSession) -> None:
        interval = 1.0 / self.arguments.rate
        started = time.monotonic()
        pending: set[asyncio.Task[None]] = set()
        number = 0
        while (scheduled := started + number * interval) < self.ends:
            delay = scheduled - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.send(session, scheduled))
            pending.add(task)
            task.add_done_callback(pending.discard)
            number += 1
        if pending:
            await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_SECONDS)

    async def run(self) -> dict[str, Any]:
        arguments = self.arguments
        limit = OPEN_LOOP_CONNECTIONS if arguments.mode == "open" else arguments.concurrency
        connector = aiohttp.TCPConnector(limit=limit)
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        headers = {"Authorization": f"Bearer {self.token}"}
        async with aiohttp.ClientSession(
            base_url=arguments.base_url, connector=connector, timeout=timeout, headers=headers
        ) as session:
            started = time.monotonic()
            self.counting_from = started + arguments.warmup
            self.ends = self.counting_from + arguments.seconds
            await (self.open_loop(session) if arguments.mode == "open" else self.closed_loop(session))
            elapsed = time.monotonic() - self.counting_from
        usage = resource.getrusage(resource.RUSAGE_SELF)
        figures = self.figures
        latencies = sorted(figures.latencies_ms)
        return {
            "mode": arguments.mode,
            "hot": arguments.hot,
            "concurrency": arguments.concurrency,
            "rate": arguments.rate,
            "seconds": round(elapsed, 3),
            "requests": figures.requests,
            "requests_including_warmup": self.answered,
            "ok": figures.ok,
            "non_2xx": figures.requests - figures.ok,
            "statuses": dict(figures.statuses),
            "error_samples": figures.samples,
            "requests_per_second": figures.ok / elapsed if elapsed > 0 else 0.0,
            "transfers_per_second": figures.transfers / elapsed if elapsed > 0 else 0.0,
            "p50_ms": percentile(latencies, 0.50),
            "p99_ms": percentile(latencies, 0.99),
            "max_ms": latencies[-1] if latencies else None,
            # Near ``seconds + warmup`` would mean the generator, not the service, was the limit.
            "generator_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        }


def percentile(ordered: list[float], fraction: float) -> float | None:
    """Nearest rank."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--ledger-id", required=True)
    parser.add_argument("--namespace", type=int, required=True)
    parser.add_argument("--accounts", type=int, default=ACCOUNTS)
    parser.add_argument("--mode", choices=["closed", "open", "batch"], required=True)
    parser.add_argument("--hot", action="store_true")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    figures = asyncio.run(Load(parser.parse_args()).run())
    json.dump(figures, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
