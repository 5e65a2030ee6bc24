"""Quality checks on each raw batch, generated from the extract specification, recorded by Great Expectations.

For every table of a loaded batch (ledger file status ``loaded``) the checks are:

* ``expect_table_row_count_to_equal``: the rows in raw for the batch equal the rows the ledger
  counted in the delivered file (catches a lost or doubled load);
* ``expect_column_values_to_match_regex`` on every ``uniqueidentifier`` column: a braced upper-case
  GUID or empty (EMIS sends empty for NULL);
* ``expect_column_values_to_match_regex`` on every ``date`` (``yyyy-MM-dd``) and ``datetime``
  (``yyyy-MM-dd[ HH:mm[:ss[.fff]]]``) column, or empty;
* ``expect_column_values_to_not_be_null`` and ``..._to_not_match_regex('^\\s*$')`` on the table's
  keys (``specs.EMIS_KEYS``).

A header-only file gets the row-count check only (the column checks cannot fail on no rows).

TPP (SystmOne) batches get, per loaded file (:func:`plan_tpp_checks`, from ``tpp_columns.csv``):
the row count; ``RowIdentifier`` not null and numeric; ``IDOrganisationVisibleTo`` equal to the
organisation the batch was loaded for (a misrouted or multi-practice delivery fails here);
every ``Date*`` column ``dd MMM yyyy[ HH:mm[:ss]]`` or empty; ``RemovedData`` 0/1 (or
true/false) or empty.

The column lists and types come from ``include/specs/emis_columns.csv`` for the schema version
detected in the file's header; nothing is written per table by hand.

Each table's checks are evaluated in one pass over its rows (:mod:`im1.ingest.scan`: one query
computes the row count and every column's unexpected count), with GX semantics; the outcomes are
stored as GX expectation suites and validation results, so the Data Docs show every check as if GX
had run it (issue 15: one query per expectation made the checks five times slower than the load).
No value from the rows is stored or shown anywhere: a failed check names the table, the column,
the count and the record numbers of the first failing rows.

GX Core is imported only inside :func:`check_batches` (a heavy import: never at DAG-parse time).
The GX project is ``include/gx/great_expectations.yml``, copied at run time to
``<state dir>/gx/gx/``, where the suites, every validation result and the Data Docs site live
(readable by their owner only). Every expectation result is also stored in ``ingest.quality_checks``.
Validation results stored by an older version (which kept up to five failing values per check)
are scrubbed once and the Data Docs rebuilt from them (:func:`_scrub_stored_results`).

A batch that fails any check is **quarantined**: its rows are deleted from raw in the same
transaction that records the reason (the failed expectations) in ``ingest.batches``, so raw never
holds a batch that failed its checks, and releasing the batch loads (and checks) it again.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql

from im1 import paths, specs
from im1.ingest import ledger, scan
from im1.warehouse.bootstrap import RAW_SCHEMAS

log = logging.getLogger(__name__)

GUID_OR_EMPTY = r"^(\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\})?$"
GUID = r"^\{[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\}$"
DATE_OR_EMPTY = r"^([0-9]{4}-[0-9]{2}-[0-9]{2})?$"
DATETIME_OR_EMPTY = r"^([0-9]{4}-[0-9]{2}-[0-9]{2}([ T][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?)?$"
BLANK = r"^\s*$"
TPP_DATE_OR_EMPTY = (r"^([0-9]{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) [0-9]{4}"
                     r"( [0-9]{2}:[0-9]{2}(:[0-9]{2})?)?)?$")
TPP_ROW_ID = r"^[0-9]+$"
TPP_FLAG_OR_EMPTY = r"^(0|1|true|false|True|False|TRUE|FALSE)?$"
DATASOURCE = "im1_raw"
# result keys that can carry values from the checked rows (removed from results stored by older versions)
VALUE_KEYS = ("partial_unexpected_list", "partial_unexpected_counts", "partial_unexpected_index_list",
              "unexpected_list", "unexpected_index_list", "unexpected_rows", "unexpected_index_query", "details")


@dataclass(frozen=True)
class Check:
    """One planned expectation (plain data, so the plan can be tested without GX)."""

    expectation: str  # GX expectation type, e.g. expect_column_values_to_match_regex
    column: str | None = None  # raw column name
    regex: str | None = None
    why: str = ""
    what: str | None = None  # how a failing value is described (default: from the expectation type)
    # the column holds no patient data (an organisation code): a failure may show its values
    reveal: bool = False

    def build(self, gxe, rows: int):
        """This check as a GX expectation (``rows``: the rows the ledger counted in the file)."""
        if self.expectation == "expect_table_row_count_to_equal":
            return gxe.ExpectTableRowCountToEqual(value=rows)
        if self.expectation == "expect_column_values_to_match_regex":
            return gxe.ExpectColumnValuesToMatchRegex(column=self.column, regex=self.regex)
        if self.expectation == "expect_column_values_to_not_match_regex":
            return gxe.ExpectColumnValuesToNotMatchRegex(column=self.column, regex=self.regex)
        if self.expectation == "expect_column_values_to_not_be_null":
            return gxe.ExpectColumnValuesToNotBeNull(column=self.column)
        raise ValueError(self.expectation)


def plan_checks(table: str, version: str = specs.LATEST_EMIS_VERSION) -> list[Check]:
    """The expectations for one EMIS table, derived from the spec's column types and keys."""
    t = specs.emis_table(table)
    # key columns that must always be filled (a nullable key part, e.g. ParentCodeID, may be empty)
    keys = {specs.raw_column_name(c.name) for c in t.columns(version)
            if c.name in (t.keys or ()) and c.nullable is not True}
    checks = [Check("expect_table_row_count_to_equal", why="rows in raw = rows in the delivered file (ledger)")]
    for c in t.columns(version):
        name = c.raw_name
        # a known erratum in the printed spec, where one is recorded, wins over the printed type
        kind = getattr(c, "effective_type", c.data_type).lower()
        if kind == "uniqueidentifier":
            checks.append(Check("expect_column_values_to_match_regex", name, GUID if name in keys else GUID_OR_EMPTY,
                                "braced upper-case GUID" + ("" if name in keys else " or empty")))
        elif kind == "date":
            checks.append(Check("expect_column_values_to_match_regex", name, DATE_OR_EMPTY, "ISO date or empty"))
        elif kind == "datetime":
            checks.append(Check("expect_column_values_to_match_regex", name, DATETIME_OR_EMPTY,
                                "ISO date(-time) or empty"))
        if name in keys:
            checks.append(Check("expect_column_values_to_not_be_null", name, why="key"))
            if kind != "uniqueidentifier":  # the GUID regex above already refuses empty keys
                checks.append(Check("expect_column_values_to_not_match_regex", name, BLANK, "key not empty"))
    return checks


def plan_tpp_checks(table: str, organisation: str | None = None) -> list[Check]:
    """The expectations for one TPP file loaded for ``organisation``, from the TPP column list."""
    cols = specs.tpp_files()[table].columns
    checks = [Check("expect_table_row_count_to_equal", why="rows in raw = rows in the delivered file (ledger)")]
    for key in specs.TPP_KEY:
        if key not in cols:
            continue
        name = specs.raw_column_name(key)
        checks.append(Check("expect_column_values_to_not_be_null", name, why="key"))
        if key == "RowIdentifier":
            checks.append(Check("expect_column_values_to_match_regex", name, TPP_ROW_ID, "numeric record key",
                                what="non-numeric"))
        elif organisation and organisation != ledger.SHARED:
            checks.append(Check("expect_column_values_to_match_regex", name, f"^{re.escape(organisation)}$",
                                f"the organisation the batch was loaded for ({organisation})",
                                what=f"not {organisation} (the organisation this feed delivers)", reveal=True))
    for c in cols:
        if c.startswith("Date"):
            checks.append(Check("expect_column_values_to_match_regex", specs.raw_column_name(c), TPP_DATE_OR_EMPTY,
                                "TPP date dd MMM yyyy[ HH:mm[:ss]] or empty"))
    if "RemovedData" in cols:
        checks.append(Check("expect_column_values_to_match_regex", "removeddata", TPP_FLAG_OR_EMPTY,
                            "deletion flag 0/1 or empty", what="not a 0/1 flag"))
    return checks


@dataclass
class BatchQuality:
    batch_id: int
    organisation: str
    batch_key: str
    success: bool
    rows: int
    failures: list[str] = field(default_factory=list)
    checks: int = 0

    def to_dict(self) -> dict:
        return {"batch_id": self.batch_id, "organisation": self.organisation, "batch_key": self.batch_key,
                "success": self.success, "rows": self.rows, "failures": self.failures, "checks": self.checks}


class QualityError(RuntimeError):
    """At least one batch failed its checks (and was quarantined)."""

    def __init__(self, results: list[BatchQuality]):
        self.results = results
        bad = [r for r in results if not r.success]
        super().__init__(
            "quality check failed, batch(es) quarantined: "
            + " | ".join(f"batch {r.batch_id} ({r.batch_key}, {r.organisation}): {'; '.join(r.failures)}"
                         for r in bad)
        )


def gx_root() -> Path:
    return paths.state_dir() / "gx"


def data_docs_index(root: Path | None = None) -> Path:
    return (root or gx_root()) / "gx" / "uncommitted" / "data_docs" / "local_site" / "index.html"


@contextlib.contextmanager
def _gx_lock(root: Path) -> Iterator[None]:
    """GX's file stores are not safe for concurrent writers: one check at a time per state dir.
    Everything GX writes meanwhile is readable by the owner only."""
    paths.private_dir(root)
    with paths.owner_only(), open(root / ".lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


_SCRUBBED = ".no-values"  # marker: stored results written by an older version have been scrubbed


def _scrub_stored_results(root: Path) -> bool:
    """Remove row values from validation results stored by an older version (which asked GX for up
    to five unexpected values per check) and delete the Data Docs rendered from them; once per GX
    project. True if it did so (the Data Docs must then be built in full)."""
    project = root / "gx"
    marker = project / "uncommitted" / _SCRUBBED
    if marker.exists():
        return False
    for path in (project / "uncommitted" / "validations").rglob("*.json"):
        doc = json.loads(path.read_text())
        for er in doc.get("results", []) if isinstance(doc, dict) else []:
            for key in VALUE_KEYS:
                (er.get("result") or {}).pop(key, None)
        path.write_text(json.dumps(doc))
        path.chmod(0o600)
    shutil.rmtree(project / "uncommitted" / "data_docs", ignore_errors=True)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    return True


def _context(root: Path):
    import great_expectations as gx

    project = root / "gx"
    project.mkdir(parents=True, exist_ok=True)
    # the versioned config, fresh each time (so no data source from an earlier run lingers); the
    # checkpoint and validation definitions point at those data sources, so they go too (they are
    # rebuilt for every batch). Suites, validation results and Data Docs are kept.
    shutil.copyfile(paths.include_dir() / "gx" / "great_expectations.yml", project / "great_expectations.yml")
    for stale in ("checkpoints", "validation_definitions"):
        shutil.rmtree(project / stale, ignore_errors=True)
    (project / "uncommitted").mkdir(exist_ok=True)
    if not (project / "uncommitted" / "validations").is_dir():
        (project / "uncommitted" / _SCRUBBED).touch()  # a new project: nothing to scrub
    return gx.get_context(mode="file", project_root_dir=str(root))


def rebuild_data_docs(root: Path | None = None) -> Path | None:
    """Rebuild the Data Docs site from the stored validation results; its index, or None if there are none."""
    root = root or gx_root()
    if not (root / "gx" / "uncommitted" / "validations").is_dir():
        return None
    with _gx_lock(root):
        ctx = _context(root)
        _scrub_stored_results(root)
        ctx.build_data_docs()
    return data_docs_index(root)


def _describe(table: str, outcome: scan.Outcome, expected_rows: int | None) -> str:
    """A failed check in words: the table, the column, how many rows and which records - never a value
    (the rows are patient data; the record numbers let an operator find them in the archived file)."""
    check = outcome.check
    if check.expectation == scan.ROW_COUNT:
        return f"{table}: {outcome.result.get('observed_value')} row(s) in raw but {expected_rows} in the file"
    what = check.what or {
        scan.MATCH: "badly formatted",
        scan.NOT_MATCH: "empty",
        scan.NOT_NULL: "null",
    }.get(check.expectation, check.expectation)
    n = outcome.result.get("unexpected_count")
    where = ""
    if outcome.records:
        more = ", ..." if n > len(outcome.records) else ""
        where = f" (record{'s' if n > 1 else ''} {', '.join(map(str, outcome.records))}{more} of the file)"
    shown = f", e.g. {', '.join(repr(v) for v in outcome.values)}" if outcome.values else ""
    return f"{table}.{check.column}: {n} {what} value(s){shown}{where}"


def check_batches(batch_ids: list[int], conninfo: str, *, root: Path | None = None) -> list[BatchQuality]:
    """Run the spec-driven checks on loaded raw batches; record every result in the ledger and in GX.

    Batches already checked (``quality_status`` set) or not loaded are skipped. Each table's checks
    are evaluated in one pass (:mod:`im1.ingest.scan`); the results are stored as Great
    Expectations validation results (suites, validation store, Data Docs) and in
    ``ingest.quality_checks``. A failed batch is quarantined (its raw rows removed) and
    :class:`QualityError` is raised after every batch is checked.
    """
    root = root or gx_root()
    results: list[BatchQuality] = []
    todo: list[ledger.BatchRow] = []
    with psycopg.connect(conninfo) as conn:
        for bid in batch_ids:
            row = ledger.get_batch(conn, bid)
            if row.status == ledger.LOADED and row.quality_status is None:
                todo.append(row)
    if not todo:
        return results
    t0 = time.monotonic()
    import great_expectations  # noqa: F401 - heavy: imported here, never at DAG-parse time

    log.info("GX imported in %.1fs", time.monotonic() - t0)
    with _gx_lock(root):
        ctx = _context(root)
        full_build = _scrub_stored_results(root)
        result_ids: list = []
        for row in todo:
            results.append(_check_one(ctx, row, conninfo, result_ids))
        if full_build:
            ctx.build_data_docs()
        elif result_ids:
            # one incremental Data Docs build for everything validated here
            ctx.build_data_docs(resource_identifiers=result_ids)
    bad = [r for r in results if not r.success]
    if bad:
        raise QualityError(results)
    return results


def _check_one(ctx, row: ledger.BatchRow, conninfo: str, result_ids: list) -> BatchQuality:
    from great_expectations.core.run_identifier import RunIdentifier

    t0 = time.monotonic()
    supplier = row.supplier or "emis"
    schema = RAW_SCHEMAS[supplier]
    run_name = f"{row.feed_id} {row.batch_key} {row.organisation} batch {row.batch_id}"
    run = RunIdentifier(run_name=run_name, run_time=dt.datetime.now(dt.UTC))
    run_id = f"{run_name} {uuid.uuid4().hex[:8]}"
    failures: list[str] = []
    records = []
    n_checks = 0
    with psycopg.connect(conninfo) as conn:
        files = ledger.loaded_files(conn, row.batch_id, specs.LATEST_EMIS_VERSION)
        for f in files:
            table = f["table_name"]
            raw = specs.raw_table_name(table)
            if supplier == "tpp":
                plan = plan_tpp_checks(table, row.organisation)
                suite_name = f"tpp.{raw}.{row.organisation}"
            else:
                plan = plan_checks(table, f["version"])
                suite_name = f"emis.{raw}.v{f['version']}"
            expected = int(f["rows_in_file"] or 0)
            if not expected:
                plan, suite_name = plan[:1], suite_name + ".empty"  # a header-only file: only the row count
            outcomes = scan.scan(conn, schema, raw, row.batch_id, plan, expected)
            result_ids.append(_record(ctx, suite_name, f"{schema}.{raw}", row.batch_id, run, outcomes, expected))
            for o in outcomes:
                n_checks += 1
                observed = dict(o.result, **({"records": o.records} if o.records else {}))
                records.append((row.batch_id, f["file_id"], table, o.check.expectation, o.check.column, o.success,
                                json.dumps(observed), run_id))
                if not o.success:
                    failures.append(_describe(table, o, f["rows_in_file"]))
        rows = sum(int(f["rows_loaded"] or 0) for f in files)
        ledger.record_quality_checks(conn, records)
        if failures:
            _quarantine_failed(conn, row, [f["table_name"] for f in files], failures)
        else:
            ledger.quality_passed(conn, row.batch_id)
        conn.commit()
    log.info("quality of batch %s (%s %s): %d checks, %d failed, %.1fs", row.batch_id, row.batch_key,
             row.organisation, n_checks, len(failures), time.monotonic() - t0)
    return BatchQuality(row.batch_id, row.organisation, row.batch_key, not failures, rows, failures, n_checks)


def _record(ctx, suite_name: str, asset: str, batch_id: int, run, outcomes: list[scan.Outcome], expected: int):
    """Store one table's outcomes as a GX validation result (for the Data Docs); its identifier."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    expectations = [o.check.build(gxe, expected) for o in outcomes]
    ctx.suites.add_or_update(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    results = [ExpectationValidationResult(success=o.success, expectation_config=e.configuration,
                                           result=dict(o.result, partial_unexpected_list=[]))
               for o, e in zip(outcomes, expectations, strict=True)]
    ok = sum(o.success for o in outcomes)
    batch = f"{asset}-batch_{batch_id}"
    svr = ExpectationSuiteValidationResult(
        success=ok == len(outcomes), results=results, suite_name=suite_name,
        statistics={"evaluated_expectations": len(outcomes), "successful_expectations": ok,
                    "unsuccessful_expectations": len(outcomes) - ok,
                    "success_percent": 100.0 * ok / len(outcomes) if outcomes else 100.0},
        meta={"run_id": run, "active_batch_definition": {"datasource_name": DATASOURCE, "data_asset_name": asset,
                                                         "batch_definition_name": f"batch_{batch_id}"}})
    key = ValidationResultIdentifier(ExpectationSuiteIdentifier(name=suite_name), run, batch)
    ctx.validation_results_store.set(key, svr)
    return key


def _quarantine_failed(conn: psycopg.Connection, row: ledger.BatchRow, tables: list[str], failures: list[str]) -> None:
    """Remove the batch from raw and quarantine it with the failed checks, in one transaction."""
    schema = RAW_SCHEMAS[row.supplier or "emis"]
    for table in tables:
        conn.execute(sql.SQL("delete from {} where _batch_id = %s").format(
            sql.Identifier(schema, specs.raw_table_name(table))), (row.batch_id,))
    reason = "quality check failed (rows removed from raw): " + "; ".join(failures)
    ledger.quality_failed(conn, row, reason[:4000])
