"""Build one daily ingest DAG per configured feed (the DAG file only calls :func:`build_all`).

Shape: ``discover`` (list the landing place, group complete batches) -> ``fetch`` (download and
archive) -> ``load`` (decrypt, validate, COPY, ledger), mapped per organisation and labelled by
ODS code. ``load`` publishes the feed-and-organisation Asset only when rows were loaded.
Everything heavy is imported inside the tasks, so parsing stays cheap.
"""

from __future__ import annotations

import datetime as dt

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task

from im1.airflow.callbacks import notify_failure
from im1.config import Feed, FeedConfig, load_config
from im1.warehouse import CONN_LOADER

DOC = """
### IM1 ingest: {feed_id} ({supplier}, {extract})

Daily at `{schedule}` ({tz}). Fetches every complete batch delivered up to the end of the data
interval, archives the encrypted originals, decrypts them in a private work folder, validates the
headers against the spec and COPYs them into `{schema}` in one transaction per batch and
organisation. Bad batches are quarantined with the reason in `ingest.batches`.

Organisations: {orgs}
"""


def raw_asset(feed: Feed, ods_code: str) -> Asset:
    """The Asset for one feed and organisation's raw data (updated when rows are loaded)."""
    return Asset(name=f"im1_raw__{feed.id}__{ods_code}", uri=f"im1://raw/{feed.supplier}/{feed.id}/{ods_code}",
                 group="im1_raw")


def all_raw_assets(cfg: FeedConfig) -> list[Asset]:
    return [raw_asset(f, o.ods_code) for f in cfg.enabled_feeds for o in f.organisations]


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


def build_ingest_dag(feed: Feed) -> DAG:
    if feed.supplier != "emis":
        raise NotImplementedError(f"feed {feed.id}: only EMIS feeds have an ingest DAG so far")
    orgs = [o.ods_code for o in feed.organisations]
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
        ),
    ) as dag:

        @task
        def discover(data_interval_end=None) -> dict:
            from dataclasses import asdict

            from airflow.sdk.exceptions import AirflowSkipException

            from im1.airflow import connections
            from im1.ingest import emis_pipeline
            from im1.transport.sftp import SftpClient

            conninfo = connections.postgres_conninfo(CONN_LOADER)
            with SftpClient(connections.sftp_settings(feed)) as client:
                found = emis_pipeline.discover(client, feed, conninfo)
            until = None
            if data_interval_end is not None:
                until = pendulum.instance(data_interval_end).in_timezone(feed.timezone).naive()
            ready = [b for b in found.ready if until is None or dt.datetime.fromisoformat(b.extract_ts) < until]
            later = len(found.ready) - len(ready)
            print(f"complete batches to load: {[b.batch_key for b in ready]}; already loaded: "
                  f"{len(found.already_loaded)}; incomplete: {found.incomplete}; after this interval: {later}")
            if found.foreign_files:
                print(f"files that are not EMIS extracts for this agreement (ignored): {found.foreign_files}")
            if not ready:
                raise AirflowSkipException("no new complete batch for this interval")
            return {"ready": [asdict(b) for b in ready]}

        @task
        def fetch(discovered: dict) -> list[dict]:
            from im1.airflow import connections
            from im1.ingest import emis_pipeline
            from im1.transport.sftp import SftpClient

            conninfo = connections.postgres_conninfo(CONN_LOADER)
            out = []
            with SftpClient(connections.sftp_settings(feed)) as client:
                for b in discovered["ready"]:
                    out.append(emis_pipeline.fetch(client, feed, emis_pipeline.PlannedBatch.from_dict(b), conninfo))
            return out

        @task(map_index_template="{{ ods_code }}", outlets=[raw_asset(feed, o) for o in orgs]
              if len(orgs) == 1 else [])
        def load(ods_code: str, fetched: list[dict]) -> dict:
            from airflow.sdk import get_current_context
            from airflow.sdk.exceptions import AirflowSkipException

            from im1.airflow import connections
            from im1.ingest import emis_pipeline

            get_current_context()["ods_code"] = ods_code
            conninfo = connections.postgres_conninfo(CONN_LOADER)
            key = connections.pgp_key(feed)
            results = [emis_pipeline.load(feed, ods_code, b, key, conninfo) for b in fetched]
            rows = sum(r["rows"] for r in results)
            print(f"{ods_code}: {rows} rows loaded from {len(results)} batch(es): {results}")
            if all(r.get("skipped") for r in results):
                raise AirflowSkipException(f"{ods_code}: every batch was already loaded")
            return {"ods_code": ods_code, "rows": rows, "batches": results}

        fetched = fetch(discover())
        load.partial(fetched=fetched).expand(ods_code=orgs)
    return dag


def build_all(cfg: FeedConfig | None = None) -> list[DAG]:
    cfg = cfg or load_config()
    return [build_ingest_dag(f) for f in cfg.enabled_feeds if f.supplier == "emis"]
