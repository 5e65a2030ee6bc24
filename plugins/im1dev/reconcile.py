"""Reconcile the marts with the synthetic supplier's ground truth, exactly.

Each truth table (:func:`im1dev.synth.truth.compute`) maps to one mart whose columns carry the same
names. :func:`compare` reads the mart, keeps the practices the truth covers, and compares row
sets on the mart's grain: rows the truth has and the mart lacks (*missing*), rows only the mart
has (*extra*), and rows on both sides whose values differ (*different*). Columns the mart derives
from counts (e.g. ``prevalence_pct``) are derived from the truth's counts the same way and
compared too. :func:`report` prints ``MATCH`` or ``MISMATCH`` per mart with examples.

The demo and the end-to-end tests call both; a mart added later registers itself in ``MARTS``.
"""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TextIO

import psycopg
from psycopg import sql


def pct(numerator: int, denominator: int) -> Decimal | None:
    """numerator / denominator x 100 rounded half away from zero to 2 decimals (SQL round(numeric, 2))."""
    if not denominator:
        return None
    return (Decimal(100 * numerator) / Decimal(denominator)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


@dataclass(frozen=True)
class Mart:
    """How one truth table maps to a mart: the relation, its grain and the compared values."""

    relation: str  # schema.table
    key: tuple[str, ...]
    values: tuple[str, ...]
    # columns the mart derives from others; computed for the truth rows before comparing
    derived: dict[str, Callable[[dict], object]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.relation.split(".")[-1]


MARTS: dict[str, Mart] = {
    "list_size": Mart(
        "marts.mart_list_size",
        key=("practice_code", "snapshot_date", "sex", "age_band"),
        values=("patients",),
    ),
    "list_size_single_age": Mart(
        "marts.mart_list_size_single_age",
        key=("practice_code", "snapshot_date", "sex", "age"),
        values=("patients",),
    ),
    "qof_registers": Mart(
        "marts.mart_qof_registers",
        key=("practice_code", "reference_date", "register"),
        values=("reference_kind", "qof_year", "register_count", "list_size_all_ages", "list_size_age_group",
                "prevalence_pct"),
        derived={"prevalence_pct": lambda r: pct(r["register_count"], r["list_size_age_group"])},
    ),
    "qof_indicators": Mart(
        "marts.mart_qof_indicators",
        key=("practice_code", "reference_date", "indicator"),
        values=("reference_kind", "qof_year", "eligible", "numerator", "denominator", "pca_count",
                "achievement_pct", "pca_rate_pct"),
        derived={"achievement_pct": lambda r: pct(r["numerator"], r["denominator"]),
                 "pca_rate_pct": lambda r: pct(r["pca_count"], r["denominator"] + r["pca_count"])},
    ),
}


@dataclass
class Diff:
    mart: str
    rows: int = 0  # rows compared on the mart side
    expected: int = 0  # rows in the truth
    missing: dict[tuple, tuple] = field(default_factory=dict)
    extra: dict[tuple, tuple] = field(default_factory=dict)
    different: dict[tuple, tuple[tuple, tuple]] = field(default_factory=dict)  # key -> (want, got)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not (self.missing or self.extra or self.different)

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.ok:
            return f"{self.rows} rows"
        parts = [f"{len(v)} {k}" for k, v in (("missing", self.missing), ("extra", self.extra),
                                               ("different", self.different)) if v]
        return f"{', '.join(parts)} (of {self.expected} expected rows, {self.rows} in the mart)"


def _norm(v: object) -> object:
    """One representation per value on both sides: dates as ISO text, numbers as int or Decimal."""
    if isinstance(v, dt.datetime):
        return v.isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        v = Decimal(repr(v))
    if isinstance(v, Decimal):
        return int(v) if v == v.to_integral_value() else v.normalize()
    return v


def _truth_rows(mart: Mart, rows: Iterable[dict]) -> dict[tuple, tuple]:
    out: dict[tuple, tuple] = {}
    for r in rows:
        r = {**r, **{c: f(r) for c, f in mart.derived.items()}}
        key = tuple(_norm(r[c]) for c in mart.key)
        if key in out:
            raise ValueError(f"truth for {mart.name} has two rows for {key}")
        out[key] = tuple(_norm(r[c]) for c in mart.values)
    return out


def _mart_rows(conn: psycopg.Connection, mart: Mart, practices: set[str]) -> dict[tuple, tuple]:
    schema, table = mart.relation.split(".")
    cols = [*mart.key, *mart.values]
    q = sql.SQL("select {} from {} where practice_code = any(%s)").format(
        sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(schema, table))
    out: dict[tuple, tuple] = {}
    for row in conn.execute(q, (sorted(practices),)):
        key = tuple(_norm(v) for v in row[: len(mart.key)])
        if key in out:
            raise ValueError(f"{mart.relation} has two rows for {key}")
        out[key] = tuple(_norm(v) for v in row[len(mart.key):])
    return out


def compare_one(conn: psycopg.Connection, table: str, truth_rows: list[dict], practices: set[str]) -> Diff:
    mart = MARTS[table]
    diff = Diff(mart.name)
    want = _truth_rows(mart, truth_rows)
    diff.expected = len(want)
    try:
        with conn.transaction():
            got = _mart_rows(conn, mart, practices)
    except psycopg.Error as e:
        diff.error = f"cannot read {mart.relation}: {str(e).strip().splitlines()[0]}"
        return diff
    diff.rows = len(got)
    for k, v in want.items():
        if k not in got:
            diff.missing[k] = v
        elif got[k] != v:
            diff.different[k] = (v, got[k])
    diff.extra = {k: v for k, v in got.items() if k not in want}
    return diff


def practices_of(truth_tables: dict[str, list[dict]]) -> set[str]:
    return {r["practice_code"] for rows in truth_tables.values() for r in rows if "practice_code" in r}


def compare(conn: psycopg.Connection, truth_tables: dict[str, list[dict]], *,
            practices: Iterable[str] | None = None) -> dict[str, Diff]:
    """Compare every mart that has a truth table; keyed by mart name (e.g. ``mart_list_size``).

    Only the practices the truth covers are read from the marts (``practices`` overrides), so a
    warehouse that also holds other feeds reconciles cleanly. Truth tables without a mart are
    skipped.
    """
    scope = set(practices) if practices is not None else practices_of(truth_tables)
    return {MARTS[t].name: compare_one(conn, t, rows, scope) for t, rows in truth_tables.items() if t in MARTS}


def _fmt(mart: str, key: tuple, values: tuple) -> str:
    cols = next(m for m in MARTS.values() if m.name == mart)
    return "/".join(map(str, key)) + ": " + ", ".join(f"{c}={v}" for c, v in zip(cols.values, values, strict=True))


def report(diffs: dict[str, Diff], *, out: TextIO | None = None, examples: int = 5) -> bool:
    """Print MATCH/MISMATCH per mart (with a few examples of each difference); True when all match."""
    out = out or sys.stdout
    for name, d in diffs.items():
        print(f"  {'MATCH' if d.ok else 'MISMATCH':<9} {name:<24} {d.summary()}", file=out)
        if d.ok or d.error:
            continue
        mart = next(m for m in MARTS.values() if m.name == name)
        for k, v in list(d.missing.items())[:examples]:
            print(f"      missing   {_fmt(name, k, v)}", file=out)
        for k, v in list(d.extra.items())[:examples]:
            print(f"      extra     {_fmt(name, k, v)}", file=out)
        for k, (want, got) in list(d.different.items())[:examples]:
            changes = ", ".join(f"{c} want {w} got {g}" for c, w, g in zip(mart.values, want, got, strict=True)
                                if w != g)
            print(f"      different {'/'.join(map(str, k))}: {changes}", file=out)
    return all(d.ok for d in diffs.values())


# -- activity marts (appointments, prescribing) --------------------------------------------------
# Registered beside the clinical marts above; kept as one block so the two branches merge simply.

ACTIVITY_MARTS: dict[str, Mart] = {
    "appointments": Mart(
        "marts.mart_appointments",
        key=("practice_code", "appointment_month", "gpad_status", "gpad_mode", "hcp_type", "lead_time_band"),
        values=("appointments",),
    ),
    "prescribing": Mart(
        "marts.mart_prescribing",
        key=("practice_code", "issue_month", "dmd_code"),
        values=("drug", "is_mapped", "bnf_presentation_code", "bnf_chemical_code", "bnf_paragraph_code",
                "bnf_section_code", "bnf_chapter_code", "items", "quantity", "list_size", "items_per_1000"),
    ),
    "prescribing_bnf": Mart(
        "marts.mart_prescribing_bnf",
        key=("practice_code", "issue_month", "bnf_level", "bnf_code"),
        values=("bnf_name", "items", "quantity", "list_size", "items_per_1000"),
    ),
}
MARTS.update(ACTIVITY_MARTS)


def compare_activity(conn: psycopg.Connection, truth_tables: dict[str, list[dict]], *,
                     practices: Iterable[str] | None = None) -> dict[str, Diff]:
    """:func:`compare` for the activity marts only (mart_appointments, mart_prescribing, mart_prescribing_bnf)."""
    return compare(conn, {t: rows for t, rows in truth_tables.items() if t in ACTIVITY_MARTS}, practices=practices)
