"""`ledger demo`: a small trust ledger worked through the domain services, printed as tables."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from ledger.container import Container
from ledger.domain.errors import DomainError
from ledger.domain.model import DEFAULT_TENANT_ID, Account, AccountKind, Ledger
from ledger.domain.money import Currency
from ledger.domain.trust_operations import TrustOperation, TrustOperationKind

DEMO_ACTOR = "operator:demo"


def format_amount(minor_units: int, currency: Currency, *, with_code: bool = True) -> str:
    """Integer arithmetic only: 123456 cents -> '1,234.56'."""
    sign = "-" if minor_units < 0 else ""
    whole, fraction = divmod(abs(minor_units), 10**currency.exponent)
    text = f"{whole:,}"
    if currency.exponent:
        text += f".{fraction:0{currency.exponent}d}"
    return f"{sign}{text} {currency.code}" if with_code else f"{sign}{text}"


def run_demo(container: Container, console: Console) -> Ledger:
    ledgers, accounts = container.ledger_service(), container.account_service()
    trust, transfers = container.trust_service(), container.transfer_service()
    tenant = DEFAULT_TENANT_ID
    suffix = uuid.uuid4().hex[:6]
    ledger = ledgers.open_ledger(
        tenant, name=f"Demo client trust {suffix}", currency="USD", time_zone="America/New_York"
    )
    bank = accounts.open_account(tenant, ledger.id, code="bank", name="Trust bank account", kind=AccountKind.BANK)
    accounts.open_account(
        tenant, ledger.id, code="firm", name="Firm funds for bank charges", kind=AccountKind.FIRM_FUNDS
    )
    clients = {
        name: accounts.open_account(tenant, ledger.id, code=code, name=name, kind=AccountKind.CLIENT)
        for code, name in (("c-1001", "Smith estate"), ("c-1002", "Garcia purchase"), ("c-1003", "Okafor settlement"))
    }
    smith, garcia, okafor = clients.values()

    def operate(
        kind: TrustOperationKind,
        amount: int,
        description: str,
        client: uuid.UUID | None = None,
        to_client: uuid.UUID | None = None,
    ) -> None:
        operation = TrustOperation(
            kind=kind,
            ledger_id=ledger.id,
            amount=amount,
            description=description,
            client_account_id=client,
            to_client_account_id=to_client,
        )
        try:
            trust.execute(tenant, DEMO_ACTOR, operation)
            console.print(f"  posted   {kind.value:<16} {format_amount(amount, ledger.currency):>16}  {description}")
        except DomainError as refusal:
            console.print(
                f"  [bold red]refused[/]  {kind.value:<16} {format_amount(amount, ledger.currency):>16}  {description}"
                f"  -> {refusal.code}: {refusal.message}"
            )

    console.print(f"[bold]Trust ledger[/] {ledger.name} ({ledger.id})")
    operate(TrustOperationKind.FIRM_DEPOSIT, 100_00, "firm money to cover bank charges")
    operate(TrustOperationKind.DEPOSIT, 25_000_00, "retainer", client=smith.id)
    operate(TrustOperationKind.DEPOSIT, 180_000_00, "purchase deposit", client=garcia.id)
    operate(TrustOperationKind.DEPOSIT, 7_500_00, "settlement proceeds", client=okafor.id)
    operate(TrustOperationKind.DISBURSEMENT, 1_250_00, "court filing fees", client=smith.id)
    operate(TrustOperationKind.EARNED_FEE, 4_000_00, "invoice 2026-118 earned", client=smith.id)
    operate(
        TrustOperationKind.CLIENT_TRANSFER,
        500_00,
        "share of a joint expense",
        client=garcia.id,
        to_client=okafor.id,
    )
    operate(TrustOperationKind.DISBURSEMENT, 170_000_00, "closing payment to seller", client=garcia.id)
    operate(TrustOperationKind.BANK_CHARGE, 25_00, "monthly account fee")
    # Okafor holds 8,000.00: the pooled bank account holds far more, but other clients' money is not Okafor's.
    operate(TrustOperationKind.DISBURSEMENT, 9_000_00, "overdraft attempt", client=okafor.id)

    listing = accounts.list_accounts(tenant, ledger.id, limit=100).items
    console.print(balances_table(ledger, listing))
    statement = transfers.statement(tenant, smith.id, limit=100).items
    table = Table(title=f"Statement of {smith.name} ({ledger.currency.code})")
    for column in ("version", "effective", "kind", "description", "debit", "credit", "balance"):
        table.add_column(column, justify="right" if column in {"version", "debit", "credit", "balance"} else "left")
    for line in statement:
        amount = format_amount(line.amount, ledger.currency, with_code=False)
        table.add_row(
            str(line.account_version),
            line.effective_date.isoformat(),
            line.kind.value,
            line.description,
            amount if line.side.value == "debit" else "",
            amount if line.side.value == "credit" else "",
            format_amount(line.balance_after, ledger.currency, with_code=False),
        )
    console.print(table)
    bank_now = accounts.get_account(tenant, bank.id)
    others = sum(account.posted_balance for account in listing if account.kind is not AccountKind.BANK)
    console.print(
        f"bank book balance {format_amount(bank_now.posted_balance, ledger.currency)} = clients + firm funds "
        f"{format_amount(others, ledger.currency)}: {'holds' if bank_now.posted_balance == others else 'BROKEN'}"
    )
    return ledger


def balances_table(ledger: Ledger, accounts: Sequence[Account]) -> Table:
    table = Table(title=f"Balances of {ledger.name} ({ledger.currency.code})")
    for column in ("code", "name", "kind", "posted", "available"):
        table.add_column(column, justify="right" if column in {"posted", "available"} else "left")
    for account in sorted(accounts, key=lambda account: (account.kind.value, account.code)):
        table.add_row(
            account.code,
            account.name,
            account.kind.value,
            format_amount(account.posted_balance, ledger.currency, with_code=False),
            format_amount(account.available_balance, ledger.currency, with_code=False),
        )
    return table
