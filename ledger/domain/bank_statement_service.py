"""Use cases of bank statements: import (parse, check continuity, store, match), read, and what a three-way
reconciliation needs (the statement balance as of a date and the reconciling items on both sides).

For a reconciliation written elsewhere, the functions that take a unit of work (``resolve_bank_account``,
``statement_balance_in_unit_of_work``, ``unmatched_in_unit_of_work``) run inside the caller's own transaction, so
the book balances and the bank side can be read from one snapshot (``TransactionRunner.read_snapshot``).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta

from ledger.domain.bank_statements import (
    BankEntry,
    BankStatement,
    BankStatementLine,
    MatchingRules,
    ParsedStatement,
    StatementBalance,
    StatementMatch,
    UnmatchedItems,
    check_continuity,
    match_lines,
    parse_statement,
)
from ledger.domain.errors import InvalidRequest, NotFound
from ledger.domain.ledgers import Command, Page, check_page_size, parse_uuid_cursor, require_ledger
from ledger.domain.model import Account, AccountKind, Ledger
from ledger.domain.ports import UnitOfWork
from ledger.domain.transactions import TransactionRunner
from ledger.domain.transfer_service import check_actor, ledger_today

# A JSON body holds the CSV: the API's body limit applies first; this bounds what other callers hand in.
MAX_STATEMENT_CHARACTERS = 4 * 1024 * 1024


class BankStatementService:
    def __init__(self, runner: TransactionRunner, rules: MatchingRules | None = None) -> None:
        self._runner = runner
        self._rules = rules or MatchingRules()

    # -- import -------------------------------------------------------------------------------------------------

    def import_command(
        self,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        csv_text: str,
        actor: str,
        *,
        bank_account_id: uuid.UUID | None = None,
    ) -> Command[BankStatement]:
        """The import as a command (for ``TransactionRunner.run_idempotently``); see ``import_statement``."""
        check_actor(actor)
        if len(csv_text) > MAX_STATEMENT_CHARACTERS:
            raise InvalidRequest(
                f"a statement has at most {MAX_STATEMENT_CHARACTERS} characters", code="statement_too_large"
            )
        statement_id = uuid.uuid4()
        rules = self._rules

        def import_bank_statement(uow: UnitOfWork) -> BankStatement:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            bank = resolve_bank_account(uow, ledger, bank_account_id)
            parsed = parse_statement(csv_text, ledger.currency)
            # The bank account's row lock serializes imports (and matching) per bank account.
            uow.accounts.lock(tenant_id, [bank.id])
            now = uow.now()
            if parsed.period_end > ledger_today(ledger, now):
                raise InvalidRequest(
                    f"the statement period ends on {parsed.period_end}, after today in the ledger's time zone",
                    code="statement_in_future",
                )
            previous = uow.bank_statements.latest(tenant_id, bank.id)
            check_continuity(previous, parsed, ledger.currency)
            statement = _new_statement(statement_id, ledger, bank, parsed, previous, now=now, actor=actor)
            uow.bank_statements.add(statement)
            earlier = uow.bank_statements.unmatched_lines(tenant_id, bank.id, dated_on_or_before=None)
            matches = _match(uow, ledger, bank, [*earlier, *statement.lines], rules, actor=actor)
            by_line: dict[uuid.UUID, list[StatementMatch]] = {}
            for match in matches:
                by_line.setdefault(match.line_id, []).append(match)
            lines = tuple(
                BankStatementLine(
                    id=line.id,
                    statement_id=line.statement_id,
                    line_number=line.line_number,
                    date=line.date,
                    amount=line.amount,
                    reference=line.reference,
                    description=line.description,
                    matches=tuple(sorted(by_line.get(line.id, ()), key=lambda match: match.transfer_id)),
                )
                for line in statement.lines
            )
            return _with_lines(statement, lines)

        return import_bank_statement

    def import_statement(
        self,
        tenant_id: uuid.UUID,
        ledger_id: uuid.UUID,
        csv_text: str,
        actor: str,
        *,
        bank_account_id: uuid.UUID | None = None,
    ) -> BankStatement:
        """Imports a statement of the ledger's bank account (``bank_account_id``, or the ledger's only one) from
        CSV (format: ``ledger.domain.bank_statements``) and matches, in the same transaction, its lines and any
        earlier unmatched lines of the account to unmatched ledger entries. Returns the statement with its lines and
        their matches.

        Refusals, with nothing written: ``invalid_statement_line`` (the message names the line),
        ``statement_does_not_balance``, ``statement_in_future`` (InvalidRequest); ``statement_overlaps`` and
        ``statement_not_continuous`` (LedgerRuleViolation: they depend on the statements already imported);
        ``ledger_not_found``, ``account_not_found``, ``bank_account_missing``, ``bank_account_ambiguous``."""
        return self._runner.run(
            self.import_command(tenant_id, ledger_id, csv_text, actor, bank_account_id=bank_account_id)
        )

    def match_again_command(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, actor: str, *, bank_account_id: uuid.UUID | None = None
    ) -> Command[list[StatementMatch]]:
        """Matches every unmatched line of the bank account to the unmatched entries again (after a missing entry,
        such as a bank fee, was booked); returns the new matches."""
        check_actor(actor)
        rules = self._rules

        def match_again(uow: UnitOfWork) -> list[StatementMatch]:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            bank = resolve_bank_account(uow, ledger, bank_account_id)
            uow.accounts.lock(tenant_id, [bank.id])
            lines = uow.bank_statements.unmatched_lines(tenant_id, bank.id, dated_on_or_before=None)
            return _match(uow, ledger, bank, lines, rules, actor=actor)

        return match_again

    def match_again(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, actor: str, *, bank_account_id: uuid.UUID | None = None
    ) -> list[StatementMatch]:
        return self._runner.run(self.match_again_command(tenant_id, ledger_id, actor, bank_account_id=bank_account_id))

    # -- reads --------------------------------------------------------------------------------------------------

    def get_statement(self, tenant_id: uuid.UUID, statement_id: uuid.UUID) -> BankStatement:
        """With its lines (in file order) and each line's matches."""
        statement = self._runner.read_snapshot(lambda uow: uow.bank_statements.get(tenant_id, statement_id))
        if statement is None:
            raise NotFound("bank statement not found", code="bank_statement_not_found")
        return statement

    def list_statements(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, *, after: str | None = None, limit: int = 100
    ) -> Page[BankStatement]:
        """Statements of a ledger (all its bank accounts) by period start, without their lines."""
        check_page_size(limit)
        cursor = parse_uuid_cursor(after)

        def list_statements(uow: UnitOfWork) -> Sequence[BankStatement]:
            require_ledger(uow, tenant_id, ledger_id)
            position = None
            if cursor is not None:
                anchor = uow.bank_statements.get(tenant_id, cursor)
                if anchor is None or anchor.ledger_id != ledger_id:
                    raise InvalidRequest("the cursor is not one this service handed out", code="invalid_cursor")
                position = (anchor.period_start, anchor.id)
            return uow.bank_statements.list(tenant_id, ledger_id, after=position, limit=limit + 1)

        items = self._runner.read_snapshot(list_statements)
        if len(items) > limit:
            kept = items[:limit]
            return Page(items=kept, next_cursor=str(kept[-1].id))
        return Page(items=items, next_cursor=None)

    def statement_balance(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date, *, bank_account_id: uuid.UUID | None = None
    ) -> StatementBalance | None:
        """The closing balance of the bank account's latest statement whose period ends on or before ``as_of``,
        with that statement's id and end date; None when no statement ends by then."""

        def read(uow: UnitOfWork) -> StatementBalance | None:
            bank = resolve_bank_account(uow, require_ledger(uow, tenant_id, ledger_id), bank_account_id)
            return statement_balance_in_unit_of_work(uow, tenant_id, bank.id, as_of)

        return self._runner.read_snapshot(read)

    def unmatched(
        self, tenant_id: uuid.UUID, ledger_id: uuid.UUID, as_of: date, *, bank_account_id: uuid.UUID | None = None
    ) -> UnmatchedItems:
        """The reconciling items of the bank account as of ``as_of``, read in one snapshot; see
        ``unmatched_in_unit_of_work``."""

        def read(uow: UnitOfWork) -> UnmatchedItems:
            ledger = require_ledger(uow, tenant_id, ledger_id)
            bank = resolve_bank_account(uow, ledger, bank_account_id)
            return unmatched_in_unit_of_work(uow, ledger, bank.id, as_of)

        return self._runner.read_snapshot(read)


# ---------------------------------------------------------------------------------------------------------------
# Inside a caller's unit of work (a reconciliation)


def resolve_bank_account(uow: UnitOfWork, ledger: Ledger, bank_account_id: uuid.UUID | None) -> Account:
    """The named bank account of the ledger, or its only one. Refusals: ``account_not_found`` (no such bank
    account in this ledger), ``bank_account_missing``, ``bank_account_ambiguous`` (none named and not exactly one)."""
    banks = uow.accounts.of_kind(ledger.tenant_id, ledger.id, AccountKind.BANK)
    if bank_account_id is not None:
        for account in banks:
            if account.id == bank_account_id:
                return account
        raise NotFound("no bank account with that id in the ledger", code="account_not_found")
    if len(banks) != 1:
        raise InvalidRequest(
            f"the ledger has {len(banks)} bank accounts; name the one to use",
            code="bank_account_ambiguous" if banks else "bank_account_missing",
        )
    return banks[0]


def statement_balance_in_unit_of_work(
    uow: UnitOfWork, tenant_id: uuid.UUID, bank_account_id: uuid.UUID, as_of: date
) -> StatementBalance | None:
    """The bank's balance by its latest statement ending on or before ``as_of`` (None: no statement ends by
    then). Because statements are continuous, its closing balance covers every bank line dated up to its
    ``period_end``, which may be before ``as_of``."""
    statement = uow.bank_statements.latest_ending_on_or_before(tenant_id, bank_account_id, as_of)
    if statement is None:
        return None
    first = uow.bank_statements.first(tenant_id, bank_account_id)
    assert first is not None
    return StatementBalance(
        statement_id=statement.id,
        bank_account_id=bank_account_id,
        period_end=statement.period_end,
        closing_balance=statement.closing_balance,
        first_opening_balance=first.opening_balance,
        first_period_start=first.period_start,
    )


def unmatched_in_unit_of_work(
    uow: UnitOfWork, ledger: Ledger, bank_account_id: uuid.UUID, as_of: date
) -> UnmatchedItems:
    """The reconciling items of a bank account as of ``as_of``, against ``statement`` (the latest statement ending
    on or before ``as_of``; its ``period_end`` is the bank's cut-off E):

    - ``bank_lines``: lines dated on or before E that are not matched as of ``as_of``: never matched, or matched to
      entries of which one is effective after ``as_of`` (a deposit slip booked late). Bank items missing from the
      books: a bank fee not booked, a receipt not recorded, an amount entered wrongly.
    - ``ledger_entries``: entries on the bank account effective on or before ``as_of`` that are not matched to a
      line dated on or before E, with the same exception: deposits in transit (positive) and outstanding payments
      (negative), and entries the bank does not show at all.

    Amounts are signed from the bank's view (positive into the bank). Every matched group has equal sides, so with
    B the bank account's book balance effective on or before ``as_of``, S ``statement.closing_balance`` and O
    ``statement.first_opening_balance`` (the bank account's first imported statement opened with O; entries from
    before it never match a line, so they are listed here):

        B = S - O + ledger_entries_total - bank_lines_total

    Without a statement (``statement`` None) no bank line counts and every entry up to ``as_of`` is listed
    (B = ledger_entries_total). Lines are ordered by date, entries by effective date."""
    tenant_id = ledger.tenant_id
    balance = statement_balance_in_unit_of_work(uow, tenant_id, bank_account_id, as_of)
    if balance is None:
        entries = uow.bank_statements.entries_not_matched_by(
            tenant_id, bank_account_id, effective_to=as_of, line_dated_on_or_before=date.min
        )
        return UnmatchedItems(ledger.id, bank_account_id, as_of, None, (), tuple(entries))
    cut_off = balance.period_end
    lines = list(uow.bank_statements.unmatched_lines(tenant_id, bank_account_id, dated_on_or_before=cut_off))
    entries = list(
        uow.bank_statements.entries_not_matched_by(
            tenant_id, bank_account_id, effective_to=as_of, line_dated_on_or_before=cut_off
        )
    )
    # A group with an entry effective after as_of is not matched as of then: its line and its earlier entries count.
    for line, group in uow.bank_statements.lines_matched_to_entries_after(
        tenant_id, bank_account_id, dated_on_or_before=cut_off, effective_after=as_of
    ):
        lines.append(line)
        entries.extend(entry for entry in group if entry.effective_date <= as_of)
    lines.sort(key=lambda line: (line.date, line.statement_id.bytes, line.line_number))
    entries.sort(key=lambda entry: (entry.effective_date, entry.recorded_at, entry.transfer_id.bytes))
    return UnmatchedItems(ledger.id, bank_account_id, as_of, balance, tuple(lines), tuple(entries))


# ---------------------------------------------------------------------------------------------------------------


def _new_statement(
    statement_id: uuid.UUID,
    ledger: Ledger,
    bank: Account,
    parsed: ParsedStatement,
    previous: BankStatement | None,
    *,
    now: datetime,
    actor: str,
) -> BankStatement:
    lines = tuple(
        BankStatementLine(
            id=uuid.uuid4(),
            statement_id=statement_id,
            line_number=line.line_number,
            date=line.date,
            amount=line.amount,
            reference=line.reference,
            description=line.description,
        )
        for line in parsed.lines
    )
    return BankStatement(
        id=statement_id,
        tenant_id=ledger.tenant_id,
        ledger_id=ledger.id,
        bank_account_id=bank.id,
        period_start=parsed.period_start,
        period_end=parsed.period_end,
        opening_balance=parsed.opening_balance,
        closing_balance=parsed.closing_balance,
        line_count=len(lines),
        imported_at=now,
        actor=actor,
        previous_statement_id=None if previous is None else previous.id,
        lines=lines,
    )


def _with_lines(statement: BankStatement, lines: tuple[BankStatementLine, ...]) -> BankStatement:
    return replace(statement, lines=lines, matched_line_count=sum(1 for line in lines if line.matches))


def _match(
    uow: UnitOfWork,
    ledger: Ledger,
    bank: Account,
    lines: Sequence[BankStatementLine],
    rules: MatchingRules,
    *,
    actor: str,
) -> list[StatementMatch]:
    """Matches ``lines`` to the bank account's unmatched entries in their windows and records the matches."""
    if not lines:
        return []
    earliest = min(line.date for line in lines) - timedelta(days=rules.longest_days_before)
    latest = max(line.date for line in lines) + timedelta(days=rules.days_after)
    entries: Sequence[BankEntry] = uow.bank_statements.unmatched_entries(
        ledger.tenant_id, bank.id, effective_from=earliest, effective_to=latest
    )
    statement_of = {line.id: line.statement_id for line in lines}
    now = uow.now()
    matches = [
        StatementMatch(
            line_id=proposed.line_id,
            transfer_id=transfer_id,
            statement_id=statement_of[proposed.line_id],
            bank_account_id=bank.id,
            tenant_id=ledger.tenant_id,
            ledger_id=ledger.id,
            kind=proposed.kind,
            matched_at=now,
            actor=actor,
        )
        for proposed in match_lines(lines, entries, rules)
        for transfer_id in proposed.transfer_ids
    ]
    uow.bank_statements.add_matches(matches)
    return matches
