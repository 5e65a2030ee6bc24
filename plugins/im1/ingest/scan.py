"""Every quality check of one table's batch in one pass over its raw rows.

Great Expectations evaluates each expectation with its own query, so a table with 14 checks was
read 14 times (on a 35,000-patient bulk the checks took five times as long as the load). Here one
``select`` per table computes the row count and, with ``count(*) filter (where ...)``, the number of
unexpected values of every column check at once. Only a check that failed costs a second, small
query: the record numbers of its first few failing rows (never their values: this is patient data,
except for a check marked ``reveal``, on a column such as an organisation code).

The semantics are GX's, so the results can be recorded as GX validation results (see
:mod:`im1.ingest.quality`): a regex check ignores NULLs (as GX's ``..._match_regex`` do) and
reports ``unexpected_percent`` over the non-null values; ``..._not_be_null`` counts NULLs over all
rows; the row count compares with the rows the ledger counted in the delivered file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

if TYPE_CHECKING:  # pragma: no cover
    from im1.ingest.quality import Check

ROW_COUNT = "expect_table_row_count_to_equal"
MATCH = "expect_column_values_to_match_regex"
NOT_MATCH = "expect_column_values_to_not_match_regex"
NOT_NULL = "expect_column_values_to_not_be_null"
EXAMPLE_RECORDS = 5  # record numbers of failing rows shown per failed check


@dataclass
class Outcome:
    """One check's result, shaped like a GX expectation result."""

    check: Check
    success: bool
    result: dict
    records: list[int] = field(default_factory=list)  # failing rows' record numbers in the file (1 = first data row)
    values: list[str] = field(default_factory=list)  # distinct failing values, only for a check with ``reveal``


def unexpected(check: Check) -> sql.Composable:
    """The condition that makes a row unexpected for ``check``."""
    col = sql.Identifier(check.column)
    if check.expectation == MATCH:
        return sql.SQL("{c} is not null and {c} !~ {r}").format(c=col, r=sql.Literal(check.regex))
    if check.expectation == NOT_MATCH:
        return sql.SQL("{c} is not null and {c} ~ {r}").format(c=col, r=sql.Literal(check.regex))
    if check.expectation == NOT_NULL:
        return sql.SQL("{c} is null").format(c=col)
    raise ValueError(f"no single-pass form for {check.expectation}")


def scan(conn: psycopg.Connection, schema: str, table: str, batch_id: int, plan: Sequence[Check],
         expected_rows: int) -> list[Outcome]:
    """Evaluate ``plan`` on the rows of ``batch_id`` in ``schema.table`` with one query."""
    columns = [c for c in plan if c.expectation != ROW_COUNT]
    nulls = sorted({c.column for c in columns})
    exprs = [sql.SQL("count(*)")]
    exprs += [sql.SQL("count(*) filter (where {})").format(unexpected(c)) for c in columns]
    exprs += [sql.SQL("count(*) filter (where {} is null)").format(sql.Identifier(n)) for n in nulls]
    where = sql.SQL("_batch_id = {}").format(sql.Literal(int(batch_id)))
    rel = sql.Identifier(schema, table)
    row = conn.execute(sql.SQL("select {} from {} where {}").format(sql.SQL(", ").join(exprs), rel, where)).fetchone()
    total, bad, missing = row[0], row[1:1 + len(columns)], dict(zip(nulls, row[1 + len(columns):], strict=True))
    out: list[Outcome] = []
    counts = iter(bad)
    for check in plan:
        if check.expectation == ROW_COUNT:
            out.append(Outcome(check, total == expected_rows, {"observed_value": total}))
            continue
        n = next(counts)
        base = total if check.expectation == NOT_NULL else total - missing[check.column]
        result = {"element_count": total, "unexpected_count": n, "missing_count": missing[check.column],
                  "unexpected_percent": round(100.0 * n / base, 4) if base else 0.0}
        outcome = Outcome(check, n == 0, result)
        if n:
            outcome.records = [r[0] for r in conn.execute(
                sql.SQL("select _row_number from {} where {} and ({}) order by _row_number limit {}").format(
                    rel, where, unexpected(check), sql.Literal(EXAMPLE_RECORDS)))]
            if getattr(check, "reveal", False):  # a column without patient data (an organisation code)
                outcome.values = [r[0] for r in conn.execute(
                    sql.SQL("select distinct {c} from {} where {} and ({}) order by 1 limit {}").format(
                        rel, where, unexpected(check), sql.Literal(EXAMPLE_RECORDS), c=sql.Identifier(check.column)))]
        out.append(outcome)
    return out
