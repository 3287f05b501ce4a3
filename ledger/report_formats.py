"""A report as JSON, CSV and a printable HTML page: three renderings of one ``Report``, so they carry the same
figures. Money is written exactly (integer arithmetic, never a float): minor units in JSON, decimals in CSV and
HTML."""

from __future__ import annotations

import csv
import enum
import io
from datetime import date
from typing import Any

import jinja2

from ledger.domain.trust_reports import Cell, ColumnKind, Report, report_document


class ReportFormat(enum.StrEnum):
    JSON = "json"
    CSV = "csv"
    HTML = "html"


MEDIA_TYPES = {
    ReportFormat.JSON: "application/json",
    ReportFormat.CSV: "text/csv; charset=utf-8",
    ReportFormat.HTML: "text/html; charset=utf-8",
}


def format_money(amount: int, exponent: int) -> str:
    """1234567 with exponent 2 -> '12345.67'; exact for any size."""
    sign = "-" if amount < 0 else ""
    digits = str(abs(amount)).rjust(exponent + 1, "0")
    if exponent == 0:
        return sign + digits
    return f"{sign}{digits[:-exponent]}.{digits[-exponent:]}"


def _grouped(text: str) -> str:
    sign = "-" if text.startswith("-") else ""
    whole, _, fraction = text.lstrip("-").partition(".")
    grouped = f"{int(whole):,}"
    return sign + grouped + (f".{fraction}" if fraction else "")


def report_as_json(report: Report) -> dict[str, Any]:
    return report_document(report)


def _text(value: Cell, kind: ColumnKind, exponent: int, *, grouped: bool) -> str:
    if value is None:
        return ""
    if kind is ColumnKind.MONEY and isinstance(value, int):
        money = format_money(value, exponent)
        return _grouped(money) if grouped else money
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def report_as_csv(report: Report) -> str:
    """Sections one after another: a header block, the figures, then each table with its own header row and a
    totals row. Amounts are plain decimals in the ledger's currency (no thousands separators)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    exponent = report.currency_exponent
    writer.writerow(["report", report.kind, report.title])
    writer.writerow(["ledger", str(report.ledger_id), report.ledger_name])
    writer.writerow(["currency", report.currency])
    writer.writerow(
        [
            "period",
            "" if report.period_start is None else report.period_start.isoformat(),
            report.period_end.isoformat(),
        ]
    )
    for flag in report.flags:
        writer.writerow(["flag", flag])
    writer.writerow([])
    writer.writerow(["figure", "amount"])
    for figure in report.figures:
        writer.writerow([figure.label, format_money(figure.amount, exponent)])
    for table in report.tables:
        writer.writerow([])
        writer.writerow(["table", table.title])
        writer.writerow([column.name for column in table.columns])
        for row in table.rows:
            writer.writerow(
                [
                    _text(value, column.kind, exponent, grouped=False)
                    for value, column in zip(row, table.columns, strict=True)
                ]
            )
        if table.totals is not None:
            writer.writerow(
                ["TOTAL"]
                + [
                    _text(value, column.kind, exponent, grouped=False)
                    for value, column in zip(table.totals[1:], table.columns[1:], strict=True)
                ]
            )
    return buffer.getvalue()


_HTML = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ report.title }} | {{ report.ledger_name }}</title>
<style>
  @page { size: A4; margin: 16mm; }
  body { font-family: "Helvetica Neue", Arial, sans-serif; color: #111; margin: 24px; font-size: 13px; }
  h1 { font-size: 20px; margin: 0 0 4px; }
  .meta { color: #444; margin-bottom: 16px; }
  .flag { background: #fde2e1; border: 1px solid #c62828; color: #8e0000; padding: 6px 10px; margin: 6px 0;
          font-weight: bold; }
  table { border-collapse: collapse; width: 100%; margin: 8px 0 20px; }
  th, td { border-bottom: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
  th { background: #eef1f5; }
  td.money, th.money { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
  tr.totals td { font-weight: bold; border-top: 2px solid #333; }
  table.figures { width: auto; min-width: 50%; }
  h2 { font-size: 15px; margin: 18px 0 4px; }
  @media print { body { margin: 0; } th { background: #eee !important; } }
</style>
</head>
<body>
<h1>{{ report.title }}</h1>
<div class="meta">{{ report.ledger_name }} &middot; {{ report.currency }} &middot;
{% if report.period_start %}{{ report.period_start.isoformat() }} to {% else %}as of {% endif %}
{{- report.period_end.isoformat() }}
&middot; generated {{ report.generated_at.strftime("%Y-%m-%d %H:%M UTC") }}</div>
{% for flag in report.flags %}<div class="flag">{{ flag }}</div>{% endfor %}
<table class="figures">
{% for figure in report.figures %}<tr><th>{{ figure.label }}</th><td class="money">{{ money(figure.amount) }}</td></tr>
{% endfor %}</table>
{% for table in report.tables %}
<h2>{{ table.title }}</h2>
<table>
<thead><tr>{% for column in table.columns %}
<th class="{{ column.kind.value }}">{{ column.name }}</th>{% endfor %}
</tr></thead>
<tbody>
{% for row in table.rows %}<tr>{% for value in row %}{% set column = table.columns[loop.index0] %}
<td class="{{ column.kind.value }}">{{ cell(value, column.kind) }}</td>{% endfor %}
</tr>
{% else %}<tr><td colspan="{{ table.columns|length }}">no entries</td></tr>
{% endfor %}
{% if table.totals %}<tr class="totals">{% for value in table.totals %}{% set column = table.columns[loop.index0] %}
<td class="{{ column.kind.value }}">{{ cell(value, column.kind) }}</td>{% endfor %}
</tr>{% endif %}
</tbody>
</table>
{% endfor %}
</body>
</html>
"""
)


def report_as_html(report: Report) -> str:
    exponent = report.currency_exponent
    return _HTML.render(
        report=report,
        money=lambda amount: _grouped(format_money(amount, exponent)),
        cell=lambda value, kind: _text(value, kind, exponent, grouped=True),
    )


def render_report(report: Report, report_format: ReportFormat) -> str | dict[str, Any]:
    if report_format is ReportFormat.JSON:
        return report_as_json(report)
    if report_format is ReportFormat.CSV:
        return report_as_csv(report)
    return report_as_html(report)
