"""Bank statements of a trust bank account: the CSV format, its parser, continuity between statements, and the
matching of statement lines to ledger entries. Pure: no I/O (the use cases are in ``bank_statement_service``).

The CSV format (docs/bank-statements.md has the full description and an example)::

    period_start,2026-10-01
    period_end,2026-10-31
    opening_balance,10000.00
    closing_balance,12450.00
    date,amount,reference,description
    2026-10-02,1250.00,DEP-1001,Deposit slip 1001
    2026-10-05,-300.00,CHQ-1187,Cheque 1187

Four ``name,value`` rows (each exactly once, in any order), then the header row ``date,amount,reference,description``,
then one row per bank line. Dates are ``YYYY-MM-DD``. Amounts and balances are decimals with exactly the currency's
number of fraction digits (``1250.00`` for USD, ``1250`` for JPY, ``1.250`` for BHD), read exactly (no floats); a
line's amount is positive for money into the bank (a receipt) and negative for money out (a payment). Blank rows
are skipped; fields are trimmed. Any bad row refuses the whole statement, naming its line (1-based).

Matching: a bank line matches unmatched entries of the ledger's bank account with the same signed amount (receipts
are bank debits, payments bank credits) whose effective date lies in a window around the line's date; a positive
line may match a set of receipts that add up to it (a deposit slip). See ``match_lines``.
"""

from __future__ import annotations

import csv
import enum
import io
import itertools
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from ledger.domain.errors import InvalidRequest
from ledger.domain.money import MAX_AMOUNT_MINOR_UNITS, Currency
from ledger.domain.transfers import MAX_DESCRIPTION_LENGTH, LedgerRuleViolation, TransferKind

STATEMENT_FIELDS = ("period_start", "period_end", "opening_balance", "closing_balance")
LINE_COLUMNS = ("date", "amount", "reference", "description")
MAX_STATEMENT_LINES = 10_000
MAX_STATEMENT_DAYS = 366
MAX_REFERENCE_LENGTH = 100
# Opening and closing balances: far beyond any real account, well inside PostgreSQL's bigint.
MAX_BALANCE_MINOR_UNITS = 10**17
# A reference shorter than this is only compared for equality, never looked for inside a description.
MIN_CONTAINED_REFERENCE_LENGTH = 3

_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


class InvalidStatementLine(InvalidRequest):
    """A row of the CSV cannot be read; ``line_number`` is 1-based, as an editor shows it."""

    def __init__(self, line_number: int, problem: str) -> None:
        super().__init__(f"line {line_number}: {problem}", code="invalid_statement_line")
        self.line_number = line_number


# ---------------------------------------------------------------------------------------------------------------
# What a statement holds


@dataclass(frozen=True, slots=True)
class ParsedLine:
    line_number: int
    date: date
    amount: int
    reference: str
    description: str


@dataclass(frozen=True, slots=True)
class ParsedStatement:
    period_start: date
    period_end: date
    opening_balance: int
    closing_balance: int
    lines: tuple[ParsedLine, ...]


class MatchKind(enum.StrEnum):
    # One entry, same amount, dated within the window.
    AMOUNT_AND_DATE = "amount_and_date"
    # One entry, same amount, and the references agree (also within the wider reference window).
    REFERENCE = "reference"
    # Several receipts that add up to one bank line.
    DEPOSIT_SLIP = "deposit_slip"


@dataclass(frozen=True, slots=True)
class StatementMatch:
    """One ledger entry matched to one bank line. An entry matches at most one line of its bank account, ever; a
    line matches one entry, or several receipts (a deposit slip: one row per receipt, all with the same line)."""

    line_id: uuid.UUID
    transfer_id: uuid.UUID
    statement_id: uuid.UUID
    bank_account_id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    kind: MatchKind
    matched_at: datetime
    actor: str


@dataclass(frozen=True, slots=True)
class BankStatementLine:
    id: uuid.UUID
    statement_id: uuid.UUID
    line_number: int
    date: date
    # Signed minor units from the bank's view: positive into the bank, negative out of it.
    amount: int
    reference: str
    description: str
    # Filled on reads; empty when the line is unmatched.
    matches: tuple[StatementMatch, ...] = ()

    @property
    def matched(self) -> bool:
        return bool(self.matches)


@dataclass(frozen=True, slots=True)
class BankStatement:
    id: uuid.UUID
    tenant_id: uuid.UUID
    ledger_id: uuid.UUID
    bank_account_id: uuid.UUID
    period_start: date
    period_end: date
    opening_balance: int
    closing_balance: int
    line_count: int
    imported_at: datetime
    actor: str
    # The statement this one continues (None for the first statement of the bank account).
    previous_statement_id: uuid.UUID | None = None
    # Filled on reads: how many of its lines are matched (now), and the lines themselves where asked for.
    matched_line_count: int = 0
    lines: tuple[BankStatementLine, ...] = ()

    @property
    def unmatched_line_count(self) -> int:
        return self.line_count - self.matched_line_count


@dataclass(frozen=True, slots=True)
class BankEntry:
    """A ledger entry as the bank account sees it: one posting on the bank account with its entry's header."""

    transfer_id: uuid.UUID
    kind: TransferKind
    effective_date: date
    recorded_at: datetime
    # Signed minor units from the bank's view: a bank debit (a receipt: deposit, firm deposit) is positive, a bank
    # credit (a payment: disbursement, fee, bank charge, returned deposit) negative.
    amount: int
    description: str
    # The entry's ``metadata["reference"]`` (a string or an integer), if it has one.
    reference: str | None
    # The line it is matched to, where the read reports it.
    matched_line_id: uuid.UUID | None = None


def entry_reference(metadata: Mapping[str, Any]) -> str | None:
    value = metadata.get("reference")
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    return text or None


# ---------------------------------------------------------------------------------------------------------------
# Parsing


def format_amount(minor_units: int, currency: Currency) -> str:
    """The CSV spelling of an amount: 123456 cents -> '1234.56'."""
    sign = "-" if minor_units < 0 else ""
    whole, fraction = divmod(abs(minor_units), 10**currency.exponent)
    return f"{sign}{whole}.{fraction:0{currency.exponent}d}" if currency.exponent else f"{sign}{whole}"


def parse_statement(text: str, currency: Currency) -> ParsedStatement:
    """Reads the whole statement or raises ``InvalidStatementLine`` (code ``invalid_statement_line``) naming the
    first bad line, or ``InvalidRequest`` (code ``statement_does_not_balance``) when the closing balance is not the
    opening balance plus the lines."""
    if "\x00" in text:
        raise InvalidStatementLine(text[: text.index("\x00")].count("\n") + 1, "contains a NUL character (not text)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidStatementLine(text[: error.start].count("\n") + 1, "not valid Unicode text") from None
    text = text.removeprefix("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    fields: dict[str, tuple[int, str]] = {}
    frame: ParsedStatement | None = None
    lines: list[ParsedLine] = []
    last_line = 0
    while True:
        first_line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            raise InvalidStatementLine(first_line, f"not valid CSV ({error})") from None
        last_line = reader.line_num
        cells = [cell.strip() for cell in row]
        if not any(cells):
            continue
        if frame is not None:
            if len(lines) == MAX_STATEMENT_LINES:
                raise InvalidStatementLine(first_line, f"a statement has at most {MAX_STATEMENT_LINES} lines")
            lines.append(_parse_line(first_line, cells, currency, frame))
        elif [cell.casefold() for cell in _without_trailing_blanks(cells)] == list(LINE_COLUMNS):
            frame = _frame(first_line, fields, currency)
        else:
            _read_preamble_row(first_line, cells, fields)
    if frame is None:
        if not fields:
            raise InvalidStatementLine(max(last_line, 1), "the statement is empty")
        raise InvalidStatementLine(max(last_line, 1), f"no header row {','.join(LINE_COLUMNS)}")
    total = frame.opening_balance + sum(line.amount for line in lines)
    if total != frame.closing_balance:
        raise InvalidRequest(
            f"the statement does not balance: opening balance {format_amount(frame.opening_balance, currency)} "
            f"plus the lines ({format_amount(total - frame.opening_balance, currency)}) is "
            f"{format_amount(total, currency)}, but the closing balance is "
            f"{format_amount(frame.closing_balance, currency)}",
            code="statement_does_not_balance",
        )
    return replace(frame, lines=tuple(lines))


def _without_trailing_blanks(cells: list[str]) -> list[str]:
    end = len(cells)
    while end > 0 and not cells[end - 1]:
        end -= 1
    return cells[:end]


def _read_preamble_row(line_number: int, cells: list[str], fields: dict[str, tuple[int, str]]) -> None:
    name = cells[0].casefold()
    if name == LINE_COLUMNS[0]:
        raise InvalidStatementLine(line_number, f"the header row must be exactly {','.join(LINE_COLUMNS)}")
    if name not in STATEMENT_FIELDS:
        raise InvalidStatementLine(
            line_number,
            f"expected one of {', '.join(STATEMENT_FIELDS)} or the header row {','.join(LINE_COLUMNS)}; "
            f"found {cells[0][:40]!r}",
        )
    values = _without_trailing_blanks(cells[1:])
    if len(values) != 1:
        raise InvalidStatementLine(line_number, f"{name} takes exactly one value")
    if name in fields:
        raise InvalidStatementLine(line_number, f"{name} is given twice (first on line {fields[name][0]})")
    fields[name] = (line_number, values[0])


def _frame(header_line: int, fields: Mapping[str, tuple[int, str]], currency: Currency) -> ParsedStatement:
    """The statement's period and balances, read when the header row arrives (its lines are checked against it)."""
    missing = [name for name in STATEMENT_FIELDS if name not in fields]
    if missing:
        raise InvalidStatementLine(header_line, f"{', '.join(missing)} must come before the header row")
    start_line, start_text = fields["period_start"]
    end_line, end_text = fields["period_end"]
    period_start = _parse_date(start_line, "period_start", start_text)
    period_end = _parse_date(end_line, "period_end", end_text)
    if period_end < period_start:
        raise InvalidStatementLine(end_line, f"period_end {period_end} is before period_start {period_start}")
    if (period_end - period_start).days >= MAX_STATEMENT_DAYS:
        raise InvalidStatementLine(end_line, f"a statement covers at most {MAX_STATEMENT_DAYS} days")
    balances = {
        name: _parse_amount(fields[name][0], name, fields[name][1], currency, limit=MAX_BALANCE_MINOR_UNITS)
        for name in ("opening_balance", "closing_balance")
    }
    return ParsedStatement(
        period_start=period_start,
        period_end=period_end,
        opening_balance=balances["opening_balance"],
        closing_balance=balances["closing_balance"],
        lines=(),
    )


def _parse_line(line_number: int, cells: list[str], currency: Currency, frame: ParsedStatement) -> ParsedLine:
    if len(_without_trailing_blanks(cells)) > len(LINE_COLUMNS) or len(cells) < len(LINE_COLUMNS):
        raise InvalidStatementLine(
            line_number, f"expected {len(LINE_COLUMNS)} fields ({','.join(LINE_COLUMNS)}), found {len(cells)}"
        )
    date_text, amount_text, reference, description = cells[: len(LINE_COLUMNS)]
    line_date = _parse_date(line_number, "date", date_text)
    if not frame.period_start <= line_date <= frame.period_end:
        raise InvalidStatementLine(
            line_number,
            f"date {line_date} is outside the statement period {frame.period_start} to {frame.period_end}",
        )
    amount = _parse_amount(line_number, "amount", amount_text, currency, limit=MAX_AMOUNT_MINOR_UNITS)
    if amount == 0:
        raise InvalidStatementLine(line_number, "amount must not be zero")
    if len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidStatementLine(line_number, f"reference is longer than {MAX_REFERENCE_LENGTH} characters")
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise InvalidStatementLine(line_number, f"description is longer than {MAX_DESCRIPTION_LENGTH} characters")
    return ParsedLine(line_number, line_date, amount, reference, description)


def _parse_date(line_number: int, name: str, text: str) -> date:
    if not _DATE.match(text):
        raise InvalidStatementLine(line_number, f"{name} {text[:40]!r} is not a date (YYYY-MM-DD)")
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidStatementLine(line_number, f"{name} {text!r} is not a date (YYYY-MM-DD)") from None


def _parse_amount(line_number: int, name: str, text: str, currency: Currency, *, limit: int) -> int:
    """Exactly: '-1250.00' -> -125000 (USD). The fraction must have exactly the currency's digits."""
    exponent = currency.exponent
    fraction = rf"\.[0-9]{{{exponent}}}" if exponent else ""
    if not re.fullmatch(rf"-?[0-9]{{1,18}}{fraction}", text):
        spelling = "a whole number" if exponent == 0 else f"a decimal with exactly {exponent} digits after the point"
        example = format_amount(-125_000 if exponent else -1_250, currency)
        raise InvalidStatementLine(
            line_number, f"{name} {text[:40]!r} is not a number in {currency.code} ({spelling}, e.g. {example})"
        )
    value = int(text.replace(".", ""))
    if abs(value) > limit:
        raise InvalidStatementLine(line_number, f"{name} {text} is out of range")
    return value


# ---------------------------------------------------------------------------------------------------------------
# Continuity


def check_continuity(previous: BankStatement | None, statement: ParsedStatement, currency: Currency) -> None:
    """A statement continues the bank account's latest one: it starts after that one ends, and opens with its
    closing balance. Refusals depend on the stored state, so they are ledger-rule refusals."""
    if previous is None:
        return
    if statement.period_start <= previous.period_end:
        raise LedgerRuleViolation(
            f"the statement starts on {statement.period_start}, but the previous statement of this bank account "
            f"runs from {previous.period_start} to {previous.period_end}: statements must follow one another",
            code="statement_overlaps",
        )
    if statement.opening_balance != previous.closing_balance:
        raise LedgerRuleViolation(
            f"the opening balance {format_amount(statement.opening_balance, currency)} does not continue the "
            f"closing balance {format_amount(previous.closing_balance, currency)} of the previous statement "
            f"(ending {previous.period_end})",
            code="statement_not_continuous",
        )


# ---------------------------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True, slots=True)
class MatchingRules:
    """Where a ledger entry may be dated relative to the bank line it matches. Books usually record a receipt
    before the bank credits it, so the window reaches further back than forward."""

    days_before: int = 5
    days_after: int = 2
    # An entry whose reference agrees with the line's may be older still (a cheque cashed weeks after it was
    # written).
    reference_days_before: int = 45
    # A deposit slip: at most this many receipts for one bank line, chosen among the closest candidates.
    max_slip_receipts: int = 6
    max_slip_candidates: int = 24
    # Subsets examined per bank line before the slip search gives up on it (a count, so the result is
    # deterministic whatever the machine's speed).
    slip_search_budget: int = 50_000

    def __post_init__(self) -> None:
        if min(self.days_before, self.days_after, self.reference_days_before) < 0:
            raise ValueError("matching windows are not negative")
        if self.max_slip_receipts < 2 or self.max_slip_candidates < self.max_slip_receipts:
            raise ValueError("a deposit slip has at least two receipts, chosen among at least as many candidates")

    @property
    def longest_days_before(self) -> int:
        return max(self.days_before, self.reference_days_before)


@dataclass(frozen=True, slots=True)
class ProposedMatch:
    line_id: uuid.UUID
    transfer_ids: tuple[uuid.UUID, ...]
    kind: MatchKind


@dataclass(frozen=True, slots=True)
class _Pair:
    line: BankStatementLine
    entry: BankEntry
    agree: bool

    @property
    def distance(self) -> int:
        return abs((self.line.date - self.entry.effective_date).days)


def references_agree(line: BankStatementLine, entry: BankEntry) -> bool:
    """The line's reference equals the entry's (case-insensitive), or either reference (of at least three
    characters) appears as a whole word in the other side's reference or description: bank line "1187" and entry
    reference "CHQ-1187" agree, "118" and "1187" do not."""
    line_reference = line.reference.strip().casefold()
    reference = (entry.reference or "").casefold()
    if line_reference and line_reference == reference:
        return True
    return any(
        _contains_word(text, word)
        for text, word in (
            (entry.reference or "", line_reference),
            (entry.description, line_reference),
            (line.reference, reference),
            (line.description, reference),
        )
    )


def _contains_word(text: str, word: str) -> bool:
    if len(word) < MIN_CONTAINED_REFERENCE_LENGTH:
        return False
    return re.search(rf"(?<![0-9a-z]){re.escape(word)}(?![0-9a-z])", text.casefold()) is not None


def _in_window(line: BankStatementLine, entry: BankEntry, rules: MatchingRules, *, agree: bool) -> bool:
    before = rules.longest_days_before if agree else rules.days_before
    return line.date - timedelta(days=before) <= entry.effective_date <= line.date + timedelta(days=rules.days_after)


def _line_order(line: BankStatementLine) -> tuple[date, bytes, int]:
    return (line.date, line.statement_id.bytes, line.line_number)


def _entry_order(entry: BankEntry) -> tuple[date, datetime, bytes]:
    return (entry.effective_date, entry.recorded_at, entry.transfer_id.bytes)


def match_lines(
    lines: Sequence[BankStatementLine], entries: Sequence[BankEntry], rules: MatchingRules | None = None
) -> list[ProposedMatch]:
    """Matches unmatched bank lines to unmatched ledger entries of the same bank account. Deterministic: the same
    lines and entries give the same matches, whatever order they come in.

    1. One line to one entry with the same signed amount, the entry dated from ``days_before`` days before the line
       to ``days_after`` days after it (``reference_days_before`` when the references agree). All such pairs are
       taken greedily in this order: references agreeing first, then the closest dates, then the earlier line,
       then the earlier entry; a pair is taken when neither side is taken yet.
    2. A positive line still unmatched to a set of 2 to ``max_slip_receipts`` unmatched receipts in its window
       whose amounts add up to it (a deposit slip). Receipts whose references agree with the line's are tried on
       their own first; otherwise the closest ``max_slip_candidates`` receipts. The smallest set wins, then the one
       with more agreeing references, then the closest dates. Lines are taken in date order.
    """
    rules = rules or MatchingRules()
    free_lines = {line.id: line for line in lines if not line.matches}
    free_entries = {entry.transfer_id: entry for entry in entries if entry.matched_line_id is None}
    proposed: list[ProposedMatch] = []

    pairs = []
    by_amount: dict[int, list[BankEntry]] = {}
    for entry in free_entries.values():
        by_amount.setdefault(entry.amount, []).append(entry)
    for line in free_lines.values():
        for entry in by_amount.get(line.amount, ()):
            agree = references_agree(line, entry)
            if _in_window(line, entry, rules, agree=agree):
                pairs.append(_Pair(line, entry, agree))
    pairs.sort(key=lambda pair: (not pair.agree, pair.distance, _line_order(pair.line), _entry_order(pair.entry)))
    for pair in pairs:
        if pair.line.id in free_lines and pair.entry.transfer_id in free_entries:
            del free_lines[pair.line.id]
            del free_entries[pair.entry.transfer_id]
            kind = MatchKind.REFERENCE if pair.agree else MatchKind.AMOUNT_AND_DATE
            proposed.append(ProposedMatch(pair.line.id, (pair.entry.transfer_id,), kind))

    for line in sorted(free_lines.values(), key=_line_order):
        if line.amount <= 0:
            continue
        receipts = [entry for entry in free_entries.values() if entry.amount > 0]
        chosen = _deposit_slip(line, receipts, rules)
        if chosen is not None:
            for entry in chosen:
                del free_entries[entry.transfer_id]
            transfer_ids = tuple(entry.transfer_id for entry in sorted(chosen, key=_entry_order))
            proposed.append(ProposedMatch(line.id, transfer_ids, MatchKind.DEPOSIT_SLIP))
    return proposed


def _deposit_slip(
    line: BankStatementLine, receipts: Sequence[BankEntry], rules: MatchingRules
) -> tuple[BankEntry, ...] | None:
    candidates = []
    for entry in receipts:
        agree = references_agree(line, entry)
        if entry.amount < line.amount and _in_window(line, entry, rules, agree=agree):
            candidates.append(_Pair(line, entry, agree))
    candidates.sort(key=lambda pair: (not pair.agree, pair.distance, _entry_order(pair.entry)))
    agreeing = [pair for pair in candidates if pair.agree]
    if len(agreeing) >= 2:
        chosen = _smallest_subset(line.amount, agreeing[: rules.max_slip_candidates], rules)
        if chosen is not None:
            return chosen
    return _smallest_subset(line.amount, candidates[: rules.max_slip_candidates], rules)


def _smallest_subset(target: int, candidates: Sequence[_Pair], rules: MatchingRules) -> tuple[BankEntry, ...] | None:
    """The preferred set of 2 to ``max_slip_receipts`` candidates adding up to ``target`` (all amounts positive):
    depth-first over the amounts in descending order, pruned by what the remaining candidates can still reach."""
    if len(candidates) < 2 or sum(pair.entry.amount for pair in candidates) < target:
        return None
    ordered = sorted(range(len(candidates)), key=lambda index: (-candidates[index].entry.amount, index))
    amounts = [candidates[index].entry.amount for index in ordered]
    prefix = [0, *itertools.accumulate(amounts)]
    budget = [rules.slip_search_budget]

    def search(start: int, left: int, remaining: int, chosen: list[int], found: list[tuple[int, ...]]) -> None:
        for position in range(start, len(amounts) - left + 1):
            budget[0] -= 1
            if budget[0] < 0:
                return
            # The largest sum still reachable from here falls short: so does every later start.
            if prefix[position + left] - prefix[position] < remaining:
                return
            # The smallest sum still reachable overshoots: later starts reach only smaller sums, keep going.
            if prefix[len(amounts)] - prefix[len(amounts) - left] > remaining:
                return
            amount = amounts[position]
            if amount > remaining:
                continue
            chosen.append(ordered[position])
            if left == 1:
                if amount == remaining:
                    found.append(tuple(chosen))
            else:
                search(position + 1, left - 1, remaining - amount, chosen, found)
            chosen.pop()

    for size in range(2, min(rules.max_slip_receipts, len(candidates)) + 1):
        found: list[tuple[int, ...]] = []
        search(0, size, target, [], found)
        if found:
            best = min(
                found,
                key=lambda indices: (
                    -sum(candidates[index].agree for index in indices),
                    sum(candidates[index].distance for index in indices),
                    sorted(indices),
                ),
            )
            return tuple(candidates[index].entry for index in best)
        if budget[0] < 0:
            return None
    return None


# ---------------------------------------------------------------------------------------------------------------
# What a reconciliation needs


@dataclass(frozen=True, slots=True)
class StatementBalance:
    """The bank's balance by its latest statement ending on or before a date."""

    statement_id: uuid.UUID
    bank_account_id: uuid.UUID
    period_end: date
    closing_balance: int
    # Where the bank account's imported statements begin: its first statement's opening balance and start.
    first_opening_balance: int
    first_period_start: date


@dataclass(frozen=True, slots=True)
class UnmatchedItems:
    """The reconciling items of one bank account as of a date (see ``BankStatementService.unmatched``)."""

    ledger_id: uuid.UUID
    bank_account_id: uuid.UUID
    as_of: date
    statement: StatementBalance | None
    bank_lines: tuple[BankStatementLine, ...] = field(default_factory=tuple)
    ledger_entries: tuple[BankEntry, ...] = field(default_factory=tuple)

    @property
    def bank_lines_total(self) -> int:
        return sum(line.amount for line in self.bank_lines)

    @property
    def ledger_entries_total(self) -> int:
        return sum(entry.amount for entry in self.ledger_entries)
