"""Smoke-test a running Trust Ledger Service over HTTP and print what it saw.

    python3 scripts/smoke_api.py --api-key "$TOKEN" [--base-url http://127.0.0.1:8000] [--deposits 50]

Opens a trust ledger with a bank account and two clients, posts deposits, a client transfer and a refused
overdraft, replays one write with its Idempotency-Key, and checks that the bank balance equals the clients' total.
Exits non-zero when anything is off. Every write uses a fresh key, so it is safe against a production-like service.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from typing import Any

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument("--deposits", type=int, default=50, help="how many deposits to time")
    parser.add_argument("--api-key", required=True, help="a write or admin key (ledger keys create)")
    arguments = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    latencies_ms: list[float] = []

    auth = {"Authorization": f"Bearer {arguments.api_key}"}
    with httpx.Client(base_url=arguments.base_url, timeout=10, headers=auth) as client:

        def post(path: str, body: dict[str, Any], key: str | None = None) -> httpx.Response:
            started = time.perf_counter()
            response = client.post(path, json=body, headers={"Idempotency-Key": key or f"smoke-{uuid.uuid4()}"})
            latencies_ms.append((time.perf_counter() - started) * 1000)
            return response

        def created(response: httpx.Response) -> dict[str, Any]:
            if response.status_code != 201:
                raise SystemExit(f"expected 201, got {response.status_code}: {response.text}")
            body: dict[str, Any] = response.json()
            return body

        ready = client.get("/readyz")
        print(f"readyz: {ready.status_code}")
        if ready.status_code != 200:
            return 1
        ledger = created(post("/v1/ledgers", {"name": f"Smoke trust {run}", "currency": "USD"}))
        accounts = f"/v1/ledgers/{ledger['id']}/accounts"
        bank = created(post(accounts, {"code": "bank", "name": "Trust bank", "kind": "bank"}))
        alice = created(post(accounts, {"code": "alice", "name": "Alice", "kind": "client"}))
        bob = created(post(accounts, {"code": "bob", "name": "Bob", "kind": "client"}))
        deposits = f"/v1/ledgers/{ledger['id']}/deposits"
        for number in range(arguments.deposits):
            created(post(deposits, {"client_account_id": alice["id"], "amount": 100 + number}))
        key = f"smoke-replay-{run}"
        first = created(
            post(
                f"/v1/ledgers/{ledger['id']}/client-transfers",
                {"from_client_account_id": alice["id"], "to_client_account_id": bob["id"], "amount": 250},
                key=key,
            )
        )
        replay = post(
            f"/v1/ledgers/{ledger['id']}/client-transfers",
            {"from_client_account_id": alice["id"], "to_client_account_id": bob["id"], "amount": 250},
            key=key,
        )
        refused = post(f"/v1/ledgers/{ledger['id']}/disbursements", {"client_account_id": bob["id"], "amount": 10**9})
        balances = {
            name: client.get(f"/v1/accounts/{account['id']}").json()["balances"]["posted"]
            for name, account in (("bank", bank), ("alice", alice), ("bob", bob))
        }

    problems = []
    if replay.status_code != 201 or replay.json() != first:
        problems.append("the replay did not return the first response")
    if refused.status_code != 422 or refused.json().get("code") != "insufficient_funds":
        problems.append(f"the overdraft was not refused as insufficient_funds: {refused.status_code}")
    if balances["bank"] != balances["alice"] + balances["bob"]:
        problems.append(f"bank {balances['bank']} != clients {balances['alice'] + balances['bob']}")
    print(f"balances (minor units): {balances}")
    print(f"{len(latencies_ms)} writes: p50 {statistics.median(latencies_ms):.1f} ms, max {max(latencies_ms):.1f} ms")
    for problem in problems:
        print(f"PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
