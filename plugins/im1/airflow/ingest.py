"""Build one daily ingest DAG per configured feed, EMIS or TPP (the DAG file only calls :func:`build_all`).

Shape::

    discover -> wait_for_batch (sensor) -> fetch -> [stage] -> organisation[ods].load -> organisation[ods].quality
                                                                                        -> [cleanup (teardown)]

* ``discover`` lists the landing place (EMIS: the SFTP site; TPP: the gateway folder, local or
  SFTP) and groups files into batches of this data interval;
* ``wait_for_batch`` (reschedule mode) waits until every batch is complete (EMIS: a file for
  every expected table; TPP: ``SRManifest.csv`` and every file it names); after the feed's
  ``batch_deadline_hours`` it quarantines the incomplete batches and fails with an alert naming
  what is missing;
* ``fetch`` downloads and archives the originals (EMIS encrypted; TPP plaintext, owner-only);
* multi-organisation feeds only: ``stage`` loads the shared tables once (organisation ``*``)
  and COPYs each per-practice file once into UNLOGGED staging; ``cleanup`` drops staging;
* ``organisation`` is a task group mapped per ODS code (and ``*`` for a multi-organisation
  feed's shared tables): ``load`` (one transaction per batch and organisation), then
  ``quality`` (Great Expectations from the spec), which publishes the feed-and-organisation
  Asset through an AssetAlias only when that organisation's rows changed and passed.

Every task is a few lines around one step of the feed's :class:`im1.ingest.pipeline.Pipeline`
(the same object the tests, benchmarks and the demo drive); the delivery kind's differences live
in its adapter (:mod:`im1.ingest.adapters`). Only multi-organisation feeds have ``stage`` and
``cleanup``. Everything heavy is imported inside the tasks, so parsing stays cheap.
"""

from __future__ import annotations

import datetime as dt
import os

import pendulum
from airflow.sdk import (
    DAG,
    Asset,
    AssetAlias,
    CronDataIntervalTimetable,
    setup,
    task,
    task_group,
    teardown,
)

from im1.airflow import lineage
from im1.airflow.callbacks import notify_failure
from im1.config import Feed, FeedConfig, load_config
from im1.warehouse import CONN_LOADER

SHARED = "*"  # the organisation label of a multi-organisation delivery's shared tables (im1.ingest.ledger.SHARED)
# the sensor's own time limit is the batch deadline (a DAG param); this is only a backstop
SENSOR_BACKSTOP = dt.timedelta(days=7)

DOC = """
### IM1 ingest: {feed_id} ({supplier}, {extract})

Daily at `{schedule}` ({tz}). Waits (up to {deadline} h; trigger with the conf
`{{"batch_deadline_hours": 12}}` to wait longer in one run) until {complete}, fetches them, {handling} and COPYs them into `{schema}` in one
transaction per batch and organisation, then checks each raw batch with Great Expectations. Bad
batches are quarantined with the reason in `ingest.batches`; `im1 ingest release <batch_id>` (or
the `im1_release` DAG) re-queues one.

Organisations: {orgs}
"""
DOC_SUPPLIER = {
    "emis": {"complete": "every table of the interval's batches has arrived",
             "handling": "archives the encrypted originals, decrypts them in a private work folder, validates "
                         "the headers against the spec"},
    "tpp": {"complete": "each batch folder of the interval has its `SRManifest.csv` and every file it names",
            "handling": "archives them (owner-only), decodes them from Windows-1252 to UTF-8 as they stream in, "
                        "maps the headers by name onto the TPP column list, records each file's IsDelta"},
}


def poke_seconds() -> float:
    """Seconds between two looks at the landing place while a batch is incomplete (IM1_BATCH_POKE_SECONDS)."""
    return float(os.environ.get("IM1_BATCH_POKE_SECONDS", "300"))


def deadline_hours(feed: Feed) -> float:
    """The default batch deadline: IM1_BATCH_DEADLINE_HOURS overrides the feed's batch_deadline_hours."""
    env = os.environ.get("IM1_BATCH_DEADLINE_HOURS")
    return float(env) if env else float(feed.batch_deadline_hours)


def run_deadline_hours(feed: Feed, conf: dict | None) -> float:
    """The batch deadline of one run: ``{"batch_deadline_hours": 12}`` in the run's conf (when
    triggering by hand) overrides the feed's. Not a DAG ``Param``: Airflow validates a Param's JSON
    schema for every task it serializes, which tripled the parse time of an ICB's feeds."""
    value = (conf or {}).get("batch_deadline_hours")
    if value is None:
        return deadline_hours(feed)
    try:
        hours = float(value)
    except (TypeError, ValueError):
        hours = -1.0
    if not hours >= 0:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"batch_deadline_hours in the run's conf must be a number of hours >= 0, "
                                   f"got {value!r}")
    return hours


def raw_asset(feed: Feed, ods_code: str) -> Asset:
    """The Asset for one feed and organisation's raw data (updated when its rows change).

    ``ods_code`` ``*`` is a multi-organisation feed's shared tables (asset suffix ``shared``).
    """
    label = "shared" if ods_code == SHARED else ods_code
    return Asset(name=f"im1_raw__{feed.id}__{label}", uri=f"im1://raw/{feed.supplier}/{feed.id}/{label}",
                 group="im1_raw")


# Every ingest DAG publishes its organisations' raw Assets through this one alias, and the transform
# DAG is scheduled on it: the transform's schedule does not grow with the number of feeds (an
# AssetAny of every feed's assets made the transform DAG's parse time grow with
# the feeds: 10 s at 200 feeds, as Airflow hashes the schedule at every task dependency).
RAW_ALIAS = "im1_raw"


def raw_alias() -> AssetAlias:
    return AssetAlias(name=RAW_ALIAS)


def organisations(feed: Feed) -> list[str]:
    orgs = [o.ods_code for o in feed.organisations]
    return [*orgs, SHARED] if feed.extract == "multi_organisation" else orgs


def default_args(feed: Feed) -> dict:
    return {
        "owner": "im1",
        "retries": feed.retries,
        "retry_delay": dt.timedelta(minutes=feed.retry_delay_minutes),
        # Airflow >= 3.2 takes a multiplier here (True would mean a constant delay)
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=feed.max_retry_delay_minutes),
        "pool": feed.pool,
        "on_failure_callback": notify_failure,
    }


def _until(data_interval_end, feed: Feed) -> dt.datetime | None:
    if data_interval_end is None:
        return None
    return pendulum.instance(data_interval_end).in_timezone(feed.timezone).naive()


def _pipeline(feed: Feed, *, key: bool = False):
    """The feed's ingest pipeline, with its warehouse connection (and PGP key) from Airflow
    connections; imported when a task runs, never while the DAG file is parsed."""
    from im1.airflow import connections
    from im1.ingest.pipeline import Pipeline

    return Pipeline(feed, connections.postgres_conninfo(CONN_LOADER),
                    key=connections.pgp_key(feed) if key and feed.supplier == "emis" else None)


def _fetched(items: list[dict]):
    from im1.ingest.model import FetchedBatch

    return [FetchedBatch.from_dict(b) for b in items]


def _waited(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def build_ingest_dag(feed: Feed) -> DAG:
    if feed.supplier == "tpp" and feed.extract != "organisation":
        raise NotImplementedError(f"feed {feed.id}: TPP feeds are organisation extracts (one practice per feed)")
    orgs = [o.ods_code for o in feed.organisations]
    multi = feed.extract == "multi_organisation"
    alias = raw_alias()
    with DAG(
        dag_id=feed.dag_id,
        description=f"IM1 {feed.supplier.upper()} ingest for {', '.join(orgs)}",
        schedule=CronDataIntervalTimetable(feed.schedule, timezone=feed.timezone),
        start_date=pendulum.datetime(feed.start_date.year, feed.start_date.month, feed.start_date.day,
                                     tz=feed.timezone),
        catchup=feed.catchup,
        max_active_runs=1,
        default_args=default_args(feed),
        tags=["im1", "ingest", feed.supplier, *orgs, *feed.tags],
        doc_md=DOC.format(
            feed_id=feed.id, supplier=feed.supplier, extract=feed.extract, schedule=feed.schedule,
            tz=feed.timezone, schema=f"raw_{feed.supplier}", orgs=", ".join(orgs),
            deadline=deadline_hours(feed), **DOC_SUPPLIER[feed.supplier],
        ),
    ) as dag:

        @task
        def discover(data_interval_end=None) -> dict:
            from airflow.sdk.exceptions import AirflowSkipException

            from im1.airflow import connections

            until = _until(data_interval_end, feed)
            with connections.transport_client(feed) as client:
                found = _pipeline(feed).discover(client, until=until)
            print(f"complete batches to load: {[b.batch_key for b in found.ready]}; incomplete: "
                  f"{[(b.batch_key, b.what) for b in found.incomplete]}; already done: {len(found.already_loaded)}; "
                  f"after this interval: {found.after_interval}")
            if found.foreign_files:
                print(f"files that are not {feed.supplier.upper()} extracts for this feed (ignored): "
                      f"{found.foreign_files}")
            if not found.ready and not found.incomplete:
                raise AirflowSkipException("no new batch for this interval")
            return {**found.to_dict(), "until": until.isoformat() if until else None}

        @task.sensor(poke_interval=poke_seconds(), timeout=SENSOR_BACKSTOP, mode="reschedule")
        def wait_for_batch(discovered: dict, dag_run=None):
            from airflow.sdk import PokeReturnValue, get_current_context, timezone
            from airflow.sdk.exceptions import AirflowFailException

            from im1.airflow import connections

            if not discovered["incomplete"]:
                return PokeReturnValue(is_done=True, xcom_value={"ready": discovered["ready"]})
            until = dt.datetime.fromisoformat(discovered["until"]) if discovered["until"] else None
            pipe = _pipeline(feed)
            with connections.transport_client(feed) as client:
                found = pipe.discover(client, until=until)
            if not found.incomplete:
                print(f"every batch is complete: {[b.batch_key for b in found.ready]}")
                return PokeReturnValue(is_done=True, xcom_value={"ready": [b.to_dict() for b in found.ready]})
            context = get_current_context()
            now = timezone.utcnow()
            started = context["ti"].get_first_reschedule_date(context) or now
            waited = (now - started).total_seconds()
            deadline = run_deadline_hours(feed, dag_run.conf if dag_run else None) * 3600
            if waited >= deadline:
                raise AirflowFailException(pipe.quarantine_incomplete(found.incomplete,
                                                                      waited=_waited(max(waited, deadline))))
            print(f"waiting ({_waited(waited)} of {_waited(deadline)}) for: "
                  + "; ".join(f"{b.batch_key} missing {', '.join(b.missing)}" for b in found.incomplete))
            return PokeReturnValue(is_done=False)

        @task
        def fetch(plan: dict) -> list[dict]:
            from im1.airflow import connections
            from im1.ingest.model import PlannedBatch

            pipe = _pipeline(feed)
            with connections.transport_client(feed) as client:
                out = [pipe.fetch(client, PlannedBatch.from_dict(b)).to_dict() for b in plan["ready"]]
            lineage.record_fetch(feed, out)
            return out

        @setup
        def stage(fetched: list[dict]) -> list[dict]:
            """Shared tables into raw once (organisation '*'); per-practice files COPYed once into staging."""
            from airflow.sdk.exceptions import AirflowFailException

            from im1.ingest.errors import QuarantineError

            pipe = _pipeline(feed, key=True)
            out, bad = [], []
            for b in _fetched(fetched):
                try:
                    out.append(pipe.stage(b))
                except QuarantineError as err:
                    bad.append(str(err))
            print(f"staged: {out}")
            lineage.record_stage(feed, fetched, pipe.conninfo, out)
            if bad:
                raise AirflowFailException(" | ".join(bad))
            return out

        @task(map_index_template="{{ ods_code }}")
        def load(ods_code: str, fetched: list[dict]) -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

            from im1.ingest.errors import QuarantineError

            get_current_context()["ods_code"] = ods_code
            if ods_code == SHARED:  # loaded by `stage`; `quality` checks it
                return {"ods_code": ods_code, "rows": None, "batches": []}
            pipe = _pipeline(feed, key=True)
            results, quarantined = [], []
            # oldest first: batches are applied in extract-timestamp order
            for b in sorted(_fetched(fetched), key=lambda x: x.extract_ts):
                try:
                    results.append(pipe.load(ods_code, b).to_dict())
                except QuarantineError as err:
                    quarantined.append(str(err))
            rows = sum(r["rows"] for r in results)
            print(f"{ods_code}: {rows} rows loaded from {len(results)} batch(es): {results}")
            lineage.record_load(feed, ods_code, fetched, pipe.conninfo, results)
            if quarantined:
                raise AirflowFailException(" | ".join(quarantined))
            if all(r.get("skipped") for r in results):
                raise AirflowSkipException(f"{ods_code}: every batch was already loaded")
            return {"ods_code": ods_code, "rows": rows, "batches": results}

        @task(map_index_template="{{ ods_code }}", outlets=[alias])
        def quality(ods_code: str, fetched: list[dict], loaded: dict, outlet_events=None) -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowFailException

            from im1.ingest import quality as gxq

            get_current_context()["ods_code"] = ods_code
            try:
                results = _pipeline(feed).quality(ods_code, _fetched(fetched))
            except gxq.QualityError as err:
                raise AirflowFailException(f"{err} (Data Docs: {gxq.data_docs_index()})") from err
            rows = sum(r.rows for r in results)
            print(f"{ods_code}: {sum(r.checks for r in results)} expectations passed on {len(results)} batch(es); "
                  f"Data Docs: {gxq.data_docs_index()}")
            if rows:
                outlet_events[alias].add(raw_asset(feed, ods_code), extra={
                    "batches": [r.batch_key for r in results], "batch_ids": [r.batch_id for r in results],
                    "rows": rows})
            return {"ods_code": ods_code, "rows": rows, "batches": [r.to_dict() for r in results]}

        @task_group(group_id="organisation")
        def per_organisation(ods_code: str, fetched: list[dict]):
            loaded = load(ods_code=ods_code, fetched=fetched)
            quality(ods_code=ods_code, fetched=fetched, loaded=loaded)

        plan = wait_for_batch(discover())
        fetched = fetch(plan)
        if multi:
            staged = stage(fetched)
            group = per_organisation.partial(fetched=fetched).expand(ods_code=organisations(feed))
            staged >> group

            @teardown
            def cleanup(fetched: list[dict]) -> None:
                """Drop the staging tables of this run's deliveries (rebuilt from the archive if needed)."""
                pipe = _pipeline(feed)
                for b in _fetched(fetched):
                    pipe.cleanup(b, force=True)

            dropped = cleanup(fetched)
            staged >> dropped  # `stage` is its setup: cleared together, and it drops what stage built
            group >> dropped
        else:
            per_organisation.partial(fetched=fetched).expand(ods_code=orgs)
    return dag


def build_all(cfg: FeedConfig | None = None) -> list[DAG]:
    cfg = cfg or load_config()
    return [build_ingest_dag(f) for f in cfg.enabled_feeds]
